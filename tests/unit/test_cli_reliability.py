"""Issue 19's CLI reliability items: a closed pipe, offline file: weights, sizes and output files checked before
any work, --version and cache --help, and every failure as one line with exit status 2."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from safetensors.torch import save_file
from torch import nn

import zoo
from weights_support import assert_same, small_state_dict
from zoo import api
from zoo.cli import _demo_weights, main
from zoo.domain.errors import WeightsUnavailableError
from zoo.domain.values import BuildRequest, DefaultCfg, ModelSpec
from zoo.services import export
from zoo.services.builder import Builder, Built
from zoo.services.weights import CachedWeightLoader


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of every model a Builder builds while the test runs."""
    done: list[str] = []
    build = Builder.build

    def counted(self: Builder, spec: ModelSpec, request: BuildRequest) -> Built:
        done.append(spec.name)
        return build(self, spec, request)

    monkeypatch.setattr(Builder, "build", counted)
    return done


def one_error(err: str) -> str:
    """The one line a failed command wrote to stderr."""
    lines = err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("zoo: error: "), lines
    return lines[0]


# -- 1: a reader that closes the pipe ends the command quietly ----------------------------------------------------


class ClosedPipe(io.StringIO):
    """stdout whose reader has gone: every write fails as it does on a pipe closed by `head -1`."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


@pytest.mark.parametrize("argv", [["list"], ["info", "resnet18"], ["list", "--tags"]])
def test_a_closed_stdout_ends_the_command_quietly(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(argv) == 0
    assert capsys.readouterr().err == ""


def test_a_closed_stdout_after_an_export_ends_it_quietly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def export_file(model: nn.Module, out: str, *, fmt: str, opset: int | None = None) -> tuple[Path, object]:
        Path(out).write_bytes(b"program")  # the seconds of torch.export are not what is tested here
        return Path(out), None

    monkeypatch.setattr(export, "export_file", export_file)
    monkeypatch.setattr(export, "input_dims", lambda program: [])
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    out = tmp_path / "r18.pt2"
    assert (
        main(["export", "resnet18", "--checkpoint", str(checkpoint(tmp_path)), "--format", "pt2", "--out", str(out)])
        == 0
    )
    assert capsys.readouterr().err == ""
    assert out.read_bytes() == b"program"


def checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in zoo.create_model("resnet18").state_dict().items()}, str(path))
    return path


@pytest.mark.parametrize("argv", [["list"], ["info", "resnet18", "--json"]])
def test_zoo_piped_into_a_reader_that_stops_says_nothing(argv: list[str]) -> None:
    """`zoo list | head -1`, made certain: the read end is closed before zoo writes its first byte."""
    env = {**os.environ, "PYTHONPATH": str(Path(zoo.__file__).parents[1])}  # this checkout's zoo
    proc = subprocess.Popen(
        [sys.executable, "-m", "zoo.cli", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert (proc.wait(timeout=120), err) == (0, "")


# -- 2: offline mode reads weights from this machine's own files --------------------------------------------------


def test_offline_reads_a_file_url_and_names_a_missing_one(tmp_path: Path) -> None:
    state = small_state_dict()
    path = tmp_path / "weights.safetensors"
    save_file(state, str(path))
    loader = CachedWeightLoader(cache_dir=tmp_path / "cache", offline=True, progress=False)
    assert_same(loader.load_state_dict(DefaultCfg(url=path.as_uri())), state)
    missing = (tmp_path / "gone.safetensors").as_uri()
    with pytest.raises(WeightsUnavailableError, match="No such file") as e:
        loader.load_state_dict(DefaultCfg(url=missing))
    assert "ZOO_OFFLINE" not in str(e.value)  # not "offline": the file is not there


def test_offline_demo_loads_the_checkpoint_it_wrote(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ZOO_OFFLINE", "1")  # `ZOO_OFFLINE=1 zoo demo`, `make demo` offline
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _demo_weights()
    out = capsys.readouterr().out
    assert "fetched into the cache and loaded" in out
    assert "logits (1, 10)" in out


# -- 3: sizes and output files are checked before any work --------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "message"),
    [
        (["0", "0", "0"], "--input-size 0 0 0 is invalid: C=0; expected C in [1, 1024], H and W in [1, 4096]"),
        (["-1", "64", "64"], "--input-size -1 64 64 is invalid: C=-1"),
        (["3", "0", "64"], "--input-size 3 0 64 is invalid: H=0"),
        (["3", "64", "99999999999"], "--input-size 3 64 99999999999 is invalid: W=99999999999"),
    ],
)
def test_features_refuses_an_input_size_before_building(
    size: list[str], message: str, builds: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["features", "resnet18", "--input-size", *size]) == 2
    assert message in one_error(capsys.readouterr().err)
    assert builds == []


def test_features_with_one_channel_builds_for_one_channel(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["features", "resnet18", "--out-indices", "1", "--input-size", "1", "32", "32"]) == 0
    out = capsys.readouterr().out
    assert "input (1, 1, 32, 32)" in out
    assert "(1, 64, 8, 8)" in out


def test_features_says_which_size_a_model_cannot_take(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["features", "densenet121", "--input-size", "3", "2", "2"]) == 2
    line = one_error(capsys.readouterr().err)
    assert "--input-size 3 2 2 does not fit densenet121 (its cfg's is 3 224 224): " in line
    assert "Output size is too small" in line


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--image-size", "0"], "--image-size=0 is invalid: expected an int in [1, 4096]"),
        (["--image-size", "-3"], "--image-size=-3 is invalid: expected an int in [1, 4096]"),
        (["--image-size", "100000"], "--image-size=100000 is invalid: expected an int in [1, 4096]"),
        (["--ratio", "nan"], "--ratio=nan is invalid: expected a finite number in [0.0, 1.0)"),
    ],
)
def test_prune_refuses_sizes_and_ratios_before_building(
    argv: list[str], message: str, tmp_path: Path, builds: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "spec.txt"
    assert main(["prune", "resnet18", "--ratio", "0.5", "--out", str(out), *argv]) == 2
    assert message in one_error(capsys.readouterr().err)
    assert builds == []
    assert not out.exists()


def test_prune_says_an_image_size_is_too_small_before_pruning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "spec.txt"
    assert main(["prune", "densenet121", "--ratio", "0.5", "--out", str(out), "--image-size", "2"]) == 2
    err = capsys.readouterr().err
    assert "zoo: error: --image-size 2 is too small for densenet121: " in err
    assert not out.exists()  # refused before the spec was derived and written


def unwritable(tmp_path: Path) -> list[tuple[str, str]]:
    """(--out value, what the message says) for places no file can be written."""
    return [
        (str(tmp_path / "no" / "such" / "x.out"), "its folder"),
        (str(tmp_path), "it is a folder; expected a file path"),
        ("/proc/zoo-test.out", "it cannot be written"),  # /proc takes no new files, even from root
        ("", "it is empty"),
    ]


def test_export_and_prune_refuse_an_unwritable_out_before_building(
    tmp_path: Path, builds: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    for out, reason in unwritable(tmp_path):
        assert main(["export", "resnet18", "--format", "pt2", "--out", out]) == 2
        assert f"--out {out!r} is invalid: {reason}" in one_error(capsys.readouterr().err)
        assert main(["prune", "resnet18", "--ratio", "0.5", "--out", out]) == 2
        assert f"--out {out!r} is invalid: {reason}" in one_error(capsys.readouterr().err)
    assert builds == []
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the write checks leave nothing behind


# -- 6: --version, and cache --help says what list and clear do ---------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"zoo {zoo.__version__}\n"


def test_cache_help_describes_list_and_clear(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "--help"]) == 0
    out = capsys.readouterr().out
    assert "list   each cached file with its size, then the count, the total size and the cache's folder" in out
    assert "clear  delete the cached files" in out
    assert "Hugging Face cache" in out


# -- every failure: one line, exit status 2 -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "zoo: error: the following arguments are required: COMMAND (see `zoo --help`)"),
        (["bogus"], "zoo: error: argument COMMAND: invalid choice: 'bogus'"),
        (["predict", "x.png"], "zoo: error: predict: the following arguments are required: --model"),
        (["features", "resnet18", "--input-size", "3", "x", "1"], "argument --input-size: invalid int value: 'x'"),
        (["list", "--bogus"], "zoo: error: unrecognized arguments: --bogus"),
    ],
)
def test_a_usage_error_is_one_line_and_status_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert message in one_error(captured.err)
    assert captured.out == ""


def test_an_unexpected_error_is_one_line_unless_asked_for_its_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: object, **kwargs: object) -> list[str]:
        raise RuntimeError("something inside\nbroke")

    monkeypatch.setattr(api, "list_models", broken)
    monkeypatch.delenv("ZOO_TRACEBACK", raising=False)
    assert main(["list"]) == 2
    line = one_error(capsys.readouterr().err)
    assert "internal error, a bug in zoo: RuntimeError: something inside / broke (set ZOO_TRACEBACK=1" in line
    monkeypatch.setenv("ZOO_TRACEBACK", "1")
    with pytest.raises(RuntimeError, match="something inside"):
        main(["list"])


def test_ctrl_c_is_one_line_and_status_130(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(*args: object, **kwargs: object) -> list[str]:
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "list_models", interrupted)
    assert main(["list"]) == 130
    assert capsys.readouterr().err == "zoo: error: interrupted\n"


def test_no_match_is_status_1_with_a_one_line_note(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "nothing*"]) == 1
    assert capsys.readouterr().err == "zoo: note: no model matches 'nothing*'\n"

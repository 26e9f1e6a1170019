"""Drawn argv at every `zoo` subcommand: exit 0, 2 (or list's 1), one-line messages on stderr, never a traceback.

Arguments are drawn from values a user can type by mistake: garbage text, negative, zero and huge numbers,
missing and odd paths (a folder, a file that is not an image, unwritable places, a NUL byte, a newline),
unknown and misspelt names, saved-model names that point nowhere. The machine is offline with empty caches,
so a named weight set is never downloaded. Models stay small (resnet18 at small sizes, or a saved resnet18
with 3 classes); the demo only ever gets a name it must refuse, since a valid one runs the whole demo.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import zoo
from zoo.cli import main

SUBCOMMANDS = ("list", "info", "fetch", "cache", "features", "prune", "predict", "export", "demo")
# each stderr line is one message: `zoo: error: ...`, `zoo: warning: ...` or `zoo: note: ...`
MESSAGE = re.compile(r"^zoo: (error|warning|note): \S.*$")


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Files and folders to draw paths from, with zoo offline on empty caches for the whole module."""
    root = tmp_path_factory.mktemp("argv")
    image = root / "beach.png"
    Image.new("RGB", (40, 30), (200, 120, 40)).save(image)
    text = root / "notes.png"
    text.write_text("not an image")
    folder = root / "pictures"
    folder.mkdir()
    Image.new("RGB", (20, 20), (10, 20, 30)).save(folder / "a.jpg")
    empty = root / "empty"
    empty.mkdir()
    existing = root / "existing.out"
    existing.write_text("written before\n")
    saved = root / "saved"
    zoo.save_pretrained(zoo.create_model("resnet18", num_classes=3), saved, label_names=["cat", "dog", "bird"])
    paths = {
        "image": str(image),
        "text": str(text),
        "folder": str(folder),
        "empty": str(empty),
        "saved": str(saved),
        "weights": str(saved / "model.safetensors"),
        "missing": str(root / "missing.png"),
        "no_folder": str(root / "nowhere" / "out.txt"),
        "out": str(root / "out.file"),
        "existing": str(existing),
    }
    with pytest.MonkeyPatch.context() as mp:
        (root / "cwd").mkdir()
        mp.chdir(root / "cwd")  # a drawn relative --out (garbage text, '-') lands here, not in the checkout
        mp.setenv("ZOO_OFFLINE", "1")
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("ZOO_CACHE_DIR", str(root / "cache"))
        mp.setenv("HF_HUB_CACHE", str(root / "hf"))
        mp.delenv("ZOO_TRACEBACK", raising=False)
        yield paths


def either(good: list[str], bad: list[str]) -> st.SearchStrategy[str]:
    """A value that works about half the time: the other half is a mistake a user could make."""
    return st.sampled_from(good) | st.sampled_from(bad) | st.text(max_size=8)


SIZES = either(["1", "3", "32", "64"], ["-1", "0", "-5", "10000000", "99999999999999999999", "2e3", "nan", "x"])
RATIOS = either(["0", "0.5", "0.9"], ["1", "-0.1", "2", "nan", "inf", "1e308", "half"])
GARBAGE = st.text(max_size=10) | st.sampled_from(["-", "--", "--bogus", "-x", "--json", "\x00", "a\nb", "é"])
ODD_PATHS = ["", ".", "/", "/proc/x.out", "/dev/null", "a\x00b", "new\nline", "~no_such_user/x", "-", "file:///x"]


def names(place: dict[str, str]) -> st.SearchStrategy[str]:
    """Model names: resnet18 (the one valid bare name drawn: small), a tag, a saved model; and mistakes."""
    return either(
        ["resnet18", "resnet18.tv_in1k", f"local-dir:{place['saved']}"],
        [
            "resnet18.no_such_tag",
            "resnt18",
            "",
            "RESNET18",
            "resnet18.",
            ".tv_in1k",
            f"local-dir:{place['missing']}",
            "local-dir:",
            "local-dir:\x00",
            "local-dir:~no_such_user/x",
            "hf-hub:",
            "hf-hub:nobody/nothing",
            "hf-hub:a/b/c@",
            "x" * 300,
        ],
    )


def inputs(place: dict[str, str]) -> st.SearchStrategy[str]:
    """Files to read: images, a folder of them; and ones that are not there or not images."""
    good = [place["image"], place["folder"], place["weights"]]
    return either(good, [place["text"], place["empty"], place["missing"], place["saved"], *ODD_PATHS])


def outputs(place: dict[str, str]) -> st.SearchStrategy[str]:
    """Files to write: a new one, an existing one; and places no file can be written."""
    return either([place["out"], place["existing"]], [place["no_folder"], place["empty"], *ODD_PATHS])


@st.composite
def argv_for(draw: st.DrawFn, command: str, place: dict[str, str]) -> list[str]:
    """An argv for command: its arguments and options, each maybe left out, maybe garbage, in drawn order."""
    name, path, out = names(place), inputs(place), outputs(place)
    maybe = st.booleans()
    args: list[str] = []
    if command == "list":
        args += draw(st.lists(st.sampled_from(["resnet*", "*", "nothing*", "[", "res?et18"]) | GARBAGE, max_size=3))
        args += [f for f in ("--pretrained", "--tags") if draw(maybe)]
    elif command in ("info", "fetch"):
        args.append(draw(name))
        if draw(maybe):
            args.append("--json" if command == "info" else "--no-progress")
    elif command == "cache":
        args.append(draw(st.sampled_from(["list", "clear", "purge", ""])))
    elif command == "features":
        args.append(draw(name))
        if draw(maybe):
            args += ["--out-indices", *draw(st.lists(either(["0", "1", "-1"], ["5", "-9", "x", "1e9"]), max_size=3))]
        if draw(maybe):
            args += ["--feature-cls", draw(st.sampled_from(["list", "dict", "hook", "getter", "tree"]))]
        if draw(maybe):
            args += ["--input-size", *draw(st.lists(SIZES, min_size=3, max_size=3))]
    elif command == "prune":
        args += [draw(name), "--ratio", draw(RATIOS), "--out", draw(out)]
        if draw(maybe):
            args += ["--image-size", draw(SIZES)]
        if draw(maybe):
            args += ["--checkpoint", draw(path)]
    elif command == "predict":
        args += draw(st.lists(path, min_size=1, max_size=3))
        args += ["--model", draw(name)]
        if draw(maybe):
            args += ["--top-k", draw(SIZES)]
        if draw(maybe):
            args += ["--checkpoint", draw(path)]
        if draw(maybe):
            args.append("--json")
    elif command == "export":
        args += [draw(name), "--format", draw(st.sampled_from(["onnx", "pt2", "tflite"])), "--out", draw(out)]
        if draw(maybe):
            args += ["--opset", draw(either(["18"], ["0", "-1", "99", "x"]))]
        if draw(maybe):
            args += ["--checkpoint", draw(path)]
        if draw(maybe):
            args.append("--features")
    else:  # demo: only names it refuses, as a valid one runs every step of the demo (minutes)
        bad = st.sampled_from(["resnt50", "", "local-dir:" + place["missing"], "hf-hub:nobody/nothing", "-x"])
        args += ["--name", draw(bad)]
    # garbage somewhere, sometimes, and sometimes an argument dropped
    if args and draw(st.integers(0, 4)) == 0:
        del args[draw(st.integers(0, len(args) - 1))]
    if draw(st.integers(0, 3)) == 0:
        args.insert(draw(st.integers(0, len(args))), draw(GARBAGE))
    return [command, *args]


@pytest.mark.parametrize("command", SUBCOMMANDS)
@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_drawn_argv_exits_cleanly_with_one_line_messages(
    command: str, place: dict[str, str], data: st.DataObject
) -> None:
    argv = data.draw(argv_for(command, place), label="argv")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    lines = err.getvalue().splitlines()
    allowed = {0, 1, 2} if command == "list" else {0, 2}
    assert code in allowed, (argv, code, lines)
    assert "Traceback" not in err.getvalue(), argv
    assert all(MESSAGE.match(line) for line in lines), (argv, lines)  # one message a line, each ours
    assert not any("internal error" in line for line in lines), (argv, lines)  # every refusal is a ZooError
    if code == 2:
        assert any(line.startswith("zoo: error: ") for line in lines), (argv, lines)

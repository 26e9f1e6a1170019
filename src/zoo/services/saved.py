"""Saved models: `config.json` + `model.safetensors` in the hub's model-card layout that timm-style repos use.

config.json holds `architecture`, `num_classes`, `num_features`, `global_pool` (when the model pools),
`label_names` (when known), `model_args` (the keywords that rebuild the model), `prune_spec` (zoo's own
key, only for a model created with a prune_spec: its channel layout, in the interchange format) and
`pretrained_cfg` (preprocessing and head names, without any source). A directory or repo written this way by zoo or by
timm is read by name: `local-dir:PATH` or `hf-hub:org/name[@revision]`.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import cast

import attrs
import torch
from torch import nn

from zoo.domain.errors import (
    FeatureNotAvailableError,
    InvalidArgumentError,
    InvalidValueError,
    PruneSpecError,
    SavedModelError,
    SaveSurfaceError,
    UnknownModelError,
    WeightsUnavailableError,
    ZooError,
)
from zoo.domain.protocols import ClassifierHead, Configured, Pruner, Recorded, WeightLoader, lacking
from zoo.domain.prune import PruneSpec
from zoo.domain.values import BuildRecord, BuildRequest, DefaultCfg, ModelSpec
from zoo.services.files import replace_together
from zoo.services.paths import expand_user

LOCAL_PREFIX = "local-dir:"
HUB_PREFIX = "hf-hub:"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# what a saved directory may hold its weights in, in order (timm writes pytorch_model.bin by default)
WEIGHT_FILES: tuple[str, ...] = (WEIGHTS_NAME, "pytorch_model.bin")

# DefaultCfg fields that say where weights come from: a saved cfg describes weights, not a source
_SOURCE_FIELDS = ("url", "hf_hub_id", "file", "sha256", "check_hash")
# timm leaves drop rates out of model_args: training settings, not part of what the weights are
_DROP_RATES = ("drop_rate", "drop_path_rate", "drop_block_rate")
_CFG_FIELDS = tuple(f.name for f in attrs.fields(DefaultCfg))


def is_saved_name(name: object) -> bool:
    """Whether a model name points at a saved model (local-dir:PATH or hf-hub:org/name)."""
    return isinstance(name, str) and name.startswith((LOCAL_PREFIX, HUB_PREFIX))


@attrs.frozen(kw_only=True)
class SavedModel:
    """A saved model's config.json, read and checked: what to build and the cfg its weights come with."""

    location: str  # the config.json read, for messages
    architecture: str
    cfg: DefaultCfg  # with the weights' source set: file= for a directory, hf_hub_id= for a repo
    model_args: Mapping[str, object]
    label_names: tuple[str, ...] = ()
    prune_spec: PruneSpec | None = None  # the channel layout to build; None: the architecture's own


# -- writing ------------------------------------------------------------------------------------


def save_pretrained(
    model: nn.Module,
    directory: str | os.PathLike[str],
    *,
    label_names: Iterable[str] | None = None,
    architecture: str | None = None,
    rebuild: Callable[[SavedModel, Mapping[str, torch.Tensor]], nn.Module] | None = None,
) -> Path:
    """Write model.safetensors and config.json into directory (created if needed); returns the directory.

    architecture defaults to the name the model was created with; label_names to the ones it was loaded with
    (dropped when the class count changed since). Both files are replaced whole or not at all. rebuild, when
    given, builds what config.json and the tensors load as (its tensors may be on the meta device): unless its
    state_dict has the model's keys and shapes, SavedModelError is raised and nothing is written.
    """
    out = _directory(directory)
    names = _label_names_given(label_names)
    model = _unwrapped(model)
    record = model.build_record if isinstance(model, Recorded) else None
    if architecture is None:
        if not isinstance(record, BuildRecord):
            raise SavedModelError(
                f"cannot save {type(model).__qualname__}: it was not built by zoo.create_model, so its architecture "
                "is unknown; pass architecture='<registered name>'"
            )
        architecture = record.architecture
    config = _config(model, architecture, record if isinstance(record, BuildRecord) else None, names)
    tensors = _tensors(model)
    if rebuild is not None:
        _check_rebuilds(model, config, tensors, rebuild, out)
    _check_replaceable(out)
    from safetensors.torch import save_file

    def write_weights(tmp: Path) -> None:
        save_file(tensors, str(tmp), metadata={"format": "pt"})

    def write_config(tmp: Path) -> None:
        tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    created = _missing_folders(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        replace_together(out, [(WEIGHTS_NAME, write_weights), (CONFIG_NAME, write_config)])
    except OSError as e:
        for folder in created:  # the folders this call made, deepest first: a failed save leaves no trace
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise SavedModelError(f"cannot write the model to {out}: {e}; nothing there was changed") from None
    return out


def _directory(directory: object) -> Path:
    """The directory to save into, as a Path; '' and values that are not paths are refused."""
    path = os.fspath(directory) if isinstance(directory, (str, os.PathLike)) else None
    if not isinstance(path, str):
        raise InvalidValueError(
            f"directory={directory!r} is invalid: expected the path of a folder (a str or os.PathLike of str)"
        )
    if not path.strip():
        raise InvalidValueError(
            f"directory={directory!r} is invalid: expected the path of a folder; an empty path would save into the "
            "current directory: pass '.' to mean it"
        )
    return Path(path).expanduser()


def _label_names_given(given: object) -> tuple[str, ...] | None:
    """label_names as a tuple (any iterable of str, a generator included, in order); None: not given."""
    if given is None:
        return None
    unordered = isinstance(given, (set, frozenset, Mapping))
    if isinstance(given, (str, bytes)) or unordered or not isinstance(given, Iterable):
        why = "a set or mapping has no order" if unordered else f"not {type(given).__name__}"
        raise InvalidValueError(
            f"label_names={given!r} is invalid: expected a sequence of str, one per class in class order ({why})"
        )
    names = tuple(cast(Iterable[object], given))
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise InvalidValueError(
            f"label_names is invalid: {bad[0]!r} is not a str; expected a sequence of str, one per class"
        )
    return cast(tuple[str, ...], names)


def _unwrapped(model: object) -> nn.Module:
    """The model to save: torch.compile's wrapper gives way to the model it compiled; an extractor is refused."""
    while isinstance(getattr(model, "_orig_mod", None), nn.Module):
        model = getattr(model, "_orig_mod")  # noqa: B009  # the name is torch.compile's, not an attribute of ours
    from zoo.services.features import FeatureExtractor

    if isinstance(model, FeatureExtractor):
        raise SavedModelError(
            f"cannot save {type(model).__qualname__}: a feature extractor (features_only=True) has no classifier "
            "for config.json to describe, so it cannot be saved; save the classifier (create_model without "
            "features_only) and build the extractor from it: create_model('local-dir:DIR', features_only=True)"
        )
    if not isinstance(model, nn.Module):
        raise InvalidValueError(f"model={model!r} is invalid: expected a torch.nn.Module built by zoo.create_model")
    return model


def _check_replaceable(out: Path) -> None:
    """Refuse a directory whose config.json or weights zoo did not write (a saved model's may be replaced)."""
    config = out / CONFIG_NAME
    weights = out / WEIGHTS_NAME
    keep = "zoo replaces only a saved model's files; choose another directory, or move the file away"
    if config.exists() or config.is_symlink():
        if not config.is_file():
            raise SavedModelError(f"cannot save to {out}: {config} is not a file; {keep}")
        if not _is_model_config(config):
            raise SavedModelError(
                f"cannot save to {out}: {config} is not a zoo or timm model config (a JSON object naming an "
                f"'architecture'), and would be overwritten; {keep}"
            )
    elif weights.exists() or weights.is_symlink():
        raise SavedModelError(
            f"cannot save to {out}: it holds {WEIGHTS_NAME} but no {CONFIG_NAME}, so the file is not a saved "
            f"model's, and would be overwritten; {keep}"
        )
    if weights.exists() and not weights.is_file():
        raise SavedModelError(f"cannot save to {out}: {weights} is not a file; {keep}")


def _is_model_config(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and isinstance(data.get("architecture"), str)


def _missing_folders(out: Path) -> list[Path]:
    """out and its parents that do not exist yet, deepest first."""
    missing: list[Path] = []
    folder = out
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _config(
    model: nn.Module, architecture: str, record: BuildRecord | None, label_names: tuple[str, ...] | None
) -> dict[str, object]:
    if not isinstance(model, ClassifierHead):
        missing = lacking(model, ClassifierHead)
        raise SaveSurfaceError(
            f"cannot save {type(model).__qualname__}: config.json describes a classifier head, and the model lacks "
            f"{', '.join(missing)} (zoo.domain.protocols.ClassifierHead)",
            missing=missing,
        )
    num_classes = model.num_classes
    if not isinstance(num_classes, int):
        raise SavedModelError(f"cannot save {type(model).__qualname__}: its num_classes is {num_classes!r}, not an int")
    cfg = model.default_cfg if isinstance(model, Configured) else None
    cfg = cfg if isinstance(cfg, DefaultCfg) else DefaultCfg()
    pretrained_cfg = _cfg_for_saving(cfg, num_classes)
    pool = _pool_type(model)
    args = {k: v for k, v in (record.model_args if record else {}).items() if not _is_drop_rate(k)}
    args["num_classes"] = num_classes
    if pool is not None:
        args["global_pool"] = pool
    for key, value in args.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError, RecursionError):
            raise SavedModelError(
                f"model keyword {key}={value!r} cannot be written to config.json (not JSON); "
                "build the model with a JSON value for it"
            ) from None
    names = _label_names_to_save(label_names, record, num_classes, cfg)
    config: dict[str, object] = {"architecture": architecture, "num_classes": num_classes}
    config["num_features"] = model.num_features
    if pool is not None:
        config["global_pool"] = pool
    if names:
        config["label_names"] = list(names)
    config["model_args"] = args
    if record is not None and record.prune_spec is not None:
        config["prune_spec"] = record.prune_spec
    config["pretrained_cfg"] = pretrained_cfg
    return config


def _check_rebuilds(
    model: nn.Module,
    config: Mapping[str, object],
    tensors: Mapping[str, torch.Tensor],
    rebuild: Callable[[SavedModel, Mapping[str, torch.Tensor]], nn.Module],
    out: Path,
) -> None:
    """Raise SavedModelError unless what config describes has exactly the keys and shapes of tensors."""
    what = f"cannot save {type(model).__qualname__} as {config['architecture']!r} to {out}"
    saved = parse_config(dict(config), location=str(out / CONFIG_NAME), source={"file": str(out / WEIGHTS_NAME)})
    try:
        rebuilt = rebuild(saved, tensors)
    except ZooError as e:
        raise SavedModelError(f"{what}: config.json would not build it back: {e}") from None
    want = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in tensors.items()}
    if want == have:
        return
    problems = [f"{k} is {have[k]}, the rebuilt model's is {want[k]}" for k in have if k in want and have[k] != want[k]]
    problems += [f"{k} is missing" for k in want if k not in have]
    problems += [f"{k} is not in the rebuilt model" for k in have if k not in want]
    layout = "its recorded prune_spec" if saved.prune_spec is not None else "the architecture's own channel layout"
    raise SavedModelError(
        f"{what}: its layers are not the ones config.json rebuilds (model_args and {layout}): "
        f"{'; '.join(problems[:4])}{f' (and {len(problems) - 4} more)' if len(problems) > 4 else ''}. "
        "It was changed after create_model (pruned or edited by hand?) in a way its build record cannot describe: "
        "build it with create_model(name, prune_spec=...) (ChannelPruner.derive returns the spec of the copy it "
        "prunes), load its state_dict into that, and save that model"
    )


def _cfg_for_saving(cfg: DefaultCfg, num_classes: int) -> dict[str, object]:
    data = {k: v for k, v in cfg.to_dict().items() if k not in _SOURCE_FIELDS}
    for key in ("first_conv", "classifier"):
        data[key] = data[key] or None  # timm's empty value
    for key in ("license", "tag"):
        if not data[key]:
            del data[key]
    for key in ("test_input_size", "test_crop_pct"):
        if data[key] is None:
            del data[key]
    data["num_classes"] = num_classes
    data["custom_load"] = False  # a plain state_dict of this architecture, as timm marks its own exports
    return data


def _label_names_to_save(
    given: tuple[str, ...] | None, record: BuildRecord | None, num_classes: int, cfg: DefaultCfg
) -> tuple[str, ...]:
    if given is not None:
        if len(given) != num_classes:
            raise InvalidValueError(
                f"label_names has {len(given)} names; the model has num_classes={num_classes}: expected one per class"
            )
        return given
    known = record.label_names if record else ()
    # names describe the classifier they came with: a head reset since (or a new class count) makes them wrong
    return known if len(known) == num_classes == cfg.num_classes else ()


def _is_drop_rate(key: str) -> bool:
    return key in _DROP_RATES or key.endswith("_drop_rate")


def _pool_type(model: nn.Module) -> str | None:
    head = getattr(model, "head", None)
    for owner in (head, model):
        pool = getattr(owner, "global_pool", None)
        pool_type = getattr(pool, "pool_type", pool)
        if isinstance(pool_type, str):
            return pool_type
    return None


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict as safetensors takes it: contiguous, on the CPU, no two entries sharing memory."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for key, value in model.state_dict().items():
        t = value.detach().to("cpu").contiguous()
        where = (t.untyped_storage().data_ptr(), t.storage_offset())
        if where in seen or t.device.type == "meta":
            t = t.clone()
        seen.add(where)
        out[key] = t
    return out


# -- reading ------------------------------------------------------------------------------------


def read_saved(name: str, *, fetch_hub_file: Callable[[str, str], Path]) -> SavedModel:
    """local-dir:PATH or hf-hub:org/name[@revision] -> its SavedModel; fetch_hub_file(hub_id, filename) -> path."""
    if name.startswith(LOCAL_PREFIX):
        directory = expand_user(name[len(LOCAL_PREFIX) :], "local-dir path")
        config_path = directory / CONFIG_NAME
        if not directory.is_dir():
            raise SavedModelError(f"{name!r}: {directory} is not a directory (expected one holding {CONFIG_NAME})")
        if not config_path.is_file():
            raise SavedModelError(f"{name!r}: {config_path} does not exist (a saved model directory holds one)")
        weights = next((directory / f for f in WEIGHT_FILES if (directory / f).is_file()), directory / WEIGHTS_NAME)
        source: dict[str, object] = {"file": str(weights)}
    else:
        hub_id = name[len(HUB_PREFIX) :]
        from zoo.services.weights.hub import parse_hub_id

        parse_hub_id(hub_id, what="hf-hub name")
        config_path = fetch_hub_file(hub_id, CONFIG_NAME)
        source = {"hf_hub_id": hub_id}
    return parse_config(_load_json(config_path), location=str(config_path), source=source)


def _load_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise SavedModelError(f"{path}: cannot read it as JSON ({e})") from None
    except RecursionError:
        raise SavedModelError(
            f"{path}: cannot read it as JSON: it is nested too deeply (a saved model's config.json nests a few levels)"
        ) from None


def parse_config(data: object, *, location: str, source: Mapping[str, object]) -> SavedModel:
    """A config.json's content (zoo's, timm's, or timm's older single-dict form) as a SavedModel."""
    if not isinstance(data, dict):
        raise SavedModelError(f"{location}: expected a JSON object with 'architecture' and 'pretrained_cfg'")
    data = dict(data)
    if "pretrained_cfg" not in data:  # the older form: one dict, architecture beside the cfg fields
        data = {"architecture": data.pop("architecture", None), "pretrained_cfg": data, **_labels_of(data)}
    arch = data.get("architecture")
    if not isinstance(arch, str) or not arch:
        raise SavedModelError(f"{location}: 'architecture' is {arch!r}; expected the name of a registered model")
    raw_cfg = data.get("pretrained_cfg")
    model_args = data.get("model_args", {})
    if not isinstance(raw_cfg, dict) or not isinstance(model_args, dict):
        raise SavedModelError(f"{location}: 'pretrained_cfg' and 'model_args' must be JSON objects")
    if "num_classes" in data:
        raw_cfg = {**raw_cfg, "num_classes": data["num_classes"]}
    label_names = _label_names(data.get("label_names", raw_cfg.get("label_names")), location)
    prune_spec = _saved_layout(data.get("prune_spec"), location)
    cfg = _cfg_from_saved(raw_cfg, model_args, location)
    cfg = cfg.evolve({**{k: "" for k in _SOURCE_FIELDS if k != "check_hash"}, "check_hash": False, **source})
    return SavedModel(
        location=location,
        architecture=arch,
        cfg=cfg,
        model_args=dict(model_args),
        label_names=label_names,
        prune_spec=prune_spec,
    )


def _saved_layout(value: object, location: str) -> PruneSpec | None:
    """config.json's prune_spec, parsed; a value that is not a spec is a SavedModelError naming the file."""
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise PruneSpecError(f"expected the `name:[d0, d1, ...]***...` text, not {type(value).__name__}")
        return PruneSpec.parse(value)
    except PruneSpecError as e:
        raise SavedModelError(f"{location}: prune_spec is invalid: {e}") from None


def _labels_of(data: dict[str, object]) -> dict[str, object]:
    labels = data.pop("labels", None)
    return {} if labels is None else {"label_names": labels}


def _cfg_from_saved(raw: Mapping[str, object], model_args: Mapping[str, object], location: str) -> DefaultCfg:
    """The DefaultCfg fields the saved cfg sets; a field zoo cannot hold is skipped with a warning."""
    cfg = DefaultCfg()
    fields = {k: v for k, v in raw.items() if k in _CFG_FIELDS and k not in _SOURCE_FIELDS}
    for key in ("first_conv", "classifier"):
        if isinstance(fields.get(key), (list, tuple)):
            fields[key] = next(iter(fields[key]), "")  # type: ignore[call-overload]  # checked just above
    in_chans = model_args.get("in_chans")
    # channel count and stats move together (DefaultCfg checks one mean/std per channel): set them as one
    group: dict[str, object] = {
        k: fields.pop(k) for k in ("input_size", "mean", "std", "test_input_size") if k in fields
    }
    skipped: list[str] = []
    try:
        cfg = cfg.evolve(group)
    except ZooError:
        skipped.extend(group)
    for key, value in fields.items():
        try:
            cfg = cfg.evolve({key: value})
        except ZooError:
            skipped.append(f"{key}={value!r}")
    if isinstance(in_chans, int) and in_chans > 0 and in_chans != cfg.input_size[0]:
        from zoo.services.builder import adapt_cfg

        cfg = adapt_cfg(cfg, num_classes=cfg.num_classes, in_chans=in_chans, features_only=False)
    if skipped:
        warnings.warn(
            f"{location}: pretrained_cfg value(s) zoo cannot represent were left at zoo's defaults: "
            f"{', '.join(skipped)}",
            stacklevel=4,
        )
    return cfg


def _label_names(value: object, location: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, dict):  # timm's form for class indices with gaps: {"index": name}
        try:
            by_index = {int(k): v for k, v in value.items()}
        except (TypeError, ValueError):
            by_index = {}
        if sorted(by_index) == list(range(len(by_index))):
            value = [by_index[i] for i in range(len(by_index))]
    if isinstance(value, list) and all(isinstance(n, str) for n in value):
        return tuple(value)
    warnings.warn(f"{location}: label_names is not a list of names, one per class; ignored", stacklevel=4)
    return ()


# -- building -----------------------------------------------------------------------------------


def open_saved(name: str, loader: WeightLoader | None) -> SavedModel | None:
    """The saved model a local-dir:/hf-hub: name points at (its hub files fetched through loader), else None.

    The zoo's own loader, the injected one when given: a fake or a mirror serves config.json as it serves weights.
    """
    if not is_saved_name(name):
        return None
    fetch = getattr(loader, "fetch_hub_file", None)
    if not callable(fetch):  # a loader written before fetch_hub_file joined the protocol: say what is missing
        raise FeatureNotAvailableError(
            f"{name!r} needs its config.json from the hub, and this ModelZoo's WeightLoader "
            f"({type(loader).__qualname__}) has no fetch_hub_file(hub_id, filename) -> Path"
        )
    return read_saved(name, fetch_hub_file=fetch)


def saved_spec(saved: SavedModel, get_spec: Callable[[str], ModelSpec]) -> ModelSpec:
    """The registered spec of the saved architecture; one the registry lacks is a SavedModelError."""
    try:
        return get_spec(saved.architecture)
    except (UnknownModelError, InvalidValueError) as e:
        raise SavedModelError(f"{saved.location}: architecture {saved.architecture!r} is not available: {e}") from None


def saved_model_args(saved: SavedModel, spec: ModelSpec) -> dict[str, object]:
    """The saved keywords the constructor takes; num_classes and in_chans come through the saved cfg."""
    from zoo.services.builder import constructor_params

    args = {k: v for k, v in saved.model_args.items() if k not in ("num_classes", "in_chans")}
    accepted = constructor_params(spec)
    bad = sorted(set(args) - set(accepted)) if accepted is not None else []
    if bad:
        raise InvalidArgumentError(
            f"{saved.location}: model_args {', '.join(map(repr, bad))} are not keywords of {spec.name} "
            f"(it takes: {', '.join(sorted(set(accepted or ()) - {'num_classes', 'in_chans'}))})"
        )
    return args


def rebuild_layout(
    saved: SavedModel,
    tensors: Mapping[str, torch.Tensor],
    *,
    get_spec: Callable[[str], ModelSpec],
    pruner: Pruner | None,
) -> nn.Module:
    """What create_model(saved name, pretrained=True) builds, its parameters left on the meta device.

    Built as a load is (the tensors stand in for the checkpoint), so no parameter memory or random
    init is spent; they are not assigned, only the layout is wanted.
    """
    from zoo.services.builder import Builder

    spec = saved_spec(saved, get_spec)
    request = BuildRequest(
        cfg=saved.cfg, pretrained=True, model_args=saved_model_args(saved, spec), prune_spec=saved.prune_spec
    )
    builder = Builder(weight_loader=_TensorsInHand(tensors), weight_applier=_layout_only, pruner=pruner)
    return builder.build(spec, request).model


class _TensorsInHand:
    """The WeightLoader of a rebuild: the tensors being saved stand in for the checkpoint."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        self._tensors = tensors

    def load_state_dict(self, cfg: DefaultCfg, *, checkpoint_path: str | None = None) -> dict[str, torch.Tensor]:
        return dict(self._tensors)  # read for the class count only: no copy needed

    def fetch_hub_file(self, hub_id: str, filename: str) -> Path:
        raise WeightsUnavailableError(f"{filename} of hub repo {hub_id!r}: a rebuild reads only the tensors in hand")


def _layout_only(
    model: nn.Module,
    state_dict: dict[str, torch.Tensor],
    spec: ModelSpec,
    cfg: DefaultCfg,
    request: BuildRequest,
    on_meta: bool,
    /,
) -> nn.Module:
    """The WeightApplier of a rebuild: the model's layout is wanted, not the tensors' values."""
    return model

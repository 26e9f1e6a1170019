"""Other spellings of a feature extractor's state_dict keys, renamed on load where the renaming is one-to-one.

An extractor's keys follow the reference library's (`stem_0.weight`, `blocks.0.0.conv.weight`, ...).
Earlier zoo releases spelled some differently (`stem.0.weight`, `blocks_0.0.conv.weight`,
`model.blocks.0.conv.weight`), and a classifier's checkpoint spells every key its own way. Each of
those names one of the extractor's parameters or buffers through its path in the classifier, so a
load_state_dict pre-hook renames such keys to the extractor's own, where exactly one key of the
extractor answers to the spelling and nothing else in the state_dict claims that key. Whatever it
cannot rename is left as given, and load_state_dict reports it as usual.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from torch import nn

__all__ = ["key_spellings", "rename_other_spellings"]


def key_spellings(path: str) -> Iterable[str]:
    """The spellings of the classifier key path that an extractor's state_dict may have used.

    The classifier's own ('blocks.0.0.bn1.weight'), the hook extractor's ('model.' + it) and those with
    the leading modules flattened into one ('blocks_0.0.bn1.weight', 'blocks_0_0.bn1.weight').
    """
    yield path
    yield "model." + path
    parts = path.split(".")
    for depth in range(2, len(parts)):
        yield "_".join(parts[:depth]) + "." + ".".join(parts[depth:])


def classifier_path(key: str, paths: Mapping[str, str]) -> str | None:
    """The classifier's path of an extractor's state_dict key, through the longest child path it starts with."""
    parts = key.split(".")
    for depth in range(len(parts) - 1, 0, -1):
        child = ".".join(parts[:depth])
        if child in paths:
            rest = ".".join(parts[depth:])
            return f"{paths[child]}.{rest}" if paths[child] else rest
    return None


def _aliases(own: Iterable[str], paths: Mapping[str, str]) -> dict[str, str]:
    """Other spelling -> own key, for the spellings exactly one own key answers to (and that are no own key)."""
    own_keys = set(own)
    claims: dict[str, set[str]] = {}
    for key in own_keys:
        path = classifier_path(key, paths)
        if path is None:
            continue
        for spelling in key_spellings(path):
            if spelling not in own_keys:
                claims.setdefault(spelling, set()).add(key)
    return {spelling: next(iter(keys)) for spelling, keys in claims.items() if len(keys) == 1}


def rename_other_spellings(
    module: nn.Module,
    state_dict: dict[str, object],
    prefix: str,
    local_metadata: object,
    strict: bool,
    missing_keys: list[str],
    unexpected_keys: list[str],
    error_msgs: list[str],
) -> None:
    """A load_state_dict pre-hook: rename the keys under prefix that spell one of the module's keys another way.

    load_state_dict hands its hooks its own copy of the caller's state_dict, so the caller's is unchanged.
    """
    paths: Mapping[str, str] = getattr(module, "_classifier_paths", {})
    own = set(module.state_dict(keep_vars=True))
    given = [k[len(prefix) :] for k in state_dict if k.startswith(prefix)]
    foreign = [k for k in given if k not in own]
    if not foreign or not paths:
        return
    aliases = _aliases(own, paths)
    renames = {k: aliases[k] for k in foreign if k in aliases}
    # one-to-one only: a key already given in its own spelling, or claimed by two spellings, is not renamed to
    targets = Counter(renames.values())
    present = set(given)
    for old, new in renames.items():
        if targets[new] == 1 and new not in present:
            state_dict[prefix + new] = state_dict.pop(prefix + old)

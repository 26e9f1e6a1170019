"""Prune specs as pure values: the `name:[d0, d1, ...]***name:[...]` channel layout format.

A PruneSpec maps state_dict entries (`layer1.0.conv1.weight`) to the shapes a pruned model gives
them. The text format is the interchange format of the published pruned checkpoints; `parse` and
`PruneSpec.to_text` are inverse to each other. Checks that need the model (unknown layers, widths
along a path) live in the Pruner service; this module checks what the text alone can tell.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

import attrs

from zoo.domain.checks import MAX_WIDTH
from zoo.domain.errors import PruneSpecError

__all__ = ["SEPARATOR", "MaskEntry", "PruneSpec", "parse_prune_spec"]

SEPARATOR = "***"
_NAME_RE = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")
_ENTRY_RE = re.compile(r"^\s*(?P<name>[^:\s]+)\s*:\s*\[(?P<dims>[^\]]*)\]\s*$")
_DIM_RE = re.compile(r"^[0-9]+$", re.ASCII)
# Residual-group records of the tool that made the published specs: `layer1_2_conv3_M.weight:[256, 19]`
# says the group ending at layer1.2.conv3 kept 19 of its 256 channels. They name no module.
_MASK_RE = re.compile(r"^(?P<layer>[A-Za-z0-9_]+)_M\.weight$")
# tensors of one module whose first dimension is that module's output width
_PER_CHANNEL = ("weight", "bias", "running_mean", "running_var")

Shape = tuple[int, ...]


@attrs.frozen
class MaskEntry:
    """A residual-group record: the layer (underscored path) and its widths before and after."""

    layer: str
    original: int
    kept: int


def _entries(inst: PruneSpec, a: attrs.Attribute[tuple[tuple[str, Shape], ...]], v: object) -> None:
    if not isinstance(v, tuple):
        raise PruneSpecError(f"PruneSpec.entries={v!r} is invalid: expected a tuple of (name, shape) pairs")
    if not v:
        raise PruneSpecError("PruneSpec.entries is empty: a spec names at least one tensor's shape")
    seen: set[str] = set()
    for item in v:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise PruneSpecError(f"prune spec entry {item!r} is invalid: expected a (name, shape) pair")
        name, shape = item
        if not _NAME_RE.match(name):
            raise PruneSpecError(
                f"prune spec entry name {name!r} is invalid: expected a dotted state_dict key such as 'conv1.weight'"
            )
        if name in seen:
            raise PruneSpecError(f"prune spec names {name!r} twice; each tensor may appear once")
        seen.add(name)
        ok = isinstance(shape, tuple) and all(type(d) is int and 1 <= d <= MAX_WIDTH for d in shape)
        if not ok:
            raise PruneSpecError(
                f"prune spec entry {name!r} has shape {_short(repr(shape))}: expected a tuple of ints >= 1 "
                f"(each at most {MAX_WIDTH})"
            )
        if _MASK_RE.match(name) and len(shape) != 2:
            raise PruneSpecError(f"prune spec entry {name!r} is a residual-group record: expected [original, kept]")
    _check_module_widths(v)


def _check_module_widths(entries: tuple[tuple[str, Shape], ...]) -> None:
    """A module's weight, bias and running statistics must agree on its output width."""
    widths: dict[str, tuple[str, int]] = {}
    for name, shape in entries:
        module, _, tensor = name.rpartition(".")
        if tensor not in _PER_CHANNEL or not shape or _MASK_RE.match(name):
            continue
        if tensor != "weight" and len(shape) != 1:
            raise PruneSpecError(f"prune spec entry {name!r} has shape {list(shape)}: a {tensor} has rank 1")
        if module in widths and widths[module][1] != shape[0]:
            other, width = widths[module]
            raise PruneSpecError(
                f"prune spec widths of layer {module!r} conflict: {other} has {width} channels, {name} has {shape[0]}"
            )
        widths.setdefault(module, (name, shape[0]))


def _to_entries(v: object) -> object:
    """A mapping or a list of pairs becomes a tuple of (name, shape tuple) pairs; the validator judges the rest."""
    items = list(v.items()) if isinstance(v, Mapping) else v
    if not isinstance(items, (list, tuple)):
        return v
    return tuple(
        (item[0], tuple(item[1]) if isinstance(item[1], list) else item[1])
        if isinstance(item, (tuple, list)) and len(item) == 2
        else item
        for item in items
    )


@attrs.frozen
class PruneSpec(Mapping[str, Shape]):
    """An immutable channel layout: state_dict key -> shape, in the order the text lists them.

    Reads as a Mapping (`spec["fc.weight"]`); `to_text()` writes the interchange format.
    """

    entries: tuple[tuple[str, Shape], ...] = attrs.field(converter=_to_entries, validator=_entries)
    _index: Mapping[str, Shape] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_index", dict(self.entries))

    @classmethod
    def parse(cls, text: str) -> PruneSpec:
        """Read the interchange format; malformed text raises PruneSpecError naming the entry."""
        return parse_prune_spec(text)

    def to_text(self) -> str:
        """The interchange format: `name:[d0, d1, ...]` entries joined by '***'."""
        return SEPARATOR.join(f"{name}:[{', '.join(map(str, shape))}]" for name, shape in self.entries)

    @property
    def masks(self) -> tuple[MaskEntry, ...]:
        """The residual-group records (`<layer>_M.weight` entries) the spec carries."""
        out = []
        for name, shape in self.entries:
            m = _MASK_RE.match(name)
            if m:
                out.append(MaskEntry(m.group("layer"), shape[0], shape[1]))
        return tuple(out)

    @property
    def tensors(self) -> tuple[tuple[str, Shape], ...]:
        """Every entry that names a tensor of the model (residual-group records left out)."""
        return tuple((n, s) for n, s in self.entries if not _MASK_RE.match(n))

    def __getitem__(self, key: str) -> Shape:
        return self._index[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: object) -> bool:
        return key in self._index


def _short(text: str, limit: int = 40) -> str:
    """text, or its start and end around the count of characters left out: a 5000-digit number stays readable."""
    return text if len(text) <= limit else f"{text[:16]}...({len(text) - 32} more)...{text[-16:]}"


def parse_prune_spec(text: str) -> PruneSpec:
    """Parse `name:[d0, d1, ...]***...` into a PruneSpec; malformed text raises PruneSpecError."""
    if not isinstance(text, str):
        raise PruneSpecError(f"prune spec {text!r} is invalid: expected the `name:[d0, d1, ...]***...` text")
    body = text.strip()
    if not body:
        raise PruneSpecError("prune spec is empty: expected `name:[d0, d1, ...]` entries joined by '***'")
    entries: list[tuple[str, Shape]] = []
    for i, raw in enumerate(body.split(SEPARATOR)):
        m = _ENTRY_RE.match(raw)
        if m is None:
            shown = raw if len(raw) <= 60 else raw[:57] + "..."
            raise PruneSpecError(
                f"prune spec entry {i} {shown!r} is malformed: expected `name:[d0, d1, ...]` "
                f"(entries joined by {SEPARATOR!r})"
            )
        dims_text = m.group("dims").strip()
        dims: list[int] = []
        for d in dims_text.split(",") if dims_text else []:
            d = d.strip()
            # the digits are counted before int() reads them: it refuses (ValueError) past 4300 of them
            if not _DIM_RE.match(d) or len(d.lstrip("0")) > len(str(MAX_WIDTH)) or int(d) > MAX_WIDTH:
                raise PruneSpecError(
                    f"prune spec entry {m.group('name')!r} has dimension {_short(d)!r} in [{_short(dims_text)}]: "
                    f"expected ints in [1, {MAX_WIDTH}]"
                )
            dims.append(int(d))
        entries.append((m.group("name"), tuple(dims)))
    return PruneSpec(tuple(entries))

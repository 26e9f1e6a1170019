"""Properties of the prune spec text format: writing then parsing is the identity, and bad text fails cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import zoo
from refdata import REFERENCE_DIR
from zoo.domain.errors import PruneSpecError
from zoo.domain.prune import SEPARATOR, PruneSpec, parse_prune_spec

_PART = st.from_regex(r"[A-Za-z0-9_]{1,8}", fullmatch=True)
_NAME = st.lists(_PART, min_size=1, max_size=4).map(".".join)
_SHAPE = st.lists(st.integers(1, 4096), min_size=0, max_size=5).map(tuple)


@st.composite
def specs(draw: st.DrawFn) -> PruneSpec:
    """Specs with unique names; tensors of one module agree on their first dimension as the validator requires."""
    names = draw(st.lists(_NAME, min_size=1, max_size=12, unique=True))
    entries = []
    for i, name in enumerate(names):
        # a distinct last part per entry keeps module widths independent of each other
        entries.append((f"{name}.t{i}", draw(_SHAPE)))
    return PruneSpec(tuple(entries))


@given(spec=specs())
def test_writing_then_parsing_gives_the_same_spec(spec: PruneSpec) -> None:
    text = spec.to_text()
    again = parse_prune_spec(text)
    assert again == spec
    assert again.to_text() == text
    assert hash(again) == hash(spec)
    assert dict(again) == dict(spec)


@given(spec=specs(), pad=st.sampled_from(["", " ", "  ", "\n"]))
def test_whitespace_around_entries_and_dims_is_ignored(spec: PruneSpec, pad: str) -> None:
    text = SEPARATOR.join(
        f"{pad}{name}{pad}:{pad}[{pad}{(',' + pad).join(map(str, shape))}{pad}]{pad}" for name, shape in spec.entries
    )
    assert parse_prune_spec(text) == spec


@given(text=st.text(max_size=80))
def test_any_text_parses_or_raises_prune_spec_error(text: str) -> None:
    try:
        spec = parse_prune_spec(text)
    except PruneSpecError as e:
        message = str(e)
        spec = None
    if spec is None:
        assert message  # refused, and says why
    else:
        assert parse_prune_spec(spec.to_text()) == spec


@given(spec=specs(), data=st.data())
def test_a_corrupted_entry_is_refused_naming_it(spec: PruneSpec, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(spec.entries) - 1), label="entry")
    name, shape = spec.entries[i]
    bad = data.draw(st.sampled_from([f"{name}[{len(shape)}]", f"{name}:[-1]", f"{name}:[1.5]", f"{name}:[0]"]))
    parts = [f"{n}:[{', '.join(map(str, s))}]" for n, s in spec.entries]
    parts[i] = bad
    with pytest.raises(PruneSpecError, match=name.split(".")[0]):
        parse_prune_spec(SEPARATOR.join(parts))


@pytest.mark.parametrize("path", sorted(REFERENCE_DIR.glob("pruned-*.txt")), ids=lambda p: p.stem)
def test_published_layouts_round_trip(path: Path) -> None:
    text = path.read_text().strip()
    spec = parse_prune_spec(text)
    assert spec.to_text() == text
    assert len(spec) == text.count(SEPARATOR) + 1


_GARBAGE = st.one_of(
    st.integers(),
    st.floats(),
    st.binary(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.text(max_size=40),
    st.just("no/such/dir/spec.txt"),
)


@given(value=_GARBAGE)
def test_create_model_refuses_a_garbage_prune_spec_with_prune_spec_error(value: object) -> None:
    with pytest.raises(PruneSpecError):
        zoo.create_model("resnet18", prune_spec=value)  # type: ignore[call-overload]  # garbage for a typed argument

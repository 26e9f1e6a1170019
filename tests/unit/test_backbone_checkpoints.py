"""Backbone checkpoints (issue 22): a features_only extractor loads the reference library's extractor state_dict,
and the one zoo saved before its keys followed the reference; dict outputs are keyed as the reference keys them.

The reference-spelled state_dicts are built from the reference key list (tests/reference) with the shapes of
the classifier's tensors, filled deterministically; the old spellings are the keys zoo's extractors had before:
ConvNeXt's stem kept whole (`stem.0.weight`), EfficientNet's stages flattened (`blocks_0.0.conv_dw.weight`),
Xception's hook extractor holding the whole model (`model.blocks.0.stack...`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import zoo
from refdata import reference
from zoo.domain.errors import InvalidFeatureRequestError, InvalidValueError
from zoo.services.features import FeatureExtractor

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 64


def classifier_key(ref_key: str, classifier_keys: set[str]) -> str:
    """The classifier's key for a reference extractor key: itself, or its first module's '_' as '.' (stem_0)."""
    if ref_key in classifier_keys:
        return ref_key
    head, _, rest = ref_key.partition(".")
    module, _, index = head.rpartition("_")
    key = f"{module}.{index}.{rest}"
    assert key in classifier_keys, ref_key
    return key


def filled(shape: torch.Size, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Deterministic values: small normals for weights, positive ones (a valid running_var) where needed."""
    if not dtype.is_floating_point:
        return torch.full(shape, seed % 7, dtype=dtype)
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * 0.05).abs() + 0.5


def reference_backbone_state(name: str) -> dict[str, torch.Tensor]:
    """What the reference library's features_only extractor of name saves, filled deterministically."""
    with torch.device("meta"):
        shapes = {k: (v.shape, v.dtype) for k, v in zoo.create_model(name).state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    for i, key in enumerate(reference(name)["features_state_dict_keys"]):
        shape, dtype = shapes[classifier_key(key, set(shapes))]
        out[key] = filled(shape, dtype, i)
    return out


def respelled(state: Mapping[str, torch.Tensor], spell: Callable[[str], str]) -> dict[str, torch.Tensor]:
    return {spell(k): v for k, v in state.items()}


def old_convnext(key: str) -> str:
    return key.replace("stem_", "stem.", 1) if key.startswith("stem_") else key


def old_effnet(key: str) -> str:
    return "blocks_" + key[len("blocks.") :] if key.startswith("blocks.") else key


def old_xception(key: str) -> str:
    head, _, rest = key.partition(".")
    module, _, index = head.rpartition("_")
    return f"model.{module}.{index}.{rest}"


def outputs(model: FeatureExtractor, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(x)
    return list(out.values()) if isinstance(out, dict) else out


@pytest.mark.parametrize(
    ("name", "old"),
    [("convnext_tiny", old_convnext), ("efficientnet_b0", old_effnet), ("xception41", old_xception)],
)
def test_reference_and_old_spellings_load_strictly_and_agree(name: str, old: Callable[[str], str]) -> None:
    ref = reference_backbone_state(name)
    old_state = respelled(ref, old)
    assert set(old_state) != set(ref)  # the old spelling differs for these names
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))

    torch.manual_seed(0)
    new = zoo.create_model(name, features_only=True).eval()
    assert sorted(new.state_dict()) == sorted(ref)
    new.load_state_dict(ref)  # strict
    torch.manual_seed(1)
    from_old = zoo.create_model(name, features_only=True).eval()
    given = dict(old_state)
    from_old.load_state_dict(old_state)  # strict: the old keys are renamed one-to-one
    assert old_state == given  # the caller's state_dict is left as it was

    assert all(torch.equal(new.state_dict()[k], v) for k, v in ref.items())
    assert all(torch.equal(from_old.state_dict()[k], v) for k, v in ref.items())
    for a, b in zip(outputs(new, x), outputs(from_old, x), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_unknown_or_ambiguous_keys_still_fail() -> None:
    ref = reference_backbone_state("convnext_tiny")
    model = zoo.create_model("convnext_tiny", features_only=True)
    unknown = {**ref, "stem_9.weight": ref["stem_0.weight"]}
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\).*stem_9\.weight"):
        model.load_state_dict(unknown)
    # both spellings of one key: neither claims the other's place, so the old one is unexpected
    both = {**ref, "stem.0.weight": ref["stem_0.weight"]}
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\).*stem\.0\.weight"):
        model.load_state_dict(both)
    # two old spellings of one key (the classifier's and an earlier extractor's), the new one missing
    twice = {k: v for k, v in ref.items() if k != "stem_0.bias"}
    twice |= {"stem.0.bias": ref["stem_0.bias"], "model.stem.0.bias": ref["stem_0.bias"]}
    with pytest.raises(RuntimeError, match=r"Missing key\(s\).*stem_0\.bias"):
        model.load_state_dict(twice)
    model.load_state_dict(unknown, strict=False)  # what is known loads; the unknown key is reported
    assert torch.equal(model.state_dict()["stem_0.weight"], ref["stem_0.weight"])


def test_the_classifier_spelling_loads_into_a_getter_or_hook_extractor() -> None:
    classifier = zoo.create_model("resnet18").eval()
    state = {k: v for k, v in classifier.state_dict().items() if not k.startswith("fc.")}
    for kind in ("hook", "getter"):
        torch.manual_seed(3)
        extractor = zoo.create_model("resnet18", features_only=True, feature_cls=kind).eval()
        assert all(k.startswith("model.") for k in extractor.state_dict())
        extractor.load_state_dict(state)
        assert all(torch.equal(extractor.state_dict()[f"model.{k}"], v) for k, v in state.items())


# -- dict outputs: tap indices, or out_map's names ---------------------------------------------


def test_dict_outputs_are_keyed_by_tap_index_or_out_map() -> None:
    x = torch.randn(1, 3, SIZE, SIZE)
    by_index = zoo.create_model("resnet18", features_only=True, feature_cls="dict", out_indices=(1, 3)).eval()
    named = zoo.create_model(
        "resnet18", features_only=True, feature_cls="dict", out_indices=(3, 1), out_map=("c4", "c2")
    ).eval()
    named.load_state_dict(by_index.state_dict())
    with torch.no_grad():
        a, b = by_index(x), named(x)
    assert isinstance(a, dict)
    assert isinstance(b, dict)
    assert list(a) == ["1", "3"]
    assert list(b) == ["c2", "c4"]  # out_map[i] names out_indices[i]; outputs in network order
    assert torch.equal(a["1"], b["c2"])
    assert torch.equal(a["3"], b["c4"])
    every = zoo.create_model("resnet18", features_only=True, feature_cls="dict", out_map=list("abcde"))
    assert list(every(x)) == list("abcde")


@pytest.mark.parametrize(
    ("out_map", "match"),
    [
        (("c2",), r"out_map=\('c2',\) is invalid \(1 names\).*2 unique non-empty strings.*\[1, 3\]"),
        (("c2", "c2"), r"\['c2'\] repeated"),
        (("c2", 3), r"\[3\] not non-empty strings"),
        (("c2", ""), r"\[''\] not non-empty strings"),
        ("c2c3", r"out_map='c2c3' is invalid"),
        (7, r"out_map=7 is invalid"),
    ],
)
def test_bad_out_map_is_refused_by_name(out_map: object, match: str) -> None:
    with pytest.raises(InvalidFeatureRequestError, match=match):
        zoo.create_model("resnet18", features_only=True, feature_cls="dict", out_indices=(1, 3), out_map=out_map)  # type: ignore[call-overload]  # what a caller could pass


def test_out_map_needs_a_dict_extractor() -> None:
    with pytest.raises(InvalidFeatureRequestError, match=r"out_map=\('a',\) names the outputs of feature_cls='dict'"):
        zoo.create_model("resnet18", features_only=True, out_indices=(1,), out_map=("a",))
    with pytest.raises(InvalidValueError, match="out_map need features_only=True"):
        zoo.create_model("resnet18", out_map=("a",))


# -- a downstream model: a tiny FPN-style segmenter over a reference backbone checkpoint --------


class TinySegmenter(nn.Module):
    """A 1x1 conv per tap to num_classes, upsampled to the finest tap and summed, then to the input size."""

    def __init__(self, backbone: FeatureExtractor, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleList(nn.Conv2d(c, num_classes, 1) for c in backbone.feature_info.channels())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        taps = list(feats.values()) if isinstance(feats, dict) else feats
        size = taps[0].shape[-2:]
        logits = sum(
            (F.interpolate(h(t), size=size, mode="bilinear") for h, t in zip(self.heads, taps, strict=True)),
            torch.zeros(()),
        )
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear")


@pytest.mark.parametrize("feature_cls", ["list", "dict"])
def test_segmenter_backbone_loads_a_reference_backbone_checkpoint(feature_cls: str) -> None:
    ref = reference_backbone_state("convnext_tiny")
    torch.manual_seed(0)
    heads = TinySegmenter(zoo.create_model("convnext_tiny", features_only=True), num_classes=3).heads.state_dict()
    checkpoint = {**{f"backbone.{k}": v for k, v in ref.items()}, **{f"heads.{k}": v for k, v in heads.items()}}

    seg = TinySegmenter(zoo.create_model("convnext_tiny", features_only=True, feature_cls=feature_cls), 3).eval()
    seg.load_state_dict(checkpoint)  # strict: the backbone's keys are the reference's
    old = {f"backbone.{old_convnext(k)}": v for k, v in ref.items()} | {f"heads.{k}": v for k, v in heads.items()}
    seg_old = TinySegmenter(zoo.create_model("convnext_tiny", features_only=True), 3).eval()
    seg_old.load_state_dict(old)  # a checkpoint saved with zoo's earlier keys, under a prefix
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = seg(x)
        again = seg_old(x)
    assert out.shape == (2, 3, SIZE, SIZE)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, again, rtol=0, atol=0)

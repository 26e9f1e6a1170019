"""Tier 1: every registered name, in every run, on the meta device, against tests/reference.

Each name is built once as create_model(name, features_only=True) builds it (the classifier, then its
default extractor; tests/meta_models.py), on meta: no memory and no init, about a tenth of a second. Its
state_dict layout, feature taps, widths, published cfgs and extractor keys are the reference's, its
constructor refuses bad keywords by name, and every out_indices combination of every extractor kind
gives the output shapes its taps promise (a forward on meta tensors computes shapes, nothing else).

A name without a reference facts file fails here (run tools/sync_reference.py). The real forward,
export, layout, fusion and sync batch norm properties run on drawn names (tests/tiers.py).
"""

from __future__ import annotations

import functools
import inspect
import itertools
import math
import random
from collections.abc import Sequence

import pytest
import torch

import zoo
from meta_models import MetaBuild, memoised, meta_build, on_meta
from modelcache import as_map, served
from refdata import reference, reference_path
from tiers import EVERY_NAME_CASES, families, run_seed
from zoo.domain.errors import InvalidArgumentError, InvalidFeatureRequestError, ZooError
from zoo.domain.values import FEATURE_CLASSES, BuildRequest, FeatureCfg
from zoo.services.builder import constructor_params
from zoo.services.features import FeatureFactory

pytestmark = [pytest.mark.every_name, pytest.mark.usefixtures("one_thread")]

FACTORY = FeatureFactory()
BATCH = 2
EXHAUSTIVE_MAX_TAPS = 6  # up to 6 taps every combination (at most 63); past it a cover of them (tap_subsets)
DRAWN_SUBSETS = 16  # past EXHAUSTIVE_MAX_TAPS: this many more combinations, drawn per run and name


@functools.lru_cache(maxsize=2)  # conftest.py runs one name's tests one after another
def build(name: str) -> MetaBuild:
    return meta_build(name)


def tap_dicts(model: object) -> list[dict[str, object]]:
    """feature_info in the reference files' form."""
    return [
        {"index": t.index, "module": t.module, "num_chs": t.num_chs, "reduction": t.reduction}
        for t in getattr(model, "feature_info")  # noqa: B009  # a zoo model or extractor
    ]


# -- the classifier --------------------------------------------------------------------------


def test_classifier_matches_reference(name: str) -> None:
    facts = reference(name)
    model = build(name).classifier
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == facts["state_dict"]
    assert model.num_features == facts["num_features"]
    assert model.num_classes == facts["num_classes"]
    assert tap_dicts(model) == facts["feature_info"]
    # the pre-logits width is what the reference's classifier reads (a head conv after pooling widens it); a
    # name published without a classifier (num_classes=0: DINOv2, SigLIP towers) gives its pooled features
    classifier = zoo.get_default_cfg(name).classifier
    weight = facts["state_dict"].get(f"{classifier}.weight")
    assert model.head_hidden_size == (facts["num_features"] if weight is None else weight[1])


def test_default_cfgs_match_reference(name: str) -> None:
    facts = reference(name)
    spec = zoo.api.default_zoo().get_spec(name)
    # an untagged cfg (no published weights: densenet264d, the timm-0.4.12 names) is filed under the bare name
    published = {f"{name}.{c.tag}" if c.tag else name: c.to_dict() for c in spec.default_cfgs}
    assert set(published) == set(facts["pretrained_cfgs"])
    for key, ref_cfg in facts["pretrained_cfgs"].items():
        mine = published[key]
        assert {k: mine[k] for k in ref_cfg} == ref_cfg, key


def test_constructor_refuses_bad_keywords_by_name(name: str) -> None:
    spec = zoo.api.default_zoo().get_spec(name)
    takes = constructor_params(spec)
    with pytest.raises(InvalidArgumentError, match="'no_such_keyword'") as refused:
        zoo.create_model(name, no_such_keyword=1)
    if takes is not None:
        assert set(spec.model_args) <= set(takes)  # the name's own keywords are its constructor's
        for keyword in set(takes) - {"num_classes", "in_chans"}:
            assert keyword in str(refused.value)  # the message lists what the constructor takes
    bad: dict[str, object] = {"num_classes": -1, "in_chans": 0}
    optional = {"drop_rate": 1.5, "drop_path_rate": -0.5, "global_pool": "no_such_pool", "output_stride": 7}
    bad.update({k: v for k, v in optional.items() if takes is None or k in takes})
    # the constructor itself (create_model checks num_classes and in_chans before it), on meta: nothing is allocated
    kwargs = zoo.api.default_zoo().builder.model_args(spec, BuildRequest(cfg=spec.get_cfg("")))
    for keyword, value in bad.items():
        with on_meta(), pytest.raises(ZooError, match=keyword):
            spec.constructor(**{**kwargs, keyword: value})


# -- the extractors --------------------------------------------------------------------------


def test_features_state_dict_keys_match_reference(name: str) -> None:
    facts = reference(name)
    if "features_state_dict_keys" not in facts:
        path = reference_path(name)
        assert path is not None
        pytest.skip(f"{name}'s facts ({path.parent.name}) list no features_state_dict_keys")
    assert sorted(build(name).extractor.state_dict()) == facts["features_state_dict_keys"]


def test_extractors_have_the_reference_taps(name: str) -> None:
    facts = reference(name)
    expected = [(t["index"], t["module"], t["num_chs"], t["reduction"]) for t in facts["feature_info"]]
    made = build(name)
    extractor = made.extractor  # as create_model(name, features_only=True) gives it
    assert extractor.default_cfg.num_classes == 0
    assert extractor.default_cfg.classifier == ""
    assert extractor.pretrained_cfg == extractor.default_cfg
    assert extractor.default_cfg.input_size == zoo.get_default_cfg(name).input_size
    cfg = zoo.api.default_zoo().get_spec(name).feature_cfg
    for feature_cls in FEATURE_CLASSES:
        if feature_cls not in served(made.classifier):
            # a token model's blocks give tokens, not maps: refused, pointing at the getter
            with pytest.raises(InvalidFeatureRequestError, match="getter"):
                FACTORY.wrap(made.classifier, cfg, feature_cls=feature_cls)
            continue
        kind = FACTORY.wrap(made.classifier, cfg, feature_cls=feature_cls)
        for e in (extractor, kind):
            info = e.feature_info
            assert [(t.index, t.module, t.num_chs, t.reduction) for t in info] == expected
            assert e.out_indices == tuple(range(len(expected)))
            assert info.channels() == [t[2] for t in expected]
            assert info.reduction() == [t[3] for t in expected]
            assert info.module_name() == [t[1] for t in expected]
            assert len(info) == len(expected)
            assert info[-1].module == expected[-1][1]


def tap_subsets(n: int, seed: object, name: str) -> list[tuple[int, ...]]:
    """The out_indices combinations checked for a model with n taps: every one up to EXHAUSTIVE_MAX_TAPS taps;
    past it every single tap, every prefix and suffix, every other tap, all of them, and DRAWN_SUBSETS more
    drawn from the run's seed and the name."""
    if n <= EXHAUSTIVE_MAX_TAPS:
        return [c for k in range(1, n + 1) for c in itertools.combinations(range(n), k)]
    cover: set[tuple[int, ...]] = {(i,) for i in range(n)}
    cover |= {tuple(range(i + 1)) for i in range(n)} | {tuple(range(i, n)) for i in range(n)}
    cover |= {tuple(range(0, n, 2)), tuple(range(1, n, 2))}
    rng = random.Random(f"{seed}-{name}")
    while len(cover) < 4 * n + 2 + DRAWN_SUBSETS:
        cover.add(tuple(sorted(rng.sample(range(n), rng.randint(1, n)))))
    return sorted(cover, key=lambda c: (len(c), c))


def test_output_shapes_of_every_out_indices_combination(name: str, request: pytest.FixtureRequest) -> None:
    made = build(name)
    model = made.classifier.eval()
    cfg = zoo.api.default_zoo().get_spec(name).feature_cfg
    channels, height, width = zoo.get_default_cfg(name).input_size
    x = torch.empty(BATCH, channels, height, width, device="meta")
    n = len(model.feature_info)
    with memoised(model), torch.no_grad():
        features = model.forward_features(x)
        assert as_map(model, features, height, width).shape[:2] == (BATCH, model.num_features)
        # without a classifier (num_classes=0) the head gives the pre-logits features
        assert model.forward_head(features).shape == (BATCH, model.num_classes or model.head_hidden_size)
        assert model.forward_head(features, pre_logits=True).shape == (BATCH, model.head_hidden_size)
        every = FACTORY.wrap(model, cfg).forward_taps(x)  # all taps, the family's default kind
        assert [t.shape[1] for t in every] == [tap.num_chs for tap in model.feature_info]
        for t, tap in zip(every, model.feature_info, strict=True):
            assert t.shape[0] == BATCH, tap
            expected = (math.ceil(height / tap.reduction), math.ceil(width / tap.reduction))
            assert all(abs(s - e) <= 1 for s, e in zip(t.shape[2:], expected, strict=True)), (tap, t.shape)
        for j, subset in enumerate(tap_subsets(n, run_seed(request.config), name)):
            # every other subset is written from the end, reversed: negative indices and order must not matter
            check_subset(made, cfg, x, every, subset if j % 2 else [i - n for i in reversed(subset)])


def check_subset(
    made: MetaBuild, cfg: FeatureCfg, x: torch.Tensor, every: Sequence[torch.Tensor], out_indices: Sequence[int]
) -> None:
    """Each extractor kind the model serves, for out_indices: the taps selected, in order, shaped as with all taps."""
    model = made.classifier
    n = len(every)
    selected = sorted(i % n for i in out_indices)
    for kind in served(model):
        extractor = FACTORY.wrap(model, cfg, out_indices=out_indices, feature_cls=kind)
        out = extractor(x)
        if isinstance(out, dict):
            assert list(out) == [str(i) for i in extractor.out_indices], kind
            tensors = list(out.values())
        else:
            tensors = out
        assert extractor.out_indices == tuple(selected), kind
        assert [tap.index for tap in extractor.feature_info] == selected, kind
        assert [t.shape for t in tensors] == [every[i].shape for i in selected], (kind, out_indices)


# -- coverage --------------------------------------------------------------------------------


def test_every_registered_name_has_every_tier_1_case(request: pytest.FixtureRequest) -> None:
    module = request.node.nodeid.split("::")[0]
    cases = {
        nodeid.split("::")[-1]: names
        for nodeid, names in request.config.stash[EVERY_NAME_CASES].items()
        if nodeid.split("::")[0] == module
    }
    checks = [f for f, fn in globals().items() if f.startswith("test_") and "name" in inspect.signature(fn).parameters]
    assert sorted(cases) == sorted(checks)  # every check here is parametrised by conftest.py, with every name
    registered = set(zoo.list_models()) | {n for names in families().values() for n in names}
    registered |= set(zoo.api.builtin_registry().list_models())  # a fresh registry of the built-in catalogue
    assert len(registered) >= 58
    for check, names in cases.items():
        missing = sorted(registered - set(names))
        assert not missing, f"{check} leaves out {missing}"
    # a name without reference facts fails its checks above; say which here too, all at once
    assert [n for n in sorted(registered) if reference_path(n) is None] == []

"""ZooModule: the surface every architecture exposes, as a base class a type checker can see."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar, Literal, get_type_hints, overload

import torch
from torch import nn

from zoo.archs.layers.classifier import ClassifierHead, check_head, make_fc
from zoo.archs.layers.pool import POOL_TYPES, GlobalPool
from zoo.archs.surface import OUTPUT_FORMATS, TapStep, run_intermediates, to_output_fmt
from zoo.domain.checks import MAX_WIDTH, check_bool, check_choice, check_int
from zoo.domain.grouping import GroupMatcher
from zoo.domain.values import BuildRecord, DefaultCfg, FeatureInfo


class ZooModule(nn.Module):
    """An image classifier with zoo's model surface; subclasses implement the methods below.

    The surface is written here once: forward_intermediates runs the family's tap steps (_tap_steps,
    _finish); get_classifier and reset_classifier serve the common head (global pooling, dropout, a
    linear classifier) of a family that names its classifier (classifier_name). A family whose head
    differs overrides reset_classifier.
    """

    # plain Python values TorchScript need not (and cannot) type: it skips these when scripting the model
    __jit_ignored_attributes__: ClassVar[list[str]] = ["feature_info", "default_cfg", "pretrained_cfg"]
    # the classifier's module path, as DefaultCfg.classifier names it: 'head.fc' is the fc of a ClassifierHead
    # named head; a top-level name ('fc', 'classifier') is a linear layer beside a GlobalPool named global_pool
    # (timm's layout for ResNet, DenseNet and EfficientNet). None: the subclass implements both methods itself.
    classifier_name: ClassVar[str | None] = None
    # the layouts forward_intermediates gives its taps in
    tap_formats: ClassVar[tuple[str, ...]] = OUTPUT_FORMATS
    # whether _finish (the final norm) fits every tap, as a transformer's token norm does, not only the last
    # one: forward_intermediates' norm then applies it to each tap, and stop_early's final features too
    finish_fits_every_tap: ClassVar[bool] = False

    if TYPE_CHECKING:
        # Declared for type checkers only: torch.jit.script reads class-level annotations as
        # TorchScript types and cannot read postponed ones (or FeatureInfo / DefaultCfg at all).
        num_classes: int
        num_features: int
        # the width entering the classifier: num_features times the pooling's feature multiplier
        head_hidden_size: int
        feature_info: list[FeatureInfo]
        grad_checkpointing: bool
        # set by the Builder: the cfg describing the model as built
        default_cfg: DefaultCfg
        pretrained_cfg: DefaultCfg
        # set by the Builder: the architecture and keywords that rebuild the model (save_pretrained writes them)
        build_record: BuildRecord

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "forward" in vars(cls):
            _annotate_concretely(vars(cls)["forward"])

    def init_all_weights(self) -> None:
        """Initialise every parameter and persistent buffer afresh, once each, as construction does.

        A family opts in to one-pass creation by defining this in its class (a definition inherited
        from a parent class does not count, so a subclass that adds layers or init of its own keeps
        the safe path until it defines its own): the Builder then builds the model's parameters on
        the meta device, skipping torch's default init, materialises them and calls this. The
        result must be distributed as construction's (torch's defaults, then the family's own init).
        A family without it is built the ordinary way, torch's defaults first. (Not `init_weights`:
        timm's ViT has a method of that name that initialises only some tensors, and a port keeping
        it must not opt in by accident.) A family writes its rules once, in a function both paths call:
        this method with archs.layers.init_each_module(..., fresh=True), its constructor with fresh=False
        (over torch's defaults, drawn as each layer was built).
        """
        raise NotImplementedError(f"{type(self).__name__} is initialised by its constructor only")

    @torch.jit.unused
    def image_size_built_for(self) -> tuple[int, int] | None:
        """The (height, width) of input the model was built for, when its constructor took an image size
        (ViT's img_size); None for a model that takes any size. The Builder makes the cfg's input_size follow
        it, so preprocessing resolved from the model (zoo.data.resolve_data_config) feeds that size."""
        return None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The unpooled final feature map (or token sequence)."""
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool and classify forward_features' output; pre_logits stops before the classifier."""
        raise NotImplementedError

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with a fresh one (0 removes it); optionally change the pooling.

        This is the common head's (see classifier_name): every argument is checked before anything
        changes, and the head is replaced, never changed in place (feature extractors share modules).
        """
        owner, _, leaf = self._classifier_path().rpartition(".")
        num_classes = check_int("num_classes", num_classes, ge=0, le=MAX_WIDTH)
        current = self.get_submodule(f"{owner}.global_pool" if owner else "global_pool")
        assert isinstance(current, GlobalPool)
        if global_pool is not None:
            check_choice("global_pool", global_pool, POOL_TYPES)
        pool_type = current.pool_type if global_pool is None else global_pool
        check_head(num_classes, pool_type)
        if owner:
            old = self.get_submodule(owner)
            assert isinstance(old, ClassifierHead)
            head = ClassifierHead(self.num_features, num_classes, pool_type, old.drop_rate)
            self.add_module(owner, head)
            self.head_hidden_size = head.num_features
        else:
            pool = GlobalPool(pool_type)
            self.add_module("global_pool", pool)
            self.head_hidden_size = self.num_features * pool.feat_mult()
            self.add_module(leaf, make_fc(self.head_hidden_size, num_classes))
        self.num_classes = num_classes

    def get_classifier(self) -> nn.Module:
        """The classifier module (Identity when num_classes is 0)."""
        return self.get_submodule(self._classifier_path())

    def _classifier_path(self) -> str:
        if self.classifier_name is None:
            raise NotImplementedError(f"{type(self).__name__} names no classifier_name: it implements its own head")
        return self.classifier_name

    @overload
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        *,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: Literal[False] = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]: ...

    @overload
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        *,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: Literal[True],
    ) -> list[torch.Tensor]: ...

    @overload
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        *,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor]] | list[torch.Tensor]: ...

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        *,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor]] | list[torch.Tensor]:
        """(final features, tap outputs at indices), or the tap outputs alone with intermediates_only.

        indices: an int n (the last n taps), a sequence of feature_info positions (negatives count
        from the end) or None (every tap); a bad one raises InvalidFeatureRequestError. norm applies
        the model's final norm (_finish) to the tap outputs it fits (the last; every one with
        finish_fits_every_tap); stop_early stops after the last requested tap, whose output is then
        the final features (normalised where the final norm fits it); output_fmt is one of tap_formats.
        The one route of every family: each says how to run itself tap by tap (_tap_steps, _finish).
        """
        return run_intermediates(
            x,
            self._tap_steps(),
            self.feature_info,
            indices,
            norm=norm,
            stop_early=stop_early,
            output_fmt=output_fmt,
            intermediates_only=intermediates_only,
            finish=self._finish,
            formats=self.tap_formats,
            format_tap=self._format_tap,
            finish_every_tap=self.finish_fits_every_tap,
        )

    def _tap_steps(self) -> list[TapStep]:
        """The network as a chain of steps, one per feature_info tap: step i maps the running state after
        tap i - 1 (the input, for the first) to (the state after tap i, tap i's output)."""
        raise NotImplementedError(f"{type(self).__name__} does not run tap by tap: it has no forward_intermediates")

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        """What forward_features applies after the last tap's step (nothing by default)."""
        return x

    def _format_tap(self, tap: torch.Tensor, output_fmt: str) -> torch.Tensor:
        """A tap's output in output_fmt (one of tap_formats); by default a channels-first map, permuted for 'NHWC'."""
        return to_output_fmt(tap, output_fmt)

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages after the last tap in indices (and the head), returning the kept tap indices.

        Implementations replace submodules, never change them in place: feature extractors prune a
        shallow copy of the model that shares its submodules with the caller's model.
        """
        raise NotImplementedError

    def group_matcher(self, coarse: bool = False) -> GroupMatcher:
        """The rules grouping the parameters from input to output (zoo.domain.grouping): the stem, then each
        block (each stage with coarse), the head last; zoo.optim's layer-wise lr decay scales by group.

        Each family declares its own, the reference library's rules for the same names, so a model name is
        grouped (and its learning rates decayed) as there.
        """
        raise NotImplementedError(f"{type(self).__name__} declares no parameter groups")

    def no_weight_decay(self) -> frozenset[str]:
        """Parameter names (fnmatch patterns) trained without weight decay whatever their shape; none by default.

        zoo.optim.param_groups adds them to the 1-D parameters and biases it always exempts.
        """
        return frozenset()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute activations in backward, stage by stage, instead of keeping them (less memory).

        This default sets the grad_checkpointing flag that a family's forward_features reads; the
        class docstring says where it applies. A scripted or fx-traced copy runs without it.
        """
        self.grad_checkpointing = check_bool("enable", enable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # typed wrapper: nn.Module.__call__ (hooks included) returns Any
        out: torch.Tensor = super().__call__(x)
        return out


def _annotate_concretely(forward: Callable[..., object]) -> None:
    """forward's annotations as the objects they name, not the strings postponed evaluation leaves.

    torch.fx writes the root forward's annotations into the code it generates; a string ('torch.Tensor')
    becomes a global TorchScript cannot resolve, so a traced model could not then be scripted.
    """
    forward.__annotations__ = get_type_hints(forward)


_annotate_concretely(ZooModule.forward)

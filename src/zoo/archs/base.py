"""ZooModule: the surface every architecture exposes, as a base class a type checker can see."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, overload

import torch
from torch import nn

from zoo.domain.checks import check_bool
from zoo.domain.values import BuildRecord, DefaultCfg, FeatureInfo


class ZooModule(nn.Module):
    """An image classifier with zoo's model surface; subclasses implement the methods below."""

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

    def init_all_weights(self) -> None:
        """Initialise every parameter and persistent buffer afresh, once each, as construction does.

        A family opts in to one-pass creation by defining this in its class (a definition inherited
        from a parent class does not count, so a subclass that adds layers or init of its own keeps
        the safe path until it defines its own): the Builder then builds the model's parameters on
        the meta device, skipping torch's default init, materialises them and calls this. The
        result must be distributed as construction's (torch's defaults, then the family's own init).
        A family without it is built the ordinary way, torch's defaults first. (Not `init_weights`:
        timm's ViT has a method of that name that initialises only some tensors, and a port keeping
        it must not opt in by accident.) archs.layers.init_each_module is the usual body.
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
        """Replace the classifier with a fresh one (0 removes it); optionally change the pooling."""
        raise NotImplementedError

    def get_classifier(self) -> nn.Module:
        """The classifier module (Identity when num_classes is 0)."""
        raise NotImplementedError

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
        the model's final norm to the tap outputs that come after it (a no-op for a model without
        one); stop_early stops after the last requested tap, whose output is then the final
        features; output_fmt is 'NCHW' or 'NHWC' for the tap outputs.
        """
        return self._forward_intermediates(
            x,
            indices,
            norm=norm,
            stop_early=stop_early,
            output_fmt=output_fmt,
            intermediates_only=intermediates_only,
        )

    def _forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None,
        *,
        norm: bool,
        stop_early: bool,
        output_fmt: str,
        intermediates_only: bool,
    ) -> tuple[torch.Tensor, list[torch.Tensor]] | list[torch.Tensor]:
        """What each family implements for forward_intermediates (which types its result by intermediates_only)."""
        raise NotImplementedError

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages after the last tap in indices (and the head), returning the kept tap indices.

        Implementations replace submodules, never change them in place: feature extractors prune a
        shallow copy of the model that shares its submodules with the caller's model.
        """
        raise NotImplementedError

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

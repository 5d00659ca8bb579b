"""The building blocks of the MobileNet family, each with the typed config it alone reads.

A block's ``Config`` (``DepthwiseSeparable.Config``, ``MobileBlock.Config``, ``FusedMobileBlock.Config``) holds the
concrete integers of one block, resolved by ``specs.resolve`` from a table row: ``Config.from_row(row, slot)``
picks what the block reads from the widths the resolver's rules computed (``specs.Slot``), and
``config.build(layer_options)`` makes the module. A new block is a module class plus its nested ``Config``; the
model and the resolver need no change. ``mid_chs=None`` means "no expansion layer", ``se_chs=0`` "no squeeze-excite".
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from .layers import DEFAULT_LAYER_OPTIONS, ConvNormAct, DropPath, LayerOptions, SqueezeExcite

if TYPE_CHECKING:
    from .specs import Row, Slot


@dataclass(frozen=True, kw_only=True)
class BlockConfig:
    """What every block config has: its input and output channels and its stride.

    Subclasses add the fields their block reads, name the block in ``block`` and implement ``from_row``; the
    fields are exactly the block's keyword arguments, so ``build`` needs no per-block code.
    """

    block: ClassVar[type[nn.Module]]
    in_chs: int
    out_chs: int
    stride: int = 1

    @classmethod
    def from_row(cls, row: Row, slot: Slot) -> BlockConfig:
        """This block's config for one repeat of a table row, from the widths the resolver gives it."""
        raise NotImplementedError

    def kwargs(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def build(self, opts: LayerOptions = DEFAULT_LAYER_OPTIONS) -> nn.Module:
        return self.block(**self.kwargs(), opts=opts)

    def summary(self) -> dict[str, Any]:
        """The columns of ``ModelConfig.table()``: kernel, expanded width, squeeze width, activation."""
        get = self.kwargs().get
        return dict(k=get("kernel_size", ""), mid=get("mid_chs") or "", se=get("se_chs") or "", act=get("act", ""))


def _se(channels: int, se_chs: int, act: str, gate: str) -> nn.Module:
    return SqueezeExcite(channels, se_chs, act, gate) if se_chs > 0 else nn.Identity()


def _drop_path(p: float) -> nn.Module:
    return DropPath(p) if p > 0.0 else nn.Identity()


class DepthwiseSeparable(nn.Module):
    """MobileNetV1 block: depthwise k×k conv → BN → act → pointwise 1×1 conv → BN → act.

    Howard et al., 2017, "MobileNets", Fig. 3. No residual, as in the paper (so no stochastic depth either).
    """

    @dataclass(frozen=True, kw_only=True)
    class Config(BlockConfig):
        kernel_size: int = 3
        dilation: int = 1
        se_chs: int = 0
        act: str = "relu"
        se_act: str = "relu"
        se_gate: str = "sigmoid"

        @classmethod
        def from_row(cls, row: Row, slot: Slot) -> DepthwiseSeparable.Config:
            if slot.mid_chs is not None:
                raise ValueError(f"DepthwiseSeparable has no expansion layer, but a row has expand={row.expand}; "
                                 "use MobileBlock for an expansion ratio != 1")
            return cls(in_chs=slot.in_chs, out_chs=slot.out_chs, stride=slot.stride, kernel_size=row.kernel,
                       se_chs=slot.se_chs, act=slot.act, se_act=slot.se_act, se_gate=slot.se_gate)

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        se_chs: int = 0,
        act: str = "relu",
        se_act: str = "relu",
        se_gate: str = "sigmoid",
        opts: LayerOptions = DEFAULT_LAYER_OPTIONS,
    ) -> None:
        super().__init__()
        self.conv_dw = ConvNormAct(in_chs, in_chs, kernel_size, stride, in_chs, dilation, act, opts)
        self.se = _se(in_chs, se_chs, se_act, se_gate)
        self.conv_pw = ConvNormAct(in_chs, out_chs, 1, act=act, opts=opts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_pw(self.se(self.conv_dw(x)))


@dataclass(frozen=True, kw_only=True)
class _ExpandingConfig(BlockConfig):
    """Fields shared by the two residual blocks (MBConv and Fused-MBConv)."""

    kernel_size: int = 3
    dilation: int = 1
    mid_chs: int | None = None
    se_chs: int = 0
    act: str = "relu"
    se_act: str = "relu"
    se_gate: str = "sigmoid"
    drop_path: float = 0.0

    @classmethod
    def from_row(cls, row: Row, slot: Slot) -> _ExpandingConfig:
        return cls(in_chs=slot.in_chs, out_chs=slot.out_chs, stride=slot.stride, kernel_size=row.kernel,
                   mid_chs=slot.mid_chs, se_chs=slot.se_chs, act=slot.act, se_act=slot.se_act,
                   se_gate=slot.se_gate, drop_path=slot.drop_path)


class MobileBlock(nn.Module):
    """Inverted residual with linear bottleneck (MobileNetV2), a.k.a. MBConv (MobileNetV3, EfficientNet).

    1×1 expansion → depthwise k×k → squeeze-excite → linear 1×1 projection, plus the input when the shape is
    unchanged, with stochastic depth on the residual branch. Sandler et al., 2018, Table 1 and Fig. 3b;
    Howard et al., 2019, Fig. 4; Tan & Le, 2019.
    """

    @dataclass(frozen=True, kw_only=True)
    class Config(_ExpandingConfig):
        pass

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        mid_chs: int | None = None,
        se_chs: int = 0,
        act: str = "relu6",
        se_act: str = "relu",
        se_gate: str = "sigmoid",
        drop_path: float = 0.0,
        opts: LayerOptions = DEFAULT_LAYER_OPTIONS,
    ) -> None:
        super().__init__()
        mid = in_chs if mid_chs is None else mid_chs
        self.has_skip = stride == 1 and in_chs == out_chs
        self.conv_pw = nn.Identity() if mid_chs is None else ConvNormAct(in_chs, mid, 1, act=act, opts=opts)
        self.conv_dw = ConvNormAct(mid, mid, kernel_size, stride, mid, dilation, act, opts)
        self.se = _se(mid, se_chs, se_act, se_gate)
        self.conv_pwl = ConvNormAct(mid, out_chs, 1, act="identity", opts=opts)
        self.drop_path = _drop_path(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_pwl(self.se(self.conv_dw(self.conv_pw(x))))
        if self.has_skip:
            out = self.drop_path(out) + x
        return out


class FusedMobileBlock(nn.Module):
    """Fused-MBConv (EfficientNetV2): the expansion and depthwise convs fused into one regular k×k conv.

    k×k expansion conv → squeeze-excite → linear 1×1 projection. With expansion ratio 1 (``mid_chs=None``)
    the k×k conv maps straight to ``out_chs`` and there is no projection. Tan & Le, 2021, Fig. 2 and Table 4.
    """

    @dataclass(frozen=True, kw_only=True)
    class Config(_ExpandingConfig):
        pass

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        mid_chs: int | None = None,
        se_chs: int = 0,
        act: str = "silu",
        se_act: str = "silu",
        se_gate: str = "sigmoid",
        drop_path: float = 0.0,
        opts: LayerOptions = DEFAULT_LAYER_OPTIONS,
    ) -> None:
        super().__init__()
        mid = out_chs if mid_chs is None else mid_chs
        self.has_skip = stride == 1 and in_chs == out_chs
        self.conv_exp = ConvNormAct(in_chs, mid, kernel_size, stride, 1, dilation, act, opts)
        self.se = _se(mid, se_chs, se_act, se_gate)
        self.conv_pwl = nn.Identity() if mid_chs is None else ConvNormAct(mid, out_chs, 1, act="identity", opts=opts)
        self.drop_path = _drop_path(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_pwl(self.se(self.conv_exp(x)))
        if self.has_skip:
            out = self.drop_path(out) + x
        return out


DepthwiseSeparable.Config.block = DepthwiseSeparable
MobileBlock.Config.block = MobileBlock
FusedMobileBlock.Config.block = FusedMobileBlock

__all__ = ["BlockConfig", "DepthwiseSeparable", "FusedMobileBlock", "MobileBlock"]

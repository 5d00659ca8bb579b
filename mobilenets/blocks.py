"""The three building blocks of the MobileNet family.

All three take the same keyword arguments, resolved to concrete integers by ``specs.resolve``:
``mid_chs=None`` means "no expansion layer" and ``se_chs=0`` means "no squeeze-excite".
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import DEFAULT_LAYER_OPTIONS, ConvNormAct, DropPath, LayerOptions, SqueezeExcite


def _se(channels: int, se_chs: int, act: str, gate: str) -> nn.Module:
    return SqueezeExcite(channels, se_chs, act, gate) if se_chs > 0 else nn.Identity()


def _drop_path(p: float) -> nn.Module:
    return DropPath(p) if p > 0.0 else nn.Identity()


class DepthwiseSeparable(nn.Module):
    """MobileNetV1 block: depthwise k×k conv → BN → act → pointwise 1×1 conv → BN → act.

    Howard et al., 2017, "MobileNets", Fig. 3. No residual, as in the paper.
    """

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
        act: str = "relu",
        se_act: str = "relu",
        se_gate: str = "sigmoid",
        drop_path: float = 0.0,
        opts: LayerOptions = DEFAULT_LAYER_OPTIONS,
    ) -> None:
        super().__init__()
        if mid_chs is not None:
            raise ValueError("DepthwiseSeparable has no expansion layer; use MobileBlock for an expansion ratio != 1")
        self.conv_dw = ConvNormAct(in_chs, in_chs, kernel_size, stride, in_chs, dilation, act, opts)
        self.se = _se(in_chs, se_chs, se_act, se_gate)
        self.conv_pw = ConvNormAct(in_chs, out_chs, 1, act=act, opts=opts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_pw(self.se(self.conv_dw(x)))


class MobileBlock(nn.Module):
    """Inverted residual with linear bottleneck (MobileNetV2), a.k.a. MBConv (MobileNetV3, EfficientNet).

    1×1 expansion → depthwise k×k → squeeze-excite → linear 1×1 projection, plus the input when the shape is
    unchanged, with stochastic depth on the residual branch. Sandler et al., 2018, Table 1 and Fig. 3b;
    Howard et al., 2019, Fig. 4; Tan & Le, 2019.
    """

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


BLOCKS: dict[str, type[nn.Module]] = {
    "DepthwiseSeparable": DepthwiseSeparable,
    "MobileBlock": MobileBlock,
    "FusedMobileBlock": FusedMobileBlock,
}

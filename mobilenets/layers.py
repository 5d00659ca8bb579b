"""Layers shared by every block: channel rounding, activations, conv + norm + act, squeeze-excite, stochastic depth.

Each layer receives concrete integers; nothing here knows about width or depth multipliers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Padding = Literal["symmetric", "same"]
Downsample = Literal["stride", "avg", "blur"]
DOWNSAMPLES = ("stride", "avg", "blur")
ACTIVATIONS = ("relu", "relu6", "hard_swish", "silu", "sigmoid", "hard_sigmoid", "gelu", "identity")


def adjust_channels(channels: float, divisor: int = 8, minimum: int | None = None, round_limit: float = 0.9) -> int:
    """Round ``channels`` to the nearest multiple of ``divisor``, never below ``minimum`` (default ``divisor``).

    If rounding down would lose more than ``1 - round_limit`` of the channels (10% by default), one more
    ``divisor`` is added. This is the rule of the MobileNetV2 paper's reference code (Sandler et al., 2018),
    used by every later network in the family; ``round_limit=0`` turns the guard off (timm's EfficientNetV2-B*).
    """
    if divisor < 1:
        raise ValueError(f"divisor must be a positive integer, got {divisor}")
    minimum = divisor if minimum is None else minimum
    rounded = max(minimum, int(channels + divisor / 2) // divisor * divisor)
    if rounded < round_limit * channels:
        rounded += divisor
    return int(rounded)


class h_sigmoid(nn.Module):  # noqa: N801 - the name used by the MobileNetV3 paper and its readers
    """Hard sigmoid ``relu6(x + 3) / 6`` (Howard et al., 2019, "Searching for MobileNetV3", Sec. 5.2)."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.hardsigmoid(x, inplace=self.inplace)


class h_swish(nn.Module):  # noqa: N801
    """Hard swish ``x * relu6(x + 3) / 6`` (Howard et al., 2019, Sec. 5.2)."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.hardswish(x, inplace=self.inplace)


def make_activation(name: str) -> nn.Module:
    """Build an activation module from its name (one of ``ACTIVATIONS``)."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    if name == "hard_swish":
        return h_swish(inplace=True)
    if name == "silu":
        return nn.SiLU(inplace=True)
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "hard_sigmoid":
        return h_sigmoid(inplace=True)
    if name == "gelu":  # exact (erf) GELU, as MobileNetV4-Hybrid-L uses (Qin et al., 2024)
        return nn.GELU()
    if name == "identity":
        return nn.Identity()
    raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")


@dataclass(frozen=True)
class LayerOptions:
    """How convolutions are padded and how BatchNorm is configured; differs between reference implementations.

    ``padding="same"`` is TensorFlow's SAME padding (asymmetric for even totals, computed from the input size);
    ``"symmetric"`` pads ``dilation * (kernel - 1) // 2`` on every side (torchvision, timm's PyTorch-trained models).

    ``downsample`` is how a strided ``ConvNormAct`` reduces the resolution: ``"stride"`` in the convolution
    itself; ``"avg"`` / ``"blur"`` run the convolution at stride 1 and downsample after the activation with a
    2x2 average pool or a fixed 3x3 binomial blur (``BlurPool``), the anti-aliasing of Zhang, 2019, "Making
    Convolutional Networks Shift-Invariant Again" (timm's ``aa_layer="avg"`` / ``"blurpc"``).
    """

    padding: Padding = "symmetric"
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    downsample: Downsample = "stride"


DEFAULT_LAYER_OPTIONS = LayerOptions()


class PadSame(nn.Module):
    """TensorFlow SAME padding for a strided convolution: pad so that ``out = ceil(in / stride)``.

    The total padding of a side of length ``n`` is ``max((ceil(n / s) - 1) * s + e - n, 0)`` with the effective
    kernel ``e = (k - 1) * d + 1``, which equals ``e - s + (-n mod s)``; when ``e >= s`` (every conv with a kernel
    of 3 or more at stride 2) that is never negative, so the amounts are plain integer arithmetic on ``x.shape``
    with no comparison. ``torch.fx``, ``torch.export`` (symbolic sizes), TorchScript and the ONNX exporters record
    that arithmetic instead of freezing the amounts of the example input, so an exported model pads right at every
    input size.
    """

    def __init__(self, kernel_size: int, stride: int, dilation: int = 1) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation
        self.effective = (kernel_size - 1) * dilation + 1

    def _total(self, size: int) -> int:
        total = self.effective - self.stride + (self.stride - size % self.stride) % self.stride
        if self.effective < self.stride:  # a kernel smaller than its stride: no model here has one (static branch)
            total = max(total, 0)
        return total

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad_h, pad_w = self._total(x.shape[-2]), self._total(x.shape[-1])
        return F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, dilation={self.dilation}"


def conv2d(
    in_chs: int,
    out_chs: int,
    kernel_size: int,
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
    bias: bool = False,
    padding: Padding = "symmetric",
) -> tuple[nn.Module, nn.Conv2d]:
    """A convolution and the padding module in front of it (``nn.Identity`` when the conv pads by itself).

    SAME padding equals symmetric padding whenever the stride is 1 or the kernel is 1x1, so only strided
    convolutions with ``padding="same"`` get an explicit, input-size-dependent ``PadSame``.
    """
    if padding not in ("symmetric", "same"):
        raise ValueError(f"unknown padding {padding!r}; expected 'symmetric' or 'same'")
    dynamic = padding == "same" and stride > 1 and kernel_size > 1
    pad = PadSame(kernel_size, stride, dilation) if dynamic else nn.Identity()
    static = 0 if dynamic else dilation * (kernel_size - 1) // 2
    conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, static, dilation, groups, bias=bias)
    return pad, conv


class BlurPool(nn.Module):
    """Blur, then subsample by 2: the fixed depthwise 3x3 binomial filter ``[1, 2, 1]^T [1, 2, 1] / 16`` at stride 2
    with one pixel of zero padding (Zhang, 2019, "Making Convolutional Networks Shift-Invariant Again"; timm's
    ``BlurPool2d(pad_mode="constant")``, ``aa_layer="blurpc"``).

    The binomial filter is two 2x2 box filters in a row, so it is computed as two average pools (the first pads with
    zeros and counts them): no weights and no buffer, so nothing to learn, store, convert or fill after a model built
    on the meta device is loaded with ``assign=True`` (a buffer would stay on the meta device there).
    """

    def __init__(self, channels: int, stride: int = 2) -> None:
        super().__init__()
        if stride != 2:
            raise ValueError(f"BlurPool downsamples by 2, got stride {stride}")
        self.channels, self.stride = channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(x, 2, stride=1, padding=1, count_include_pad=True)
        return F.avg_pool2d(x, 2, stride=2)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, stride={self.stride}"


def make_downsample(kind: str, channels: int, stride: int) -> nn.Module:
    """The layer after a strided conv that runs at stride 1 (``LayerOptions.downsample``); ``nn.Identity`` if none."""
    if kind not in DOWNSAMPLES:
        raise ValueError(f"unknown downsample {kind!r}; expected one of {', '.join(DOWNSAMPLES)}")
    if kind == "stride" or stride == 1:
        return nn.Identity()
    if kind == "avg":
        return nn.AvgPool2d(stride)
    return BlurPool(channels, stride)


class ConvNormAct(nn.Sequential):
    """Convolution → BatchNorm → activation, the unit every MobileNet layer is made of.

    Children are named ``pad`` (no parameters), ``conv``, ``bn``, ``act`` and ``aa`` (``nn.Identity`` unless a
    strided layer downsamples after the activation, ``LayerOptions.downsample``; no persistent state), so state-dict
    keys read ``<layer>.conv.weight`` and ``<layer>.bn.running_var``.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        act: str = "relu",
        opts: LayerOptions = DEFAULT_LAYER_OPTIONS,
    ) -> None:
        aa = make_downsample(opts.downsample, out_chs, stride)
        conv_stride = stride if isinstance(aa, nn.Identity) else 1
        pad, conv = conv2d(in_chs, out_chs, kernel_size, conv_stride, dilation, groups, bias=False,
                           padding=opts.padding)
        super().__init__()
        self.pad = pad
        self.conv = conv
        self.bn = nn.BatchNorm2d(out_chs, eps=opts.bn_eps, momentum=opts.bn_momentum)
        self.act = make_activation(act)
        self.aa = aa


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al., 2018): pool → reduce → act → expand → gate → rescale the input.

    ``reduced_chs`` is given, not derived: each network has its own rule for it (see ``specs.se_width``). The
    squeeze is ``adaptive_avg_pool2d``, which exports to ONNX as ``GlobalAveragePool`` (as torchvision's SE does)
    rather than ``ReduceMean``: ONNX Runtime keeps the former in its blocked NCHWc layout (EfficientNet-B0: 16 layout
    reorders fewer).
    """

    def __init__(self, channels: int, reduced_chs: int, act: str = "relu", gate: str = "sigmoid") -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced_chs, 1, bias=True)
        self.act = make_activation(act)
        self.conv_expand = nn.Conv2d(reduced_chs, channels, 1, bias=True)
        self.gate = make_activation(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = F.adaptive_avg_pool2d(x, 1)
        scale = self.conv_expand(self.act(self.conv_reduce(scale)))
        return x * self.gate(scale)


class DropPath(nn.Module):
    """Stochastic depth (Huang et al., 2016): drop the residual branch per sample during training.

    Survivors are scaled by ``1 / (1 - p)`` so the expectation is unchanged; identity in eval mode.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p:.4f}"


__all__ = [
    "ACTIVATIONS",
    "DOWNSAMPLES",
    "BlurPool",
    "ConvNormAct",
    "DropPath",
    "LayerOptions",
    "PadSame",
    "SqueezeExcite",
    "adjust_channels",
    "conv2d",
    "h_sigmoid",
    "h_swish",
    "make_activation",
    "make_downsample",
]

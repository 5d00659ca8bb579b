"""The building blocks of the MobileNet family, each with the typed config it alone reads.

A block's ``Config`` (``DepthwiseSeparable.Config``, ``MobileBlock.Config``, ``FusedMobileBlock.Config``) holds the
concrete integers of one block, resolved by ``specs.resolve`` from a table row: ``Config.from_row(row, slot)``
picks what the block reads from the widths the resolver's rules computed (``specs.Slot``), and
``config.build(layer_options)`` makes the module. A new block is a module class plus its nested ``Config``; the
model and the resolver need no change. ``mid_chs=None`` means "no expansion layer", ``se_chs=0`` "no squeeze-excite".
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
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
    # Fields added after checkpoints recorded this block, with the value those checkpoints were built with: the
    # architecture fingerprint leaves them out at that value, so older files keep theirs.
    unrecorded_defaults: ClassVar[dict[str, Any]] = {}
    in_chs: int
    out_chs: int
    stride: int = 1

    @classmethod
    def from_row(cls, row: Row, slot: Slot) -> BlockConfig:
        """This block's config for one repeat of a table row, from the widths the resolver gives it."""
        raise NotImplementedError

    def kwargs(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def recorded_kwargs(self) -> dict[str, Any]:
        """``kwargs()`` less the ``unrecorded_defaults`` at their value: what the architecture fingerprint hashes."""
        return {k: v for k, v in self.kwargs().items()
                if k not in self.unrecorded_defaults or self.unrecorded_defaults[k] != v}

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
                       dilation=slot.dilation, se_chs=slot.se_chs, act=slot.act, se_act=slot.se_act,
                       se_gate=slot.se_gate)

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
                   dilation=slot.dilation, mid_chs=slot.mid_chs, se_chs=slot.se_chs, act=slot.act,
                   se_act=slot.se_act, se_gate=slot.se_gate, drop_path=slot.drop_path)


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


class ConvBN(ConvNormAct):
    """A plain k×k convolution → BatchNorm → activation used as a block (MobileNetV4's "Conv" rows).

    Qin et al., 2024, Tables 1-2 ("Conv2D" rows of MNv4-Conv-S). It has no residual; its keys are those of
    ``ConvNormAct`` (``conv``, ``bn``).
    """

    @dataclass(frozen=True, kw_only=True)
    class Config(BlockConfig):
        unrecorded_defaults: ClassVar[dict[str, Any]] = {"dilation": 1}
        kernel_size: int = 3
        dilation: int = 1
        act: str = "relu"

        @classmethod
        def from_row(cls, row: Row, slot: Slot) -> ConvBN.Config:
            if slot.mid_chs is not None:
                raise ValueError(f"ConvBN has no expansion layer, but a row has expand={row.expand}; use 1")
            return cls(in_chs=slot.in_chs, out_chs=slot.out_chs, stride=slot.stride, kernel_size=row.kernel,
                       dilation=slot.dilation, act=slot.act)


class LayerScale(nn.Module):
    """Learned per-channel scale of a residual branch (Touvron et al., 2021, "Going deeper with image
    transformers"); MobileNetV4's hybrid models use it in every block (Qin et al., 2024, Sec. 5)."""

    def __init__(self, channels: int, init: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((channels,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1)


def _layer_scale(channels: int, init: float) -> nn.Module:
    return LayerScale(channels, init) if init > 0.0 else nn.Identity()


def _extra(row: Row, name: str, default: Any = None) -> Any:
    """A block-specific column of a table row (``Row.extra``); ``default=None`` makes it required."""
    found = dict(row.extra)
    if name in found:
        return found[name]
    if default is None:
        raise ValueError(f"a {row.block.__name__} row needs the column {name!r} in Row.extra, got {row.extra}")
    return default


class UniversalInvertedBottleneck(nn.Module):
    """MobileNetV4's Universal Inverted Bottleneck (UIB): optional depthwise → 1×1 expansion → optional depthwise
    → linear 1×1 projection, with layer scale and the residual when the shape is unchanged.

    Qin et al., 2024, "MobileNetV4", Sec. 3.2 and Fig. 4: both depthwise convs present is "ExtraDW", only the
    middle one the inverted bottleneck (IB), only the start one "ConvNext-like", neither the FFN. A kernel size of
    0 removes that depthwise conv (``nn.Identity``). The stride sits on the middle depthwise conv when there is one,
    else on the start one. The start depthwise conv has no activation (as in TF's and timm's implementations).
    """

    @dataclass(frozen=True, kw_only=True)
    class Config(BlockConfig):
        unrecorded_defaults: ClassVar[dict[str, Any]] = {"dilation": 1}
        start_kernel: int = 0  # start depthwise kernel, 0: none
        kernel_size: int = 3  # middle depthwise kernel, 0: none
        dilation: int = 1  # of both depthwise convs (as timm's UniversalInvertedResidual)
        mid_chs: int = 0
        act: str = "relu"
        layer_scale: float = 0.0  # initial value of the layer scale, 0: none
        drop_path: float = 0.0

        @classmethod
        def from_row(cls, row: Row, slot: Slot) -> UniversalInvertedBottleneck.Config:
            return cls(in_chs=slot.in_chs, out_chs=slot.out_chs, stride=slot.stride,
                       start_kernel=_extra(row, "start_kernel"), kernel_size=row.kernel, dilation=slot.dilation,
                       mid_chs=slot.in_chs if slot.mid_chs is None else slot.mid_chs, act=slot.act,
                       layer_scale=_extra(row, "layer_scale", 0.0), drop_path=slot.drop_path)

        def summary(self) -> dict[str, Any]:
            """Kernel column: start and middle depthwise kernels, ``-`` where absent (``5,-``: ConvNext-like)."""
            k = ",".join(str(k) if k else "-" for k in (self.start_kernel, self.kernel_size))
            return dict(k=k, mid=self.mid_chs, se="", act=self.act)

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        start_kernel: int = 0,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        mid_chs: int = 0,
        act: str = "relu",
        layer_scale: float = 0.0,
        drop_path: float = 0.0,
        opts: LayerOptions = DEFAULT_LAYER_OPTIONS,
    ) -> None:
        super().__init__()
        if stride > 1 and not (start_kernel or kernel_size):
            raise ValueError("a strided UniversalInvertedBottleneck needs a start or middle depthwise conv")
        mid = mid_chs or in_chs
        start_stride = 1 if kernel_size else stride
        self.has_skip = stride == 1 and in_chs == out_chs
        self.dw_start = ConvNormAct(in_chs, in_chs, start_kernel, start_stride, in_chs, dilation, "identity", opts) \
            if start_kernel else nn.Identity()
        self.pw_exp = ConvNormAct(in_chs, mid, 1, act=act, opts=opts)
        self.dw_mid = ConvNormAct(mid, mid, kernel_size, stride, mid, dilation, act, opts) if kernel_size \
            else nn.Identity()
        self.pw_proj = ConvNormAct(mid, out_chs, 1, act="identity", opts=opts)
        self.layer_scale = _layer_scale(out_chs, layer_scale)
        self.drop_path = _drop_path(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer_scale(self.pw_proj(self.dw_mid(self.pw_exp(self.dw_start(x)))))
        if self.has_skip:
            out = self.drop_path(out) + x
        return out


class MobileMultiQueryAttention(nn.Module):
    """MobileNetV4's Mobile MQA block: BatchNorm → multi-query attention → layer scale, plus the input.

    Qin et al., 2024, Sec. 3.3 and Eq. 1: ``num_heads`` query heads share one key and one value head (multi-query
    attention, Shazeer, 2019); with ``kv_stride`` 2 the keys and values are first downsampled by a stride-2
    depthwise conv + BatchNorm (the paper's "spatial reduction", written ``v2`` in timm's block strings). Every
    projection is a 1×1 conv without bias. The heads' outputs are concatenated head by head before the output
    projection.
    """

    @dataclass(frozen=True, kw_only=True)
    class Config(BlockConfig):
        unrecorded_defaults: ClassVar[dict[str, Any]] = {"dilation": 1}
        num_heads: int = 4
        key_dim: int = 64  # also the value width, as in the paper
        kv_stride: int = 1
        kernel_size: int = 3  # of the key/value downsampling depthwise conv
        dilation: int = 1  # of that conv (as timm's MultiQueryAttention2d)
        layer_scale: float = 0.0
        drop_path: float = 0.0

        @classmethod
        def from_row(cls, row: Row, slot: Slot) -> MobileMultiQueryAttention.Config:
            if slot.stride != 1 or slot.mid_chs is not None:
                raise ValueError("a MobileMultiQueryAttention row needs stride 1 and expand 1, "
                                 f"got stride {row.stride} and expand {row.expand}")
            return cls(in_chs=slot.in_chs, out_chs=slot.out_chs, num_heads=_extra(row, "num_heads"),
                       key_dim=_extra(row, "key_dim"), kv_stride=_extra(row, "kv_stride", 1), kernel_size=row.kernel,
                       dilation=slot.dilation, layer_scale=_extra(row, "layer_scale", 0.0), drop_path=slot.drop_path)

        def summary(self) -> dict[str, Any]:
            return dict(k=self.kernel_size, mid=self.num_heads * self.key_dim, se="", act=f"{self.num_heads} heads")

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        num_heads: int = 4,
        key_dim: int = 64,
        kv_stride: int = 1,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        layer_scale: float = 0.0,
        drop_path: float = 0.0,
        opts: LayerOptions = DEFAULT_LAYER_OPTIONS,
    ) -> None:
        super().__init__()
        if stride != 1:
            raise ValueError(f"MobileMultiQueryAttention keeps the resolution; got stride {stride}")
        self.num_heads, self.key_dim = num_heads, key_dim
        self.scale = key_dim ** -0.5
        self.has_skip = in_chs == out_chs
        self.norm = nn.BatchNorm2d(in_chs, eps=opts.bn_eps, momentum=opts.bn_momentum)

        kv_opts = replace(opts, downsample="stride")  # keys/values stride in their conv (timm: no aa there)

        def down() -> nn.Module:
            return ConvNormAct(in_chs, in_chs, kernel_size, kv_stride, in_chs, dilation, "identity", kv_opts) \
                if kv_stride > 1 else nn.Identity()

        self.query_proj = nn.Conv2d(in_chs, num_heads * key_dim, 1, bias=False)
        self.key_down = down()
        self.key_proj = nn.Conv2d(in_chs, key_dim, 1, bias=False)
        self.value_down = down()
        self.value_proj = nn.Conv2d(in_chs, key_dim, 1, bias=False)
        self.out_proj = nn.Conv2d(num_heads * key_dim, out_chs, 1, bias=False)
        self.layer_scale = _layer_scale(out_chs, layer_scale)
        self.drop_path = _drop_path(drop_path)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Multi-query attention of a normalised ``(N, C, H, W)`` map; returns ``(N, out_chs, H, W)``."""
        n, _, h, w = x.shape
        q = self.query_proj(x).flatten(2).unflatten(1, (self.num_heads, self.key_dim)).transpose(-1, -2)
        k = self.key_proj(self.key_down(x)).flatten(2).unsqueeze(1)  # (N, 1, key_dim, M), shared by every head
        v = self.value_proj(self.value_down(x)).flatten(2).unsqueeze(1).transpose(-1, -2)  # (N, 1, M, key_dim)
        attn = ((q * self.scale) @ k).softmax(dim=-1)  # (N, heads, H*W, M)
        out = (attn @ v).permute(0, 1, 3, 2).reshape(n, self.num_heads * self.key_dim, h, w)
        return self.out_proj(out)

    def matmul_macs(self, x: torch.Tensor) -> int:
        """Multiply-accumulates of the two attention products for input ``x`` (the 1x1 convs count themselves)."""
        h, w = x.shape[-2:]
        down = self.key_down.conv.stride[0] if isinstance(self.key_down, ConvNormAct) else 1
        keys = -(-h // down) * -(-w // down)  # (odd kernel, half padding): ceil(size / stride) positions
        return 2 * x.shape[0] * self.num_heads * h * w * keys * self.key_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer_scale(self.attention(self.norm(x)))
        if self.has_skip:
            out = self.drop_path(out) + x
        return out


DepthwiseSeparable.Config.block = DepthwiseSeparable
MobileBlock.Config.block = MobileBlock
FusedMobileBlock.Config.block = FusedMobileBlock
ConvBN.Config.block = ConvBN
UniversalInvertedBottleneck.Config.block = UniversalInvertedBottleneck
MobileMultiQueryAttention.Config.block = MobileMultiQueryAttention

__all__ = ["BlockConfig", "ConvBN", "DepthwiseSeparable", "FusedMobileBlock", "LayerScale", "MobileBlock",
           "MobileMultiQueryAttention", "UniversalInvertedBottleneck"]

"""The papers' tables, the options that differ between reference implementations, and the resolver's rules.

A table holds the paper's numbers only, grouped into the stages the paper (and TF's and timm's builders) use.
``resolve(arch, options)`` applies width, depth, divisor and the per-reference rounding rules (small, named, pure
functions below) and returns a ``ModelConfig`` of concrete integers, which ``model.MobileNet`` builds without
further arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from torch import nn

from .blocks import (
    BlockConfig,
    ConvBN,
    DepthwiseSeparable,
    FusedMobileBlock,
    MobileBlock,
    MobileMultiQueryAttention,
    UniversalInvertedBottleneck,
)
from .layers import ACTIVATIONS, DOWNSAMPLES, LayerOptions, adjust_channels

# ----------------------------------------------------------------------------------------------------------------
# Table rows and stages


@dataclass(frozen=True)
class Row:
    """One row of a paper's table: ``repeats`` blocks, the first with ``stride``, the rest with stride 1.

    ``block`` is the block class (it names its ``Config``, which reads the row). ``expand`` is the expansion ratio
    t (MobileNetV3's tables give an absolute "exp size"; we write it as ``exp_size / input_channels`` so one rule
    serves every family). ``se`` is the squeeze-excite ratio (0: none). ``extra`` holds columns only one block
    reads, as ``(name, value)`` pairs (e.g. a second kernel size); the standard blocks have none.
    """

    block: type[nn.Module]
    kernel: int
    stride: int
    expand: float
    out: int
    repeats: int
    se: float
    act: str
    extra: tuple[tuple[str, Any], ...] = ()

    @property
    def config(self) -> type[BlockConfig]:
        """The typed config class of this row's block."""
        return self.block.Config


Stage = tuple[Row, ...]


@dataclass(frozen=True)
class Architecture:
    """A family's table, stage by stage, plus its stem and head, as printed in the paper."""

    name: str
    paper: str
    stem: int  # output channels of the 3x3 stride-2 stem conv
    stages: tuple[Stage, ...]  # as the paper groups its rows, which TF's and timm's stage indices follow
    head: int  # output channels of the 1x1 conv before pooling
    head_hidden: int = 0  # width of the fully connected layer between pooling and classifier (MobileNetV3), 0: none
    head_norm: bool = False  # BatchNorm after that layer, which then has no bias (MobileNetV4)
    stem_act: str = "relu"
    head_act: str = "relu"
    se_act: str | None = None  # activation inside squeeze-excite; None: the block's own
    se_gate: str = "sigmoid"

    @property
    def rows(self) -> tuple[Row, ...]:
        """Every row of the table in order (what the per-row options ``repeats`` and ``kernel_sizes`` index)."""
        return tuple(row for stage in self.stages for row in stage)


def _stage(block: type[nn.Module], act: str, *rows: tuple) -> Stage:
    """One stage from ``(kernel, stride, expand, out, repeats, se)`` tuples, or with a per-row ``act``."""
    return tuple(Row(block, *r) if len(r) == 7 else Row(block, *r, act) for r in rows)


_DS, _MB, _FMB = DepthwiseSeparable, MobileBlock, FusedMobileBlock
_RE, _HS = "relu", "hard_swish"

# MobileNetV1: Howard et al., 2017, "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
# Applications", Table 1. One row per depthwise-separable layer, one stage per output resolution's width. The
# paper prints stride 2 for the last depthwise conv but keeps a 7x7 output; every implementation (and the paper's
# own FLOP count) uses stride 1.
MOBILENET_V1 = Architecture(
    name="MobileNetV1",
    paper="Howard et al., 2017, arXiv:1704.04861, Table 1",
    stem=32,
    stages=(
        # kernel stride expand out repeats se
        _stage(_DS, _RE, (3, 1, 1, 64, 1, 0)),
        _stage(_DS, _RE, (3, 2, 1, 128, 1, 0), (3, 1, 1, 128, 1, 0)),
        _stage(_DS, _RE, (3, 2, 1, 256, 1, 0), (3, 1, 1, 256, 1, 0)),
        _stage(_DS, _RE, (3, 2, 1, 512, 1, 0), (3, 1, 1, 512, 5, 0)),
        _stage(_DS, _RE, (3, 2, 1, 1024, 1, 0), (3, 1, 1, 1024, 1, 0)),
    ),
    head=1024,
    stem_act=_RE,
    head_act=_RE,
)

# MobileNetV2: Sandler et al., 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks", Table 2. One stage
# per row.
MOBILENET_V2 = Architecture(
    name="MobileNetV2",
    paper="Sandler et al., 2018, arXiv:1801.04381, Table 2",
    stem=32,
    stages=(
        # kernel stride t  c  n  se
        _stage(_MB, "relu6", (3, 1, 1, 16, 1, 0)),
        _stage(_MB, "relu6", (3, 2, 6, 24, 2, 0)),
        _stage(_MB, "relu6", (3, 2, 6, 32, 3, 0)),
        _stage(_MB, "relu6", (3, 2, 6, 64, 4, 0)),
        _stage(_MB, "relu6", (3, 1, 6, 96, 3, 0)),
        _stage(_MB, "relu6", (3, 2, 6, 160, 3, 0)),
        _stage(_MB, "relu6", (3, 1, 6, 320, 1, 0)),
    ),
    head=1280,
    stem_act="relu6",
    head_act="relu6",
)

# MobileNetV3-Large: Howard et al., 2019, "Searching for MobileNetV3", Table 1. One row per bneck, one stage per
# output width (as TF's and timm's builders group them); expand = exp size / input channels.
MOBILENET_V3_LARGE = Architecture(
    name="MobileNetV3-Large",
    paper="Howard et al., 2019, arXiv:1905.02244, Table 1",
    stem=16,
    stages=(
        # kernel stride expand out repeats se act
        _stage(_MB, _RE, (3, 1, 16 / 16, 16, 1, 0, _RE)),
        _stage(_MB, _RE, (3, 2, 64 / 16, 24, 1, 0, _RE),
                         (3, 1, 72 / 24, 24, 1, 0, _RE)),
        _stage(_MB, _RE, (5, 2, 72 / 24, 40, 1, 0.25, _RE),
                         (5, 1, 120 / 40, 40, 1, 0.25, _RE),
                         (5, 1, 120 / 40, 40, 1, 0.25, _RE)),
        _stage(_MB, _RE, (3, 2, 240 / 40, 80, 1, 0, _HS),
                         (3, 1, 200 / 80, 80, 1, 0, _HS),
                         (3, 1, 184 / 80, 80, 1, 0, _HS),
                         (3, 1, 184 / 80, 80, 1, 0, _HS)),
        _stage(_MB, _RE, (3, 1, 480 / 80, 112, 1, 0.25, _HS),
                         (3, 1, 672 / 112, 112, 1, 0.25, _HS)),
        _stage(_MB, _RE, (5, 2, 672 / 112, 160, 1, 0.25, _HS),
                         (5, 1, 960 / 160, 160, 1, 0.25, _HS),
                         (5, 1, 960 / 160, 160, 1, 0.25, _HS)),
    ),
    head=960,
    head_hidden=1280,
    stem_act=_HS,
    head_act=_HS,
    se_act=_RE,
    se_gate="hard_sigmoid",
)

# MobileNetV3-Small: Howard et al., 2019, Table 2.
MOBILENET_V3_SMALL = Architecture(
    name="MobileNetV3-Small",
    paper="Howard et al., 2019, arXiv:1905.02244, Table 2",
    stem=16,
    stages=(
        # kernel stride expand out repeats se act
        _stage(_MB, _RE, (3, 2, 16 / 16, 16, 1, 0.25, _RE)),
        _stage(_MB, _RE, (3, 2, 72 / 16, 24, 1, 0, _RE),
                         (3, 1, 88 / 24, 24, 1, 0, _RE)),
        _stage(_MB, _RE, (5, 2, 96 / 24, 40, 1, 0.25, _HS),
                         (5, 1, 240 / 40, 40, 1, 0.25, _HS),
                         (5, 1, 240 / 40, 40, 1, 0.25, _HS)),
        _stage(_MB, _RE, (5, 1, 120 / 40, 48, 1, 0.25, _HS),
                         (5, 1, 144 / 48, 48, 1, 0.25, _HS)),
        _stage(_MB, _RE, (5, 2, 288 / 48, 96, 1, 0.25, _HS),
                         (5, 1, 576 / 96, 96, 1, 0.25, _HS),
                         (5, 1, 576 / 96, 96, 1, 0.25, _HS)),
    ),
    head=576,
    head_hidden=1024,
    stem_act=_HS,
    head_act=_HS,
    se_act=_RE,
    se_gate="hard_sigmoid",
)

# EfficientNet-B0: Tan & Le, 2019, "EfficientNet: Rethinking Model Scaling for CNNs", Table 1, one stage per row.
# B1-B8 scale it (Sec. 3.3); EfficientNet-Lite drops SE and swish and fixes stem and head (TF's efficientnet/lite).
EFFICIENTNET = Architecture(
    name="EfficientNet",
    paper="Tan & Le, 2019, arXiv:1905.11946, Table 1",
    stem=32,
    stages=(
        # kernel stride expand out repeats se
        _stage(_MB, "silu", (3, 1, 1, 16, 1, 0.25)),
        _stage(_MB, "silu", (3, 2, 6, 24, 2, 0.25)),
        _stage(_MB, "silu", (5, 2, 6, 40, 2, 0.25)),
        _stage(_MB, "silu", (3, 2, 6, 80, 3, 0.25)),
        _stage(_MB, "silu", (5, 1, 6, 112, 3, 0.25)),
        _stage(_MB, "silu", (5, 2, 6, 192, 4, 0.25)),
        _stage(_MB, "silu", (3, 1, 6, 320, 1, 0.25)),
    ),
    head=1280,
    stem_act="silu",
    head_act="silu",
)


def _efficientnet_v2(name: str, paper: str, stem: int, rows: tuple[tuple, ...]) -> Architecture:
    """EfficientNetV2: one stage per row, as the paper's table and the reference code have it."""
    return Architecture(
        name=name,
        paper=paper,
        stem=stem,
        stages=tuple(_stage(r[0], "silu", r[1:]) for r in rows),
        head=1280,
        stem_act="silu",
        head_act="silu",
    )


# EfficientNetV2: Tan & Le, 2021, "EfficientNetV2: Smaller Models and Faster Training". S is the paper's
# Table 4; M, L, XL and the B0 base come from the authors' reference code (automl/efficientnetv2/effnetv2_configs.py).
_V2_PAPER = "Tan & Le, 2021, arXiv:2104.00298"
EFFICIENTNET_V2_S = _efficientnet_v2("EfficientNetV2-S", f"{_V2_PAPER}, Table 4", 24, (
    # block kernel stride expand out repeats se
    (_FMB, 3, 1, 1, 24, 2, 0),
    (_FMB, 3, 2, 4, 48, 4, 0),
    (_FMB, 3, 2, 4, 64, 4, 0),
    (_MB, 3, 2, 4, 128, 6, 0.25),
    (_MB, 3, 1, 6, 160, 9, 0.25),
    (_MB, 3, 2, 6, 256, 15, 0.25),
))
EFFICIENTNET_V2_M = _efficientnet_v2("EfficientNetV2-M", f"{_V2_PAPER}, reference code", 24, (
    (_FMB, 3, 1, 1, 24, 3, 0),
    (_FMB, 3, 2, 4, 48, 5, 0),
    (_FMB, 3, 2, 4, 80, 5, 0),
    (_MB, 3, 2, 4, 160, 7, 0.25),
    (_MB, 3, 1, 6, 176, 14, 0.25),
    (_MB, 3, 2, 6, 304, 18, 0.25),
    (_MB, 3, 1, 6, 512, 5, 0.25),
))
EFFICIENTNET_V2_L = _efficientnet_v2("EfficientNetV2-L", f"{_V2_PAPER}, reference code", 32, (
    (_FMB, 3, 1, 1, 32, 4, 0),
    (_FMB, 3, 2, 4, 64, 7, 0),
    (_FMB, 3, 2, 4, 96, 7, 0),
    (_MB, 3, 2, 4, 192, 10, 0.25),
    (_MB, 3, 1, 6, 224, 19, 0.25),
    (_MB, 3, 2, 6, 384, 25, 0.25),
    (_MB, 3, 1, 6, 640, 7, 0.25),
))
EFFICIENTNET_V2_XL = _efficientnet_v2("EfficientNetV2-XL", f"{_V2_PAPER}, reference code", 32, (
    (_FMB, 3, 1, 1, 32, 4, 0),
    (_FMB, 3, 2, 4, 64, 8, 0),
    (_FMB, 3, 2, 4, 96, 8, 0),
    (_MB, 3, 2, 4, 192, 16, 0.25),
    (_MB, 3, 1, 6, 256, 24, 0.25),
    (_MB, 3, 2, 6, 512, 32, 0.25),
    (_MB, 3, 1, 6, 640, 8, 0.25),
))
EFFICIENTNET_V2_BASE = _efficientnet_v2("EfficientNetV2-B0", f"{_V2_PAPER}, reference code", 32, (
    (_FMB, 3, 1, 1, 16, 1, 0),
    (_FMB, 3, 2, 4, 32, 2, 0),
    (_FMB, 3, 2, 4, 48, 2, 0),
    (_MB, 3, 2, 4, 96, 3, 0.25),
    (_MB, 3, 1, 6, 112, 5, 0.25),
    (_MB, 3, 2, 6, 192, 8, 0.25),
))


# MobileNetV4: Qin et al., 2024, "MobileNetV4: Universal Models for the Mobile Ecosystem", the appendix's
# architecture tables of MNv4-Conv-S/M/L and MNv4-Hybrid-M/L. Stages as TF's and timm's builders group them (timm's
# ``blocks.<i>``); the 1x1 conv to 960 that ends each table is our head conv, and the 1x1 conv to 1280 after
# pooling (with BatchNorm, no bias) our ``pre_logits``. UIB rows give the start and middle depthwise kernels (0:
# none): ExtraDW has both, IB only the middle one, ConvNext-like only the start one, FFN neither. The hybrid models
# add Mobile MQA blocks and layer scale (initialised at 1e-5) on every UIB and MQA block.
_V4_PAPER = "Qin et al., 2024, arXiv:2404.10518, appendix tables"


def _v4(act: str, layer_scale: float = 0.0) -> tuple[Any, Any, Any, Any]:
    """Row makers for one MobileNetV4 table: Conv, FusedIB, UIB and Mobile MQA rows with its activation."""
    ls = (("layer_scale", layer_scale),) if layer_scale else ()

    def conv(kernel: int, stride: int, out: int) -> Row:
        return Row(ConvBN, kernel, stride, 1, out, 1, 0, act)

    def fused(kernel: int, stride: int, expand: float, out: int) -> Row:
        return Row(FusedMobileBlock, kernel, stride, expand, out, 1, 0, act)

    def uib(start: int, mid: int, stride: int, expand: float, out: int, repeats: int = 1) -> Row:
        return Row(UniversalInvertedBottleneck, mid, stride, expand, out, repeats, 0, act,
                   (("start_kernel", start),) + ls)

    def mqa(heads: int, key_dim: int, kv_stride: int, out: int) -> Row:
        return Row(MobileMultiQueryAttention, 3, 1, 1, out, 1, 0, act,
                   (("num_heads", heads), ("key_dim", key_dim), ("kv_stride", kv_stride)) + ls)

    return conv, fused, uib, mqa


_conv, _fused, _uib, _ = _v4(_RE)
MOBILENET_V4_CONV_SMALL = Architecture(
    name="MobileNetV4-Conv-S",
    paper=f"{_V4_PAPER} (MNv4-Conv-S)",
    stem=32,
    stages=(
        # Conv: kernel stride out
        (_conv(3, 2, 32), _conv(1, 1, 32)),
        (_conv(3, 2, 96), _conv(1, 1, 64)),
        # UIB: start_dw mid_dw stride expand out [repeats]
        (_uib(5, 5, 2, 3, 96), _uib(0, 3, 1, 2, 96, 4), _uib(3, 0, 1, 4, 96)),
        (_uib(3, 3, 2, 6, 128), _uib(5, 5, 1, 4, 128), _uib(0, 5, 1, 4, 128), _uib(0, 5, 1, 3, 128),
         _uib(0, 3, 1, 4, 128, 2)),
    ),
    head=960, head_hidden=1280, head_norm=True, stem_act=_RE, head_act=_RE,
)
MOBILENET_V4_CONV_MEDIUM = Architecture(
    name="MobileNetV4-Conv-M",
    paper=f"{_V4_PAPER} (MNv4-Conv-M)",
    stem=32,
    stages=(
        # FusedIB: kernel stride expand out
        (_fused(3, 2, 4, 48),),
        # UIB: start_dw mid_dw stride expand out [repeats]
        (_uib(3, 5, 2, 4, 80), _uib(3, 3, 1, 2, 80)),
        (_uib(3, 5, 2, 6, 160), _uib(3, 3, 1, 4, 160, 2), _uib(3, 5, 1, 4, 160), _uib(3, 3, 1, 4, 160),
         _uib(3, 0, 1, 4, 160), _uib(0, 0, 1, 2, 160), _uib(3, 0, 1, 4, 160)),
        (_uib(5, 5, 2, 6, 256), _uib(5, 5, 1, 4, 256), _uib(3, 5, 1, 4, 256, 2), _uib(0, 0, 1, 4, 256),
         _uib(3, 0, 1, 4, 256), _uib(3, 5, 1, 2, 256), _uib(5, 5, 1, 4, 256), _uib(0, 0, 1, 4, 256, 2),
         _uib(5, 0, 1, 2, 256)),
    ),
    head=960, head_hidden=1280, head_norm=True, stem_act=_RE, head_act=_RE,
)
MOBILENET_V4_CONV_LARGE = Architecture(
    name="MobileNetV4-Conv-L",
    paper=f"{_V4_PAPER} (MNv4-Conv-L)",
    stem=24,
    stages=(
        (_fused(3, 2, 4, 48),),
        (_uib(3, 5, 2, 4, 96), _uib(3, 3, 1, 4, 96)),
        (_uib(3, 5, 2, 4, 192), _uib(3, 3, 1, 4, 192, 3), _uib(3, 5, 1, 4, 192), _uib(5, 3, 1, 4, 192, 5),
         _uib(3, 0, 1, 4, 192)),
        (_uib(5, 5, 2, 4, 512, 4), _uib(5, 0, 1, 4, 512), _uib(5, 3, 1, 4, 512), _uib(5, 0, 1, 4, 512, 2),
         _uib(5, 3, 1, 4, 512), _uib(5, 5, 1, 4, 512), _uib(5, 0, 1, 4, 512, 3)),
    ),
    head=960, head_hidden=1280, head_norm=True, stem_act=_RE, head_act=_RE,
)

_, _fused, _uib, _mqa = _v4(_RE, layer_scale=1e-5)
MOBILENET_V4_HYBRID_MEDIUM = Architecture(
    name="MobileNetV4-Hybrid-M",
    paper=f"{_V4_PAPER} (MNv4-Hybrid-M)",
    stem=32,
    stages=(
        (_fused(3, 2, 4, 48),),
        (_uib(3, 5, 2, 4, 80), _uib(3, 3, 1, 2, 80)),
        # ... and Mobile MQA: heads key_dim kv_stride out
        (_uib(3, 5, 2, 6, 160), _uib(0, 0, 1, 2, 160), _uib(3, 3, 1, 4, 160), _uib(3, 5, 1, 4, 160),
         _mqa(4, 64, 2, 160), _uib(3, 3, 1, 4, 160), _mqa(4, 64, 2, 160), _uib(3, 0, 1, 4, 160),
         _mqa(4, 64, 2, 160), _uib(3, 3, 1, 4, 160), _mqa(4, 64, 2, 160), _uib(3, 0, 1, 4, 160)),
        (_uib(5, 5, 2, 6, 256), _uib(5, 5, 1, 4, 256), _uib(3, 5, 1, 4, 256, 2), _uib(0, 0, 1, 2, 256),
         _uib(3, 5, 1, 2, 256), _uib(0, 0, 1, 2, 256), _uib(0, 0, 1, 4, 256), _mqa(4, 64, 1, 256),
         _uib(3, 0, 1, 4, 256), _mqa(4, 64, 1, 256), _uib(5, 5, 1, 4, 256), _mqa(4, 64, 1, 256),
         _uib(5, 0, 1, 4, 256), _mqa(4, 64, 1, 256), _uib(5, 0, 1, 4, 256)),
    ),
    head=960, head_hidden=1280, head_norm=True, stem_act=_RE, head_act=_RE,
)

_, _fused, _uib, _mqa = _v4("gelu", layer_scale=1e-5)
MOBILENET_V4_HYBRID_LARGE = Architecture(
    name="MobileNetV4-Hybrid-L",
    paper=f"{_V4_PAPER} (MNv4-Hybrid-L)",
    stem=24,
    stages=(
        (_fused(3, 2, 4, 48),),
        (_uib(3, 5, 2, 4, 96), _uib(3, 3, 1, 4, 96)),
        (_uib(3, 5, 2, 4, 192), _uib(3, 3, 1, 4, 192, 3), _uib(3, 5, 1, 4, 192), _uib(5, 3, 1, 4, 192, 2),
         _mqa(8, 48, 2, 192), _uib(5, 3, 1, 4, 192), _mqa(8, 48, 2, 192), _uib(5, 3, 1, 4, 192),
         _mqa(8, 48, 2, 192), _uib(5, 3, 1, 4, 192), _mqa(8, 48, 2, 192), _uib(3, 0, 1, 4, 192)),
        (_uib(5, 5, 2, 4, 512, 4), _uib(5, 0, 1, 4, 512), _uib(5, 3, 1, 4, 512), _uib(5, 0, 1, 4, 512, 2),
         _uib(5, 3, 1, 4, 512), _uib(5, 5, 1, 4, 512), _mqa(8, 64, 1, 512), _uib(5, 0, 1, 4, 512),
         _mqa(8, 64, 1, 512), _uib(5, 0, 1, 4, 512), _mqa(8, 64, 1, 512), _uib(5, 0, 1, 4, 512),
         _mqa(8, 64, 1, 512), _uib(5, 0, 1, 4, 512)),
    ),
    head=960, head_hidden=1280, head_norm=True, stem_act="gelu", head_act="gelu",
)

ARCHITECTURES: dict[str, Architecture] = {
    "mobilenet_v1": MOBILENET_V1,
    "mobilenet_v2": MOBILENET_V2,
    "mobilenet_v3_large": MOBILENET_V3_LARGE,
    "mobilenet_v3_small": MOBILENET_V3_SMALL,
    "efficientnet": EFFICIENTNET,
    "efficientnet_v2_s": EFFICIENTNET_V2_S,
    "efficientnet_v2_m": EFFICIENTNET_V2_M,
    "efficientnet_v2_l": EFFICIENTNET_V2_L,
    "efficientnet_v2_xl": EFFICIENTNET_V2_XL,
    "efficientnet_v2_base": EFFICIENTNET_V2_BASE,
    "mobilenet_v4_conv_small": MOBILENET_V4_CONV_SMALL,
    "mobilenet_v4_conv_medium": MOBILENET_V4_CONV_MEDIUM,
    "mobilenet_v4_conv_large": MOBILENET_V4_CONV_LARGE,
    "mobilenet_v4_hybrid_medium": MOBILENET_V4_HYBRID_MEDIUM,
    "mobilenet_v4_hybrid_large": MOBILENET_V4_HYBRID_LARGE,
}

# ----------------------------------------------------------------------------------------------------------------
# Options: everything that differs between torchvision, timm, TensorFlow and EfficientNet-PyTorch.

# Every bound on what a caller or a file may ask for, in one place. Generous for real use (the largest registered
# model is EfficientNet-B8 at width 2.2 and depth 3.6; no table row repeats more than 32 times; published
# MobileNet-family kernels are at most 11 wide), tight enough that resolving and building any accepted config on
# the meta device takes seconds at most, so a crafted checkpoint cannot make the loader hang or allocate before its
# tensors are compared with the config.
# (low, high, (low closed, high closed)) for numbers; (low, high) for integers.
OPTION_BOUNDS: dict[str, tuple] = {
    "width_mult": (0.0, 16.0, (False, True)),
    "depth_mult": (0.0, 16.0, (False, True)),
    "round_limit": (0.0, 1.0, (True, True)),
    "se_ratio": (0.0, 1.0, (True, True)),
    "bn_eps": (0.0, 1.0, (False, False)),
    "bn_momentum": (0.0, 1.0, (True, True)),
    "divisor": (1, 256),
    "repeats": (1, 64),
    "kernel_sizes": (1, 15),
}
MAX_NUM_CLASSES = 100_000
MAX_IN_CHANS = 64
OUTPUT_STRIDES = (8, 16, 32)
MAX_BLOCKS = 320  # blocks of a resolved network: EfficientNetV2-XL has 100; 320 build on meta in 1-3 s

_FLOAT_OPTIONS = ("width_mult", "depth_mult", "round_limit", "se_ratio", "bn_eps", "bn_momentum")
_BOOL_OPTIONS = ("minimal", "stem_scaled", "head_hidden_scaled", "head_depth_scaled", "fix_first_last")
_OPTIONAL = ("se_ratio",)


def is_integer(value: object) -> bool:
    """An ``int`` and not a ``bool`` (``True`` would pass ``isinstance(value, int)``)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """A finite int or float, not a ``bool``."""
    return (is_integer(value) or isinstance(value, float)) and math.isfinite(value)


def check_output_stride(value: object) -> None:
    """``ValueError`` unless ``value`` is one of ``OUTPUT_STRIDES``."""
    if not is_integer(value) or value not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {', '.join(map(str, OUTPUT_STRIDES))}, got {value!r}")


ExpandRounding = Literal["divisor", "round", "width"]
SEWidth = Literal["block_input", "expanded"]
HeadScaling = Literal["scaled", "at_least", "fixed", "none"]
GlobalPool = Literal["avg", "max", "avgmax"]
GLOBAL_POOLS = ("avg", "max", "avgmax")


@dataclass(frozen=True)
class Options:
    """Architecture options. Every field is recorded in the checkpoints we write.

    Attributes:
        width_mult: channel multiplier applied to every row (and stem/head, see below).
        depth_mult: repeats multiplier, ``ceil`` per stage and spread over the stage's rows as TF and timm do.
        divisor: channel counts are rounded to multiples of this (``adjust_channels``).
        round_limit: ``adjust_channels`` adds one divisor if rounding loses more than ``1 - round_limit``.
        expand_rounding: expanded width of a block: ``"divisor"`` = adjust(in * t) (TF, timm, torchvision
            EfficientNet); ``"round"`` = round(in * t) (torchvision MobileNetV2, EfficientNet-PyTorch);
            ``"width"`` = adjust(paper_exp_size * width) (torchvision MobileNetV3).
        se_width: squeeze width: ``"block_input"`` = int(in * se) (EfficientNet); ``"expanded"`` =
            adjust(expanded * se) (MobileNetV3).
        se_ratio: ``None`` keeps the table's SE; a number puts SE of that ratio on every block (0 removes it).
        act: ``None`` keeps the table's activations; a name replaces every activation outside SE.
        minimal: MobileNetV3 "minimal": no SE, ReLU everywhere, 3x3 depthwise kernels only.
        stem_scaled: scale the stem by ``width_mult`` (False in timm's narrow MobileNetV3s and EfficientNet-Lite).
        head_scaling: head conv width: ``"scaled"``, ``"at_least"`` (never below the paper's), ``"fixed"``, or
            ``"none"`` for no head conv (MobileNetV1 as in the paper).
        global_pool: pooling before the classifier: ``"avg"`` (every paper), ``"max"``, or ``"avgmax"`` =
            ``0.5 * (avg + max)`` (timm's meaning); holds no weights, so it may differ from pretrained weights.
        head_hidden_scaled: scale MobileNetV3's hidden FC layer by ``width_mult`` (torchvision) or not (timm).
        head_depth_scaled: depth-scale the head conv like a one-block stage (timm's mobilenetv3_large_150d).
        fix_first_last: do not depth-scale the first and last stage (EfficientNet-Lite, timm's MobileNetV2 d-models).
        repeats: per table row, replaces the paper's repeats (before depth scaling).
        kernel_sizes: per table row, replaces the paper's depthwise kernel size.
        padding, bn_eps, bn_momentum, downsample: see ``layers.LayerOptions`` (``downsample`` applies to the
            blocks' strided convs, not to the stem; MobileNetV4's anti-aliased timm models use ``"avg"``/``"blur"``).
        output_stride: 32, or 16 / 8 for dense features: once the input would be downsampled past it, blocks run
            at stride 1 and dilate their convolutions instead (Chen et al., 2017, "Rethinking Atrous Convolution";
            timm's ``output_stride``). Weights are unchanged, so pretrained weights load at any output stride.
    """

    width_mult: float = 1.0
    depth_mult: float = 1.0
    divisor: int = 8
    round_limit: float = 0.9
    expand_rounding: ExpandRounding = "divisor"
    se_width: SEWidth = "block_input"
    se_ratio: float | None = None
    act: str | None = None
    minimal: bool = False
    stem_scaled: bool = True
    head_scaling: HeadScaling = "scaled"
    global_pool: GlobalPool = "avg"
    head_hidden_scaled: bool = False
    head_depth_scaled: bool = False
    fix_first_last: bool = False
    repeats: tuple[int, ...] | None = None
    kernel_sizes: tuple[int, ...] | None = None
    padding: Literal["symmetric", "same"] = "symmetric"
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    downsample: Literal["stride", "avg", "blur"] = "stride"
    output_stride: int = 32

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> Options:
        if not isinstance(d, dict):
            raise ValueError(f"architecture options must be a mapping of names to values, got {type(d).__name__}")
        unknown = set(d) - set(cls.names())
        if unknown:
            raise ValueError(f"unknown architecture option(s) {sorted(unknown)}; known: {', '.join(cls.names())}")
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**d)

    def validate(self, arch: Architecture) -> None:
        """Raise ``ValueError`` naming the offending option and what would be accepted.

        Checks every field's type (``True`` is not an int, ``8.5`` is not an int, NaN is not a float) and range
        (``OPTION_BOUNDS``). It runs for user calls and for checkpoint metadata alike, before anything is built.
        """
        for name in _FLOAT_OPTIONS:
            value = getattr(self, name)
            if value is None and name in _OPTIONAL:
                continue
            if not is_number(value):
                raise ValueError(f"{name} must be a number, got {value!r}")
            low, high, closed = OPTION_BOUNDS[name]
            if not (low <= value <= high) or (not closed[0] and value == low) or (not closed[1] and value == high):
                interval = f"{'[' if closed[0] else '('}{low}, {high}{']' if closed[1] else ')'}"
                raise ValueError(f"{name}={value!r} is out of range {interval}")
        low, high = OPTION_BOUNDS["divisor"]
        if not is_integer(self.divisor) or not low <= self.divisor <= high:
            raise ValueError(f"divisor must be an integer in [{low}, {high}], got {self.divisor!r}")
        for name in _BOOL_OPTIONS:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        choices = {
            "expand_rounding": ("divisor", "round", "width"),
            "se_width": ("block_input", "expanded"),
            "head_scaling": ("scaled", "at_least", "fixed", "none"),
            "global_pool": GLOBAL_POOLS,
            "padding": ("symmetric", "same"),
            "downsample": DOWNSAMPLES,
        }
        for name, allowed in choices.items():
            if not isinstance(getattr(self, name), str) or getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {allowed}")
        check_output_stride(self.output_stride)
        if self.act is not None and (not isinstance(self.act, str) or self.act not in ACTIVATIONS):
            raise ValueError(f"act={self.act!r} is not one of {ACTIVATIONS}")
        for name in ("repeats", "kernel_sizes"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, (tuple, list)) or not all(is_integer(v) for v in value):
                raise ValueError(f"{name} must be a sequence of integers, one per table row, got {value!r}")
            if len(value) != len(arch.rows):
                raise ValueError(
                    f"{name} needs one entry per row of the {arch.name} table ({len(arch.rows)} rows), "
                    f"got {len(value)}: {value}"
                )
        low, high = OPTION_BOUNDS["kernel_sizes"][:2]
        if self.kernel_sizes is not None and any(not low <= k <= high or k % 2 == 0 for k in self.kernel_sizes):
            raise ValueError(f"kernel_sizes must be odd integers in [{low}, {high}], got {self.kernel_sizes}")
        low, high = OPTION_BOUNDS["repeats"][:2]
        if self.repeats is not None and any(not low <= r <= high for r in self.repeats):
            raise ValueError(f"repeats must be integers in [{low}, {high}], got {self.repeats}")

    @property
    def layer_options(self) -> LayerOptions:
        return LayerOptions(self.padding, self.bn_eps, self.bn_momentum, self.downsample)


# ----------------------------------------------------------------------------------------------------------------
# Resolved configuration: concrete integers only.


@dataclass(frozen=True)
class ModelConfig:
    """A network with every choice made: what ``MobileNet`` builds and what a checkpoint describes.

    ``stages`` holds one typed config per block (``MobileBlock.Config``, ...), stage by stage as the table declares.
    """

    name: str
    arch: str
    options: Options
    stem_chs: int
    stem_act: str
    stages: tuple[tuple[BlockConfig, ...], ...]
    head_chs: int  # 0: no head conv
    head_act: str
    head_repeats: int
    head_hidden: int  # 0: no hidden FC layer
    head_norm: bool = False  # the hidden FC layer is followed by BatchNorm and has no bias (MobileNetV4)
    num_classes: int = 1000
    in_chans: int = 3
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    input_size: int = 224
    # The stride each stage's first block has in the table, before ``output_stride`` turned strides into dilation:
    # where the feature levels are cut (``features.feature_levels``). Empty: the blocks' own strides.
    stage_strides: tuple[int, ...] = ()

    @property
    def num_features(self) -> int:
        """Channels of ``forward_features`` output."""
        return self.head_chs or self.stages[-1][-1].out_chs

    @property
    def head_hidden_size(self) -> int:
        """Width of the pre-logits vector that feeds the classifier."""
        return self.head_hidden or self.num_features

    def table(self) -> str:
        """The resolved network as a text table, one line per block."""
        lines = [f"{self.name}: {self.arch}, input {self.input_size}x{self.input_size}"]
        lines.append(f"{'layer':<12}{'block':<28}{'k':>3}{'s':>3}{'in':>6}{'mid':>6}{'out':>6}{'se':>5}  act")
        lines.append(f"{'stem':<12}{'ConvNormAct':<28}{3:>3}{2:>3}{self.in_chans:>6}{'':>6}{self.stem_chs:>6}"
                     f"{'':>5}  {self.stem_act}")
        for i, stage in enumerate(self.stages):
            for j, b in enumerate(stage):
                c = b.summary()
                lines.append(f"{f'stages.{i}.{j}':<12}{b.block.__name__:<28}{c['k']:>3}{b.stride:>3}{b.in_chs:>6}"
                             f"{c['mid']:>6}{b.out_chs:>6}{c['se']:>5}  {c['act']}")
        in_chs = self.stages[-1][-1].out_chs
        for i in range(self.head_repeats if self.head_chs else 0):
            label = "head" if self.head_repeats == 1 else f"head.{i}"
            lines.append(f"{label:<12}{'ConvNormAct':<28}{1:>3}{1:>3}{in_chs:>6}{'':>6}"
                         f"{self.head_chs:>6}{'':>5}  {self.head_act}")
            in_chs = self.head_chs
        if self.head_hidden:
            lines.append(f"{'pre_logits':<12}{'Linear':<28}{'':>6}{self.num_features:>6}{'':>6}"
                         f"{self.head_hidden:>6}{'':>5}  {self.head_act}")
        lines.append(f"{'classifier':<12}{'Linear':<28}{'':>6}{self.head_hidden_size:>6}{'':>6}"
                     f"{self.num_classes:>6}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Slot:
    """One block's place in the network and the widths the rules give it; a block config's ``from_row`` reads it.

    ``mid_chs`` is the expanded width (``None`` when the row's expansion ratio is 1), ``se_chs`` the squeeze width
    (0: no squeeze-excite); ``act``, ``se_act`` and ``se_gate`` are activation names after the options applied.
    """

    in_chs: int
    out_chs: int
    stride: int
    mid_chs: int | None
    se_chs: int
    act: str
    se_act: str
    se_gate: str
    drop_path: float
    dilation: int = 1


# -- the rules, one per option; each is pure and names the references that use it -----------------------------


def channels(c: float, o: Options) -> int:
    """``c`` rounded to the divisor, with ``round_limit``'s guard (the MobileNetV2 reference code's rule)."""
    return adjust_channels(c, o.divisor, round_limit=o.round_limit)


def activation(name: str, o: Options) -> str:
    """A table's activation after ``act`` (replace all) and ``minimal`` (ReLU everywhere, Howard et al., 2019)."""
    return "relu" if o.minimal else (o.act or name)


def override_rows(stages: tuple[Stage, ...], o: Options) -> list[list[Row]]:
    """Apply the per-row options (``repeats``, ``kernel_sizes``) and the global ones (``se_ratio``, ``minimal``:
    no SE and 3x3 kernels, as MobileNetV3's minimal models) to the table's rows, stage boundaries kept."""
    rows = [row for stage in stages for row in stage]
    if o.repeats is not None:
        rows = [replace(r, repeats=n) for r, n in zip(rows, o.repeats, strict=True)]
    if o.kernel_sizes is not None:
        rows = [replace(r, kernel=k) for r, k in zip(rows, o.kernel_sizes, strict=True)]
    if o.se_ratio is not None:
        rows = [replace(r, se=o.se_ratio) for r in rows]
    if o.minimal:
        rows = [replace(r, se=0.0, kernel=3) for r in rows]
    out, start = [], 0
    for stage in stages:
        out.append(rows[start:start + len(stage)])
        start += len(stage)
    return out


def merge_repeated_rows(stage: list[Row]) -> list[Row]:
    """Fold a stride-1 row into the row before it when it repeats that row's block (MobileNetV3-Large's two
    ``120 / 40`` bnecks become one row of 2), so depth scaling spreads over distinct rows as TF and timm do."""
    merged: list[Row] = []
    for row in stage:
        last = merged[-1] if merged else None
        if last is not None and row.stride == 1 and replace(row, repeats=1, stride=last.stride) == replace(
                last, repeats=1):
            merged[-1] = replace(last, repeats=last.repeats + row.repeats)
        else:
            merged.append(row)
    return merged


def scale_depth(repeats: list[int], depth_mult: float) -> list[int]:
    """Scale one stage's repeats: ``ceil(total * depth_mult)`` spread over its rows, last rows first.

    This is the rule of TF's MobileNetV3/EfficientNet builders (as ported by timm); for a one-row stage it is
    simply ``ceil(repeats * depth_mult)``, the EfficientNet paper's rule.
    """
    total = sum(repeats)
    target = math.ceil(total * depth_mult)
    scaled = []
    for r in reversed(repeats):
        n = max(1, round(r / total * target))
        scaled.append(n)
        total -= r
        target -= n
    return scaled[::-1]


def stage_depths(stages: list[list[Row]], o: Options) -> list[list[Row]]:
    """Depth-scale every stage by ``depth_mult``; with ``fix_first_last`` the first and last stage keep their
    depth (EfficientNet-Lite, timm's MobileNetV2 ``d`` models)."""
    last = len(stages) - 1
    scaled = []
    for i, stage in enumerate(stages):
        mult = 1.0 if o.fix_first_last and i in (0, last) else o.depth_mult
        counts = scale_depth([r.repeats for r in stage], mult)
        scaled.append([replace(r, repeats=n) for r, n in zip(stage, counts, strict=True)])
    return scaled


def stem_width(arch: Architecture, o: Options) -> int:
    """The stem, width-scaled unless ``stem_scaled=False`` (EfficientNet-Lite, timm's narrow MobileNetV3s)."""
    return channels(arch.stem * o.width_mult, o) if o.stem_scaled else arch.stem


def expanded_width(in_chs: int, paper_in_chs: int, expand: float, o: Options) -> int | None:
    """A block's expanded width per ``expand_rounding``; ``None`` for expansion ratio 1 (no expansion layer).

    ``"divisor"``: adjust(in * t) (TF, timm, torchvision EfficientNet); ``"round"``: round(in * t) (torchvision
    MobileNetV2, EfficientNet-PyTorch); ``"width"``: adjust(exp_size * width), the paper's exp size scaled
    (torchvision MobileNetV3).
    """
    if expand == 1:
        return None
    if o.expand_rounding == "divisor":
        return channels(in_chs * expand, o)
    if o.expand_rounding == "round":
        return int(round(in_chs * expand))
    return channels(round(paper_in_chs * expand) * o.width_mult, o)


def se_width(in_chs: int, mid_chs: int | None, ratio: float, o: Options) -> int:
    """Squeeze width per ``se_width`` (0 without SE): ``"block_input"`` = int(in * ratio) (EfficientNet, Tan & Le,
    2019); ``"expanded"`` = adjust(expanded * ratio) (MobileNetV3, Howard et al., 2019)."""
    if ratio <= 0:
        return 0
    if o.se_width == "block_input":
        return max(1, int(in_chs * ratio))
    return channels((in_chs if mid_chs is None else mid_chs) * ratio, o)


def head_width(arch: Architecture, o: Options) -> int:
    """The head conv per ``head_scaling``: ``"scaled"`` (EfficientNet), ``"at_least"`` the paper's (MobileNetV2),
    ``"fixed"`` (EfficientNet-Lite), ``"none"``: no head conv (MobileNetV1 as in the paper), 0."""
    return {
        "scaled": channels(arch.head * o.width_mult, o),
        "at_least": max(arch.head, channels(arch.head * o.width_mult, o)),
        "fixed": arch.head,
        "none": 0,
    }[o.head_scaling]


def head_hidden_width(arch: Architecture, o: Options) -> int:
    """MobileNetV3's hidden FC layer, width-scaled with ``head_hidden_scaled`` (torchvision) or not (timm)."""
    return channels(arch.head_hidden * o.width_mult, o) if o.head_hidden_scaled and arch.head_hidden \
        else arch.head_hidden


def head_depth(o: Options) -> int:
    """Head convs: one, or ``ceil(depth_mult)`` with ``head_depth_scaled`` (timm's mobilenetv3_large_150d)."""
    return math.ceil(o.depth_mult) if o.head_depth_scaled else 1


def dilate(strides: list[int], output_stride: int, stem_stride: int = 2) -> list[tuple[int, int]]:
    """``(stride, dilation)`` of each block, given the table's strides, so the input is never downsampled past
    ``output_stride``: a block that would is run at stride 1 and the blocks after it dilate by its stride.

    The block that gives up its stride keeps the dilation before it; the growth starts with the next block (Chen
    et al., 2017, DeepLabv3, Sec. 3.1; the rule of timm's ``EfficientNetBuilder``).
    """
    current, dilation, out = stem_stride, 1, []
    for stride in strides:
        following = dilation
        if stride > 1:
            if current * stride > output_stride:
                following, stride = dilation * stride, 1
            else:
                current *= stride
        out.append((stride, dilation))
        dilation = following
    return out


def drop_path_rates(total_blocks: int, rate: float) -> list[float]:
    """Stochastic depth growing linearly with the global block index, from 0 (Huang et al., 2016; timm, TF)."""
    return [rate * i / total_blocks for i in range(total_blocks)]


def resolve(
    arch: Architecture,
    options: Options,
    *,
    name: str = "",
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    input_size: int = 224,
) -> ModelConfig:
    """Apply the rules above to ``arch``: the only place scaling happens."""
    o = options
    o.validate(arch)
    stages = stage_depths([merge_repeated_rows(s) for s in override_rows(arch.stages, o)], o)
    total_blocks = sum(r.repeats for stage in stages for r in stage)
    if total_blocks > MAX_BLOCKS:
        raise ValueError(f"depth_mult={o.depth_mult} and repeats={o.repeats} give {total_blocks} blocks, more than "
                         f"the {MAX_BLOCKS} allowed; lower them")
    rates = iter(drop_path_rates(total_blocks, drop_path_rate))
    strides = iter(dilate([r.stride if j == 0 else 1 for stage in stages for r in stage for j in range(r.repeats)],
                          o.output_stride))
    stem = stem_width(arch, o)
    in_chs, paper_in = stem, arch.stem
    stage_cfgs = []
    for stage in stages:
        blocks = []
        for row in stage:
            out = channels(row.out * o.width_mult, o)
            for _ in range(row.repeats):
                mid = expanded_width(in_chs, paper_in, row.expand, o)
                act = activation(row.act, o)
                stride, dilation = next(strides)
                slot = Slot(in_chs=in_chs, out_chs=out, stride=stride, mid_chs=mid,
                            se_chs=se_width(in_chs, mid, row.se, o), act=act,
                            se_act=act if arch.se_act is None else arch.se_act, se_gate=arch.se_gate,
                            drop_path=next(rates), dilation=dilation)
                blocks.append(row.config.from_row(row, slot))
                in_chs, paper_in = out, row.out
        stage_cfgs.append(tuple(blocks))
    return ModelConfig(
        name=name,
        arch=arch.name,
        options=o,
        stem_chs=stem,
        stem_act=activation(arch.stem_act, o),
        stages=tuple(stage_cfgs),
        head_chs=head_width(arch, o),
        head_act=activation(arch.head_act, o),
        head_repeats=head_depth(o),
        head_hidden=head_hidden_width(arch, o),
        head_norm=arch.head_norm and bool(arch.head_hidden),
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=drop_rate,
        drop_path_rate=drop_path_rate,
        input_size=input_size,
        stage_strides=tuple(stage[0].stride for stage in stages),
    )


__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "BlockConfig",
    "ModelConfig",
    "Options",
    "Row",
    "Slot",
    "Stage",
    "resolve",
    "scale_depth",
]

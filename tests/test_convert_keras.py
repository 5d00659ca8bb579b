"""Parity with Keras Applications, run by Keras 3 itself on its torch backend (no TensorFlow).

Every ``keras:`` source is built with ``weights=None`` in float64, its BatchNorm (and EfficientNet's input
Normalization) statistics randomised, saved with ``model.save_weights(...weights.h5)``, read back through
``load_source_file`` (the CLI's reader) and converted; Keras' logits, with Keras' own preprocessing layers, are
compared with ours on the equivalent normalised input.

Keras 3 promotes dtypes as JAX does without x64 (any promotion gives 32 bits), so its BatchNormalization, which
promotes its input with float32, runs in float32 even in a float64 model; the ``keras_float64`` fixture turns that
rule off so that Keras computes in float64 throughout.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch
from conftest import relative_error

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
h5py = pytest.importorskip("h5py")
if keras.backend.backend() != "torch":
    pytest.skip(f"the Keras parity tests need KERAS_BACKEND=torch, not {keras.backend.backend()}",
                allow_module_level=True)

from mobilenets.checkpoint import from_checkpoint  # noqa: E402
from mobilenets.convert import (  # noqa: E402
    ConversionError,
    convert_file,
    convert_state_dict,
    get_source,
    load_source_file,
    source_config,
    supported_sources,
)
from mobilenets.convert import keras as keras_convert  # noqa: E402
from mobilenets.model import MobileNet  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")

SOURCES = [s for s in supported_sources() if s.startswith("keras:")]
# Keras builds and saves a large model slowly (EfficientNetV2-L: minutes); these differ from the smaller ones of
# their family only in width and depth, and run with MOBILENETS_KERAS_ALL=1.
LARGE = {f"keras:efficientnet_b{i}" for i in range(1, 8)} | {f"keras:efficientnet_v2_{v}" for v in
                                                             ("b1", "b2", "b3", "s", "m", "l")}
ALL = os.environ.get("MOBILENETS_KERAS_ALL") == "1"
SIZE = 64  # even, a multiple of 32 (MobileNetV1's fixed padding is SAME there), and small: 31 models
ODD = ("keras:mobilenet_v2_035", "keras:mobilenet_v3_small_075", "keras:efficientnet_b0", "keras:efficientnet_v2_b0")


@pytest.fixture(scope="module", autouse=True)
def keras_float64():
    from keras.src.backend.common import dtypes

    floatx, bit64 = keras.config.floatx(), dtypes.BIT64_TO_BIT32_DTYPE
    keras.config.set_floatx("float64")
    dtypes.BIT64_TO_BIT32_DTYPE = {}
    yield
    dtypes.BIT64_TO_BIT32_DTYPE = bit64
    keras.config.set_floatx(floatx)


_SHARED = ("keras:mobilenet_025", "keras:mobilenet_v3_small_075", "keras:efficientnet_b0")  # built once: used often
_built: dict[tuple[str, int], object] = {}


def _build(source: str, size: int):
    """The Keras application of ``source``, randomly initialised (seeded), logits out."""
    if (source, size) in _built:
        return _built[source, size]
    model = _make(source, size)
    if source in _SHARED:
        _built[source, size] = model
    return model


def _make(source: str, size: int):
    model = source.split(":")[1]
    apps, tail = keras.applications, model.rsplit("_", 1)[1]
    kw = dict(input_shape=(size, size, 3), weights=None, classifier_activation=None)
    keras.utils.set_random_seed(0)
    if model.startswith("mobilenet_v3_"):
        cls = apps.MobileNetV3Large if "large" in model else apps.MobileNetV3Small
        return cls(alpha=int(tail) / 100, minimalistic="minimal" in model, include_preprocessing=True, **kw)
    if model.startswith("mobilenet_v2_"):
        return apps.MobileNetV2(alpha=int(tail) / 100, **kw)
    if model.startswith("mobilenet_"):
        return apps.MobileNet(alpha=int(tail) / 100, **kw)
    if model.startswith("efficientnet_v2_"):
        return getattr(apps, f"EfficientNetV2{tail.upper()}")(include_preprocessing=True, **kw)
    return getattr(apps, f"EfficientNet{tail.upper()}")(**kw)


def _randomize(model, seed: int = 0, float32: bool = False) -> None:
    """Non-trivial BatchNorm gamma/beta/statistics and Normalization mean/variance; ``float32``: round every weight
    to a float32 value, so that a float32 checkpoint holds them exactly."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            # a residual branch's last BatchNorm scales by 0.1-0.3: at 0.5-1.5 the residual stream of the 50-80
            # block EfficientNetV2-M/L grows to 1e5 and amplifies float64 rounding past the 1e-9 bound
            low, high = (0.1, 0.3) if layer.name.lower().endswith("project_bn") else (0.5, 1.5)
            layer.set_weights([rng.uniform(low, high, n), rng.uniform(-0.3, 0.3, n), rng.uniform(-0.5, 0.5, n),
                               rng.uniform(0.5, 2.0, n)])
        elif isinstance(layer, keras.layers.Normalization) and layer.weights:
            layer.set_weights([rng.uniform(0.3, 0.6, 3), rng.uniform(0.04, 0.08, 3), np.array(7)])
        if float32 and layer.weights:
            layer.set_weights([np.asarray(w).astype(np.float32).astype(w.dtype) for w in layer.get_weights()])


def _pixels(size: int) -> torch.Tensor:
    """0-255 pixels, NHWC, float64."""
    return torch.rand(2, size, size, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 255


def _keras_run(model, source: str, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keras' logits for 0-255 ``pixels``, and the input its first conv sees (after Keras' preprocessing).

    V1 and V2 expect ``preprocess_input`` (to [-1, 1]); the others preprocess inside the model.
    """
    name = source.split(":")[1]
    x = pixels / 127.5 - 1 if re.match(r"mobilenet_(\d|v2)", name) else pixels
    first = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D | keras.layers.ZeroPadding2D))
    with torch.no_grad():
        logits = model(x, training=False)
        seen = keras.Model(model.input, first.input)(x, training=False)
    return tuple(torch.as_tensor(np.asarray(t.detach().cpu())) for t in (logits, seen))


def _our_input(pixels: torch.Tensor, pre: dict) -> torch.Tensor:
    mean, std = (torch.tensor(pre[k], dtype=torch.float64) for k in ("mean", "std"))
    return ((pixels / 255 - mean) / std).permute(0, 3, 1, 2)


def _compare(ref, source: str, ours: MobileNet, pre: dict, size: int) -> float:
    """Relative error of our logits, given the input Keras' first conv sees; ``pre`` (the recorded mean and std)
    must give that input from the pixels up to rounding."""
    pixels = _pixels(size)
    expected, seen = _keras_run(ref, source, pixels)
    assert relative_error(seen, _our_input(pixels, pre).permute(0, 2, 3, 1)) < 1e-12
    with torch.no_grad():
        actual = ours(seen.permute(0, 3, 1, 2))
    return relative_error(expected, actual)


def _convert(path, source: str) -> MobileNet:
    """The CLI's reader and converter, our model built in float64 from the converted tensors."""
    config, state = convert_state_dict(load_source_file(path), source)
    with torch.device("meta"):
        ours = MobileNet(config)
    ours.load_state_dict(state, strict=True, assign=True)
    return ours.eval()


def _parity(source: str, size: int, tmp_path) -> float:
    ref = _build(source, size)
    _randomize(ref)
    path = tmp_path / "keras.weights.h5"
    ref.save_weights(str(path))
    ours = _convert(path, source)
    assert ours.config.name == get_source(source).name
    assert sum(p.numel() for p in ours.parameters()) == sum(int(np.prod(w.shape)) for w in ref.trainable_weights)
    pre, _ = keras_convert.preprocessing(source.split(":")[1], None, path.name, ours.config, load_source_file(path))
    return _compare(ref, source, ours, pre, size)


def test_sources() -> None:
    assert len(SOURCES) == 31
    assert {s for s in SOURCES if s.startswith("keras:mobilenet_0") or s.startswith("keras:mobilenet_1")} == {
        f"keras:mobilenet_{w}" for w in ("025", "050", "075", "100")}


@pytest.mark.parametrize("source", SOURCES)
def test_parity(source: str, tmp_path) -> None:
    if source in LARGE and not ALL:
        pytest.skip("slow to build in Keras; MOBILENETS_KERAS_ALL=1 runs it")
    assert _parity(source, SIZE, tmp_path) < 1e-9


@pytest.mark.parametrize("source", ODD)
def test_parity_at_an_odd_size(source: str, tmp_path) -> None:
    """Keras' ZeroPadding2D(correct_pad) + "valid" is SAME for the size the model is built for, odd ones too."""
    assert _parity(source, 67, tmp_path) < 1e-9


def test_batchnorm_counts_are_filled_with_zero(tmp_path) -> None:
    ref = _build("keras:mobilenet_025", SIZE)
    ref.save_weights(str(tmp_path / "k.weights.h5"))
    config, state = convert_state_dict(load_source_file(tmp_path / "k.weights.h5"), "keras:mobilenet_025")
    counts = {k: int(v) for k, v in state.items() if k.endswith("num_batches_tracked")}
    assert len(counts) == 27 and set(counts.values()) == {0}  # stem + 13 blocks x 2
    assert config.options.bn_eps == 1e-3 and config.options.bn_momentum == pytest.approx(0.01)


def test_file_round_trip_records_preprocessing(tmp_path) -> None:
    """``convert_file`` -> .safetensors -> ``from_checkpoint``: same logits as Keras, Keras' [-1, 1] scaling."""
    source = "keras:mobilenet_v3_small_075"
    ref = _build(source, SIZE)
    _randomize(ref, float32=True)
    ref.save_weights(str(tmp_path / "k.weights.h5"))
    convert_file(tmp_path / "k.weights.h5", tmp_path / "ours.safetensors", source)
    loaded = from_checkpoint(tmp_path / "ours.safetensors").double().eval()
    assert loaded.config.options.to_dict() == get_source(source).options
    assert loaded.pretrained_cfg["mean"] == [0.5] * 3 and loaded.pretrained_cfg["std"] == [0.5] * 3
    assert _compare(ref, source, loaded, loaded.pretrained_cfg, SIZE) < 1e-9


def _write_legacy(model, path, rename=lambda name: name, group: str | None = None) -> None:
    """Keras 2's ``save_weights`` layout (``save``'s under ``group="model_weights"``): a group per layer,
    ``layer_names`` and ``weight_names`` attributes, datasets at ``<layer>/<variable>:0`` (``depthwise_kernel`` for
    a depthwise conv)."""
    with h5py.File(path, "w") as root:
        f = root.create_group(group) if group else root
        f.attrs["layer_names"] = [rename(layer.name).encode() for layer in model.layers]
        f.attrs["keras_version"] = b"2.15.0"
        for layer in model.layers:
            name = rename(layer.name)
            g = f.require_group(name)
            dw = isinstance(layer, keras.layers.DepthwiseConv2D)
            names = [f"{name}/{'depthwise_kernel' if dw and w.name == 'kernel' else w.name}:0" for w in layer.weights]
            g.attrs["weight_names"] = [n.encode() for n in names]
            for n, w in zip(names, layer.weights, strict=True):
                g.create_dataset(n, data=np.asarray(w.numpy()))


def _keras2_v3_name(name: str) -> str:
    """MobileNetV3's layer names in Keras 2 (``expanded_conv_3/squeeze_excite/Conv_1``, ``Conv/BatchNorm``)."""
    fixed = {"conv": "Conv", "conv_bn": "Conv/BatchNorm", "conv_1": "Conv_1", "conv_1_bn": "Conv_1/BatchNorm",
             "conv_2": "Conv_2", "logits": "Logits"}
    if name in fixed:
        return fixed[name]
    m = re.fullmatch(r"(expanded_conv(?:_\d+)?)_(.*)", name)
    if not m:
        return name
    rest = re.sub(r"^(expand|depthwise|project)(_bn)?$", lambda r: r[1] + ("/BatchNorm" if r[2] else ""), m[2])
    rest = re.sub(r"^squeeze_excite_conv(_1)?$", lambda r: "squeeze_excite/Conv" + (r[1] or ""), rest)
    return f"{m[1]}/{rest}"


@pytest.mark.parametrize("source, rename, group", [("keras:efficientnet_b0", None, None),
                                                   ("keras:mobilenet_v3_small_075", _keras2_v3_name, None),
                                                   ("keras:mobilenet_025", None, "model_weights")])
def test_legacy_h5(source: str, rename, group, tmp_path) -> None:
    """A Keras 2 ``.h5`` file converts like the ``.weights.h5`` one (Keras 2's MobileNetV3 names included)."""
    ref = _build(source, SIZE)
    _randomize(ref)
    _write_legacy(ref, tmp_path / "legacy.h5", rename or (lambda n: n), group)
    ref.save_weights(str(tmp_path / "k3.weights.h5"))
    legacy, keras3 = load_source_file(tmp_path / "legacy.h5"), load_source_file(tmp_path / "k3.weights.h5")
    assert legacy.keys() == keras3.keys() and all(torch.equal(legacy[k], keras3[k]) for k in legacy)
    ours = _convert(tmp_path / "legacy.h5", source)
    pre, _ = keras_convert.preprocessing(source.split(":")[1], None, "legacy.h5", ours.config, legacy)
    assert _compare(ref, source, ours, pre, SIZE) < 1e-9


def test_efficientnet_preprocessing_follows_the_normalization_layer() -> None:
    config = source_config("keras:efficientnet_b0")
    imagenet = {"normalization/mean": torch.tensor([0.485, 0.456, 0.406]),
                "normalization/variance": torch.tensor([0.229, 0.224, 0.225])}  # as Keras' published files hold
    pre, origin = keras_convert.preprocessing("efficientnet_b0", None, "efficientnetb0.h5", config, imagenet)
    assert pre["std"] == pytest.approx([0.229, 0.224, 0.225], abs=1e-7) and "ImageNet" in origin
    adapted = dict(imagenet, **{"normalization/variance": torch.tensor([0.04, 0.09, 0.16])})
    pre, _ = keras_convert.preprocessing("efficientnet_b0", None, "x.h5", config, adapted)
    assert pre["std"] == pytest.approx([0.2, 0.3, 0.4]) and pre["mean"] == pytest.approx([0.485, 0.456, 0.406])
    with pytest.raises(ConversionError, match="Normalization"):
        keras_convert.preprocessing("efficientnet_b0", None, "x.h5", config, {})


def test_normalization_layer_is_set_aside_not_dropped(tmp_path) -> None:
    ref = _build("keras:efficientnet_b0", SIZE)
    ref.save_weights(str(tmp_path / "k.weights.h5"))
    state = load_source_file(tmp_path / "k.weights.h5")
    assert {"normalization/mean", "normalization/variance", "normalization/count"} <= set(state)
    convert_state_dict(state, "keras:efficientnet_b0")
    state["normalization_2/mean"] = state["normalization/mean"]
    with pytest.raises(ConversionError, match=r"unexpected in source \(1\): normalization_2/mean"):
        convert_state_dict(state, "keras:efficientnet_b0")


# -- files that are not Keras weights ------------------------------------------------------------------------------


def test_not_hdf5_is_refused(tmp_path) -> None:
    (tmp_path / "x.weights.h5").write_bytes(b"not an hdf5 file")
    with pytest.raises(ConversionError, match=r"x\.weights\.h5: cannot read it as a Keras weights file"):
        load_source_file(tmp_path / "x.weights.h5")


def test_hdf5_without_keras_layout_is_refused(tmp_path) -> None:
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("w", data=np.zeros(3))
    with pytest.raises(ConversionError, match="neither a Keras 3 .weights.h5"):
        load_source_file(tmp_path / "x.h5")


def test_compressed_dataset_is_refused(tmp_path) -> None:
    """A few compressed bytes could claim gigabytes; Keras never compresses, so nothing compressed is read."""
    with h5py.File(tmp_path / "x.weights.h5", "w") as f:
        g = f.create_group("layers/conv2d/vars")
        g.attrs["name"] = "conv1"
        g.create_dataset("0", data=np.zeros((3, 3, 3, 8)), compression="gzip")
    with pytest.raises(ConversionError, match="compressed, external or virtual"):
        load_source_file(tmp_path / "x.weights.h5")


def test_unnamed_keras3_layer_is_refused(tmp_path) -> None:
    with h5py.File(tmp_path / "x.weights.h5", "w") as f:
        f.create_group("layers/conv2d/vars").create_dataset("0", data=np.zeros((3, 3, 3, 8)))
    with pytest.raises(ConversionError, match="has no 'name' attribute"):
        load_source_file(tmp_path / "x.weights.h5")


def test_wrong_width_is_refused(tmp_path) -> None:
    ref = _build("keras:mobilenet_025", SIZE)
    ref.save_weights(str(tmp_path / "k.weights.h5"))
    with pytest.raises(ConversionError, match="mis-shaped"):
        convert_state_dict(load_source_file(tmp_path / "k.weights.h5"), "keras:mobilenet_050")

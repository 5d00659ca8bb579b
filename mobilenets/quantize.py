"""Post-training static int8 quantization for x86 CPUs: ``quantize`` and ``mobilenets quantize``.

Toolchain: NNCF (OpenVINO's Neural Network Compression Framework) quantizes our fp32 ONNX export
(``mobilenets.export.export_onnx``, BatchNorm folded) into a QDQ ONNX file, run by OpenVINO (fastest) or ONNX
Runtime (also works). Why, measured with the embedded EfficientNet-Lite0 ImageNet weights, top-1 agreement with
fp32 on random crops/flips of real photos (in parentheses: those on which fp32 is more than 30 % confident):

* ONNX Runtime static quantization (QDQ or QOperator, per-channel, MinMax or percentile calibration): 0.52-0.54
  (0.73-0.75) with 8-bit weights on an AVX2-only CPU, 0.71 (0.86) with ``reduce_range``; its int8 kernels ran at
  0.3-0.45x its own fp32 on an AVX512-VNNI CPU, where OpenVINO runs the same QDQ file at 2.3-4.5x.
* NNCF, AMD EPYC with AVX512-VNNI, 200 crops: default settings 0.93 (0.98); full bias correction 0.95-0.97 (0.98);
  full bias correction with the stem convolution and the classifier in fp32 (our defaults) 0.96-0.97 (1.00), at
  the same speed. Asymmetric activations (``MIXED`` preset) were worse (0.91); NNCF's accuracy-aware search
  (reverting layers until a metric holds) took over 6 minutes per model to gain 1.5 points and was not adopted.
  On an AVX2-only CPU (AMD EPYC Zen 3), ``overflow_fix="enable"`` (7-bit weights) was needed: 0.85 (0.97).
  Activation range estimators (AMD EPYC Zen 4, 600 crops; NNCF's default, the mean of per-sample min/max: 0.963
  (1.00)): histogram 0.960 (1.00), global min/max 0.948 (1.00), mean quantile 0.67, median min/max 0.29. NNCF's
  channel alignment (OpenVINO backend only) fails inside NNCF 3.4 (``KeyError``, then ``AttributeError``);
  the OpenVINO backend without it: 0.962 (1.00), as the ONNX one.
* Quantization-aware distillation after PTQ (NNCF's PyTorch backend, fp32 teacher, 200-300 Adam steps; AMX Xeon):
  the KL divergence to fp32 fell 2-3x, agreement ended under half a point above our PTQ's (digits 98.6 % against
  98.3 %; crops of real photos 96.7 % against 96.3 %, from a 94.8 % PyTorch-side start); the misses are
  near-ties. Not adopted: minutes of training per model, and ``nncf.strip`` needs torchao.
* Speed, not adopted: the squeeze-excite 1x1 convolutions (left in fp32 by NNCF's SE pattern) rewritten as
  ``Gemm`` ran MobileNetV3-Small 1.04x faster in OpenVINO but EfficientNet-B0 0.94x at batch 1; quantizing the
  stem saved a tenth at batch 32 and cost Lite0 1.3-2.5 points of agreement; exact uint8 pixel input with the
  normalization folded into an int8 stem (its border corrected by a bias map) gained MobileNetV3-Small 1.02-1.04x
  (AMX's int8 kernel on 3 input channels is no faster than fp32) for 91 % agreement on Lite0; a batch split over
  two single-core OpenVINO streams, 1.01x.
* PyTorch PT2E + torchao's ``X86InductorQuantizer`` needs ``torch.compile`` (minutes of compile per model and
  shape on two cores) to run int8 kernels at all; not chosen.

Without VNNI, x86 int8 kernels multiply u8 x s8 pairs with ``vpmaddubsw``, whose int16 sums saturate; 7-bit
weights avoid it at a small cost in resolution, so ``overflow_fix="auto"`` picks 7-bit weights there and full 8-bit
weights on VNNI/AMX CPUs (the file records which: run it on the kind of CPU it was made for). MobileNetV3's
hard-swish, hard-sigmoid and squeeze-excitation are quantized with NNCF's OpenVINO fusion patterns (the activation
is fused into the preceding convolution's output quantizer, the SE multiply keeps an fp32 scale path); depthwise
convolutions get per-channel weight scales.

Needs the ``quantize`` extra (nncf, openvino, onnx, onnxruntime).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from .checkpoint import atomic_write

QUANTIZE_EXTRA = 'pip install "mobilenets[quantize]"'
MAX_CALIBRATION = 10_000
MAX_INT8_BYTES = 2 << 30  # ONNX's own protobuf limit; our largest model, EfficientNet-B8, is 350 MB in fp32
OVERFLOW_FIX = ("enable", "first_layer", "disable")

__all__ = ["calibration_tensors", "check_calibration_folder", "check_int8_file", "classifier_weights_as_int8",
           "cpu_has_vnni", "global_pools_as_average_pools", "load_int8", "openvino_has_bf16", "quantize",
           "quantize_command", "quantize_onnx", "read_int8_file"]


def _import(name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise ImportError(f"int8 quantization needs {name.split('.')[0]}: {QUANTIZE_EXTRA}") from None


def calibration_tensors(model: nn.Module, source: str | os.PathLike | Sequence[Any], *, num_samples: int = 300,
                        ) -> torch.Tensor:
    """Up to ``num_samples`` calibration inputs ``(N, C, H, W)`` with the weights' own eval preprocessing.

    ``source``: an image folder (read recursively, sorted; unreadable files are skipped with a warning, as
    ``predict`` does; decoding bounded by ``images.ImageLimits``), or a sequence of PIL images / tensors
    (tensors are taken as already preprocessed), or a ``(N, C, H, W)`` tensor.
    """
    from .data import eval_transform
    from .images import DecodeBudget, ImageError, ImageLimits, expand_paths, open_image

    if not 1 <= num_samples <= MAX_CALIBRATION:
        raise ValueError(f"num_samples must be between 1 and {MAX_CALIBRATION}, got {num_samples}")
    transform = eval_transform(model)
    if isinstance(source, torch.Tensor):
        batch = source[:num_samples]
    elif isinstance(source, (str, os.PathLike)):
        root = check_calibration_folder(source)
        limits = ImageLimits.from_env()
        budget = DecodeBudget(limits.max_bytes)
        items, skipped = [], []
        for path, error in expand_paths([str(root)], recursive=True):
            if len(items) >= num_samples:
                break
            try:
                if error is not None:
                    raise error
                items.append(open_image(path, limits, budget, convert=transform))
            except ImageError as e:
                skipped.append(str(e))
        for message in skipped[:5] if items else ():
            warnings.warn(f"calibration image skipped: {message}", stacklevel=2)
        if not items:
            raise ValueError(f"--calibration {root}: no readable images found; give a folder of images like the ones "
                             "the model will see (a few hundred is plenty)")
        batch = torch.stack(items)
    else:
        items = [x if isinstance(x, torch.Tensor) else transform(x) for x in list(source)[:num_samples]]
        if not items:
            raise ValueError("the calibration set is empty")
        batch = torch.stack(items)
    if batch.ndim != 4 or not torch.isfinite(batch).all():
        raise ValueError(f"calibration inputs must be finite (N, C, H, W) tensors, got shape {tuple(batch.shape)}")
    return batch.float()


def check_calibration_folder(source: str | os.PathLike) -> Path:
    """``source`` as a ``Path`` if it is a directory, else ``NotADirectoryError`` saying what to give."""
    root = Path(source)
    if not root.is_dir():
        raise NotADirectoryError(f"--calibration {root}: not a directory; give a folder of images")
    return root


def cpu_has_vnni() -> bool:
    """Whether this x86 CPU has VNNI (AVX512-VNNI, AVX-VNNI or AMX-INT8) int8 dot products (Linux ``/proc/cpuinfo``)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags))


def resolve_overflow_fix(overflow_fix: str) -> str:
    """``"auto"`` -> ``"disable"`` (full 8-bit weights) on a VNNI/AMX CPU, else ``"enable"`` (7-bit weights)."""
    if overflow_fix not in ("auto", *OVERFLOW_FIX):
        raise ValueError(f"overflow_fix must be one of auto, {', '.join(OVERFLOW_FIX)}, got {overflow_fix!r}")
    if overflow_fix == "auto":
        return "disable" if cpu_has_vnni() else "enable"
    return overflow_fix


def _check_classifier_weights(value: str) -> None:
    if value not in ("int8", "fp32"):
        raise ValueError(f"classifier_weights must be 'int8' or 'fp32', not {value!r}")


def edge_layers(proto: Any) -> list[str]:
    """The names of an ONNX graph's first convolution and last ``Gemm``/``MatMul`` (the stem and the classifier)."""
    first = next((n.name for n in proto.graph.node if n.op_type == "Conv"), None)
    return [name for name in (first, classifier_layer(proto)) if name]


def classifier_layer(proto: Any) -> str | None:
    """The name of an ONNX graph's last ``Gemm``/``MatMul`` node (the classifier), or None."""
    return next((n.name for n in reversed(proto.graph.node) if n.op_type in ("Gemm", "MatMul")), None)


def global_pools_as_average_pools(proto: Any) -> int:
    """Rewrite, in place, each ``GlobalAveragePool`` of a graph whose input has a fixed height and width as an
    ``AveragePool`` over exactly its input's window; returns how many. The values are the same (to float rounding).

    OpenVINO's CPU plugin runs ``GlobalAveragePool`` as ``ReduceMean``, whose int8 kernel is slow at batch > 1: on a
    2-core AMX Xeon the nine squeeze-excite pools took 12 % of MobileNetV3-Small's int8 time at batch 32; as
    ``AveragePool`` the network ran 1.19x faster there (1.11-1.13x for EfficientNet-B0 and MobileNetV3-Large, the
    same at batch 1). A graph with free height and width keeps ``GlobalAveragePool``. The windows are measured by
    running the graph once at batch 1 in ONNX Runtime (SAME padding's shapes are computed in the graph, which ONNX
    shape inference does not follow).
    """
    import numpy as np
    from onnx import helper

    pools = [n for n in proto.graph.node if n.op_type == "GlobalAveragePool"]
    weights = {t.name for t in proto.graph.initializer}  # older exporters list them as inputs too
    images = [i for i in proto.graph.input if i.name not in weights]
    shape = images[0].type.tensor_type.shape.dim if len(images) == 1 else []
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in shape]
    if not pools or len(dims) != 4 or 0 in dims[1:]:
        return 0
    session = _probe(proto, [n.input[0] for n in pools])
    inputs = session.run(None, {images[0].name: np.zeros([1, *dims[1:]], np.float32)})
    for node, x in zip(pools, inputs, strict=True):
        node.CopyFrom(helper.make_node("AveragePool", list(node.input), list(node.output), name=node.name,
                                       kernel_shape=list(x.shape[2:])))
    return len(pools)


def classifier_weights_as_int8(proto: Any, name: str, data: torch.Tensor) -> bool:
    """Store the float classifier ``Gemm`` called ``name`` with int8 weights, in place: symmetric, one scale per
    class, behind a ``DequantizeLinear``; its input stays fp32 (no activation quantizer), and its bias absorbs the
    rounding's mean effect, ``(W - W_int8) @ mean(input)`` over ``data`` (bias correction, Nagel et al., 2019,
    "Data-Free Quantization Through Weight Equalization and Bias Correction"). Returns whether it was rewritten
    (a classifier of another form is left as it is).

    At batch 1 the fp32 classifier is a matrix-vector product that reads its 4-5 MB of weights on every call: 7 %
    of MobileNetV3-Small's int8 time on an idle 2-core AMX Xeon (12 % with the other core busy). OpenVINO runs the
    int8-weight form as a compressed fully-connected layer, 2.4x faster (72 -> 30 us idle), MobileNetV3-Small
    1.04x faster at batch 1 (12 interleaved rounds); where the classifier's input comes straight from an int8 pool
    (MobileNetV2, EfficientNet) OpenVINO runs it as an int8 x int8 layer, 1.02x. Lite0 on 600 crops of real photos:
    the KL divergence to fp32 rises 0.7 % (without the bias correction 1 %), top-1 agreement 96.3 -> 96.2 % (one
    near-tie). The weights are stored as (classes, features) with ``transB=1`` whatever the
    form given: ONNX Runtime 1.32's full graph optimization computes ``DequantizeLinear(axis=1)`` followed by
    ``Gemm(transB=0)`` wrongly (off by a tenth of a logit on random weights; right with optimizations off).
    """
    import numpy as np
    from onnx import helper, numpy_helper

    nodes = [n for n in proto.graph.node if n.name == name and n.op_type == "Gemm"]
    weights = {t.name: t for t in proto.graph.initializer}
    node = nodes[0] if len(nodes) == 1 else None
    if node is None or len(node.input) < 2 or node.input[1] not in weights:
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
        return False
    if sum(node.input[1] in n.input for n in proto.graph.node) != 1:  # a shared weight stays as it is
        return False
    w = numpy_helper.to_array(weights[node.input[1]]).astype(np.float64)
    if w.ndim != 2:
        return False
    axis = 0 if attrs.get("transB", 0) else 1  # the class axis
    w_classes = w if axis == 0 else w.T  # (classes, features)
    scale = np.abs(w_classes).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.round(w_classes / scale[:, None]), -127, 127)
    session = _probe(proto, [node.input[0]])
    # batches of 8 and no arena: at 32 the unoptimized graph's fp32 intermediates took 0.94 GB above the process's
    # resident size (EfficientNet-B0), at 8 without the arena 0.20 GB
    batches = [data[i:i + 8].numpy() for i in range(0, len(data), 8)]
    mean = np.concatenate([session.run(None, {"input": b})[0] for b in batches]).reshape(len(data), -1).mean(0)
    delta = (w_classes - q * scale[:, None]) @ mean.astype(np.float64)  # what the rounding takes off each logit
    original = base = node.input[1]
    if axis == 1:  # stored as (classes, features), as torch's Linear does (see above)
        base = f"{base}_transposed"
        node.input[1] = base
        kept = [a for a in node.attribute if a.name != "transB"]
        del node.attribute[:]
        node.attribute.extend([*kept, helper.make_attribute("transB", 1)])
    proto.graph.initializer.remove(weights[original])
    proto.graph.initializer.extend([
        numpy_helper.from_array(q.astype(np.int8), f"{base}_int8"),
        numpy_helper.from_array(scale.astype(np.float32), f"{base}_scale"),
        numpy_helper.from_array(np.zeros(len(scale), np.int8), f"{base}_zero_point"),
    ])
    if len(node.input) > 2 and node.input[2] in weights:
        bias = weights[node.input[2]]
        bias.CopyFrom(numpy_helper.from_array(
            (numpy_helper.to_array(bias).astype(np.float64) + delta).astype(np.float32), bias.name))
    else:
        bias_name = f"{base}_bias_correction"
        proto.graph.initializer.append(numpy_helper.from_array(delta.astype(np.float32), bias_name))
        del node.input[2:]
        node.input.append(bias_name)
    dequantize = helper.make_node("DequantizeLinear", [f"{base}_int8", f"{base}_scale", f"{base}_zero_point"],
                                  [base], name=f"{base}_dequantize", axis=0)
    index = list(proto.graph.node).index(node)
    proto.graph.node.insert(index, dequantize)
    return True


def _probe(proto: Any, names: Sequence[str]) -> Any:
    """An ONNX Runtime session of ``proto`` (unoptimized) whose outputs are the tensors called ``names``."""
    from onnx import ModelProto, helper

    ort = _import("onnxruntime")
    probe = ModelProto()
    probe.CopyFrom(proto)
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in names)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.enable_cpu_mem_arena = False  # an arena keeps the unoptimized graph's largest intermediates allocated
    return ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])


def quantize_onnx(
    proto: Any, data: torch.Tensor, *, overflow_fix: str = "auto",
    keep_fp32: Sequence[str] | Literal["edges"] = "edges",
    fast_bias_correction: bool = False,
    classifier_weights: Literal["int8", "fp32"] = "int8",
) -> tuple[Any, dict[str, Any]]:
    """NNCF post-training static int8 of an fp32 ONNX ``ModelProto`` (input ``"input"``), calibrated on ``data``.

    The settings (measured in the module docstring): performance preset (symmetric activations), per-channel
    weights, full bias correction, and the stem convolution and classifier left in fp32 (``keep_fp32="edges"``);
    then a classifier so left gets int8 weights on fp32 activations (``classifier_weights="int8"``:
    ``classifier_weights_as_int8``), and the global pools of a fixed-size graph become ``AveragePool``
    (``global_pools_as_average_pools``). Returns ``(quantized proto, settings dict)``; shared by ``quantize`` and
    the benchmark's peers.
    """
    nncf = _import("nncf")
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    _check_classifier_weights(classifier_weights)
    fix = resolve_overflow_fix(overflow_fix)
    keep = edge_layers(proto) if keep_fp32 == "edges" else list(keep_fp32)
    logger = logging.getLogger("nncf")
    level = logger.level
    # NNCF's progress bars go to stdout and its INFO lines to a stdout handler: stdout stays the caller's (the
    # benchmark's --markdown table, quantize's one line); bars go to stderr, INFO lines are dropped.
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        logger.setLevel(logging.WARNING)
        try:
            quantized = nncf.quantize(
                proto, nncf.Dataset([{"input": data[i:i + 1].numpy()} for i in range(len(data))]),
                preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(data),
                fast_bias_correction=fast_bias_correction,
                ignored_scope=nncf.IgnoredScope(names=keep) if keep else None,
                advanced_parameters=AdvancedQuantizationParameters(overflow_fix=getattr(OverflowFix, fix.upper())),
            )
        finally:
            logger.setLevel(level)
    classifier = classifier_layer(proto)
    float_classifier = classifier is not None and classifier in keep  # NNCF left it in fp32
    if float_classifier and classifier_weights == "int8":
        float_classifier = not classifier_weights_as_int8(quantized, classifier, data)
    pools = global_pools_as_average_pools(quantized)
    settings = dict(toolchain=f"nncf {nncf.__version__}", scheme="int8 static, per-channel weights, QDQ",
                    calibration_samples=len(data), overflow_fix=fix, keep_fp32=keep,
                    bias_correction="fast" if fast_bias_correction else "full", average_pools=pools,
                    classifier_weights="fp32" if float_classifier else "int8")
    return quantized, settings


def quantize(
    model: nn.Module,
    calibration: str | os.PathLike | Sequence[Any] | torch.Tensor,
    out_path: str | os.PathLike,
    *,
    backend: Literal["nncf"] = "nncf",
    format: Literal["onnx", "openvino"] = "onnx",  # noqa: A002 - the CLI's --format
    num_samples: int = 300,
    overflow_fix: str = "auto",
    keep_fp32: Sequence[str] | Literal["edges"] = "edges",
    fast_bias_correction: bool = False,
    classifier_weights: Literal["int8", "fp32"] = "int8",
    dynamic_batch: bool = True,
    dynamic_size: bool = False,
) -> Path:
    """Post-training static int8 quantization of ``model``; writes ``out_path`` atomically and returns it.

    Args:
        calibration: an image folder, images or preprocessed tensors (see ``calibration_tensors``).
        format: ``"onnx"``: a QDQ ONNX file (input ``"input"``, output ``"logits"``, the same metadata as
            ``export_onnx`` plus ``quantization``), run with OpenVINO or ONNX Runtime; ``"openvino"``: OpenVINO IR
            (``out_path`` ``.xml`` and its ``.bin`` next to it).
        overflow_fix: NNCF's overflow fix: ``"enable"`` (7-bit weights in every layer; right for CPUs without
            VNNI, such as AVX2-only ones), ``"first_layer"``, ``"disable"`` (full 8-bit weights, for VNNI/AMX), or
            ``"auto"`` (``disable`` if this CPU has VNNI, else ``enable``; the file records the choice).
        keep_fp32: ONNX node names to leave in fp32 (NNCF ``IgnoredScope``); ``"edges"``: the stem convolution
            and the classifier; ``()``: none.
        fast_bias_correction: NNCF's fast bias correction instead of the full one (quicker, less accurate).
        classifier_weights: ``"int8"``: a classifier left in fp32 stores int8 weights (one scale per class, bias
            corrected) on fp32 activations, 2.4x faster in OpenVINO at batch 1; ``"fp32"``: fp32 weights.
    """
    if backend != "nncf":
        raise ValueError(f"unknown backend {backend!r}; expected 'nncf'")
    if format not in ("onnx", "openvino"):
        raise ValueError(f"unknown format {format!r}; expected 'onnx' or 'openvino'")
    _check_classifier_weights(classifier_weights)
    resolve_overflow_fix(overflow_fix)  # a bad value fails before the export
    onnx = _import("onnx")
    _import("nncf")

    from .export import _check_writable, export_onnx

    out_path = _check_writable(Path(out_path))  # before a minute of calibration, not after
    data = calibration_tensors(model, calibration, num_samples=num_samples)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model, Path(tmp) / "fp32.onnx", dynamic_batch=dynamic_batch,
                           dynamic_size=dynamic_size, fuse=True)
        proto = onnx.load(str(fp32))
    meta = {p.key: p.value for p in proto.metadata_props}
    quantized, settings = quantize_onnx(proto, data, overflow_fix=overflow_fix, keep_fp32=keep_fp32,
                                        fast_bias_correction=fast_bias_correction,
                                        classifier_weights=classifier_weights)
    meta["quantization"] = json.dumps(settings)
    del quantized.metadata_props[:]
    for key, value in meta.items():
        entry = quantized.metadata_props.add()
        entry.key, entry.value = key, value
    if format == "onnx":
        return atomic_write(out_path, lambda tmp: onnx.save(quantized, tmp))
    ov = _import("openvino")
    xml = out_path if out_path.suffix == ".xml" else out_path.with_suffix(".xml")
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(quantized, Path(tmp) / "q.onnx")
        ir = ov.convert_model(str(Path(tmp) / "q.onnx"))
        for key, value in meta.items():
            ir.set_rt_info(value, ["mobilenets", key])
        ov.save_model(ir, str(Path(tmp) / "q.xml"), compress_to_fp16=False)
        atomic_write(xml.with_suffix(".bin"), lambda t: os.replace(Path(tmp) / "q.bin", t))
        return atomic_write(xml, lambda t: os.replace(Path(tmp) / "q.xml", t))


MAX_STATIC_PLANS = 8


@functools.cache
def openvino_core() -> Any:
    """The process's one OpenVINO ``Core``, kept for its life.

    Each Core's CPU plugin gives the thread that compiles a signal stack of its own (``sigaltstack``, room for AMX
    state: openvino pull request 11894) and, when the Core goes, frees it and puts back the stack it found. When two
    Cores overlap and the older goes first, the younger later puts back the older's freed stack, and the next Python
    signal handler on that thread (a DataLoader's SIGCHLD when a worker exits) crashes the process with SIGSEGV
    (openvino 2026.4, AMX Xeon). One Core kept for the process, as OpenVINO recommends anyway, never frees its stack.
    """
    return _import("openvino").Core()


def openvino_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin can run bf16 here (AMX or AVX512-BF16: its ``OPTIMIZATION_CAPABILITIES``)."""
    return "BF16" in openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def load_int8(path: str | os.PathLike, *, runtime: Literal["openvino", "onnxruntime"] = "openvino",
              threads: int | None = None, precision: Literal["f32", "bf16"] = "f32",
              ) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable ``(N, C, H, W) float tensor -> logits`` running a file written by ``quantize``.

    OpenVINO: one static-shape plan per input shape, compiled on first sight and kept (the ``MAX_STATIC_PLANS``
    most recent), each with one reused infer request. Measured on a 2-core AVX512-VNNI CPU against one
    dynamic-batch plan: 1.12-1.24x at batch 1, 1.12x at batch 32 (MobileNetV3-Small, EfficientNet-B0).

    ``precision``: what OpenVINO runs the layers left in floating point in (stem, classifier, SE gates,
    activations between quantizers). ``"f32"``, the default, is what ``quantize`` calibrated and what every CPU
    runs alike; ``"bf16"`` is OpenVINO's own default on CPUs with AMX or AVX512-BF16. Measured on a 2-core AMX Xeon
    (EfficientNet-Lite0, 600 crops of real photos): bf16 agrees with fp32's top-1 on 95.5 % of the crops, f32 on
    96.2 %; bf16 is 1.01-1.19x faster at batch 32 and 0.94-1.03x at batch 1 (the benchmark's ``int8_bf16``).
    """
    checked, model_bytes, weights = read_int8_file(path, runtime)
    path = str(checked)
    if precision not in ("f32", "bf16"):
        raise ValueError(f"precision must be 'f32' or 'bf16', got {precision!r}")
    if precision == "bf16" and runtime != "openvino":
        raise ValueError("precision='bf16' is OpenVINO's; ONNX Runtime runs the float layers in f32")
    if runtime == "openvino":
        if precision == "bf16" and not openvino_has_bf16():
            raise ValueError("precision='bf16': this CPU has no bf16 instructions (AMX or AVX512-BF16); use 'f32'")
        import numpy as np

        ov = _import("openvino")
        core = openvino_core()
        ir_weights = None
        try:
            if weights is None:
                source = core.read_model(io.BytesIO(model_bytes))
            else:  # the Tensor shares this array, which the model's constants may point into (kept on run)
                ir_weights = np.frombuffer(weights, np.uint8).copy()
                source = core.read_model(model_bytes.decode("utf-8", "replace"), ov.Tensor(ir_weights))
        except RuntimeError as e:
            raise ValueError(f"{path}: OpenVINO cannot read it as a model ({_last_line(e)}); give a file written by "
                             "`mobilenets quantize`") from None
        _check_image_input(path, [(i.get_any_name(), i.get_partial_shape().rank.get_length()
                                   if i.get_partial_shape().rank.is_static else None) for i in source.inputs])
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        plans: dict[tuple[int, ...], Any] = {}

        def run(x: torch.Tensor) -> torch.Tensor:
            shape = tuple(x.shape)
            request = plans.pop(shape, None)
            if request is None:
                model = source.clone()
                model.reshape(list(shape))  # fails, with OpenVINO's message, on a shape the file cannot take
                request = core.compile_model(model, "CPU", config).create_infer_request()
                while len(plans) >= MAX_STATIC_PLANS:
                    plans.pop(next(iter(plans)))
            plans[shape] = request  # most recently used last
            out = request.infer({0: x.detach().float().contiguous().numpy()}, share_inputs=True)[0]
            return torch.from_numpy(out.copy())  # the request's buffer is reused by the next call
        run.ir_weights = ir_weights  # type: ignore[attr-defined]
        return run
    ort = _import("onnxruntime")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime's errors derive from Exception only
        raise ValueError(f"{path}: ONNX Runtime cannot load it ({_last_line(e)}); give a file written by "
                         "`mobilenets quantize`") from None
    inputs = session.get_inputs()
    _check_image_input(path, [(i.name, len(i.shape)) for i in inputs])
    name = inputs[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.detach().float().contiguous().numpy()})[0])


def check_int8_file(path: str | os.PathLike, runtime: str) -> Path:
    """``path`` if it looks like a file ``quantize`` writes for ``runtime`` (the checks of ``read_int8_file``)."""
    return read_int8_file(path, runtime)[0]


def read_int8_file(path: str | os.PathLike, runtime: str) -> tuple[Path, bytes, bytes | None]:
    """``(path, model bytes, IR weights or None)`` of a file ``quantize`` writes for ``runtime``, read once and
    checked before any runtime sees it; ``load_int8`` hands the runtime these bytes, never the path, so what runs is
    what was checked (OpenVINO maps an IR's ``.bin`` and would otherwise pick up a file changed after loading).

    An ``.onnx`` file that parses as ONNX and keeps its weights inside, or OpenVINO IR (``.xml`` with its ``.bin``;
    OpenVINO only), at most ``MAX_INT8_BYTES`` in all: the runtimes allocate what a file claims, so a file is
    refused on its size before it is parsed, and no more than that is read.
    """
    p = Path(path)
    if runtime not in ("openvino", "onnxruntime"):
        raise ValueError(f"runtime must be 'openvino' or 'onnxruntime', got {runtime!r}")
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file; write an int8 model with `mobilenets quantize`")
    suffix = p.suffix.lower()
    if suffix not in (".onnx", ".xml"):
        raise ValueError(f"{p}: expected an .onnx file or OpenVINO IR (.xml and .bin), as `mobilenets quantize` "
                         "writes")
    files = [p]
    if suffix == ".xml":
        if runtime != "openvino":
            raise ValueError(f"{p}: OpenVINO IR runs in OpenVINO only; use runtime='openvino', or quantize with "
                             "--format onnx")
        files.append(p.with_suffix(".bin"))
        if not files[1].is_file():
            raise FileNotFoundError(f"{files[1]}: missing; OpenVINO IR is an .xml file and the .bin beside it")

    def too_big(size: int) -> ValueError:
        return ValueError(f"{p}: {size / 2**20:.0f} MiB, more than the {MAX_INT8_BYTES >> 20} MiB any int8 MobileNet "
                          "needs; refusing to load it (a corrupt or crafted file)")

    if (size := sum(f.stat().st_size for f in files)) > MAX_INT8_BYTES:
        raise too_big(size)
    contents = []
    for f in files:  # bounded again as read: a file may grow after stat
        with open(f, "rb") as stream:
            contents.append(stream.read(MAX_INT8_BYTES + 1 - sum(map(len, contents))))
    if (size := sum(map(len, contents))) > MAX_INT8_BYTES:
        raise too_big(size)
    if suffix == ".onnx":  # parsed here, so that a runtime never guesses at (or follows) what it is not
        onnx = _import("onnx")
        try:
            proto = onnx.load_model_from_string(contents[0])
        except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and onnx's own errors
            raise ValueError(f"{p}: not an ONNX model ({_last_line(e)}); give a file written by "
                             "`mobilenets quantize`") from None
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
            raise ValueError(f"{p}: its weights point to external files, which `mobilenets quantize` never "
                             "writes; refusing to follow them")
        return p, contents[0], None
    return p, contents[0], contents[1]


def _check_image_input(path: str, inputs: list[tuple[str, int | None]]) -> None:
    """One input of rank 4 (N, C, H, W), as every file ``quantize`` writes has."""
    if len(inputs) != 1 or inputs[0][1] not in (4, None):
        found = ", ".join(f"{name} (rank {rank})" for name, rank in inputs) or "none"
        raise ValueError(f"{path}: expected one (N, C, H, W) image input, found {found}; give a file written by "
                         "`mobilenets quantize`")


def _last_line(error: BaseException) -> str:
    """The last non-empty line of a runtime's (often multi-line) error message."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .export import _gather_positionals

    p.add_argument("positionals", nargs="+", metavar="[MODEL] OUT",
                   help="model name (with --pretrained TAG; omit with --checkpoint), then the int8 file to write "
                        "(.onnx; .xml with --format openvino)")
    p.add_argument("--pretrained", metavar="TAG", help="pretrained weights: a TAG of MODEL or MODEL.TAG")
    p.add_argument("--checkpoint", metavar="FILE", help="a mobilenets .safetensors checkpoint instead")
    p.add_argument("--calibration", metavar="DIR", required=True,
                   help="a folder of images like the ones the model will see (read with the weights' preprocessing)")
    _gather_positionals(p)
    p.add_argument("--format", choices=("onnx", "openvino"), default="onnx",
                   help="onnx: QDQ ONNX (OpenVINO or ONNX Runtime run it; default); openvino: OpenVINO IR")
    p.add_argument("--num-samples", type=int, default=300, metavar="N", help="calibration images used (default 300)")
    p.add_argument("--overflow-fix", choices=("auto", *OVERFLOW_FIX), default="auto",
                   help="enable: 7-bit weights against int16 saturation on CPUs without VNNI; auto (default): "
                        "disable on a VNNI/AMX CPU, enable otherwise")
    p.add_argument("--quantize-edges", action="store_true",
                   help="quantize the stem convolution and the classifier too (kept fp32 by default)")
    p.add_argument("--classifier-weights", choices=("int8", "fp32"), default="int8",
                   help="int8 (default): the fp32 classifier stores int8 weights on fp32 activations (faster at "
                        "batch 1); fp32: keep its weights in fp32")


def quantize_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .cli import load_model

    if args.checkpoint is not None and args.pretrained is not None:
        parser.error("--pretrained and --checkpoint are mutually exclusive")
    if len(args.positionals) > 2:
        parser.error(f"expected [MODEL] OUT, got {len(args.positionals)} positional arguments")
    args.model, args.out = (None, *args.positionals) if len(args.positionals) == 1 else args.positionals
    if args.checkpoint is None and args.model is None and args.pretrained is None:
        parser.error("give MODEL --pretrained TAG, or --checkpoint FILE")
    from .export import _check_writable

    _check_writable(Path(args.out))  # the cheap checks first: building the model may download weights
    check_calibration_folder(args.calibration)
    model = load_model(args.model, args.pretrained, args.checkpoint).eval()
    path = quantize(model, args.calibration, args.out, format=args.format, num_samples=args.num_samples,
                    overflow_fix=args.overflow_fix, keep_fp32=() if args.quantize_edges else "edges",
                    classifier_weights=args.classifier_weights)
    print(f"wrote {path} (int8, {args.format})")
    return 0

"""Inference and deployment: BatchNorm folding, ONNX / TorchScript / ``torch.export`` files, and the fast
PyTorch path that ``predict`` and ``validate`` use.

Every exported file carries the weights' preprocessing and class names (ONNX ``metadata_props``; a
``mobilenets.json`` extra file in TorchScript and ``.pt2`` archives), so a runtime without mobilenets can feed it
images the way the weights expect.

SAME-padded models (the TF ports) export with dynamic input sizes because ``layers.PadSame`` computes its padding
as integer arithmetic on the input's shape, which every exporter records instead of freezing.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .checkpoint import atomic_write
from .layers import ConvNormAct

FORMATS = ("onnx", "torchscript", "exported-program")
DEFAULT_OPSET = 18  # ONNX opset: HardSwish needs 14; 18 is the dynamo exporter's default and onnxruntime's well-trodden
# Dynamic spatial sizes: the last feature map (stride 32) must be at least 2x2, or the exporters specialise the
# broadcasts of the 1x1 pooled map (squeeze-excite, pooling) and refuse the range. 64 is the smallest size that
# torch.export accepts for every family (measured); onnxruntime runs the ONNX file at any size.
MIN_SIZE, MAX_SIZE, MAX_BATCH = 64, 4096, 4096
EXPORT_EXTRA = 'pip install "mobilenets[export]"'


# ---------------------------------------------------------------------------------------------------------------
# BatchNorm folding
# ---------------------------------------------------------------------------------------------------------------


def _bn_scale_shift(bn: nn.BatchNorm1d | nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as ``y = x * scale + shift`` (float64)."""
    var, mean = bn.running_var.double(), bn.running_mean.double()
    weight = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    bias = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    scale = weight / torch.sqrt(var + bn.eps)
    return scale, bias - mean * scale


def _fold_into(layer: nn.Conv2d | nn.Linear, scale: torch.Tensor, shift: torch.Tensor | None = None) -> None:
    """Replace ``layer``'s parameters so that ``layer(x) == old_layer(x) * scale + shift`` per output channel."""
    dtype = layer.weight.dtype
    shape = (-1,) + (1,) * (layer.weight.ndim - 1)
    weight = layer.weight.detach().double() * scale.view(shape)
    bias = layer.bias.detach().double() * scale if layer.bias is not None else torch.zeros_like(scale)
    if shift is not None:
        bias = bias + shift
    layer.weight = nn.Parameter(weight.to(dtype), requires_grad=False)
    layer.bias = nn.Parameter(bias.to(dtype), requires_grad=False)


def fuse(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every BatchNorm folded into the convolution (or linear layer) before it.

    Folds ``ConvNormAct``'s ``bn`` into its ``conv`` (Ioffe & Szegedy, 2015: in eval mode BatchNorm is a
    per-channel affine map, so it composes with the preceding linear map), MobileNetV4's head ``BatchNorm1d`` into
    its ``fc``, and a layer scale that directly follows a linear 1x1 projection into that projection. The folded
    modules become ``nn.Identity``, so the module tree (and FX / feature-extractor node names) is unchanged. The
    pre-norm of MobileNetV4's attention blocks has no convolution before it and stays. The arithmetic is done in
    float64; logits equal the unfused model's to float rounding. ``model`` itself is not modified.
    """
    from .blocks import LayerScale, MobileMultiQueryAttention, UniversalInvertedBottleneck

    fused = copy.deepcopy(model).eval()
    with torch.no_grad():
        for module in fused.modules():
            if isinstance(module, ConvNormAct) and isinstance(module.bn, nn.BatchNorm2d):
                _fold_into(module.conv, *_bn_scale_shift(module.bn))
                module.bn = nn.Identity()
            elif isinstance(module, nn.Sequential) and isinstance(getattr(module, "fc", None), nn.Linear) \
                    and isinstance(getattr(module, "bn", None), nn.BatchNorm1d):
                _fold_into(module.fc, *_bn_scale_shift(module.bn))
                module.bn = nn.Identity()
        for module in fused.modules():  # layer scale right after a linear projection (no activation in between)
            if not isinstance(getattr(module, "layer_scale", None), LayerScale):
                continue
            if isinstance(module, UniversalInvertedBottleneck) and isinstance(module.pw_proj.act, nn.Identity) \
                    and isinstance(module.pw_proj.aa, nn.Identity):
                target = module.pw_proj.conv
            elif isinstance(module, MobileMultiQueryAttention):
                target = module.out_proj
            else:
                continue
            _fold_into(target, module.layer_scale.gamma.detach().double())
            module.layer_scale = nn.Identity()
    fused.requires_grad_(False)
    return fused


# ---------------------------------------------------------------------------------------------------------------
# Metadata
# ---------------------------------------------------------------------------------------------------------------


def metadata(model: nn.Module) -> dict[str, str]:
    """What a runtime needs to feed the model: preprocessing, class names, model name and mobilenets version.

    Values are strings (lists and numbers as JSON), as ONNX ``metadata_props`` require.
    """
    from .cli import class_names
    from .data import eval_transform

    cfg = getattr(model, "pretrained_cfg", None) or {}
    config = getattr(model, "config", None)
    transform = eval_transform(model)  # the preprocessing predict applies: the weights' own, else the defaults
    num_classes = int(getattr(model, "num_classes", 0))
    meta: dict[str, Any] = {
        "model": cfg.get("model") or getattr(config, "name", type(model).__name__),
        "tag": cfg.get("tag") or "",
        "mobilenets_version": __version__,
        "input_size": list(transform.input_size),
        "mean": list(transform.mean),
        "std": list(transform.std),
        "interpolation": transform.interpolation,
        "resize": transform.resize,
        "crop_pct": cfg.get("crop_pct", round(transform.crop / transform.resize, 4)),
        "crop_mode": transform.crop_mode,
        "num_classes": num_classes,
        "categories": class_names(model)[0] if num_classes > 0 else [],
    }
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items() if v is not None}


def _example(model: nn.Module, batch: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    meta = json.loads(metadata(model)["input_size"])
    return torch.randn(batch, *meta, dtype=dtype)


def _prepare(model: nn.Module, fuse_bn: bool) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    prepared = fuse(model) if fuse_bn else copy.deepcopy(model).eval().requires_grad_(False)
    return prepared.float().cpu()


def _check_writable(path: Path) -> Path:
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; give the file to write, e.g. {path / 'model.onnx'}")
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:  # atomic_write creates missing directories
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(f"cannot write {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {path}: no permission to write in {parent}")
    return path


# ---------------------------------------------------------------------------------------------------------------
# Exporters
# ---------------------------------------------------------------------------------------------------------------


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    dynamic_batch: bool = False,
    dynamic_size: bool = False,
    fuse: bool = True,
    opset: int | None = None,
    dynamo: bool = False,
) -> Path:
    """Write ``model`` as an ONNX file with input ``"input"`` (N, C, H, W float32) and output ``"logits"``.

    Args:
        dynamic_batch / dynamic_size: make the batch / height and width dimensions symbolic (else the file takes
            the weights' ``input_size`` at batch 1).
        fuse: fold BatchNorm into the convolutions first (``fuse``); the logits are the same to float rounding.
        opset: ONNX opset (default 18).
        dynamo: use ``torch.onnx.export(dynamo=True)`` (``torch.export`` + onnxscript) instead of the TorchScript
            exporter. Both give the same logits (to 1e-6 at every size); the TorchScript exporter is the default
            because it is 20x faster to run (5 s vs 100 s for EfficientNet-Lite0 on a laptop-class CPU).

    The preprocessing and class names are in the model's ``metadata_props`` (see ``metadata``). The file is
    written atomically. Needs the ``export`` extra (onnx, onnxscript, onnxruntime).
    """
    try:
        import onnx
    except ImportError:
        raise ImportError(f"ONNX export needs the onnx package: {EXPORT_EXTRA}") from None
    path = _check_writable(Path(path))
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if not 14 <= opset <= 23:
        raise ValueError(f"opset must be between 14 (HardSwish) and 23, got {opset}")
    net = _prepare(model, fuse)
    example = _example(model, 2 if dynamic_batch else 1)
    axes: dict[int, str] = {}
    if dynamic_batch:
        axes[0] = "batch"
    if dynamic_size:
        axes.update({2: "height", 3: "width"})

    def write(tmp: str) -> None:
        names = dict(input_names=["input"], output_names=["logits"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice, tracer notes
            if dynamo:
                try:
                    import onnxscript  # noqa: F401
                except ImportError:
                    raise ImportError(f"the dynamo ONNX exporter needs onnxscript: {EXPORT_EXTRA}") from None
                shapes = _dynamic_shapes(dynamic_batch, dynamic_size)
                program = torch.onnx.export(net, (example,), None, dynamo=True, opset_version=opset,
                                            dynamic_shapes=shapes, verbose=False, **names)
                proto = program.model_proto
            else:
                buffer = Path(tmp)
                torch.onnx.export(net, (example,), str(buffer), dynamo=False, opset_version=opset,
                                  dynamic_axes={"input": axes, "logits": {0: "batch"} if dynamic_batch else {}},
                                  do_constant_folding=True, **names)
                proto = onnx.load(str(buffer))
        for key, value in metadata(model).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.producer_name, proto.producer_version = "mobilenets", __version__
        onnx.save(proto, tmp)

    return atomic_write(path, write)


def _dynamic_shapes(dynamic_batch: bool, dynamic_size: bool) -> tuple[dict[int, Any]]:
    dims: dict[int, Any] = {}
    if dynamic_batch:
        dims[0] = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    if dynamic_size:
        dims[2] = torch.export.Dim("height", min=MIN_SIZE, max=MAX_SIZE)
        dims[3] = torch.export.Dim("width", min=MIN_SIZE, max=MAX_SIZE)
    return (dims,)


def export_torchscript(model: nn.Module, path: str | Path, *, fuse: bool = True, method: str = "script") -> Path:
    """Write ``model`` as a TorchScript archive (``torch.jit.load`` runs it at any batch size and input size).

    ``method="script"`` compiles the Python code (``torch.jit.script``); ``"trace"`` records one run at the
    weights' input size (exact at other sizes too: the SAME padding's shape arithmetic is traced). The metadata is
    the extra file ``mobilenets.json``. Written atomically.
    """
    if method not in ("script", "trace"):
        raise ValueError(f"method must be 'script' or 'trace', got {method!r}")
    path = _check_writable(Path(path))
    net = _prepare(model, fuse)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = torch.jit.script(net) if method == "script" else torch.jit.trace(net, _example(model, 1))
    extra = {"mobilenets.json": json.dumps(metadata(model))}

    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.save's deprecation notice: TorchScript is what was asked for
            torch.jit.save(compiled, tmp, _extra_files=extra)

    return atomic_write(path, write)


def export_program(model: nn.Module, path: str | Path, *, dynamic_batch: bool = False, dynamic_size: bool = False,
                   fuse: bool = True) -> Path:
    """Write ``model`` as a ``torch.export`` program (``.pt2``; ``torch.export.load(path).module()`` runs it).

    With ``dynamic_size`` the height and width may be anything from 64 to 4096 (see ``MIN_SIZE``); with
    ``dynamic_batch`` the batch from 1 to 4096. The metadata is the extra file ``mobilenets.json``. Written
    atomically.
    """
    path = _check_writable(Path(path))
    net = _prepare(model, fuse)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(net, (_example(model, 2 if dynamic_batch else 1),),
                                      dynamic_shapes=_dynamic_shapes(dynamic_batch, dynamic_size))
    extra = {"mobilenets.json": json.dumps(metadata(model))}
    buffer = io.BytesIO()  # torch.export.save wants a name ending in .pt2; the temporary file's does not
    torch.export.save(program, buffer, extra_files=extra)
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata written by the exporters, decoded (JSON values parsed), from an ONNX, TorchScript or .pt2 file."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        raw = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    elif path.suffix == ".pt2":
        extra = {"mobilenets.json": ""}
        torch.export.load(path, extra_files=extra)
        raw = json.loads(extra["mobilenets.json"])
    else:
        extra = {"mobilenets.json": ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
            torch.jit.load(str(path), _extra_files=extra)
        raw = json.loads(extra["mobilenets.json"])
    out: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


# ---------------------------------------------------------------------------------------------------------------
# The fast PyTorch path
# ---------------------------------------------------------------------------------------------------------------


def dynamo_limits() -> contextlib.AbstractContextManager:
    """Raised ``torch._dynamo`` recompile limits, for the duration of a compile or a call.

    All our models share ``MobileNet.forward``, and dynamo guards each compiled graph on the module and on the input
    (shape, grad mode): past its default 8 entries per code object, a process's later models would silently run
    eager under ``torch.compile`` (seen in the test suite and in the benchmark).
    """
    return torch._dynamo.config.patch(recompile_limit=256, accumulated_recompile_limit=4096)


def optimize_for_inference(model: nn.Module, example: torch.Tensor, *, compile_model: bool = False,
                           ) -> Callable[[torch.Tensor], torch.Tensor]:
    """A fast inference callable for ``model`` on ``example``'s device and dtype (what ``predict`` uses).

    BatchNorm folded (``fuse``), channels-last memory format, traced and frozen (``torch.jit.freeze``): a few
    seconds to prepare, no compile step. Measured side by side on a 2-core x86 CPU against ``torch.compile`` of
    timm's MobileNetV3-Large (same calibrated weights, flushed denormals): 1.17x its speed at batch 1, 1.07x at
    batch 32; ``torch.jit.optimize_for_inference`` on top (oneDNN layouts) was slower (0.86x / 0.76x), and so was
    the NCHW layout (1.00x / 0.62x).
    ``compile_model=True`` (``predict``/``validate --compile``): ``torch.compile`` with inductor's freezing (weights
    become constants, convolutions prepacked for oneDNN with their activations fused) instead of the trace, one
    graph per input shape (10-60 s to compile each on two cores; needs a C++ compiler on CPU). Measured on a
    2-core AVX-512 CPU at batch 32, MobileNetV3-Large: 1.05x ``torch.compile`` of torchvision's, where the traced
    path ran at 0.80x; at batch 1 the traced path is the faster one.
    The callable takes any batch and input size (the SAME padding is traced as shape arithmetic) and returns the
    logits, equal to the eager model's to 1e-4. Gradients are not tracked.
    """
    net = fuse(model).to(device=example.device, dtype=example.dtype)
    memory_format = torch.channels_last if example.ndim == 4 else torch.contiguous_format
    net = net.to(memory_format=memory_format)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if compile_model:
            compiled = torch.compile(net.eval(), dynamic=False, options={"freezing": True})

            def frozen(x: torch.Tensor) -> torch.Tensor:  # a new shape compiles: under the raised limits
                with dynamo_limits():
                    return compiled(x)
        else:
            traced = torch.jit.trace(net, example.to(memory_format=memory_format), check_trace=False)
            frozen = torch.jit.freeze(traced.eval())
        frozen(example.to(memory_format=memory_format))  # the first runs specialise (or compile); do them now

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return frozen(x.to(memory_format=memory_format))

    return run


# Images from which predict / validate take the fast path: its setup (a few seconds) costs about as much as
# running the eager model on this many images at batch 32 on a small CPU.
FAST_PATH_MIN_IMAGES = 64


def fast_or_eager(model: nn.Module, example: torch.Tensor, *, compile_model: bool = False,
                  ) -> Callable[[torch.Tensor], torch.Tensor]:
    """``optimize_for_inference(model, example, compile_model=...)``; if compiling fails (no C++ compiler, an
    unsupported op) the traced path, and if the model cannot be traced either (a user's custom module), ``model``
    itself: the caller runs any of them the same way. Each fallback is a warning."""
    if compile_model:
        try:
            return optimize_for_inference(model, example, compile_model=True)
        except Exception as e:  # noqa: BLE001 - the traced path still works
            warnings.warn(f"torch.compile failed for this model ({type(e).__name__}: {str(e)[:200]}); using the "
                          "traced fast path", stacklevel=2)
    try:
        return optimize_for_inference(model, example)
    except Exception as e:  # noqa: BLE001 - any failure to trace or freeze: the eager model still works
        warnings.warn(f"the fast inference path is not available for this model ({type(e).__name__}); "
                      "running it eagerly", stacklevel=2)
        return model


# ---------------------------------------------------------------------------------------------------------------
# CLI: mobilenets export
# ---------------------------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``mobilenets export``."""
    p.usage = ("%(prog)s (MODEL [--pretrained TAG] | --checkpoint FILE) --format {onnx,torchscript,exported-program} "
               "[--dynamic-batch] [--dynamic-size] [--fuse | --no-fuse] [--opset N] OUT")
    p.add_argument("positionals", nargs="*", metavar="MODEL OUT",
                   help="the model name (omit with --checkpoint) and the file to write")
    _gather_positionals(p)
    p.add_argument("--pretrained", metavar="TAG", help="weights: MODEL.TAG or a TAG of MODEL (default: its default)")
    p.add_argument("--checkpoint", metavar="FILE", help="a mobilenets .safetensors checkpoint instead of MODEL")
    p.add_argument("--format", required=True, choices=FORMATS, help="what to write")
    p.add_argument("--dynamic-batch", action="store_true", help="any batch size (else 1)")
    p.add_argument("--dynamic-size", action="store_true",
                   help=f"any height and width (exported-program: {MIN_SIZE} to {MAX_SIZE}; else the weights' size)")
    p.add_argument("--fuse", action=argparse.BooleanOptionalAction, default=True,
                   help="fold BatchNorm into the convolutions first (default: on)")
    p.add_argument("--opset", type=int, metavar="N", help=f"ONNX opset (default: {DEFAULT_OPSET})")


def _gather_positionals(p: argparse.ArgumentParser) -> None:
    """Let MODEL and OUT sit on either side of the options (``MODEL --format onnx OUT``).

    argparse fills each positional from one run of plain arguments only, so an OUT after the options would be
    "unrecognized"; this parser takes such leftovers (never ``-`` options) as further positionals.
    """
    parse = p.parse_known_args

    def parse_known_args(args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        ns, extras = parse(args, namespace)
        ns.positionals = list(ns.positionals) + [a for a in extras if not a.startswith("-")]
        return ns, [a for a in extras if a.startswith("-")]

    p.parse_known_args = parse_known_args  # type: ignore[method-assign]


def export_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``mobilenets export``: write MODEL (or --checkpoint FILE) as ONNX, TorchScript or a torch.export program."""
    from .cli import _debug, _error, load_model
    from .images import one_line

    if args.checkpoint is not None and args.pretrained is not None:
        parser.error("--pretrained and --checkpoint are mutually exclusive")
    if len(args.positionals) > 2:
        parser.error(f"expected MODEL and OUT, got {len(args.positionals)} arguments: {' '.join(args.positionals)}")
    *model, args.out = args.positionals
    args.model = model[0] if model else None
    if args.checkpoint is None and args.model is None and args.pretrained is None:
        parser.error("give MODEL (and optionally --pretrained TAG) or --checkpoint FILE, then OUT")
    if args.opset is not None and args.format != "onnx":
        parser.error("--opset applies to --format onnx only")
    if args.format == "onnx":
        try:
            import onnx  # noqa: F401
        except ImportError:
            _error(f"--format onnx needs the onnx package: {EXPORT_EXTRA}")
            return 1
    try:
        _check_writable(Path(args.out))
        model = load_model(args.model, args.pretrained, args.checkpoint)
        if args.format == "onnx":
            out = export_onnx(model, args.out, dynamic_batch=args.dynamic_batch, dynamic_size=args.dynamic_size,
                              fuse=args.fuse, opset=args.opset)
        elif args.format == "torchscript":
            out = export_torchscript(model, args.out, fuse=args.fuse)
        else:
            out = export_program(model, args.out, dynamic_batch=args.dynamic_batch, dynamic_size=args.dynamic_size,
                                 fuse=args.fuse)
    except (OSError, ValueError, ImportError, RuntimeError) as e:  # unknown model, bad file, missing extra, ...
        if _debug():
            raise
        _error(one_line(e))
        return 1
    print(f"wrote {out} ({args.format}, {out.stat().st_size / 2**20:.1f} MiB)")
    return 0


__all__ = ["FAST_PATH_MIN_IMAGES", "FORMATS", "export_command", "export_onnx", "export_program", "export_torchscript",
           "fast_or_eager", "fuse", "metadata", "optimize_for_inference", "read_metadata"]

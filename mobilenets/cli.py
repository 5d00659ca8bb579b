"""The ``mobilenets`` command (also ``python -m mobilenets``).

    mobilenets predict IMAGE|DIR [...]                        classify images (default: embedded EfficientNet-Lite0)
    mobilenets list [PATTERN] [--pretrained]                  models, or pretrained weights with top-1 and params
    mobilenets convert SRC OUT.safetensors --from LIBRARY:MODEL   torchvision / timm / ... weights -> mobilenets
    mobilenets --version

Errors a user can cause are one line on stderr (``mobilenets: error: ...``) and exit status 1; usage errors exit
2. ``predict`` reports each image it cannot read in one line and still classifies the others. File names and labels
are printed with control characters escaped, so no terminal escape sequence in a name reaches the terminal. Set
``MOBILENETS_DEBUG=1`` to get tracebacks instead of one-line errors.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import sys
import unicodedata
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from . import __version__
from .checkpoint import from_checkpoint
from .convert import add_arguments as add_convert_arguments
from .convert import run, source_config
from .data import IMAGENET_1K, EvalTransform, eval_transform, imagenet_categories
from .factory import create_model
from .images import DecodeBudget, ImageError, ImageLimits, expand_paths, one_line, open_image
from .model import MobileNet
from .pretrained import list_pretrained, load_manifest
from .profile import count_params as count
from .registry import build_config, get_spec, list_models

PROG = "mobilenets"
DEFAULT_MODEL = "efficientnet_lite0"

__all__ = ["ImageError", "build_parser", "escape", "main", "prepare"]


# ---------------------------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------------------------

_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def escape(text: str) -> str:
    """``text`` with control characters written as escapes (``\\n``, ``\\x1b``, ``\\u202e``), safe for a terminal.

    C0/C1 controls (ESC included, so no ANSI sequence survives), line and paragraph separators and bidirectional
    overrides are escaped; bytes of a file name that are not valid in the file system encoding (decoded by Python
    as lone surrogates) are written as ``\\xNN``. Everything else, non-ASCII letters included, is kept.
    """
    if text.isprintable():
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch in _BIDI or unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp"):
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def _debug() -> bool:
    return os.environ.get("MOBILENETS_DEBUG", "") not in ("", "0")


def _error(message: str) -> None:
    """``mobilenets: error: message`` on stderr; callers pass one line (``one_line``), escaping keeps it one."""
    print(f"{PROG}: error: {escape(message)}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Show warnings as ``mobilenets: warning: ...`` lines (no source lines); Pillow's size warning is ours to give."""
    from PIL import Image

    def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        print(f"{PROG}: warning: {escape(' '.join(str(message).split()))}", file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # images.ImageLimits checks sizes first
        warnings.showwarning = show
        yield


def _replace_unencodable_output() -> None:
    """A label the terminal's encoding cannot show is printed as ``\\uXXXX`` rather than failing the run."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, io.UnsupportedOperation):
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------------------------------
# predict: images
# ---------------------------------------------------------------------------------------------------------------


def prepare(path: str, transform: EvalTransform, limits: ImageLimits | None = None,
            budget: DecodeBudget | None = None) -> torch.Tensor:
    """``path`` → the model's input tensor ``(C, crop, crop)``, or ``ImageError`` naming the file."""

    def convert(img: Any) -> torch.Tensor:
        try:
            return transform(img)
        except Exception as e:  # noqa: BLE001 - an unusual mode or a degenerate image
            raise ImageError(f"{path}: cannot preprocess image ({one_line(e)})") from None

    return open_image(path, limits, budget, convert=convert)


def _prepared_batches(
    items: Sequence[tuple[str, ImageError | None]], transform: EvalTransform, batch_size: int, limits: ImageLimits
) -> Iterator[list[tuple[str, torch.Tensor | ImageError]]]:
    """Decode images on a thread pool, one batch ahead of the consumer; decoding shares ``limits.max_bytes``."""
    budget = DecodeBudget(limits.max_bytes)

    def work(item: tuple[str, ImageError | None]) -> torch.Tensor | ImageError:
        path, error = item
        if error is not None:
            return error
        try:
            return prepare(path, transform, limits, budget)
        except ImageError as e:
            return e

    chunks = [list(items[i:i + batch_size]) for i in range(0, len(items), batch_size)]
    workers = max(1, min(8, os.cpu_count() or 1, batch_size))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = [pool.submit(work, item) for item in chunks[0]] if chunks else []
        for k, chunk in enumerate(chunks):
            results = [f.result() for f in pending]
            pending = [pool.submit(work, item) for item in chunks[k + 1]] if k + 1 < len(chunks) else []
            yield [(path, x) for (path, _), x in zip(chunk, results, strict=True)]


# ---------------------------------------------------------------------------------------------------------------
# predict: model
# ---------------------------------------------------------------------------------------------------------------


class UsageError(ValueError):
    """Command-line arguments that contradict each other (exit status 2)."""


def choose_weights(model: str | None, pretrained: str | None) -> tuple[str, str | bool]:
    """``(model name, pretrained)`` from ``--model`` and ``--pretrained`` (a tag, or ``model.tag`` alone)."""
    if pretrained is not None and "." in pretrained:
        named = pretrained.partition(".")[0]
        if model is not None and model != named:
            raise UsageError(f"--model {model} and --pretrained {pretrained} name different models; "
                             f"drop --model (--pretrained {pretrained} selects {named})")
        return named, pretrained
    return model or DEFAULT_MODEL, pretrained or True


def load_model(model: str | None, pretrained: str | None, checkpoint: str | None) -> torch.nn.Module:
    """The model asked for on the command line (``--checkpoint`` builds whatever architecture the file records)."""
    if checkpoint is not None:
        if model is not None:
            get_spec(model)  # an unknown name is reported as such
        net = from_checkpoint(checkpoint)
        if model is not None and net.config.name != model:
            raise ValueError(f"{checkpoint} holds weights for {net.config.name!r}, not {model!r}: drop --model to "
                             "use the architecture the file records")
        return net
    name, weights = choose_weights(model, pretrained)
    if isinstance(weights, str) and "." not in weights and model is None and weights in list_models():
        raise ValueError(f"--pretrained {weights} names a model, not a tag: use --model {weights} for its default "
                         f"weights, or --pretrained {weights}.TAG (see `mobilenets list --pretrained {weights}`)")
    return create_model(name, pretrained=weights)


def class_names(model: torch.nn.Module) -> tuple[list[str], str]:
    """Labels for the model's outputs and where they come from (the weights' own list, ImageNet-1k, or none)."""
    num_classes = int(getattr(model, "num_classes", 0))
    cfg = getattr(model, "pretrained_cfg", None) or {}
    categories = cfg.get("categories")
    if isinstance(categories, (list, tuple)) and len(categories) == num_classes:
        return [str(c) for c in categories], f"{num_classes} classes named by the weights"
    if num_classes == 1000 and categories in (None, IMAGENET_1K):
        return imagenet_categories(), "ImageNet-1k classes"
    return [f"class {i}" for i in range(num_classes)], f"{num_classes} unnamed classes"


def _numbers(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def describe(model: torch.nn.Module, transform: EvalTransform, checkpoint: str | None, labels: str) -> str:
    """The header line: model, weights, classes and the preprocessing applied to every image."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = cfg.get("model") or getattr(getattr(model, "config", None), "name", type(model).__name__)
    weights = f"weights {cfg['tag']}" if cfg.get("tag") else ""
    if checkpoint is not None:
        weights = f"{weights} from {checkpoint}" if weights else f"checkpoint {checkpoint}"
    preprocessing = (f"resize {transform.resize}, crop {transform.crop} {transform.crop_mode}, "
                     f"{transform.interpolation}, {'grey' if transform.in_chans == 1 else 'RGB'}, "
                     f"mean {_numbers(transform.mean)}, std {_numbers(transform.std)}")
    return escape(f"{name} ({weights or 'random weights'}; {labels}): {preprocessing}")


# ---------------------------------------------------------------------------------------------------------------
# predict
# ---------------------------------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _format_table(path: str, predictions: list[dict[str, Any]]) -> str:
    lines = [f"{escape(path)}:"]
    for rank, p in enumerate(predictions, 1):
        lines.append(f"  {rank:>2}. {100 * p['probability']:6.2f}%  {escape(p['label'])}  [{p['index']}]")
    return "\n".join(lines)


def _print_json(documents: list[dict[str, Any]]) -> None:
    print(json.dumps(documents, indent=2, allow_nan=False), flush=True)


def _classify(model: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor, labels: list[str], topk: int,
              ) -> list[list[dict[str, Any]] | None]:
    """Top-k predictions per image; ``None`` for an image whose logits or probabilities are not all finite."""
    logits = model(batch).float()
    probs = logits.softmax(dim=1)
    finite = torch.isfinite(logits).all(dim=1) & torch.isfinite(probs).all(dim=1)
    values, indices = probs.topk(topk, dim=1)
    out: list[list[dict[str, Any]] | None] = []
    for ok, p_row, i_row in zip(finite.tolist(), values.tolist(), indices.tolist(), strict=True):
        if not ok or not all(math.isfinite(p) for p in p_row):
            out.append(None)
            continue
        out.append([dict(index=i, label=labels[i], probability=p) for p, i in zip(p_row, i_row, strict=True)])
    return out


def predict(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.checkpoint is not None and args.pretrained is not None:
        parser.error("--pretrained and --checkpoint are mutually exclusive")
    try:
        choose_weights(args.model, args.pretrained)
    except UsageError as e:
        parser.error(str(e))
    try:
        limits = ImageLimits.from_env()
    except ValueError as e:
        _error(str(e))
        return 1
    items = list(expand_paths(args.images, recursive=args.recursive))

    def fail_all(message: str) -> int:  # the model cannot run: one line, and in --json every input says so
        _error(message)
        if args.json:
            _print_json([dict(image=path, error=f"{path}: not classified: {message}") for path, _ in items])
        return 1

    try:
        device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                              "cpu" if args.device == "auto" else args.device)
        model = load_model(args.model, args.pretrained, args.checkpoint)
        num_classes = int(getattr(model, "num_classes", 0))
        if num_classes < 1:
            raise ValueError("the model has no classifier (num_classes=0); it cannot predict classes")
        transform = eval_transform(model)
        in_chans = getattr(getattr(model, "config", None), "in_chans", 3)
        if transform.input_size[0] != in_chans:
            raise ValueError(f"the model takes {in_chans} input channels but its preprocessing gives "
                             f"{transform.input_size[0]}; predict cannot feed it images")
        labels, label_source = class_names(model)
        model = model.to(device).eval()
        from .export import FAST_PATH_MIN_IMAGES, fast_or_eager  # issue 9: the fast inference path

        run_model: Any = model
        if args.compile or len(items) >= FAST_PATH_MIN_IMAGES:  # enough images to repay its setup
            example = torch.zeros(min(args.batch_size, len(items)), *transform.input_size, device=device)
            run_model = fast_or_eager(model, example, compile_model=args.compile)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - unknown model/tag, bad checkpoint, no network, bad device: one line
        if _debug():
            raise
        return fail_all(one_line(e))
    if args.topk > num_classes:
        parser.error(f"--topk {args.topk} is more than the model's {num_classes} classes")

    failed = 0
    documents: list[dict[str, Any]] = []
    if not args.json:
        print(describe(model, transform, args.checkpoint, label_source), flush=True)
    with torch.inference_mode():
        for batch in _prepared_batches(items, transform, args.batch_size, limits):
            good = [k for k, (_, x) in enumerate(batch) if isinstance(x, torch.Tensor)]
            results: dict[int, list[dict[str, Any]] | None] = {}
            if good:
                try:
                    stacked = torch.stack([batch[k][1] for k in good]).to(device)  # type: ignore[misc]
                    results = dict(zip(good, _classify(run_model, stacked, labels, args.topk), strict=True))
                except Exception as e:  # noqa: BLE001 - out of memory, a broken device, ...
                    if _debug():
                        raise
                    return _inference_failed(args, items, documents, one_line(e))
            for k, (path, x) in enumerate(batch):
                if isinstance(x, torch.Tensor) and results.get(k) is None:
                    x = ImageError(f"{path}: the model's output is not finite (NaN or infinity) for this image; "
                                   "its weights may be damaged")
                if isinstance(x, ImageError):
                    failed += 1
                    _error(str(x))
                    documents.append(dict(image=path, error=str(x)))
                    continue
                predictions = results[k]
                documents.append(dict(image=path, predictions=predictions))
                if not args.json:
                    print(_format_table(path, predictions), flush=True)  # type: ignore[arg-type]
    if args.json:
        _print_json(documents)
    return 1 if failed else 0


def _inference_failed(args: argparse.Namespace, items: Sequence[tuple[str, ImageError | None]],
                      documents: list[dict[str, Any]], message: str) -> int:
    """A forward pass failed: one line; in ``--json``, the images not classified yet get an error entry."""
    _error(f"inference failed: {message}")
    if args.json:
        rest = [dict(image=path, error=f"{path}: not classified: inference failed: {message}")
                for path, _ in items[len(documents):]]
        _print_json(documents + rest)
    return 1


# ---------------------------------------------------------------------------------------------------------------
# list
# ---------------------------------------------------------------------------------------------------------------


def count_params(name: str, source: str | None = None) -> int:
    """Parameters of a registered model (or of what a ``LIBRARY:MODEL`` source converts into), built on ``meta``."""
    class Shapes(MobileNet):
        def reset_parameters(self) -> None:  # random init decomposes slowly on meta, and the values are unused
            pass

    config = source_config(source) if source else build_config(name)
    with torch.device("meta"):
        return count(Shapes(config))


def _glob(pattern: str | None) -> str:
    """A pattern without wildcards matches as a substring: ``mobilenets list v3`` lists every MobileNetV3."""
    if not pattern:
        return "*"
    return pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"


def model_rows(pattern: str = "*") -> list[dict[str, Any]]:
    rows = []
    for name in list_models(pattern):
        spec = get_spec(name)
        rows.append(dict(model=name, params=count_params(name), resolution=spec.input_size, summary=spec.summary))
    return rows


def _resolution(entry: dict[str, Any]) -> int | None:
    pre = entry.get("preprocess") or {}
    size = pre.get("input_size", pre.get("crop", entry.get("input_size")))
    if isinstance(size, (list, tuple)):
        size = size[-1] if size else None
    return int(size) if isinstance(size, (int, float)) else None


def pretrained_rows(pattern: str = "*") -> list[dict[str, Any]]:
    manifest = load_manifest()
    rows = []
    for key in list_pretrained(pattern):
        entry = manifest[key]
        metrics = entry.get("metrics") or {}
        params = entry.get("params")
        rows.append(dict(
            weights=key, model=entry["model"], tag=entry["tag"], default=bool(entry.get("default")),
            top1=metrics.get("top1"), top5=metrics.get("top5"),
            params=int(params) if isinstance(params, int) else count_params(entry["model"], entry.get("source")),
            resolution=_resolution(entry), source=entry.get("source"), license=entry.get("license"),
        ))
    return rows


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True))

    return "\n".join(line(cells).rstrip() for cells in (header, *rows))


def list_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    pattern = _glob(args.pattern)
    rows = pretrained_rows(pattern) if args.pretrained else model_rows(pattern)
    what = "pretrained weights" if args.pretrained else "models"
    if not rows:
        again = "mobilenets list --pretrained" if args.pretrained else "mobilenets list"
        _error(f"no {what} match {args.pattern!r}; run `{again}` to see them all")
        return 1
    if args.json:
        print(json.dumps(rows, indent=2, allow_nan=False))
        return 0
    if args.pretrained:
        def number(v: Any) -> str:
            return f"{v:.2f}" if isinstance(v, (int, float)) else "–"

        table = _table(("weights", "top-1", "params (M)", "resolution"),
                       [(r["weights"] + (" (default)" if r["default"] else ""), number(r["top1"]),
                         f"{r['params'] / 1e6:.2f}", str(r["resolution"] or "–")) for r in rows],
                       (False, True, True, True))
    else:
        table = _table(("model", "params (M)", "resolution", "summary"),
                       [(r["model"], f"{r['params'] / 1e6:.2f}", str(r["resolution"]), r["summary"]) for r in rows],
                       (False, True, True, False))
    print(table)
    return 0


# ---------------------------------------------------------------------------------------------------------------
# convert
# ---------------------------------------------------------------------------------------------------------------


def convert_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    return run(args, prog=f"{PROG} convert")


# ---------------------------------------------------------------------------------------------------------------
# Parser and entry point
# ---------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="MobileNetV1/V2/V3, EfficientNet and EfficientNetV2 in PyTorch.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = commands.add_parser(
        "predict", help="classify images with a pretrained model",
        description="Print the top-k classes of each image, using the weights' own preprocessing (shown in the "
                    f"first line). Default: {DEFAULT_MODEL} with its default pretrained weights (embedded, works "
                    "offline). Images larger than MOBILENETS_MAX_IMAGE_PIXELS pixels (default 67108864) or whose "
                    "decoding needs more than MOBILENETS_MAX_IMAGE_MB MiB (default 1024) are refused.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files (any format and mode Pillow reads), or directories: their image files, sorted "
                        "by name (hidden files skipped)")
    p.add_argument("-r", "--recursive", action="store_true", help="also read the subdirectories of directories")
    p.add_argument("--model", metavar="NAME", help=f"model name (default: {DEFAULT_MODEL}; see `mobilenets list`)")
    p.add_argument("--pretrained", metavar="TAG",
                   help="weights: MODEL.TAG (selects the model too) or a TAG of --model (default: the model's default "
                        "tag; see `mobilenets list --pretrained`)")
    p.add_argument("--checkpoint", metavar="PATH",
                   help="a mobilenets .safetensors checkpoint instead of pretrained weights (the architecture, "
                        "preprocessing and class names it records are used)")
    p.add_argument("--topk", type=_positive_int, default=5, metavar="K", help="classes per image (default: 5)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON list with an entry per image: {image, predictions: [{index, label, "
                        "probability}]} or {image, error}")
    p.add_argument("--batch-size", type=_positive_int, default=32, metavar="N",
                   help="images per forward pass (default: 32)")
    p.add_argument("--device", default="auto", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--compile", action="store_true",
                   help="run the model through torch.compile (a compile step per batch shape; pays off on many "
                        "images, at batch 32 and up)")
    p.set_defaults(handler=predict, command_parser=p)

    p = commands.add_parser(
        "list", help="list models, or pretrained weights with their accuracy",
        description="List the models (parameters, native resolution, summary), or with --pretrained the "
                    "pretrained weights MODEL.TAG (ImageNet top-1 as published, parameters, resolution). Nothing is "
                    "downloaded.",
    )
    p.add_argument("pattern", nargs="?", metavar="PATTERN",
                   help="fnmatch pattern (e.g. 'efficientnet_b*'); without wildcards, a substring")
    p.add_argument("--pretrained", action="store_true", help="list pretrained weights instead of models")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(handler=list_command, command_parser=p)

    p = commands.add_parser("convert", help="convert torchvision / timm / EfficientNet-PyTorch weights")
    add_convert_arguments(p)
    p.set_defaults(handler=convert_command, command_parser=p)

    # Subcommands with their own modules add their parsers here (each imports its heavy dependencies lazily).
    # -- issue 8: train (mobilenets/training.py) --
    from .training import add_arguments as add_train_arguments
    from .training import train_command

    p = commands.add_parser(
        "train", help="fine-tune a model on a folder of images",
        description="Fine-tune a model on DATA_DIR/<class>/<image> (every file is checked first): a new classifier "
                    "for the folder's classes, the pretrained base frozen or partly unfrozen. Writes RUN_DIR/"
                    "best.safetensors (for predict/validate --checkpoint), last.pt (for --resume), metrics.csv, "
                    "metrics.jsonl and curves.png. Runs on several processes with `torchrun --nproc_per_node=N -m "
                    "mobilenets train ...` (--batch-size is per process).",
    )
    add_train_arguments(p)
    p.set_defaults(handler=train_command, command_parser=p)
    # -- issue 8: validate (mobilenets/evaluate.py) --
    from .evaluate import add_validate_arguments, validate_command

    p = commands.add_parser(
        "validate", help="top-1/top-5, per-class accuracy and confusion matrix on an image folder",
        description="Validate a checkpoint or pretrained weights on an image folder DATA_DIR/CLASS/IMAGE, with the "
                    "weights' own preprocessing. Class folders are matched to the model's classes by name; folders "
                    "named by ImageNet WordNet id (n01440764 ...) map onto a 1000-class ImageNet model. Every file "
                    "is checked first: a corrupt or non-image file is reported before any image is classified.",
    )
    add_validate_arguments(p, _positive_int)
    p.set_defaults(handler=validate_command, command_parser=p)
    # -- issue 9: export (mobilenets/export.py) --
    from .export import add_arguments as add_export_arguments  # light: torch only; onnx is imported on use
    from .export import export_command

    p = commands.add_parser(
        "export", help="write a model as ONNX, TorchScript or a torch.export program",
        description="Write MODEL (with --pretrained TAG, default its default weights) or --checkpoint FILE as an ONNX "
                    "file (needs pip install \"mobilenets[export]\"), a TorchScript archive or a torch.export .pt2 "
                    "program, BatchNorm folded, with the preprocessing and class names as metadata.",
    )
    add_export_arguments(p)
    p.set_defaults(handler=export_command, command_parser=p)
    # -- issue 9: quantize (mobilenets/quantize.py) --
    from . import quantize as quantize_module

    p = commands.add_parser("quantize", help="post-training static int8 (NNCF; runs in OpenVINO / ONNX Runtime)",
                            description="Write an int8 model calibrated on a folder of images (the quantize extra).")
    quantize_module.add_arguments(p)
    p.set_defaults(handler=quantize_module.quantize_command, command_parser=p)
    # -- issue 9: benchmark (mobilenets/benchmark.py) --
    from . import benchmark as benchmark_module

    p = commands.add_parser("benchmark", help="speed against torchvision and timm, same weights, interleaved rounds",
                            description="img/s of ours and of torchvision's / timm's models with the same weights, "
                                        "per mode, rounds interleaved; ratios ours / best peer.")
    benchmark_module.add_arguments(p)
    p.set_defaults(handler=benchmark_module.benchmark_command, command_parser=p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m mobilenets`` and the ``mobilenets`` script; returns the exit status."""
    parser = build_parser()
    _replace_unencodable_output()
    try:
        with _one_line_warnings():
            args = parser.parse_args(argv)
            if args.command is None:
                parser.print_help(sys.stderr)
                return 2
            return args.handler(args, args.command_parser)
    except SystemExit as e:  # argparse: --help and --version (0), usage errors (2)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:  # `mobilenets predict ... | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as e:  # noqa: BLE001 - an error nobody foresaw is still one line, not a traceback
        if _debug():
            raise
        _error(f"{one_line(e)} ({type(e).__name__}; set MOBILENETS_DEBUG=1 for a traceback)")
        return 1

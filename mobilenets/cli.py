"""Command line: ``python -m mobilenets predict IMAGE [IMAGE ...]`` (also the ``mobilenets`` console script).

Classifies images with a pretrained model (default: the embedded, offline EfficientNet-Lite0 weights), using
the weights' own preprocessing, and prints the top-k ImageNet classes per image, or one JSON document.
Images that cannot be read are reported one line each on stderr and make the exit status 1; the others are
still classified. Model and weight errors are one line on stderr and exit status 1. Usage errors exit 2.
Set ``MOBILENETS_DEBUG=1`` to get tracebacks instead of one-line errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from .data import EvalTransform, eval_transform, imagenet_categories

PROG = "mobilenets"
DEFAULT_MODEL = "efficientnet_lite0"


class ImageError(Exception):
    """An input that cannot be classified; the message names the file."""


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    if isinstance(e, KeyError) and len(e.args) == 1:
        text = str(e.args[0])
    return text or type(e).__name__


def _debug() -> bool:
    return os.environ.get("MOBILENETS_DEBUG", "") not in ("", "0")


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------------------


def open_image(path: str):
    """Open and fully decode an image (first frame), applying its EXIF orientation; ``ImageError`` if impossible."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    if p.is_dir():
        raise ImageError(f"{path}: is a directory, not an image")
    if not p.exists():
        raise ImageError(f"{path}: no such file")
    try:
        with Image.open(p) as img:
            img.load()
            return ImageOps.exif_transpose(img)
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file Pillow can read") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{path}: image too large ({_one_line(e)})") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except Exception as e:  # noqa: BLE001 - decoders raise OSError, SyntaxError, ValueError, struct.error, ...
        raise ImageError(f"{path}: cannot decode image ({_one_line(e)})") from None


def prepare(path: str, transform: EvalTransform) -> torch.Tensor:
    """``path`` → the model's input tensor ``(3, crop, crop)``, or ``ImageError``."""
    img = open_image(path)
    try:
        return transform(img)
    except Exception as e:  # noqa: BLE001 - an unusual mode or a degenerate image
        raise ImageError(f"{path}: cannot preprocess image ({_one_line(e)})") from None


def _prepared_batches(
    paths: Sequence[str], transform: EvalTransform, batch_size: int
) -> Iterator[list[tuple[str, torch.Tensor | ImageError]]]:
    """Decode images on a thread pool, one batch ahead of the consumer (bounded memory)."""

    def work(path: str) -> torch.Tensor | ImageError:
        try:
            return prepare(path, transform)
        except ImageError as e:
            return e

    chunks = [list(paths[i:i + batch_size]) for i in range(0, len(paths), batch_size)]
    workers = max(1, min(8, os.cpu_count() or 1, batch_size))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = [pool.submit(work, p) for p in chunks[0]] if chunks else []
        for k, chunk in enumerate(chunks):
            results = [f.result() for f in pending]
            pending = [pool.submit(work, p) for p in chunks[k + 1]] if k + 1 < len(chunks) else []
            yield list(zip(chunk, results, strict=True))


# ---------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------


def load_model(model: str | None, pretrained: str | None, checkpoint: str | None) -> torch.nn.Module:
    """The model asked for on the command line (``--checkpoint`` alone rebuilds whatever the file holds)."""
    from .checkpoint import from_checkpoint
    from .registry import create_model

    if checkpoint is not None:
        if model is None:
            return from_checkpoint(checkpoint)
        return create_model(model, checkpoint_path=checkpoint)
    return create_model(model or DEFAULT_MODEL, pretrained=pretrained or True)


def class_names(model: torch.nn.Module) -> list[str]:
    """Labels for the model's outputs: the weights' own list, ImageNet-1k for 1000 classes, else ``class N``."""
    num_classes = int(getattr(model, "num_classes", 0))
    cfg = getattr(model, "pretrained_cfg", None) or {}
    categories = cfg.get("categories")
    if isinstance(categories, (list, tuple)) and len(categories) == num_classes:
        return [str(c) for c in categories]
    if num_classes == 1000:
        return imagenet_categories()
    return [f"class {i}" for i in range(num_classes)]


def describe(model: torch.nn.Module, transform: EvalTransform, checkpoint: str | None) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = cfg.get("model") or getattr(getattr(model, "config", None), "name", type(model).__name__)
    weights = f"weights {cfg['tag']}" if cfg.get("tag") else ""
    if checkpoint is not None:
        weights = f"{weights} from {checkpoint}" if weights else f"checkpoint {checkpoint}"
    return (f"{name} ({weights or 'random weights'}): resize {transform.resize}, crop {transform.crop}, "
            f"{transform.interpolation}")


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
    lines = [f"{path}:"]
    for rank, p in enumerate(predictions, 1):
        lines.append(f"  {rank:>2}. {100 * p['probability']:6.2f}%  {p['label']}  [{p['index']}]")
    return "\n".join(lines)


def predict(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.checkpoint is not None and args.pretrained is not None:
        parser.error("--pretrained and --checkpoint are mutually exclusive")
    try:
        device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                              "cpu" if args.device == "auto" else args.device)
        model = load_model(args.model, args.pretrained, args.checkpoint)
        num_classes = int(getattr(model, "num_classes", 0))
        if num_classes < 1:
            raise ValueError("the model has no classifier (num_classes=0); it cannot predict classes")
        in_chans = getattr(getattr(model, "config", None), "in_chans", 3)
        if in_chans != 3:
            raise ValueError(f"the model takes {in_chans} input channels; predict feeds it RGB images")
        transform = eval_transform(model)
        labels = class_names(model)
        model = model.to(device).eval()
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - unknown model/tag, bad checkpoint, no network, bad device: one line
        if _debug():
            raise
        _error(_one_line(e))
        return 1
    if args.topk > num_classes:
        parser.error(f"--topk {args.topk} is more than the model's {num_classes} classes")

    failed = 0
    documents: list[dict[str, Any]] = []
    if not args.json:
        print(describe(model, transform, args.checkpoint), flush=True)
    with torch.inference_mode():
        for batch in _prepared_batches(args.images, transform, args.batch_size):
            good = [k for k, (_, x) in enumerate(batch) if isinstance(x, torch.Tensor)]
            results: dict[int, list[dict[str, Any]]] = {}
            if good:
                try:
                    logits = model(torch.stack([batch[k][1] for k in good]).to(device))
                except Exception as e:  # noqa: BLE001 - out of memory, a checkpoint with in_chans != 3, ...
                    if _debug():
                        raise
                    _error(f"inference failed: {_one_line(e)}")
                    return 1
                probs, indices = logits.float().softmax(dim=1).topk(args.topk, dim=1)
                for k, p_row, i_row in zip(good, probs.tolist(), indices.tolist(), strict=True):
                    results[k] = [dict(index=i, label=labels[i], probability=p)
                                  for p, i in zip(p_row, i_row, strict=True)]
            for k, (path, x) in enumerate(batch):
                if isinstance(x, ImageError):
                    failed += 1
                    _error(str(x))
                    documents.append(dict(image=path, error=str(x)))
                    continue
                predictions = results[k]
                documents.append(dict(image=path, predictions=predictions))
                if not args.json:
                    print(_format_table(path, predictions), flush=True)
    if args.json:
        print(json.dumps(documents, indent=2))
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="MobileNetV1/V2/V3, EfficientNet and EfficientNetV2 in PyTorch.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = commands.add_parser(
        "predict", help="classify images with a pretrained model",
        description="Print the top-k ImageNet classes of each image, using the weights' own preprocessing. "
                    f"Default: {DEFAULT_MODEL} with its default pretrained weights (embedded, works offline).",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format and mode Pillow reads)")
    p.add_argument("--model", metavar="NAME", help=f"model name (default: {DEFAULT_MODEL}; see list_models())")
    p.add_argument("--pretrained", metavar="TAG", help="pretrained tag (default: the model's default tag)")
    p.add_argument("--checkpoint", metavar="PATH",
                   help="a mobilenets .safetensors checkpoint instead of pretrained weights "
                        "(without --model, the architecture recorded in the file)")
    p.add_argument("--topk", type=_positive_int, default=5, metavar="K", help="classes per image (default: 5)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON list of {image, predictions: [{index, label, probability}]} or "
                        "{image, error}")
    p.add_argument("--batch-size", type=_positive_int, default=32, metavar="N",
                   help="images per forward pass (default: 32)")
    p.add_argument("--device", default="auto", help="torch device (default: cuda if available, else cpu)")
    p.set_defaults(handler=predict, command_parser=p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m mobilenets`` and the ``mobilenets`` script; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        return args.handler(args, args.command_parser)
    except SystemExit as e:  # argparse: --help (0) and usage errors (2)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:  # `mobilenets predict ... | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1

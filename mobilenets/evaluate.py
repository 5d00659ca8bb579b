"""Validation: top-1 / top-5, loss, per-class accuracy and the confusion matrix of a model on labelled images.

    metrics = evaluate(model, "photos/val")       # an ImageFolder, a Dataset of (image, label) or a DataLoader
    print(metrics.top1, metrics.per_class)        # percentages
    mobilenets validate photos/val --checkpoint run/best.safetensors --plot confusion.png

The dataset's classes are matched to the model's outputs: by name when the model's class names
(``pretrained_cfg["categories"]``) include every class, in any order; class folders that are ImageNet WordNet ids
(``n02123045``) onto the 1000 ImageNet classes of an ImageNet model, so pretrained weights validate on an
ImageNet-style folder without a new head; otherwise by position when the counts agree. Images are prepared with the
weights' own evaluation preprocessing (``eval_transform``, which equals ``datasets.val_transform`` on images).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from .data import IMAGENET_1K, eval_transform, imagenet_categories
from .datasets import ImageFolderDataset, _is_pil, imagenet_wnids, scan_image_folder

TOPK = 5
MAX_PRINTED_CLASSES = 20  # above this, the text report lists the most frequent confusions instead of the matrix


@dataclass
class Metrics:
    """What ``evaluate`` measured. Accuracies are percentages (as published top-1 figures are).

    ``labels[i]`` is the model's name for ``classes[i]`` (``tabby`` for the folder ``n02123045``).

    ``confusion[i, j]`` counts the samples of class ``classes[i]`` predicted as ``columns[j]``: the dataset's
    classes, plus a last column ``"other"`` when the model has outputs that are none of them (an ImageNet model on
    a few ImageNet classes). ``top5`` is top-``topk`` accuracy, ``topk = min(5, number of outputs)``.
    """

    top1: float
    top5: float
    n: int
    loss: float
    per_class: dict[str, float | None]
    confusion: torch.Tensor
    classes: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    topk: int = TOPK
    class_counts: dict[str, int] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    mapping: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The ``mobilenets validate --json`` document (JSON-safe: a non-finite loss is ``null``)."""
        return dict(top1=self.top1, top5=self.top5, topk=self.topk, n=self.n,
                    loss=self.loss if math.isfinite(self.loss) else None, per_class=dict(self.per_class),
                    class_counts=dict(self.class_counts), classes=list(self.classes), columns=list(self.columns),
                    labels=list(self.labels), confusion=self.confusion.tolist(), mapping=self.mapping)


# ---------------------------------------------------------------------------------------------------------------
# Matching the data's classes to the model's outputs
# ---------------------------------------------------------------------------------------------------------------


def output_names(model: torch.nn.Module) -> tuple[list[str], bool]:
    """The model's class names and whether the weights name them (``categories``, or ImageNet-1k)."""
    num = int(getattr(model, "num_classes", 0))
    categories = (getattr(model, "pretrained_cfg", None) or {}).get("categories")
    if isinstance(categories, (list, tuple)) and len(categories) == num:
        return [str(c) for c in categories], True
    if num == 1000 and categories in (None, IMAGENET_1K):
        return imagenet_categories(), True
    return [f"class {i}" for i in range(num)], False


def map_classes(classes: Sequence[str], model: torch.nn.Module, what: str = "the data") -> tuple[list[int], str]:
    """The model output of each data class, and how they were matched; ``ValueError`` when they cannot be.

    1. every class is an ImageNet WordNet id and the model has the 1000 ImageNet classes: the id's index;
    2. every class is one of the model's class names (a checkpoint's ``categories``): by name, in any order;
    3. as many classes as outputs: by position (sorted folder order; a warning if the model names its classes
       otherwise);
    """
    num = int(getattr(model, "num_classes", 0))
    if num < 1:
        raise ValueError("the model has no classifier (num_classes=0); it cannot be validated")
    names, named = output_names(model)
    wnids = imagenet_wnids()
    if num == 1000 and names == imagenet_categories() and all(c in wnids for c in classes):
        index = {w: i for i, w in enumerate(wnids)}
        return [index[c] for c in classes], "ImageNet WordNet ids mapped onto the model's 1000 ImageNet classes"
    by_name = {n: i for i, n in enumerate(names)}
    if named and len(by_name) == len(names) and all(c in by_name for c in classes):
        how = "by name" if list(classes) != names else "the model's own classes"
        return [by_name[c] for c in classes], how
    if len(classes) == num:
        if named:
            warnings.warn(f"the class names of {what} ({_preview(classes)}) are not the model's ({_preview(names)}); "
                          "matched by position", stacklevel=3)
        return list(range(num)), "by position"
    hint = ", or name ImageNet class folders by WordNet id (n01440764 ...)" if num == 1000 else ""
    raise ValueError(f"{what} has {len(classes)} classes ({_preview(classes)}) but the model has {num} outputs "
                     f"({_preview(names) if named else 'unnamed'}) and they cannot be matched by name: validate a "
                     f"checkpoint trained on these classes (its class names are the folders'){hint}")


def _preview(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


# ---------------------------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------------------------


class _Prepared(Dataset):
    """Items ``(image, label)`` → ``(input tensor, label)``: ``transform`` if given; else PIL images through the
    weights' eval transform, uint8 tensors through ``val_transform``, float tensors taken as prepared inputs."""

    def __init__(self, dataset: Dataset, transform: Any, model_cfg: Any) -> None:
        self.dataset, self.transform, self.model_cfg = dataset, transform, model_cfg
        self._eval: Any = None
        self._tensor_eval: Any = None

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.dataset[index]
        if self.transform is not None:
            image = self.transform(image)
        elif _is_pil(image):
            if self._eval is None:
                self._eval = eval_transform(self.model_cfg)
            image = self._eval(image)
        elif isinstance(image, torch.Tensor) and image.dtype == torch.uint8:
            if self._tensor_eval is None:
                from .datasets import val_transform

                self._tensor_eval = val_transform(self.model_cfg)
            image = self._tensor_eval(image)
        if not isinstance(image, torch.Tensor):
            raise TypeError(f"sample {index}: the transform gave a {type(image).__name__}, not a tensor")
        return image.as_subclass(torch.Tensor), int(label)


def _dataset_of(data: Any, class_names: Sequence[str] | None) -> tuple[Any, list[str] | None]:
    """``(dataset or loader, class names or None)`` from a folder path, a Dataset or a DataLoader."""
    if isinstance(data, (str, os.PathLike)):
        scan = scan_image_folder(data, on_bad="error", min_classes=1)
        return ImageFolderDataset(scan), list(scan.classes)
    names = class_names if class_names is not None else getattr(data, "classes", None)
    if names is None and isinstance(data, DataLoader):
        names = getattr(data.dataset, "classes", None)
    names = None if names is None else [str(c) for c in names]
    if not isinstance(data, DataLoader) and (not hasattr(data, "__getitem__") or not hasattr(data, "__len__")):
        raise TypeError(f"data must be a folder path, a map-style Dataset or a DataLoader, got {type(data).__name__}")
    return data, names


def _dist() -> tuple[int, int]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError("evaluate(distributed=True) needs an initialised torch.distributed process group "
                         "(torchrun, then torch.distributed.init_process_group)")
    return dist.get_rank(), dist.get_world_size()


def _sample_count(loader: Any) -> int:
    """How many samples a DataLoader will yield (0 when its dataset has no length)."""
    try:
        return len(loader.dataset)
    except (AttributeError, TypeError):
        return 0


def evaluate(
    model: torch.nn.Module,
    data: Any,
    *,
    transform: Any = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    class_names: Sequence[str] | None = None,
    progress: bool = False,
    distributed: bool = False,
    fast: bool = False,
    compile_model: bool = False,
) -> Metrics:
    """Top-1 / top-5 accuracy, mean cross-entropy, per-class accuracy and confusion matrix of ``model`` on ``data``.

    ``data``: an ImageFolder path (checked by ``scan_image_folder``), a ``Dataset`` yielding ``(image, label)`` or
    a ``DataLoader`` yielding batches of prepared tensors. ``transform`` prepares each image (default: PIL images
    by the weights' ``eval_transform``, float tensors as they are). ``class_names`` names the labels (default: the
    dataset's ``classes``); the classes are matched to the model's outputs by ``map_classes``; without names,
    labels are output indices. The model runs in eval mode under ``torch.inference_mode`` (its mode is restored).
    ``distributed=True``: each process evaluates its share (every world_size-th sample) and the counts are summed
    over processes with ``torch.distributed.all_reduce``; every process returns the same ``Metrics``.
    ``fast=True`` runs the model through ``export.fast_or_eager`` (BatchNorm folded, channels-last, traced and
    frozen; logits within 1e-4 of eager) when there are at least ``export.FAST_PATH_MIN_IMAGES`` samples;
    ``compile_model=True`` compiles that path with ``torch.compile`` instead (``export.optimize_for_inference``),
    whatever the number of samples.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    num_outputs = int(getattr(model, "num_classes", 0))
    dataset, names = _dataset_of(data, class_names)
    model_names = output_names(model)[0]
    if names is None:
        names = model_names
        if num_outputs < 1:
            raise ValueError("the model has no classifier (num_classes=0); it cannot be validated")
        mapping, how = list(range(num_outputs)), "labels are the model's output indices"
    else:
        mapping, how = map_classes(names, model, "the data")
    k = len(names)
    device = torch.device(device)
    rank, world = _dist() if distributed else (0, 1)

    if isinstance(dataset, DataLoader):
        loader: Iterable[Any] = dataset
    else:
        prepared: Dataset = _Prepared(dataset, transform, model)
        if world > 1:
            prepared = Subset(prepared, range(rank, len(prepared), world))
        loader = DataLoader(prepared, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                            pin_memory=device.type == "cuda")
    target_of = torch.tensor(mapping, dtype=torch.long, device=device)
    column_of = torch.full((num_outputs,), k, dtype=torch.long, device=device)
    column_of[target_of] = torch.arange(k, device=device)
    other = len(set(mapping)) < num_outputs
    columns = k + 1 if other else k
    confusion = torch.zeros(k, columns, dtype=torch.long, device=device)
    topk = min(TOPK, num_outputs)
    correct1 = torch.zeros((), dtype=torch.long, device=device)
    correctk = torch.zeros((), dtype=torch.long, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)

    from tqdm import tqdm

    from .export import FAST_PATH_MIN_IMAGES, fast_or_eager

    run_model: Any = None
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for images, labels in tqdm(loader, desc="validate", unit="batch", disable=not progress or rank != 0,
                                       leave=False):
                images = images.to(device, non_blocking=True)
                labels = torch.as_tensor(labels).to(device)
                if labels.numel() and (labels.min() < 0 or labels.max() >= k):
                    raise ValueError(f"a label outside 0..{k - 1} ({int(labels.min())}..{int(labels.max())}); "
                                     f"the data has {k} classes")
                targets = target_of[labels]
                if run_model is None:  # the first batch is the example the fast path is traced with
                    run_model = model
                    if compile_model or (fast and _sample_count(loader) >= FAST_PATH_MIN_IMAGES):
                        run_model = fast_or_eager(model, images, compile_model=compile_model)
                logits = run_model(images).float()
                if logits.ndim != 2 or logits.shape[1] != num_outputs:
                    raise ValueError(f"the model returned {tuple(logits.shape)} for a batch, expected (N, "
                                     f"{num_outputs})")
                loss_sum += torch.nn.functional.cross_entropy(logits, targets, reduction="sum").double()
                top = logits.topk(topk, dim=1).indices
                correct1 += (top[:, 0] == targets).sum()
                correctk += (top == targets[:, None]).any(dim=1).sum()
                confusion.index_put_((labels, column_of[top[:, 0]]), torch.ones_like(labels), accumulate=True)
    finally:
        model.train(was_training)

    if world > 1:
        import torch.distributed as dist

        counts = torch.stack([correct1, correctk])
        for t in (counts, confusion):
            dist.all_reduce(t)
        dist.all_reduce(loss_sum)
        correct1, correctk = counts[0], counts[1]
    confusion = confusion.cpu()
    n = int(confusion.sum())
    if n == 0:
        raise ValueError("no samples to validate")
    per_row = confusion.sum(dim=1)
    diagonal = confusion.diagonal()
    per_class = {name: (100.0 * int(diagonal[i]) / int(per_row[i]) if int(per_row[i]) else None)
                 for i, name in enumerate(names)}
    return Metrics(top1=100.0 * int(correct1) / n, top5=100.0 * int(correctk) / n, n=n, loss=float(loss_sum) / n,
                   per_class=per_class, confusion=confusion, classes=list(names),
                   columns=list(names) + (["other"] if other else []), topk=topk,
                   class_counts={name: int(per_row[i]) for i, name in enumerate(names)},
                   labels=[model_names[i] for i in mapping], mapping=how)


# ---------------------------------------------------------------------------------------------------------------
# Reports: text and PNG
# ---------------------------------------------------------------------------------------------------------------


def _label(name: str, display: dict[str, str]) -> str:
    """A class for people: an ImageNet WordNet id gets its class name (``n02123045 tabby``)."""
    extra = display.get(name)
    return f"{name} {extra}" if extra and extra != name and not extra.startswith("class ") else name


def format_report(metrics: Metrics) -> str:
    """Top-1/top-5, per-class accuracy and the confusion matrix (the most frequent confusions for many classes)."""
    from .cli import escape

    display = dict(zip(metrics.classes, metrics.labels, strict=False))
    lines = [f"top-1 {metrics.top1:.2f}%  top-{metrics.topk} {metrics.top5:.2f}%  loss {metrics.loss:.4f}  "
             f"n {metrics.n}  ({len(metrics.classes)} classes, {metrics.mapping})"]
    width = min(40, max(len(_label(c, display)) for c in metrics.classes))
    lines.append(f"per class:  {'#':>3}  {'class':<{width}}  {'n':>6}  top-1")
    for i, name in enumerate(metrics.classes):
        acc = metrics.per_class[name]
        shown = escape(_label(name, display))[:width]
        lines.append(f"            {i:>3}  {shown:<{width}}  {metrics.class_counts[name]:>6}  "
                     f"{'-' if acc is None else f'{acc:6.2f}%'}")
    c = metrics.confusion
    if len(metrics.classes) <= MAX_PRINTED_CLASSES:
        heads = [str(j) for j in range(len(metrics.classes))] + (["other"] if len(metrics.columns) > c.shape[0]
                                                                   else [])
        cell = max(5, len(str(int(c.max()))) + 1, *(len(h) + 1 for h in heads))
        lines.append("confusion matrix (rows: true class #, columns: predicted class #):")
        lines.append(" " * 9 + "".join(f"{h:>{cell}}" for h in heads))
        for i, row in enumerate(c.tolist()):
            lines.append(f"    {i:>3}  " + "".join(f"{v:>{cell}}" for v in row))
    else:
        off = c.clone()
        off[torch.arange(c.shape[0]), torch.arange(c.shape[0])] = 0
        values, flat = off.flatten().topk(min(10, off.numel()))
        pairs = [(int(v), divmod(int(f), c.shape[1])) for v, f in zip(values, flat, strict=True) if int(v) > 0]
        lines.append("most frequent confusions (true -> predicted: count):" if pairs else "no confusions")
        for v, (i, j) in pairs:
            lines.append(f"    {escape(_label(metrics.classes[i], display))} -> "
                         f"{escape(_label(metrics.columns[j], display))}: {v}")
    return "\n".join(lines)


def plot_confusion(metrics: Metrics, path: str | os.PathLike[str], title: str = "") -> Path:
    """Write the row-normalised confusion matrix as a PNG (matplotlib; written atomically)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError('--plot needs matplotlib: pip install "mobilenets[train]"') from None
    from .checkpoint import atomic_write

    c = metrics.confusion.double()
    rows = c.sum(dim=1, keepdim=True).clamp_min(1)
    k, columns = c.shape
    side = min(16.0, max(4.0, 0.35 * columns + 2))
    fig = Figure(figsize=(side + 1.5, min(16.0, max(3.5, 0.35 * k + 2))))
    ax = fig.add_subplot()
    image = ax.imshow((c / rows).numpy(), cmap="Blues", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    fig.colorbar(image, ax=ax, label="fraction of the true class")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or f"top-1 {metrics.top1:.2f}%, n = {metrics.n}")
    if columns <= 40:
        display = dict(zip(metrics.classes, metrics.labels, strict=False))
        ax.set_xticks(range(columns), [_label(s, display)[:24] for s in metrics.columns], rotation=90, fontsize=7)
        ax.set_yticks(range(k), [_label(s, display)[:24] for s in metrics.classes], fontsize=7)
    if columns <= 15:
        for i in range(k):
            for j in range(columns):
                if int(c[i, j]):
                    ax.text(j, i, str(int(c[i, j])), ha="center", va="center", fontsize=8,
                            color="white" if c[i, j] / rows[i, 0] > 0.5 else "black")
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


# ---------------------------------------------------------------------------------------------------------------
# mobilenets validate
# ---------------------------------------------------------------------------------------------------------------


def add_validate_arguments(p: argparse.ArgumentParser, positive_int: Any) -> None:
    p.add_argument("data", metavar="DATA_DIR",
                   help="an image folder DATA_DIR/CLASS/IMAGE (class folders that are ImageNet WordNet ids, "
                        "n01440764 ..., validate a 1000-class ImageNet model directly)")
    p.add_argument("--checkpoint", metavar="FILE",
                   help="a mobilenets .safetensors checkpoint (e.g. RUN/best.safetensors from `mobilenets train`)")
    p.add_argument("--model", metavar="NAME", help="model name (default: efficientnet_lite0; see `mobilenets list`)")
    p.add_argument("--pretrained", metavar="TAG", nargs="?", const="",
                   help="pretrained weights: MODEL.TAG or a TAG of --model (no TAG: the default weights; then give "
                        "DATA_DIR before --pretrained)")
    p.add_argument("--batch-size", type=positive_int, default=64, metavar="N", help="images per batch (default: 64)")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="DataLoader worker processes decoding images (default: 0, in the main process)")
    p.add_argument("--device", default="auto", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--compile", action="store_true",
                   help="run the fast path through torch.compile (a compile step per batch shape; pays off on large "
                        "sets, at batch 32 and up)")
    p.add_argument("--json", action="store_true",
                   help='print one JSON document: {"top1", "top5", "n", "loss", "per_class", "confusion", ...}')
    p.add_argument("--plot", metavar="PNG", help="write the confusion matrix as a PNG image (needs matplotlib)")


def validate_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``mobilenets validate``: evaluate a checkpoint or pretrained weights on an image folder."""
    from .cli import UsageError, choose_weights, describe, escape, load_model

    if args.checkpoint is not None and args.pretrained is not None:
        parser.error("--pretrained and --checkpoint are mutually exclusive")
    if args.workers < 0:
        parser.error(f"--workers must be 0 or more, got {args.workers}")
    pretrained = args.pretrained or None
    try:
        choose_weights(args.model, pretrained)
    except UsageError as e:
        parser.error(str(e))
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ImportError('--plot needs matplotlib: pip install "mobilenets[train]"') from None
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    scan = scan_image_folder(args.data, on_bad="error", min_classes=1)  # bad data: before loading weights
    model = load_model(args.model, pretrained, args.checkpoint).to(device)
    transform = eval_transform(model)
    map_classes(scan.classes, model, args.data)  # a mismatch: one line before any image is read
    if not args.json:
        print(describe(model, transform, args.checkpoint, f"{model.num_classes} classes"), flush=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="the class names of ")  # map_classes warned above already
        metrics = evaluate(model, ImageFolderDataset(scan), transform=transform, batch_size=args.batch_size,
                           device=device, num_workers=args.workers, class_names=scan.classes,
                           progress=not args.json, fast=True, compile_model=args.compile)
    if args.plot is not None:
        plot_confusion(metrics, args.plot, title=f"{Path(args.data).name}: top-1 {metrics.top1:.2f}%, n {metrics.n}")
    if args.json:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        document = dict(model=model.config.name, weights=cfg.get("tag"), checkpoint=args.checkpoint,
                        data=str(args.data), **metrics.to_dict())
        if args.plot is not None:
            document["plot"] = str(args.plot)
        print(json.dumps(document, indent=2, allow_nan=False), flush=True)
    else:
        print(format_report(metrics), flush=True)
        if args.plot is not None:
            print(f"confusion matrix written to {escape(str(args.plot))}", flush=True)
    return 0


__all__ = ["Metrics", "evaluate", "format_report", "map_classes", "output_names", "plot_confusion",
           "validate_command"]

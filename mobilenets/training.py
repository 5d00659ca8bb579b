"""Fine-tuning on your own images: ``finetune`` (Python) and ``mobilenets train`` (the command line).

    import mobilenets
    model, history = mobilenets.finetune("efficientnet_lite0", "data/train", "data/val", epochs=5,
                                         freeze="backbone", output="runs/flowers")
    model, history = mobilenets.finetune(model, "data/train", "data/val", epochs=5, freeze=2, bn="eval",
                                         output="runs/flowers-top2")

The recipe is the one the transfer-learning guides recommend for small data (Yosinski et al. 2014, "How
transferable are features in deep neural networks?"; the Keras transfer-learning guide): first train a new
classifier on frozen pretrained features (``freeze="backbone"``), then unfreeze the top stages with BatchNorm kept
in inference mode (``freeze=N, bn="eval"``) at a lower learning rate. Around it: AdamW or SGD with a lower
learning rate for pretrained layers than for the new classifier, linear warmup then cosine decay per step (Loshchilov
& Hutter 2017, SGDR), label smoothing (Szegedy et al. 2016), mixup / cutmix, gradient clipping, an exponential
moving average of the weights, ``torch.autocast`` (bfloat16 on CPU, float16 with a ``GradScaler`` on CUDA),
channels_last, seeded and deterministic runs, and DistributedDataParallel under ``torchrun``.

A run folder holds ``last.pt`` (everything needed to resume bit for bit, loadable with
``torch.load(weights_only=True)``), ``best.safetensors`` (the best weights by validation top-1 as a mobilenets
checkpoint with the class names and preprocessing: ``from_checkpoint`` and ``mobilenets predict --checkpoint``
use it directly), ``metrics.jsonl`` / ``metrics.csv`` (one record per epoch) and ``curves.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from .checkpoint import atomic_write, save_checkpoint
from .data import DEFAULT_CROP_PCT, DEFAULT_INTERPOLATION, IMAGENET_MEAN, IMAGENET_STD
from .model import MobileNet

FROZEN = "_mobilenets_frozen"  # the attribute MobileNet.train() honours (see model.py)
CHECKPOINT_FORMAT = "mobilenets-train"
CHECKPOINT_VERSION = 1
RUN_FILES = ("last.pt", "best.safetensors", "metrics.jsonl", "metrics.csv", "curves.png")
DEFAULT_LR = {"adamw": 1e-3, "sgd": 1e-2}
DEFAULT_WEIGHT_DECAY = {"adamw": 0.01, "sgd": 1e-4}
METRIC_KEYS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_top1", "val_top5", "time_s", "img_per_s")

# Settings that fix what a run computes: a resumed run must use the same (``epochs`` may grow; see ``finetune``).
RECIPE_KEYS = ("model", "pretrained", "classes", "freeze", "bn", "batch_size", "lr", "backbone_lr_mult", "optimizer",
               "weight_decay", "warmup_epochs", "label_smoothing", "clip_grad", "ema", "amp", "channels_last", "seed",
               "augment", "mixup", "cutmix", "input_size", "world_size")

__all__ = ["History", "WarmupCosine", "finetune", "freeze", "parameter_groups", "train_command", "add_arguments"]


# ---------------------------------------------------------------------------------------------------------------
# Freezing
# ---------------------------------------------------------------------------------------------------------------


def _check_model(model: Any, what: str = "model") -> MobileNet:
    if not isinstance(model, MobileNet):
        raise TypeError(f"{what} must be a mobilenets MobileNet (from mobilenets.create_model), got "
                        f"{type(model).__name__}")
    return model


def _frozen_modules(model: MobileNet, what: str | int | None) -> list[nn.Module]:
    """The top-level parts of ``model`` that ``freeze(model, what)`` freezes."""
    stages = list(model.stages)
    top = [model.head, model.pre_logits]  # the head conv (and V3/V4's pre-logits FC) count with the last stage
    if what is None:
        return []
    if what == "backbone":
        return [model.stem, *stages, *top]
    if isinstance(what, bool) or not isinstance(what, int):
        raise ValueError(f"freeze must be 'backbone', a number of stages (int) or None, got {what!r}")
    if not 0 <= what <= len(stages):
        raise ValueError(f"freeze={what}: {model.config.name} has {len(stages)} stages, so the number of trainable "
                         f"stages must be between 0 and {len(stages)} (freeze=None trains everything, stem included)")
    return [model.stem, *stages[: len(stages) - what], *(top if what == 0 else [])]


def freeze(model: MobileNet, what: str | int | None = "backbone", bn: Literal["train", "eval"] = "train") -> MobileNet:
    """Freeze part of ``model`` for transfer learning, in place; returns ``model``.

    Args:
        what: ``"backbone"``: only the classifier trains (feature extraction; MobileNetV3/V4's pre-logits FC is
            pretrained and stays frozen, so the classifier learns on the pretrained embedding). An int ``N``: the
            last ``N`` of ``model.stages`` train, with the head conv, pre-logits and classifier; the stem and the
            stages before them are frozen (``N=0`` is the same as ``"backbone"``). ``None``: everything trains.
        bn: ``"eval"`` keeps every BatchNorm in inference mode (running statistics fixed), even where its weights
            train, as advised for small datasets; ``"train"`` updates the statistics of the layers that train.

    Frozen parameters get ``requires_grad=False``. Frozen modules, their BatchNorm included, are marked
    ``_mobilenets_frozen`` and stay in eval mode through ``model.train()``. Calling ``freeze`` again replaces the
    previous setting (``freeze(model, None)`` unfreezes everything).
    """
    model = _check_model(model)
    if bn not in ("train", "eval"):
        raise ValueError(f"bn must be 'train' or 'eval', got {bn!r}")
    frozen = _frozen_modules(model, what)
    for module in model.modules():
        if FROZEN in module.__dict__:
            delattr(module, FROZEN)
    model.requires_grad_(True)
    for module in frozen:
        module.requires_grad_(False)
        setattr(module, FROZEN, True)
    if bn == "eval":
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                setattr(module, FROZEN, True)
    model.train(model.training)  # put the marked modules in eval mode now
    return model


_freeze = freeze  # ``finetune``'s ``freeze`` argument shadows the function


# ---------------------------------------------------------------------------------------------------------------
# Optimizer and schedule
# ---------------------------------------------------------------------------------------------------------------


def parameter_groups(model: MobileNet, lr: float, *, backbone_lr_mult: float = 0.1,
                     weight_decay: float = 0.0) -> list[dict[str, Any]]:
    """Optimizer parameter groups of the trainable parameters: the classifier at ``lr``, every other (pretrained)
    layer at ``lr * backbone_lr_mult``; biases and normalisation weights (1-d tensors) without weight decay.

    Each group carries ``group`` (``head``, ``head_no_decay``, ``backbone``, ``backbone_no_decay``); empty groups
    are left out.
    """
    groups: dict[str, dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "head" if name.startswith("classifier.") else "backbone"
        decay = p.ndim > 1
        key = part if decay else f"{part}_no_decay"
        if key not in groups:
            groups[key] = dict(params=[], lr=lr * (1.0 if part == "head" else backbone_lr_mult),
                               weight_decay=weight_decay if decay else 0.0, group=key)
        groups[key]["params"].append(p)
    order = ("head", "head_no_decay", "backbone", "backbone_no_decay")
    return [groups[k] for k in order if k in groups]


class WarmupCosine:
    """Learning-rate factor per optimizer step for ``torch.optim.lr_scheduler.LambdaLR``: linear warmup from
    ``1 / (warmup_steps + 1)`` to 1 over ``warmup_steps``, then a half cosine from 1 down to ``min_ratio`` at
    ``total_steps`` (SGDR without restarts, Loshchilov & Hutter 2017)."""

    def __init__(self, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.0) -> None:
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.min_ratio = float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _ema_update(decay: float) -> Callable[..., None]:
    """``get_ema_multi_avg_fn(decay)`` for floating tensors; integer buffers (BatchNorm's ``num_batches_tracked``)
    are copied, not averaged."""
    from torch.optim.swa_utils import get_ema_multi_avg_fn

    average = get_ema_multi_avg_fn(decay)

    @torch.no_grad()
    def update(ema: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        if ema[0].is_floating_point():
            average(ema, current, n)
        else:
            torch._foreach_copy_(ema, current)

    return update


# ---------------------------------------------------------------------------------------------------------------
# History and run files
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class History:
    """What ``finetune`` measured: one record per epoch (``METRIC_KEYS``; accuracies in percent, validation
    values ``None`` without validation data), the class names, the best epoch by validation top-1, the run folder.

    ``history["val_top1"]`` gives one metric over the epochs (as Keras' ``History.history``).
    """

    epochs: list[dict[str, Any]] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    best_epoch: int | None = None
    best_top1: float | None = None
    run_dir: Path | None = None

    def __getitem__(self, key: str) -> list[Any]:
        if key not in METRIC_KEYS:
            raise KeyError(f"{key!r} is not a metric; metrics: {', '.join(METRIC_KEYS)}")
        return [record.get(key) for record in self.epochs]

    def __len__(self) -> int:
        return len(self.epochs)

    def to_dict(self) -> dict[str, Any]:
        return dict(epochs=[dict(r) for r in self.epochs], classes=list(self.classes), best_epoch=self.best_epoch,
                    best_top1=self.best_top1, run_dir=None if self.run_dir is None else str(self.run_dir))


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _write_metrics(run: Path, history: History) -> None:
    """``metrics.jsonl`` and ``metrics.csv`` rewritten whole (atomically) from the history, each epoch."""
    _write_text(run / "metrics.jsonl", "".join(json.dumps(r, allow_nan=False) + "\n" for r in history.epochs))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=METRIC_KEYS, lineterminator="\n")
    writer.writeheader()
    for record in history.epochs:
        writer.writerow({k: "" if record.get(k) is None else record[k] for k in METRIC_KEYS})
    _write_text(run / "metrics.csv", out.getvalue())


def plot_curves(history: History, path: str | os.PathLike) -> bool:
    """Loss and accuracy per epoch (train and validation) as a PNG at ``path``; ``False`` (and one warning) if
    matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure
    except ImportError:
        warnings.warn(f"matplotlib is not installed, so {path} is not written: pip install \"mobilenets[train]\"",
                      stacklevel=2)
        return False
    epochs = history["epoch"]
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    for ax, keys, title in ((loss_ax, ("train_loss", "val_loss"), "loss"),
                            (acc_ax, ("train_acc", "val_top1"), "accuracy (%)")):
        for key in keys:
            values = history[key]
            if any(v is not None for v in values):
                ax.plot(epochs, [math.nan if v is None else v for v in values], marker="o", markersize=3,
                        label=key.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    if history.best_epoch is not None:
        acc_ax.axvline(history.best_epoch, color="grey", linestyle=":", linewidth=1)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    return True


def _existing_run(run: Path) -> list[str]:
    return [name for name in RUN_FILES if (run / name).exists()]


# ---------------------------------------------------------------------------------------------------------------
# RNG states and the resumable checkpoint (plain tensors / lists / dicts: torch.load(weights_only=True) reads it)
# ---------------------------------------------------------------------------------------------------------------


def _rng_state() -> dict[str, Any]:
    import numpy as np  # a runtime dependency, imported where used (import mobilenets needs none)

    version, internal, gauss = random.getstate()
    key, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, torch.tensor(internal, dtype=torch.int64), gauss],
        "numpy": [str(key), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss),
                  float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np  # a runtime dependency, imported where used (import mobilenets needs none)

    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal.tolist()), gauss))
    key, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((key, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _read_last(path: Path) -> dict[str, Any]:
    """``RUN/last.pt``, read with ``weights_only=True`` and checked for the keys we wrote."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated, corrupt, or a pickle that is not plain data
        raise ValueError(f"{path} cannot be read as a training checkpoint ({str(e).splitlines()[0][:200]}); it may be "
                         "truncated or corrupt: start a new run in another folder") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a mobilenets training checkpoint (written by finetune / mobilenets train)")
    if state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path} has training checkpoint version {state.get('version')!r}; this mobilenets "
                         f"resumes version {CHECKPOINT_VERSION} only")
    missing = [k for k in ("epoch", "model", "optimizer", "scheduler", "scaler", "ema", "rng", "history", "best",
                           "args") if k not in state]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}; it cannot be resumed")
    return state


# ---------------------------------------------------------------------------------------------------------------
# Distributed (torchrun)
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class _Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer (set by torchrun)") from None


def _init_distributed(device_type: str) -> _Dist:
    """Join the process group torchrun set up (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``): gloo on CPU, nccl on
    CUDA. Without those variables (or with ``WORLD_SIZE=1``) training runs in this process alone."""
    import torch.distributed as dist

    world = _env_int("WORLD_SIZE")
    if world is None or world <= 1:
        return _Dist()
    local = _env_int("LOCAL_RANK") or 0
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
        owns = True
    return _Dist(rank=dist.get_rank(), local_rank=local, world_size=dist.get_world_size(), owns_group=owns)


def _all_reduce(values: list[float], dist_info: _Dist, device: torch.device) -> list[float]:
    if not dist_info.enabled:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


# ---------------------------------------------------------------------------------------------------------------
# finetune
# ---------------------------------------------------------------------------------------------------------------


def _resolve_device(device: str | torch.device | None, dist_info_local_rank: int, distributed: bool) -> torch.device:
    if device is None or str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device={device!r} is not a torch device ({e}); use 'cpu' or 'cuda'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but torch sees no CUDA GPU; use --device cpu")
        if distributed and dev.index is None:
            dev = torch.device("cuda", dist_info_local_rank)
        torch.cuda.set_device(dev)
    return dev


def _amp_dtype(amp: bool | str, device: torch.device) -> torch.dtype | None:
    if amp is False or amp is None:
        return None
    if amp is True:
        return torch.float16 if device.type == "cuda" else torch.bfloat16
    names = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if amp not in names:
        raise ValueError(f"amp must be True, False, 'bfloat16' or 'float16', got {amp!r}")
    return names[amp]


def _training_cfg(model: MobileNet, classes: list[str], input_size: int | None) -> dict[str, Any]:
    """The ``pretrained_cfg`` the fine-tuned model carries: the weights' preprocessing (at ``input_size`` if
    given) and the new class names. The base weights' tag, URL and ImageNet metrics no longer describe it."""
    in_chans, size = model.config.in_chans, model.config.input_size
    base = dict(model.pretrained_cfg or {})
    defaults: dict[str, Any] = dict(model=model.config.name, interpolation=DEFAULT_INTERPOLATION, crop_mode="center",
                                    mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))
    if "input_size" not in base and "crop" not in base:  # the model's native resolution, timm's default crop_pct
        defaults["input_size"] = [in_chans, size, size]
        if "resize" not in base:
            defaults["crop_pct"] = DEFAULT_CROP_PCT
    base = {**defaults, **base}
    for key in ("tag", "url", "metrics", "test_input_size", "test_crop_pct"):
        base.pop(key, None)
    if input_size is not None:
        crop_pct = float(base.get("crop_pct") or DEFAULT_CROP_PCT)
        base.update(input_size=[in_chans, input_size, input_size], crop=input_size,
                    resize=math.floor(input_size / crop_pct), crop_pct=crop_pct)
    base.update(num_classes=len(classes), categories=list(classes))
    return base


def _check_args(epochs: int, batch_size: int, num_workers: int, seed: int, optimizer: str, bn: str,
                numbers: dict[str, float | None], input_size: int | None, ema: float | None) -> None:
    for name, value, low in (("epochs", epochs, 1), ("batch_size", batch_size, 1), ("num_workers", num_workers, 0),
                             ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if optimizer not in DEFAULT_LR:
        raise ValueError(f"optimizer must be one of {', '.join(DEFAULT_LR)}, got {optimizer!r}")
    if bn not in ("train", "eval"):
        raise ValueError(f"bn must be 'train' or 'eval', got {bn!r}")
    for name, value in numbers.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or value < 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if numbers.get("lr") == 0:
        raise ValueError("lr must be positive")
    if numbers.get("label_smoothing") is not None and numbers["label_smoothing"] >= 1:
        raise ValueError(f"label_smoothing must be in [0, 1), got {numbers['label_smoothing']}")
    if ema is not None and not 0.0 < ema < 1.0:
        raise ValueError(f"ema must be a decay in (0, 1) such as 0.999, or None, got {ema!r}")
    if input_size is not None and (isinstance(input_size, bool) or not isinstance(input_size, int)
                                   or not 8 <= input_size <= 4096):
        raise ValueError(f"input_size must be an integer between 8 and 4096 pixels, got {input_size!r}")


def _data_name(data: Any) -> str | None:
    if data is None:
        return None
    if isinstance(data, (str, os.PathLike)):
        return str(data)
    return type(data).__name__


@contextlib.contextmanager
def _deterministic(enabled: bool, device: torch.device) -> Iterator[None]:
    """``torch.use_deterministic_algorithms`` (and cuDNN's flags) for the run, restored afterwards."""
    if not enabled:
        yield
        return
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1], before[2]


def finetune(
    model_or_name: MobileNet | str,
    train_data: Any,
    val_data: Any = None,
    *,
    epochs: int,
    freeze: str | int | None = "backbone",
    bn: Literal["train", "eval"] = "train",
    pretrained: bool | str = True,
    val_split: float | None = None,
    batch_size: int = 32,
    lr: float | None = None,
    backbone_lr_mult: float | None = None,
    optimizer: Literal["adamw", "sgd"] = "adamw",
    weight_decay: float | None = None,
    warmup_epochs: float | None = None,
    label_smoothing: float = 0.1,
    clip_grad: float | None = None,
    ema: float | None = None,
    amp: bool | str = False,
    channels_last: bool = False,
    seed: int = 0,
    deterministic: bool = False,
    augment: str = "light",
    mixup: float = 0.0,
    cutmix: float = 0.0,
    input_size: int | None = None,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    output: str | os.PathLike | None = None,
    resume: bool = False,
    on_bad: Literal["error", "skip"] = "error",
    progress: bool = True,
    on_epoch_end: Callable[[dict[str, Any]], Any] | None = None,
) -> tuple[MobileNet, History]:
    """Fine-tune a model on a folder of images (ImageFolder layout: ``root/<class>/<image>``) or a Dataset.

    Args:
        model_or_name: a model name (built with ``create_model(name, pretrained=pretrained)``) or a MobileNet.
            It gets a new classifier for the data's classes, unless its classifier already has exactly these
            classes (``pretrained_cfg["categories"]``): then training continues with it (a second phase).
        train_data, val_data: folders or ``torch.utils.data.Dataset`` s yielding ``(PIL image or tensor, label)``;
            ``val_split`` (e.g. 0.2) holds out a stratified part of ``train_data`` instead of ``val_data``.
        epochs: epochs of this run (on ``resume``, the total including those already done).
        freeze, bn: what trains, see ``mobilenets.training.freeze``.
        pretrained: with a model name, ``True`` (the default weights), a tag, or ``False`` (random init).
        batch_size: images per step and per process (under torchrun the global batch is this times the world size).
        lr: the classifier's peak learning rate (default: 1e-3 for AdamW, 1e-2 for SGD with Nesterov momentum 0.9).
        backbone_lr_mult: the other layers' learning rate relative to ``lr`` (default 0.1 for pretrained weights,
            1 from random init).
        weight_decay: default 0.01 (AdamW) or 1e-4 (SGD); never applied to biases and normalisation weights.
        warmup_epochs: linear warmup before the cosine decay, per step (default ``min(1, epochs / 10)``).
        label_smoothing, clip_grad: cross-entropy label smoothing; gradient-norm clipping (``None``: off).
        ema: decay of an exponential moving average of the weights (and BatchNorm statistics), e.g. 0.998; the EMA
            weights are validated, saved as best and returned.
        amp: ``torch.autocast``: ``True`` picks bfloat16 on CPU and float16 (with a ``GradScaler``) on CUDA.
        channels_last, seed, deterministic: memory format; seed of python, numpy and torch; deterministic kernels.
        augment, mixup, cutmix: training augmentation (``"none"``, ``"light"``, ``"rotate"``, ``"trivial"``,
            ``"randaugment"``, see ``datasets.train_transform``); mixup / cutmix alpha (0: off).
        input_size: train and evaluate at this resolution instead of the weights' own (recorded for prediction).
        num_workers, device: DataLoader worker processes; ``"cpu"``, ``"cuda"`` (default: CUDA if available).
        output: the run folder (``None``: nothing is written). An existing run there is refused unless ``resume``.
        resume: continue the run in ``output`` from ``last.pt`` exactly where it stopped (bit for bit with the same
            settings and ``num_workers``; a larger ``epochs`` extends the cosine schedule).
        on_bad: ``"error"`` refuses data with corrupt / non-image files or empty classes (all named at once before
            training); ``"skip"`` lists and skips them.
        progress: tqdm bars per epoch and a summary line per epoch (rank 0 only).
        on_epoch_end: called with each epoch's record after its files are written; returning ``True`` stops the run.

    Returns:
        ``(model, history)``: the model after the last epoch (the EMA weights if ``ema``), in eval mode, and the
        ``History``. Its ``pretrained_cfg`` holds the class names and the preprocessing it was trained with.
    """
    import numpy as np  # a runtime dependency, imported where used (import mobilenets needs none)

    from .factory import create_model

    numbers = dict(lr=lr, backbone_lr_mult=backbone_lr_mult, weight_decay=weight_decay, warmup_epochs=warmup_epochs,
                   label_smoothing=label_smoothing, clip_grad=clip_grad, mixup=mixup, cutmix=cutmix,
                   val_split=val_split)
    _check_args(epochs, batch_size, num_workers, seed, optimizer, bn, numbers, input_size, ema)
    if val_split is not None and val_data is not None:
        raise ValueError("pass either val_data or val_split, not both")
    if on_bad not in ("error", "skip"):
        raise ValueError(f"on_bad must be 'error' or 'skip', got {on_bad!r}")
    if resume and output is None:
        raise ValueError("resume=True needs the run folder to resume: pass output=RUN_DIR")
    run = None if output is None else Path(output)
    if run is not None and run.exists() and not run.is_dir():
        raise ValueError(f"output {run} exists and is not a folder; choose a folder for the run")
    if run is not None and not resume and _existing_run(run):
        raise ValueError(f"{run} already holds a training run ({', '.join(_existing_run(run))}); pass resume=True "
                         "(mobilenets train --resume) to continue it, or choose another output folder")
    if resume and not (run / "last.pt").is_file():  # type: ignore[operator]
        raise ValueError(f"nothing to resume in {run}: it has no last.pt; drop resume (--resume) to start a new run "
                         "there")

    from .datasets import make_datasets, mixup_cutmix, train_transform, val_transform
    from .evaluate import evaluate

    device_type = "cuda" if (device is None and torch.cuda.is_available()) or str(device).startswith("cuda") \
        else "cpu"
    dist_info = _init_distributed(device_type)
    try:
        dev = _resolve_device(device, dist_info.local_rank, dist_info.enabled)
        saved = _read_last(run / "last.pt") if resume else None  # type: ignore[operator]

        # -- data (every file checked before training starts) and the model with its new head
        train_set, val_set, classes = make_datasets(train_data, val_data, val_split=val_split, seed=seed,
                                                    on_bad=on_bad)
        if len(classes) < 2:
            raise ValueError(f"the training data has {len(classes)} class ({', '.join(classes) or 'none'}): a "
                             "classifier needs at least two classes (one folder per class)")
        if len(train_set) == 0:
            raise ValueError("the training data holds no images")

        random.seed(seed + dist_info.rank)
        np.random.seed(seed + dist_info.rank)
        torch.manual_seed(seed + dist_info.rank)
        if isinstance(model_or_name, str):
            model = create_model(model_or_name, pretrained=pretrained)
            from_pretrained = bool(pretrained)
        else:
            model = _check_model(model_or_name, "model_or_name")
            from_pretrained = True
        torch.manual_seed(seed)  # the new head is the same on every rank (DDP also broadcasts rank 0's)
        same_head = (model.num_classes == len(classes)
                     and (model.pretrained_cfg or {}).get("categories") == list(classes))
        if not same_head:
            model.reset_classifier(len(classes))
        model.pretrained_cfg = cfg = _training_cfg(model, classes, input_size)
        if freeze is not None and not from_pretrained and dist_info.main:
            warnings.warn(f"freeze={freeze!r} on randomly initialised weights: the frozen layers never learn; "
                          "use pretrained weights or freeze=None", stacklevel=2)
        _freeze(model, freeze, bn)
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError("nothing left to train: the model has no classifier; build it with num_classes > 0")
        model.to(dev)
        if channels_last:
            model.to(memory_format=torch.channels_last)

        lr = DEFAULT_LR[optimizer] if lr is None else float(lr)
        weight_decay = DEFAULT_WEIGHT_DECAY[optimizer] if weight_decay is None else float(weight_decay)
        backbone_lr_mult = (0.1 if from_pretrained else 1.0) if backbone_lr_mult is None else float(backbone_lr_mult)
        if warmup_epochs is None:  # the default follows epochs, except on resume: the run's own warmup
            warmup_epochs = saved["args"].get("warmup_epochs") if saved is not None and isinstance(
                saved.get("args"), dict) else None
        warmup_epochs = min(1.0, epochs / 10) if warmup_epochs is None else float(warmup_epochs)
        amp_dtype = _amp_dtype(amp, dev)
        args = dict(model=model.config.name, pretrained=pretrained if isinstance(model_or_name, str) else None,
                    classes=list(classes), freeze=freeze, bn=bn, epochs=epochs, batch_size=batch_size, lr=lr,
                    backbone_lr_mult=backbone_lr_mult, optimizer=optimizer, weight_decay=weight_decay,
                    warmup_epochs=warmup_epochs, label_smoothing=label_smoothing, clip_grad=clip_grad, ema=ema,
                    amp=None if amp_dtype is None else str(amp_dtype).removeprefix("torch."),
                    channels_last=channels_last, seed=seed, deterministic=deterministic, augment=augment,
                    mixup=mixup, cutmix=cutmix, input_size=input_size, world_size=dist_info.world_size,
                    train_data=_data_name(train_data), val_data=_data_name(val_data), val_split=val_split,
                    num_workers=num_workers, device=str(dev))
        if saved is not None:
            _check_same_recipe(run / "last.pt", saved["args"], args)  # type: ignore[operator]

        # -- loaders: the sampler's order and the workers' seeds come from a generator seeded per epoch
        in_chans = model.config.in_chans
        train_tf = train_transform(cfg, augment=augment, input_size=input_size, in_chans=in_chans)
        val_tf = val_transform(cfg, input_size=input_size)
        from .datasets import TransformedDataset

        train_ds = TransformedDataset(train_set, train_tf)
        sampler = None
        if dist_info.enabled:
            from torch.utils.data.distributed import DistributedSampler

            sampler = DistributedSampler(train_ds, num_replicas=dist_info.world_size, rank=dist_info.rank,
                                         shuffle=True, seed=seed)
        per_rank = len(sampler) if sampler is not None else len(train_ds)
        generator = torch.Generator()
        loader = torch.utils.data.DataLoader(
            train_ds, batch_size=batch_size, shuffle=sampler is None, sampler=sampler, num_workers=num_workers,
            generator=generator, drop_last=per_rank >= batch_size, pin_memory=dev.type == "cuda",
        )
        steps_per_epoch = len(loader)
        batch_aug = mixup_cutmix(len(classes), mixup=mixup, cutmix=cutmix)

        # -- optimizer, schedule, scaler, EMA, DDP
        groups = parameter_groups(model, lr, backbone_lr_mult=backbone_lr_mult, weight_decay=weight_decay)
        if optimizer == "adamw":
            opt: torch.optim.Optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
        else:
            opt = torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
        schedule = WarmupCosine(epochs * steps_per_epoch, round(warmup_epochs * steps_per_epoch))
        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        scaler = torch.amp.GradScaler(dev.type, enabled=amp_dtype == torch.float16 and dev.type == "cuda")
        ema_model = None
        if ema is not None:
            from torch.optim.swa_utils import AveragedModel

            ema_model = AveragedModel(model, multi_avg_fn=_ema_update(ema), use_buffers=True)
            ema_model.eval()
        criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        net: nn.Module = model
        if dist_info.enabled:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)

        history = History(classes=list(classes), run_dir=run)
        plots = {"curves": True}  # False once matplotlib turned out to be missing (warned once)
        start = 0
        if saved is not None:
            start = int(saved["epoch"])
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            scheduler.lr_lambdas[0] = schedule  # the saved schedule's state, this run's total steps
            if scaler.is_enabled() and saved["scaler"]:
                scaler.load_state_dict(saved["scaler"])
            if ema_model is not None:
                ema_model.load_state_dict(saved["ema"])
            history.epochs = [dict(r) for r in saved["history"]]
            history.best_epoch, history.best_top1 = saved["best"]["epoch"], saved["best"]["top1"]
            rng = saved["rng"]
            if isinstance(rng, list) and len(rng) == dist_info.world_size:
                _set_rng_state(rng[dist_info.rank])
            elif dist_info.main:
                warnings.warn(f"{run}/last.pt holds random states for {len(rng)} process(es), not "
                              f"{dist_info.world_size}: the resumed run is not bit-for-bit", stacklevel=2)
            if dist_info.main and progress:
                print(f"resuming {run} after epoch {start} of {epochs}", file=sys.stderr, flush=True)
        if dist_info.enabled:
            import torch.distributed as dist

            dist.barrier()  # every rank has checked the run folder and data before rank 0 writes anything

        # -- the epochs
        eval_model = ema_model.module if ema_model is not None else model
        with _deterministic(deterministic, dev):
            for epoch in range(start, epochs):
                t0 = time.perf_counter()
                head_lr = opt.param_groups[0]["lr"]  # the classifier's (peak group) learning rate at the epoch's start
                generator.manual_seed(seed * 1_000_003 + epoch)
                if sampler is not None:
                    sampler.set_epoch(epoch)
                train_loss, train_acc, seen = _train_epoch(
                    net, model, loader, opt, scheduler, scaler, ema_model, criterion, batch_aug, dev, amp_dtype,
                    channels_last, clip_grad, dist_info, progress, f"epoch {epoch + 1}/{epochs}")
                record: dict[str, Any] = dict(epoch=epoch + 1, lr=head_lr, train_loss=train_loss,
                                              train_acc=train_acc, val_loss=None, val_top1=None, val_top5=None)
                if val_set is not None:
                    metrics = evaluate(eval_model, val_set, transform=val_tf, batch_size=batch_size, device=dev,
                                       num_workers=num_workers, class_names=list(classes), progress=False,
                                       distributed=dist_info.enabled)
                    record.update(val_loss=float(metrics.loss), val_top1=float(metrics.top1),
                                  val_top5=float(metrics.top5))  # percentages
                model.train()
                elapsed = time.perf_counter() - t0
                record.update(time_s=round(elapsed, 3), img_per_s=round(seen / max(elapsed, 1e-9), 2))
                history.epochs.append(record)
                improved = val_set is None or history.best_top1 is None or record["val_top1"] > history.best_top1
                if improved:
                    history.best_epoch, history.best_top1 = epoch + 1, record["val_top1"]
                rng = _gather_rng(dist_info)
                if dist_info.main and run is not None:
                    _save_run(run, model, eval_model, opt, scheduler, scaler, ema_model, rng, history, args,
                              improved, epoch + 1, plots)
                if dist_info.main and progress:
                    _print_epoch(record, epochs)
                if dist_info.enabled:
                    dist.barrier()
                if on_epoch_end is not None and on_epoch_end(dict(record)) is True:
                    break
        if ema_model is not None:
            model.load_state_dict(ema_model.module.state_dict())
        model.eval()
        return model, history
    finally:
        if dist_info.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _check_same_recipe(path: Path, saved: Any, now: dict[str, Any]) -> None:
    if not isinstance(saved, dict):
        raise ValueError(f"{path} records no settings; it cannot be resumed")
    differ = [f"{k} {saved.get(k)!r} (now {now.get(k)!r})" for k in RECIPE_KEYS if saved.get(k) != now.get(k)]
    if differ:
        raise ValueError(f"{path} was trained with other settings: {'; '.join(differ)}. Resume with the settings "
                         "of the run, or start a new run in another output folder")
    if now["epochs"] < saved.get("epochs", now["epochs"]):
        raise ValueError(f"{path} is a run of {saved['epochs']} epochs; resume with epochs >= {saved['epochs']}")


def _gather_rng(dist_info: _Dist) -> list[dict[str, Any]]:
    """Every rank's random states, gathered on all ranks (rank 0 saves them)."""
    state = _rng_state()
    if not dist_info.enabled:
        return [state]
    import torch.distributed as dist

    states: list[Any] = [None] * dist_info.world_size
    dist.all_gather_object(states, state)
    return states


def _save_run(run: Path, model: MobileNet, eval_model: MobileNet, opt: torch.optim.Optimizer, scheduler: Any,
              scaler: Any, ema_model: nn.Module | None, rng: list[dict[str, Any]], history: History,
              args: dict[str, Any], improved: bool, epoch: int, plots: dict[str, bool]) -> None:
    """Rank 0's files after an epoch: best.safetensors (if better), last.pt, metrics, curves."""
    run.mkdir(parents=True, exist_ok=True)
    if improved:
        source = f"mobilenets finetune of {args['model']}" + (f" ({args['pretrained']})"
                                                              if isinstance(args["pretrained"], str) else "")
        save_checkpoint(eval_model, run / "best.safetensors", source=source, pretrained_cfg=model.pretrained_cfg)
    state = dict(format=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION, epoch=epoch,
                 model={k: v.detach().cpu() for k, v in model.state_dict().items()},
                 optimizer=opt.state_dict(), scheduler=scheduler.state_dict(), scaler=scaler.state_dict(),
                 ema=None if ema_model is None else ema_model.state_dict(), rng=rng,
                 history=[dict(r) for r in history.epochs],
                 best=dict(epoch=history.best_epoch, top1=history.best_top1), args=args,
                 pretrained_cfg=model.pretrained_cfg)
    atomic_write(run / "last.pt", lambda tmp: torch.save(state, tmp))
    _write_metrics(run, history)
    if plots["curves"]:
        plots["curves"] = plot_curves(history, run / "curves.png")


def _print_epoch(record: dict[str, Any], epochs: int) -> None:
    val = "" if record["val_top1"] is None else (f", val loss {record['val_loss']:.4f}, val top-1 "
                                                 f"{record['val_top1']:.2f}%, top-5 {record['val_top5']:.2f}%")
    print(f"epoch {record['epoch']}/{epochs}: train loss {record['train_loss']:.4f}, acc {record['train_acc']:.2f}%"
          f"{val}, {record['img_per_s']:.1f} img/s, {record['time_s']:.1f} s", file=sys.stderr, flush=True)


def _train_epoch(net: nn.Module, model: MobileNet, loader: Any, opt: torch.optim.Optimizer, scheduler: Any,
                 scaler: Any, ema_model: Any, criterion: nn.Module, batch_aug: Any, dev: torch.device,
                 amp_dtype: torch.dtype | None, channels_last: bool, clip_grad: float | None, dist_info: _Dist,
                 progress: bool, desc: str) -> tuple[float, float, int]:
    """One pass over ``loader``; returns (mean loss, accuracy in %, images), reduced over ranks."""
    from tqdm.auto import tqdm

    net.train()
    params = [p for p in model.parameters() if p.requires_grad]
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
    correct = torch.zeros((), dtype=torch.float64, device=dev)
    seen = 0
    t0 = time.perf_counter()
    bar = tqdm(loader, desc=desc, unit="batch", leave=False, file=sys.stderr,
               disable=not (progress and dist_info.main), dynamic_ncols=True)
    for step, (x, y) in enumerate(bar):
        x = x.to(dev, non_blocking=True)
        y = y.to(dev, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        target = y
        if batch_aug is not None:
            x, target = batch_aug(x, y)
        with torch.autocast(dev.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = net(x)
            loss = criterion(logits, target)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss became {loss.item()} at {desc}, step {step + 1}: lower the learning "
                                     "rate (lr), clip gradients (clip_grad) or turn off amp")
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if clip_grad is not None:
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(params, clip_grad)
        scaler.step(opt)
        scaler.update()
        scheduler.step()
        if ema_model is not None:
            ema_model.update_parameters(model)
        n = y.shape[0]
        hard = target.argmax(1) if target.ndim == 2 else target
        loss_sum += loss.detach().double() * n
        correct += (logits.detach().argmax(1) == hard).sum().double()
        seen += n
        if progress and dist_info.main and (step % 5 == 0 or step + 1 == len(loader)):
            rate = seen / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", acc=f"{100 * correct.item() / seen:.1f}%",
                            img_s=f"{rate:.1f}", refresh=False)
    bar.close()
    total_loss, total_correct, total = _all_reduce([loss_sum.item(), correct.item(), float(seen)], dist_info, dev)
    return total_loss / max(total, 1), 100.0 * total_correct / max(total, 1), int(total)


# ---------------------------------------------------------------------------------------------------------------
# mobilenets train
# ---------------------------------------------------------------------------------------------------------------


def _freeze_arg(text: str) -> str | int | None:
    if text in ("backbone", "none", "auto"):
        return None if text == "none" else text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'backbone', 'none', 'auto' or a number of stages, got {text!r}") \
            from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"the number of trainable stages must be >= 0, got {value}")
    return value


def _number(kind: type, low: float, high: float | None = None, low_open: bool = False) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got "
                                             f"{text!r}") from None
        if not math.isfinite(value) or value < low or (low_open and value == low) or (high is not None
                                                                                       and value >= high):
            bound = f"{'>' if low_open else '>='} {low}" + (f" and < {high}" if high is not None else "")
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value
    return parse


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``mobilenets train`` (see ``finetune`` for what each does)."""
    p.add_argument("data", metavar="DATA_DIR", help="training images in ImageFolder layout: DATA_DIR/<class>/<image>")
    p.add_argument("--model", metavar="NAME", help="model name (see `mobilenets list`); with --checkpoint optional")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--pretrained", nargs="?", const=True, default=False, metavar="TAG",
                         help="start from pretrained weights: the model's default, or TAG / MODEL.TAG (see "
                              "`mobilenets list --pretrained`); without it (and --checkpoint) from random init")
    weights.add_argument("--checkpoint", metavar="FILE",
                         help="start from a mobilenets .safetensors checkpoint, e.g. RUN/best.safetensors of an "
                              "earlier run (a second phase with more layers unfrozen)")
    val = p.add_mutually_exclusive_group()
    val.add_argument("--val-dir", metavar="DIR", help="validation images (same class folders as DATA_DIR)")
    val.add_argument("--val-split", type=_number(float, 0.0, 1.0, low_open=True), metavar="F",
                     help="hold out this fraction of DATA_DIR (stratified) for validation, e.g. 0.2")
    p.add_argument("--epochs", type=_number(int, 1), default=10, metavar="N", help="epochs (default: 10)")
    p.add_argument("--batch-size", type=_number(int, 1), default=32, metavar="N",
                   help="images per step and process (default: 32)")
    p.add_argument("--lr", type=_number(float, 0.0, low_open=True), metavar="LR",
                   help="peak learning rate of the classifier (default: 1e-3 AdamW, 1e-2 SGD)")
    p.add_argument("--backbone-lr-mult", type=_number(float, 0.0), metavar="M",
                   help="learning rate of the pretrained layers relative to --lr (default: 0.1; 1 from random init)")
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw", help="default: adamw")
    p.add_argument("--weight-decay", type=_number(float, 0.0), metavar="WD",
                   help="default: 0.01 AdamW, 1e-4 SGD (never on biases and norm weights)")
    p.add_argument("--warmup-epochs", type=_number(float, 0.0), metavar="E",
                   help="linear warmup before the cosine decay (default: min(1, epochs/10))")
    p.add_argument("--label-smoothing", type=_number(float, 0.0, 1.0), default=0.1, metavar="S",
                   help="default: 0.1")
    p.add_argument("--clip-grad", type=_number(float, 0.0, low_open=True), metavar="NORM",
                   help="clip the gradient norm (default: off)")
    p.add_argument("--freeze", type=_freeze_arg, default="auto", metavar="backbone|N|none",
                   help="what stays frozen: 'backbone' (only the new classifier trains), N (the last N stages and "
                        "the head train), 'none' (everything trains); default 'auto': backbone with --pretrained or "
                        "--checkpoint, none from random init")
    p.add_argument("--bn", choices=("train", "eval"), default="train",
                   help="'eval' keeps every BatchNorm in inference mode (advised for small data; default: train)")
    p.add_argument("--augment", choices=("none", "light", "rotate", "trivial", "randaugment"), default="light",
                   help="training augmentation (default: light = random resized crop + flip)")
    p.add_argument("--mixup", type=_number(float, 0.0), default=0.0, metavar="A", help="mixup alpha (default: off)")
    p.add_argument("--cutmix", type=_number(float, 0.0), default=0.0, metavar="A", help="cutmix alpha (default: off)")
    p.add_argument("--ema", type=_number(float, 0.0, 1.0, low_open=True), metavar="DECAY",
                   help="keep an exponential moving average of the weights (e.g. 0.998); it is validated and saved")
    p.add_argument("--input-size", type=_number(int, 8), metavar="PX",
                   help="train at this resolution instead of the weights' own (recorded for predict)")
    p.add_argument("--output", metavar="RUN_DIR",
                   help="run folder (default: runs/<model>, or runs/<model>-2, ... if taken); an existing run is "
                        "refused unless --resume")
    p.add_argument("--resume", action="store_true", help="continue the run in --output from its last.pt")
    p.add_argument("--workers", type=_number(int, 0), default=2, metavar="N",
                   help="data loading processes (default: 2)")
    p.add_argument("--device", default="auto", help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--amp", action="store_true", help="mixed precision: bfloat16 on CPU, float16 on CUDA")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    p.add_argument("--seed", type=_number(int, 0), default=0, metavar="N", help="random seed (default: 0)")
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms only")
    p.add_argument("--skip-bad", action="store_true",
                   help="list and skip corrupt or non-image files and empty class folders instead of refusing")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")


def _default_run_dir(model: str) -> Path:
    base = Path("runs") / model
    candidate, k = base, 1
    while candidate.exists() and _existing_run(candidate):
        k += 1
        candidate = base.with_name(f"{base.name}-{k}")
    return candidate


def train_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``mobilenets train``: ``finetune`` on folders, then print where the weights are and what to run next."""
    from .checkpoint import from_checkpoint
    from .registry import get_spec

    pretrained = args.pretrained
    name = args.model
    if isinstance(pretrained, str) and "." in pretrained:
        named = pretrained.partition(".")[0]
        if name is not None and name != named:
            parser.error(f"--model {name} and --pretrained {pretrained} name different models; drop --model")
        name, pretrained = named, pretrained.partition(".")[2]
    if args.resume and args.output is None:
        parser.error("--resume needs --output RUN_DIR: the run to continue")
    if name is None and args.checkpoint is None:
        parser.error("--model NAME is required (or --checkpoint FILE)")
    if name is not None:
        get_spec(name)  # an unknown name is one line, before any data is read
    model: MobileNet | str = name  # type: ignore[assignment]
    if args.checkpoint is not None:
        model = from_checkpoint(args.checkpoint)
        if name is not None and model.config.name != name:
            raise ValueError(f"{args.checkpoint} holds weights for {model.config.name!r}, not {name!r}: drop --model")
    started_from = bool(pretrained) or args.checkpoint is not None
    freeze_what = ("backbone" if started_from else None) if args.freeze == "auto" else args.freeze
    model_name = name if name is not None else model.config.name  # type: ignore[union-attr]
    output = Path(args.output) if args.output is not None else _default_run_dir(model_name)
    rank0 = (_env_int("RANK") or 0) == 0
    _, history = finetune(
        model, args.data, args.val_dir, epochs=args.epochs, freeze=freeze_what, bn=args.bn, pretrained=pretrained,
        val_split=args.val_split, batch_size=args.batch_size, lr=args.lr, backbone_lr_mult=args.backbone_lr_mult,
        optimizer=args.optimizer, weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs,
        label_smoothing=args.label_smoothing, clip_grad=args.clip_grad, ema=args.ema, amp=args.amp,
        channels_last=args.channels_last, seed=args.seed, deterministic=args.deterministic, augment=args.augment,
        mixup=args.mixup, cutmix=args.cutmix, input_size=args.input_size, num_workers=args.workers,
        device=args.device, output=output, resume=args.resume, on_bad="skip" if args.skip_bad else "error",
        progress=not args.quiet,
    )
    if rank0:
        best = output / "best.safetensors"
        if history.best_top1 is not None:
            print(f"best validation top-1 {history.best_top1:.2f}% (epoch {history.best_epoch}); weights: {best}")
        else:
            print(f"no validation data: {best} holds the last epoch's weights")
        print(f"run folder: {output} (last.pt, metrics.csv, metrics.jsonl, curves.png)")
        print(f"next: mobilenets validate DIR --checkpoint {best}   |   mobilenets predict IMAGE --checkpoint {best}")
    return 0

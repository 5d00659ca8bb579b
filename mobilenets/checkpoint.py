"""Self-describing safetensors checkpoints: the tensors plus the model name and every architecture option."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file
from torch import nn

from .model import MobileNet
from .registry import build_config
from .specs import ModelConfig, Options
from .statedict import compare

FORMAT = "mobilenets"
FORMAT_VERSION = "1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not fit the model asked for."""


def atomic_write(path: str | os.PathLike, write: Any) -> Path:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, then rename it over ``path``.

    Either the complete new file is in place or nothing changed: an exception removes the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def checkpoint_metadata(config: ModelConfig, source: str | None = None, **extra: Any) -> dict[str, str]:
    """The metadata we record: model name, options, classifier size, input channels, source, and ``extra``."""
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": config.name,
        "options": json.dumps(config.options.to_dict(), sort_keys=True),
        "num_classes": str(config.num_classes),
        "in_chans": str(config.in_chans),
        "architecture": config.arch,
    }
    if source:
        meta["source"] = source
    meta.update({k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in extra.items()})
    return meta


def save_checkpoint(model: MobileNet, path: str | os.PathLike, *, source: str | None = None, **extra: Any) -> Path:
    """Write ``model``'s weights and architecture to ``path`` (safetensors), atomically."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = checkpoint_metadata(model.config, source, **extra)
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Return ``(metadata, tensors)`` of a mobilenets checkpoint, or raise ``CheckpointError`` saying why not."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({e}); it may be truncated or corrupt: "
            "download or convert it again"
        ) from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} was not written by mobilenets (no architecture metadata); convert it first with "
            "`python scripts/convert_weights.py SRC OUT.safetensors --from LIBRARY:MODEL`"
        )
    return meta, tensors


def checkpoint_arguments(meta: dict[str, str]) -> dict[str, Any]:
    """``name``, ``num_classes``, ``in_chans`` and ``options`` recorded in a checkpoint's metadata."""
    try:
        options = Options.from_dict(json.loads(meta["options"]))
        return dict(name=meta["model"], num_classes=int(meta["num_classes"]), in_chans=int(meta["in_chans"]),
                    options=options)
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint metadata is incomplete or invalid ({e}); convert the weights again") \
            from None


def load_state_dict_strict(model: nn.Module, tensors: dict[str, torch.Tensor], origin: str) -> None:
    """Copy ``tensors`` into ``model``; any missing, unexpected or mis-shaped key is a ``CheckpointError``."""
    own = model.state_dict()
    report = compare({k: v.shape for k, v in own.items()}, {k: v.shape for k, v in tensors.items()},
                     describe=lambda k: "model")
    if report:
        raise CheckpointError(f"{origin} does not fit the model: " + "; ".join(report.parts()))
    model.load_state_dict(tensors, strict=True)


def build_model(name: str, options: Options, **kwargs: Any) -> MobileNet:
    """A registered model with exactly ``options``, plus ``build_config`` keyword arguments."""
    return MobileNet(build_config(name, **{**options.to_dict(), **kwargs}))


def from_checkpoint(
    path: str | os.PathLike, *, drop_rate: float | None = None, drop_path_rate: float = 0.0
) -> MobileNet:
    """Rebuild the exact model recorded in a mobilenets checkpoint and load its weights (train mode)."""
    meta, tensors = read_checkpoint(path)
    args = checkpoint_arguments(meta)
    model = build_model(args["name"], args["options"], num_classes=args["num_classes"], in_chans=args["in_chans"],
                   drop_rate=drop_rate, drop_path_rate=drop_path_rate)
    load_state_dict_strict(model, tensors, str(path))
    _attach_metadata(model, meta)
    return model


def load_checkpoint_into(name: str, path: str | os.PathLike, **kwargs: Any) -> MobileNet:
    """``create_model(name, checkpoint_path=path, ...)``: the file must be for ``name``.

    Architecture options the caller passes must agree with the file's; the rest are taken from the file.
    ``num_classes`` left at its default (1000) takes the file's.
    """
    meta, tensors = read_checkpoint(path)
    args = checkpoint_arguments(meta)
    if args["name"] != name:
        raise CheckpointError(
            f"{path} holds weights for {args['name']!r}, not {name!r}: call "
            f"create_model({args['name']!r}, checkpoint_path=...) or mobilenets.from_checkpoint(path)"
        )
    file_opts = args["options"].to_dict()
    requested = {k: v for k, v in kwargs.items() if k in file_opts and v is not None}
    requested = {k: list(v) if isinstance(v, tuple) else v for k, v in requested.items()}
    if kwargs.get("num_classes", 1000) not in (1000, args["num_classes"]):
        requested["num_classes"] = kwargs["num_classes"]
    file_opts.update(num_classes=args["num_classes"])
    if kwargs.get("in_chans", 3) != args["in_chans"]:
        requested["in_chans"] = kwargs["in_chans"]
    file_opts.update(in_chans=args["in_chans"])
    conflicts = {k: (v, file_opts[k]) for k, v in requested.items() if file_opts[k] != v}
    if conflicts:
        detail = ", ".join(f"{k}={v!r} (file: {f!r})" for k, (v, f) in sorted(conflicts.items()))
        hint = " (for another number of classes, load it, then call model.reset_classifier(n))" \
            if "num_classes" in conflicts else ""
        raise CheckpointError(f"{path} was made for another architecture: {detail}{hint}")
    model = build_model(name, args["options"], num_classes=args["num_classes"], in_chans=args["in_chans"],
                   drop_rate=kwargs.get("drop_rate"), drop_path_rate=kwargs.get("drop_path_rate", 0.0))
    load_state_dict_strict(model, tensors, str(path))
    _attach_metadata(model, meta)
    return model


def _attach_metadata(model: MobileNet, meta: dict[str, str]) -> None:
    if "pretrained_cfg" in meta:
        model.pretrained_cfg = json.loads(meta["pretrained_cfg"])

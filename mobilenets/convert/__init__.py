"""Convert torchvision, timm and EfficientNet-PyTorch state dicts into mobilenets checkpoints.

Each library module (``torchvision``, ``timm``, ``efficientnet_pytorch``) provides:

* ``SOURCES``: ``{library_model_name: (our_model_name, {architecture options})}``;
* ``key_map(config, model) -> KeyMap``: for a resolved ``ModelConfig``, which source key fills each of our keys.

The copy is strict and counted (as nanoGPT's GPT-2 import): every source tensor is used exactly once, every
target tensor is filled, and shapes must agree (a ``Linear`` weight may stand in for a 1x1 conv and back).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import save_checkpoint
from ..model import MobileNet
from ..registry import build_config
from ..specs import ModelConfig

LIBRARIES = ("torchvision", "timm", "efficientnet_pytorch")
BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


class ConversionError(ValueError):
    """A source that cannot be converted: unknown model, unreadable file or keys that do not match."""


@dataclass
class KeyMap:
    """Ordered pairs ``(our_key, source_key)``, built layer by layer."""

    pairs: list[tuple[str, str]] = field(default_factory=list)

    def add(self, ours: str, theirs: str) -> None:
        self.pairs.append((ours, theirs))

    def conv(self, ours: str, theirs: str, bias: bool = False) -> None:
        """A bare conv or linear layer: ``weight`` (and ``bias``)."""
        self.add(f"{ours}.weight", f"{theirs}.weight")
        if bias:
            self.add(f"{ours}.bias", f"{theirs}.bias")

    def bn(self, ours: str, theirs: str) -> None:
        for k in BN_KEYS:
            self.add(f"{ours}.{k}", f"{theirs}.{k}")

    def conv_bn(self, ours: str, conv: str, bn: str) -> None:
        """One of our ``ConvNormAct`` layers from a source conv and its BatchNorm."""
        self.conv(f"{ours}.conv", conv)
        self.bn(f"{ours}.bn", bn)

    def se(self, ours: str, reduce: str, expand: str) -> None:
        self.conv(f"{ours}.conv_reduce", reduce, bias=True)
        self.conv(f"{ours}.conv_expand", expand, bias=True)


@dataclass(frozen=True)
class SourceSpec:
    """A ``LIBRARY:MODEL`` we can convert, and the model of ours it becomes."""

    library: str
    model: str
    name: str
    options: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.library}:{self.model}"


def _library(library: str):
    if library not in LIBRARIES:
        raise ConversionError(f"unknown library {library!r}; expected one of {', '.join(LIBRARIES)}")
    return importlib.import_module(f"{__name__}.{library}")


def supported_sources() -> list[str]:
    """Every supported ``LIBRARY:MODEL``, sorted."""
    return sorted(f"{lib}:{m}" for lib in LIBRARIES for m in _library(lib).SOURCES)


def get_source(source: str) -> SourceSpec:
    """Parse and look up ``LIBRARY:MODEL``; unknown ones raise ``ConversionError`` with the closest matches."""
    library, sep, model = source.partition(":")
    if not sep or not model:
        raise ConversionError(f"source must look like LIBRARY:MODEL (e.g. timm:tf_efficientnet_b0), got {source!r}")
    sources = _library(library).SOURCES
    if model not in sources:
        import difflib

        close = difflib.get_close_matches(model, sources, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(f'{library}:{c}' for c in close)}?" if close else ""
        raise ConversionError(f"{source} is not a supported source{hint} (see convert_weights.py --help)")
    name, options = sources[model]
    return SourceSpec(library, model, name, dict(options))


def source_config(source: str, num_classes: int = 1000, in_chans: int = 3) -> ModelConfig:
    """The resolved architecture a source converts into."""
    spec = get_source(source)
    return build_config(spec.name, num_classes=num_classes, in_chans=in_chans, **spec.options)


def key_map(source: str, config: ModelConfig) -> KeyMap:
    """The ``(our_key, source_key)`` pairs of ``source`` (``LIBRARY:MODEL``) for a resolved ``config``."""
    spec = get_source(source)
    return _library(spec.library).key_map(config, spec.model)


def _classifier_shape(state_dict: dict[str, torch.Tensor], config: ModelConfig, spec: SourceSpec) -> tuple[int, int]:
    """``(num_classes, in_chans)`` as the source tensors say (fine-tuned checkpoints differ from 1000 / 3)."""
    theirs = dict(key_map(spec.id, config).pairs)
    cls_key, stem_key = theirs.get("classifier.weight"), theirs.get("stem.conv.weight")
    num_classes = state_dict[cls_key].shape[0] if cls_key in state_dict else 0
    in_chans = state_dict[stem_key].shape[1] if stem_key in state_dict else config.in_chans
    return int(num_classes), int(in_chans)


def convert_state_dict(
    state_dict: dict[str, torch.Tensor], source: str
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Map a source state dict onto ours, strictly; returns our config and our state dict."""
    spec = get_source(source)
    num_classes, in_chans = _classifier_shape(state_dict, source_config(source), spec)
    config = source_config(source, num_classes=num_classes, in_chans=in_chans)
    keymap = key_map(source, config)
    target = {k: v.shape for k, v in MobileNet(config).state_dict().items()}

    ours_list = [o for o, _ in keymap.pairs]
    theirs_list = [t for _, t in keymap.pairs]
    assert len(set(ours_list)) == len(ours_list) and len(set(theirs_list)) == len(theirs_list), "key map repeats"
    problems = []
    missing = [t for t in theirs_list if t not in state_dict]
    unused = sorted(set(state_dict) - set(theirs_list))
    unfilled = sorted(set(target) - set(ours_list))
    unknown = sorted(set(ours_list) - set(target))
    if missing:
        problems.append(f"missing in source ({len(missing)}): {', '.join(missing[:8])}{' ...' * (len(missing) > 8)}")
    if unused:
        problems.append(f"unexpected in source ({len(unused)}): {', '.join(unused[:8])}{' ...' * (len(unused) > 8)}")
    if unfilled or unknown:
        problems.append(f"internal key map mismatch: unfilled {unfilled[:8]}, unknown {unknown[:8]}")
    out: dict[str, torch.Tensor] = {}
    misshaped = []
    for ours, theirs in keymap.pairs:
        if theirs not in state_dict or ours not in target:
            continue
        tensor = state_dict[theirs]
        if tensor.shape != target[ours]:
            same_io = tensor.shape[:2] == target[ours][:2] and tensor.numel() == target[ours].numel()
            if same_io and tensor.dim() in (2, 4) and len(target[ours]) in (2, 4):
                tensor = tensor.reshape(target[ours])  # Linear (out, in) <-> 1x1 conv (out, in, 1, 1)
            else:
                misshaped.append(f"{theirs} {tuple(tensor.shape)} -> {ours} {tuple(target[ours])}")
                continue
        out[ours] = tensor.detach().clone()
    if misshaped:
        problems.append(f"mis-shaped ({len(misshaped)}): {', '.join(misshaped[:8])}")
    if problems:
        raise ConversionError(f"{source}: the source does not match the architecture: " + "; ".join(problems))
    return config, out


def load_source_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a ``.pth``/``.bin`` state dict (``weights_only=True``) or a ``.safetensors`` file.

    A checkpoint dict wrapping the weights under ``state_dict``/``model``/``state_dict_ema`` is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"source file {path} does not exist or is not a file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data: Any = load_file(str(path))
        else:
            data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch/safetensors raise many types for a bad file
        raise ConversionError(
            f"cannot read {path} as a state dict ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            "it may be truncated, corrupt, or not a PyTorch/safetensors weight file"
        ) from None
    for key in ("state_dict_ema", "state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ConversionError(f"{path} does not hold a state dict of tensors")
    # checkpoints saved from DataParallel/DDP or torch.compile carry a prefix on every key
    for prefix in ("module.", "_orig_mod."):
        if data and all(k.startswith(prefix) for k in data):
            data = {k[len(prefix):]: v for k, v in data.items()}
    return data


def convert_file(
    src: str | os.PathLike, out: str | os.PathLike, source: str, **extra_metadata: Any
) -> MobileNet:
    """Convert ``src`` (a ``source`` = ``LIBRARY:MODEL`` checkpoint) into a mobilenets safetensors file ``out``.

    Nothing is written unless the conversion succeeds; ``out`` then appears atomically. Returns the model.
    """
    get_source(source)  # an unknown LIBRARY:MODEL is reported before a large file is read
    config, tensors = convert_state_dict(load_source_file(src), source)
    model = MobileNet(config)
    model.load_state_dict(tensors, strict=True)
    save_checkpoint(model, out, source=source, **extra_metadata)
    return model


__all__ = [
    "ConversionError",
    "KeyMap",
    "LIBRARIES",
    "SourceSpec",
    "convert_file",
    "convert_state_dict",
    "get_source",
    "key_map",
    "load_source_file",
    "source_config",
    "supported_sources",
]


def main(argv: list[str] | None = None) -> int:
    """``convert_weights.py SRC OUT.safetensors --from LIBRARY:MODEL``: one line on error, exit status 1."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="convert_weights.py",
        description="Convert a torchvision, timm or EfficientNet-PyTorch checkpoint into a mobilenets "
        ".safetensors file that records its architecture (load it with mobilenets.from_checkpoint).",
        epilog="supported LIBRARY:MODEL sources:\n  " + "\n  ".join(supported_sources()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("src", help="source state dict: .pth / .bin (loaded with weights_only=True) or .safetensors")
    parser.add_argument("out", help="output .safetensors path (written atomically)")
    parser.add_argument("--from", dest="source", required=True, metavar="LIBRARY:MODEL",
                        help="the library and its model name, e.g. timm:tf_efficientnet_b0")
    args = parser.parse_args(argv)
    if not str(args.out).endswith(".safetensors"):
        print(f"convert_weights.py: error: output must end in .safetensors, got {args.out}", file=sys.stderr)
        return 1
    try:
        model = convert_file(args.src, args.out, args.source)
    except (ConversionError, OSError) as e:
        print(f"convert_weights.py: error: {e}", file=sys.stderr)
        return 1
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out}: {model.config.name} ({n:,} parameters) from {args.source}")
    return 0

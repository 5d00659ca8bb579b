"""Convert torchvision, timm and EfficientNet-PyTorch state dicts into mobilenets checkpoints.

Each library module (``torchvision``, ``timm``, ``efficientnet_pytorch``) defines one ``Converter``
(``convert.base``): its ``sources`` (``{library_model_name: (our_model_name, {architecture options})}``) and its
``key_map(config, model) -> KeyMap``, which says, for a resolved ``ModelConfig``, which source key fills each of
our keys and which tensors need a transform (a reshape, transpose or split). ``CONVERTERS`` lists them.

The copy is strict and counted (as nanoGPT's GPT-2 import): every source tensor is used exactly once, every
target tensor is filled, and shapes must agree after the declared transforms. Target shapes come from a model
built on the meta device, so no weights are allocated before the source is checked.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import save_checkpoint
from ..model import MobileNet
from ..registry import build_config
from ..specs import ModelConfig
from ..statedict import compare
from . import efficientnet_pytorch, timm, torchvision
from .base import BN_KEYS, ConversionError, Converter, KeyMap

CONVERTERS: dict[str, Converter] = {
    c.library: c for c in (torchvision.CONVERTER, timm.CONVERTER, efficientnet_pytorch.CONVERTER)
}
LIBRARIES = tuple(CONVERTERS)


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

    @property
    def converter(self) -> Converter:
        return CONVERTERS[self.library]


def get_converter(library: str) -> Converter:
    """The ``Converter`` of ``library``; an unknown one raises ``ConversionError`` listing the known ones."""
    if library not in CONVERTERS:
        raise ConversionError(f"unknown library {library!r}; expected one of {', '.join(CONVERTERS)}")
    return CONVERTERS[library]


def supported_sources() -> list[str]:
    """Every supported ``LIBRARY:MODEL``, sorted."""
    return sorted(f"{c.library}:{m}" for c in CONVERTERS.values() for m in c.sources)


def get_source(source: str) -> SourceSpec:
    """Parse and look up ``LIBRARY:MODEL``; unknown ones raise ``ConversionError`` with the closest matches."""
    library, sep, model = source.partition(":")
    if not sep or not model:
        raise ConversionError(f"source must look like LIBRARY:MODEL (e.g. timm:tf_efficientnet_b0), got {source!r}")
    sources = get_converter(library).sources
    if model not in sources:
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
    return spec.converter.key_map(config, spec.model)


def target_shapes(config: ModelConfig) -> dict[str, torch.Size]:
    """Our state dict's shapes for ``config``, from a model built on the meta device (no memory, no init)."""
    with torch.device("meta"):
        return {k: v.shape for k, v in MobileNet(config).state_dict().items()}


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
    """Map a source state dict onto ours, strictly; returns our config and our state dict.

    Our tensors keep the source's dtypes and share its storage (no copy of a large model is made here).
    """
    spec = get_source(source)
    num_classes, in_chans = _classifier_shape(state_dict, source_config(source), spec)
    config = source_config(source, num_classes=num_classes, in_chans=in_chans)
    keymap = key_map(source, config)
    target = target_shapes(config)

    ours_of = {theirs: ours for ours, theirs in keymap.pairs}
    assert len(ours_of) == len(keymap.pairs) == len({o for o, _ in keymap.pairs}), "key map repeats a key"
    internal = compare(target, {o: target.get(o, ()) for o, _ in keymap.pairs})  # our side: the map's own invariant
    report = compare(
        {theirs: target[ours] for ours, theirs in keymap.pairs if ours in target},
        {k: v.shape for k, v in state_dict.items()},
        fits=lambda theirs, shape: keymap.apply(ours_of[theirs], torch.empty(shape, device="meta")).shape,
        describe=lambda theirs: ours_of[theirs],
    )
    if report or internal:
        problems = report.parts(" in source")
        if internal:
            problems.append(f"internal key map mismatch: unfilled {internal.missing[:8]}, "
                            f"unknown {internal.unexpected[:8]}")
        raise ConversionError(f"{source}: the source does not match the architecture: " + "; ".join(problems))
    return config, {ours: keymap.apply(ours, state_dict[theirs]).detach() for ours, theirs in keymap.pairs}


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
    with torch.device("meta"):
        model = MobileNet(config)
    dtypes = {k: v.dtype for k, v in model.state_dict().items()}  # float32 weights, int64 counters, as built
    model.load_state_dict({k: v.to(dtypes[k]) for k, v in tensors.items()}, strict=True, assign=True)
    save_checkpoint(model, out, source=source, **extra_metadata)
    return model


__all__ = [
    "BN_KEYS",
    "CONVERTERS",
    "ConversionError",
    "Converter",
    "KeyMap",
    "LIBRARIES",
    "SourceSpec",
    "convert_file",
    "convert_state_dict",
    "get_converter",
    "get_source",
    "key_map",
    "load_source_file",
    "source_config",
    "supported_sources",
    "target_shapes",
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

"""Convert torchvision, timm, EfficientNet-PyTorch and Keras state dicts into mobilenets checkpoints.

Each library module (``torchvision``, ``timm``, ``efficientnet_pytorch``, ``keras``) defines one ``Converter``
(``convert.base``): its ``sources`` (``{library_model_name: (our_model_name, {architecture options})}``), its
``key_map(config, model) -> KeyMap``, which says, for a resolved ``ModelConfig``, which source key fills each of
our keys and which tensors need a transform (a reshape, transpose or split), and optionally its ``preprocessing``
hook: what the library itself records about its weights' inputs and classes. ``CONVERTERS`` lists them.

Converted files record that preprocessing (``source_preprocessing``: the library's metadata, else the weights
manifest's entry for the same source, else ImageNet defaults; then the user's overrides) as ``pretrained_cfg``.

The copy is strict and counted (as nanoGPT's GPT-2 import): every source tensor is used exactly once (or set
aside, declared), every target tensor is filled (from the source, or by a declared fill), and shapes must agree
after the declared transforms. Target shapes come from a model built on the meta device, so no weights are
allocated before the source is checked.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import save_checkpoint
from ..data import (
    CROP_MODES,
    DEFAULT_CROP_PCT,
    DEFAULT_INTERPOLATION,
    IMAGENET_1K,
    IMAGENET_MEAN,
    IMAGENET_STD,
    INTERPOLATIONS,
    adapt_pretrained_cfg,
    crop_pct_for,
    eval_transform,
    validate_pretrained_cfg,
)
from ..manifest import load_manifest, pretrained_cfg
from ..model import MobileNet
from ..registry import build_config
from ..specs import ModelConfig
from ..statedict import compare
from . import efficientnet_pytorch, keras, timm, torchvision
from .base import BN_KEYS, ConversionError, Converter, KeyMap

CONVERTERS: dict[str, Converter] = {
    c.library: c for c in (torchvision.CONVERTER, timm.CONVERTER, efficientnet_pytorch.CONVERTER, keras.CONVERTER)
}
LIBRARIES = tuple(CONVERTERS)


@dataclass(frozen=True)
class SourceSpec:
    """A ``LIBRARY:MODEL`` we can convert, and the model of ours it becomes."""

    library: str
    model: str
    name: str
    options: dict[str, Any]
    tag: str | None = None  # ``LIBRARY:MODEL.TAG``: which of the library's weights (their preprocessing)

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
    """Parse and look up ``LIBRARY:MODEL[.TAG]``; unknown ones raise ``ConversionError`` with the closest matches.

    ``TAG`` picks one of the library's weights for ``MODEL`` (timm's tags, torchvision's enum names); it changes
    the recorded preprocessing only, not the architecture.
    """
    library, sep, model = source.partition(":")
    if not sep or not model:
        raise ConversionError(f"source must look like LIBRARY:MODEL (e.g. timm:tf_efficientnet_b0), got {source!r}")
    sources = get_converter(library).sources
    tag = None
    if model not in sources and "." in model:
        model, _, tag = model.partition(".")
        if not tag:
            raise ConversionError(f"source {source!r} ends in '.': give LIBRARY:MODEL or LIBRARY:MODEL.TAG")
    if model not in sources:
        close = difflib.get_close_matches(model, sources, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(f'{library}:{c}' for c in close)}?" if close else ""
        raise ConversionError(f"{source} is not a supported source{hint} (see convert_weights.py --help)")
    name, options = sources[model]
    return SourceSpec(library, model, name, dict(options), tag)


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


def _transformed_shape(keymap: KeyMap, ours: str, shape: torch.Size) -> torch.Size:
    """The shape the source tensor of ``ours`` takes after its declared transform (worked out on the meta device)."""
    return keymap.apply(ours, torch.empty(shape, device="meta")).shape


def _classifier_shape(state_dict: dict[str, torch.Tensor], config: ModelConfig, spec: SourceSpec) -> tuple[int, int]:
    """``(num_classes, in_chans)`` as the source tensors say (fine-tuned checkpoints differ from 1000 / 3)."""
    keymap = key_map(spec.id, config)
    theirs = dict(keymap.pairs)
    cls_key, stem_key = theirs.get("classifier.weight"), theirs.get("stem.conv.weight")
    num_classes, in_chans = 0, config.in_chans
    if cls_key in state_dict:
        num_classes = _transformed_shape(keymap, "classifier.weight", state_dict[cls_key].shape)[0]
    if stem_key in state_dict:
        shape = _transformed_shape(keymap, "stem.conv.weight", state_dict[stem_key].shape)
        in_chans = shape[1] if len(shape) > 1 else in_chans
    return int(num_classes), int(in_chans)


def convert_state_dict(
    state_dict: dict[str, torch.Tensor], source: str
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Map a source state dict onto ours, strictly; returns our config and our state dict.

    Our tensors keep the source's dtypes and share its storage where the transform allows (no copy of a large
    model is made here); a transposed tensor (Keras' layouts) is made contiguous.
    """
    spec = get_source(source)
    num_classes, in_chans = _classifier_shape(state_dict, source_config(source), spec)
    config = source_config(source, num_classes=num_classes, in_chans=in_chans)
    keymap = key_map(source, config)
    target = target_shapes(config)

    ours_of = {theirs: ours for ours, theirs in keymap.pairs}
    ours_all = [o for o, _ in keymap.pairs] + list(keymap.fills)
    theirs_all = [t for _, t in keymap.pairs] + keymap.aside
    assert len(set(ours_all)) == len(ours_all) and len(set(theirs_all)) == len(theirs_all), "key map repeats a key"
    # our side: the map's own invariant (every target key filled once, by a pair or a fill)
    internal = compare(target, {o: target.get(o, ()) for o in ours_all})
    # the source side: every pair's tensor of the right shape after its transform; set-aside keys only present
    expected = {theirs: target[ours] for ours, theirs in keymap.pairs if ours in target}
    expected.update({t: state_dict[t].shape if t in state_dict else () for t in keymap.aside})
    report = compare(
        expected,
        {k: v.shape for k, v in state_dict.items()},
        fits=lambda theirs, shape: shape if theirs not in ours_of else _transformed_shape(keymap, ours_of[theirs],
                                                                                          torch.Size(shape)),
        describe=lambda theirs: ours_of.get(theirs, "(set aside)"),
    )
    if report or internal:
        problems = report.parts(" in source")
        if internal:
            problems.append(f"internal key map mismatch: unfilled {internal.missing[:8]}, "
                            f"unknown {internal.unexpected[:8]}")
        raise ConversionError(f"{source}: the source does not match the architecture: " + "; ".join(problems))
    out = {ours: keymap.apply(ours, state_dict[theirs]).detach().contiguous() for ours, theirs in keymap.pairs}
    out.update({ours: value.clone() for ours, value in keymap.fills.items()})
    return config, out


MAX_SAFETENSORS_HEADER = 64 << 20  # bytes of a .safetensors JSON header (tensor index and metadata)


def _check_source_claims(path: Path) -> None:
    """Refuse a source file whose header claims more data than the file holds, before any tensor is allocated.

    safetensors: the header must fit the file (safetensors then checks every tensor's offsets against it).
    ``torch.save`` zip archives: every record stored uncompressed (``torch.save`` never compresses, a compressed
    record could expand to any size) and all records together no larger than the file; torch then checks each
    tensor's size against its record. (The legacy pre-1.6 format is read as torch reads it.)
    """
    size = path.stat().st_size
    if path.suffix == ".safetensors":
        with open(path, "rb") as f:
            prefix = f.read(8)
        claimed = int.from_bytes(prefix, "little") if len(prefix) == 8 else size
        if claimed > MAX_SAFETENSORS_HEADER or claimed + 8 > size:
            raise ConversionError(f"{path}: its safetensors header claims {claimed} bytes of a {size}-byte file; it "
                                  "is truncated, corrupt or crafted")
        return
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ConversionError(f"cannot read {path} as a torch.save archive ({e}); it may be truncated or corrupt") \
            from None
    compressed = [r.filename for r in records if r.compress_type != zipfile.ZIP_STORED]
    total = sum(r.file_size for r in records)
    if compressed or total > size:
        what = f"compressed records ({', '.join(compressed[:3])})" if compressed else \
            f"{total} bytes of records in a {size}-byte file"
        raise ConversionError(f"{path} is not an archive torch.save writes: it holds {what}; refusing to read it "
                              "(a corrupt or crafted file)")


def load_source_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a ``.pth``/``.bin`` state dict (``weights_only=True``), a ``.safetensors`` file or a Keras ``.h5`` /
    ``.weights.h5`` file (``keras.load_weights_file``: tensors named ``layer/variable``, in Keras' layouts).

    A checkpoint dict wrapping the weights under ``state_dict``/``model``/``state_dict_ema`` is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"source file {path} does not exist or is not a file")
    if path.suffix == ".h5":
        return keras.load_weights_file(path)
    _check_source_claims(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import safe_open

            with safe_open(str(path), framework="pt") as f:  # clone: its tensors are views of a mapping of the file
                data: Any = {k: f.get_tensor(k).clone() for k in f.keys()}
        else:
            data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch/safetensors raise many types for a bad file
        pickled = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if pickled:  # torch.save(model): a pickled object, whose loading would run code from the file
            raise ConversionError(
                f"{path} holds a pickled Python object ({pickled.group(1)}), not a state_dict of tensors, and is not "
                "unpickled because that can run arbitrary code. If it is a whole model saved with torch.save(model), "
                "save a state_dict where the model is defined: torch.save(model.state_dict(), 'weights.pth'), "
                "then convert that file"
            ) from None
        first = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(e)).strip().splitlines()[0] if str(e).strip() else ""
        raise ConversionError(
            f"cannot read {path} as a state dict ({type(e).__name__}: {first}); "
            "it may be truncated, corrupt, or not a PyTorch/safetensors weight file"
        ) from None
    for key in ("state_dict_ema", "state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ConversionError(f"{path} does not hold a state dict of tensors")
    # checkpoints saved from DataParallel/DDP or torch.compile carry a prefix on every key, both in either order
    stripped = True
    while stripped and data:
        stripped = False
        for prefix in ("module.", "_orig_mod."):
            if all(k.startswith(prefix) for k in data):
                data = {k[len(prefix):]: v for k, v in data.items()}
                stripped = True
    return data


# ------------------------------------------------------------------------------------------- preprocessing

OVERRIDES = ("mean", "std", "input_size", "interpolation", "crop_pct", "crop_mode", "labels")
MAX_LABELS_BYTES = 16 << 20  # a --labels file: one name per line


@dataclass(frozen=True)
class Preprocessing:
    """The ``pretrained_cfg`` a converted file records, and where it came from (for the command line)."""

    cfg: dict[str, Any]
    origin: str


def _defaults(config: ModelConfig) -> dict[str, Any]:
    size = config.input_size
    return dict(input_size=[3, size, size], resize=math.floor(size / DEFAULT_CROP_PCT), crop=size,
                crop_pct=DEFAULT_CROP_PCT, crop_mode="center", interpolation=DEFAULT_INTERPOLATION,
                mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))


def _from_manifest(spec: SourceSpec, file_name: str) -> tuple[dict[str, Any], str] | None:
    """The manifest's record of weights from the same ``LIBRARY:MODEL`` (same file name, else tag, else default)."""
    entries = [e for e in load_manifest().values() if e["source"] == spec.id]
    if spec.tag is not None:
        entries = [e for e in entries if f"{spec.model}.{spec.tag}" in e["url"] or e["tag"] == spec.tag]
    if not entries:
        return None
    entries.sort(key=lambda e: (e["url"].rsplit("/", 1)[-1] != file_name, not e["default"]))
    entry = entries[0]
    cfg = {k: v for k, v in pretrained_cfg(entry).items() if k not in ("model", "source")}
    return cfg, f"the weights manifest's {entry['model']}.{entry['tag']}"


def source_preprocessing(source: str, file_name: str, config: ModelConfig) -> Preprocessing:
    """What ``source``'s own library says about its weights' inputs and classes.

    In order: the library's metadata (torchvision's weight enums, timm's ``pretrained_cfg``, EfficientNet-PyTorch's
    documented conventions) when it is installed; else the manifest's entry for the same source; else the
    ImageNet defaults. ``file_name`` (the source file's) picks among a model's torchvision weights.
    """
    spec = get_source(source)
    hook = spec.converter.preprocessing
    found = hook(spec.model, spec.tag, file_name, config) if hook is not None else None
    if found is None:
        found = _from_manifest(spec, file_name)
        if found is not None:
            missing = (f"{spec.library} is not installed or has no record of {spec.model}" if hook is not None
                       else f"{spec.library} records none")
            found = (found[0], f"{found[1]} ({missing})")
    if found is None:
        found = ({}, f"ImageNet defaults (nothing is known about {source}'s preprocessing; check it, and pass "
                     "--mean/--std/--input-size/--interpolation/--crop-pct if they differ)")
    cfg, origin = found
    merged = {**_defaults(config), **cfg}
    if "resize" not in cfg and "crop_pct" in cfg:
        merged["resize"] = math.floor(merged["crop"] / merged["crop_pct"])
    if "crop_pct" not in cfg:
        merged["crop_pct"] = crop_pct_for(merged["crop"], merged["resize"])
    merged.update(source=source, model=config.name, num_classes=1000)
    merged.setdefault("categories", None)
    return Preprocessing(merged, origin)


def read_labels(path: str | os.PathLike, num_classes: int) -> list[str]:
    """Class names from a text file, one per line in class-index order (blank lines at the end ignored)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_LABELS_BYTES + 1)
    except OSError as e:
        raise ConversionError(f"cannot read the labels file {path}: {e.strerror or e}") from None
    if len(data) > MAX_LABELS_BYTES:
        raise ConversionError(f"the labels file {path} is larger than {MAX_LABELS_BYTES >> 20} MiB; it should hold "
                              "one class name per line")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConversionError(f"the labels file {path} is not UTF-8 text (byte {e.start}); save it as UTF-8") \
            from None
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    blank = [i + 1 for i, line in enumerate(lines) if not line]
    if blank:
        raise ConversionError(f"the labels file {path} has an empty line {blank[0]}; give one name per line")
    if len(lines) != num_classes:
        raise ConversionError(f"the labels file {path} has {len(lines)} names, but the model has {num_classes} "
                              "classes; give one name per class, in class-index order")
    return lines


def apply_overrides(prep: Preprocessing, overrides: dict[str, Any], num_classes: int, in_chans: int) -> Preprocessing:
    """``prep`` with the user's ``--mean/--std/--input-size/--interpolation/--crop-pct/--crop-mode/--labels``,
    fitted to the converted model's classifier and channels, and validated."""
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise ConversionError(f"unknown preprocessing override(s) {', '.join(unknown)}; known: {', '.join(OVERRIDES)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    cfg = adapt_pretrained_cfg(prep.cfg, num_classes=num_classes)
    for key in ("mean", "std"):
        if key in given:
            values, channels = [float(v) for v in given[key]], cfg["input_size"][0]
            if len(values) not in (1, channels):
                raise ConversionError(f"--{key} takes {channels} values (one per input channel) or one for all, "
                                      f"got {len(values)}")
            cfg[key] = values * channels if len(values) == 1 else values
    if "input_size" in given:
        size = int(given["input_size"])
        cfg.update(input_size=[cfg["input_size"][0], size, size], crop=size)
        cfg.pop("test_input_size", None)
        cfg.pop("test_crop_pct", None)
    for key in ("interpolation", "crop_pct", "crop_mode"):
        if key in given:
            cfg[key] = given[key]
    if "input_size" in given or "crop_pct" in given:
        crop_pct = float(cfg["crop_pct"])
        if not 0 < crop_pct <= 2:
            raise ConversionError(f"--crop-pct must be in (0, 2] (crop / resize), got {crop_pct}")
        cfg["resize"] = math.floor(cfg["crop"] / crop_pct)
    if "labels" in given:
        cfg["categories"] = read_labels(given["labels"], num_classes)
    cfg = adapt_pretrained_cfg(cfg, in_chans=in_chans)
    try:
        cfg = validate_pretrained_cfg(cfg, "the converted preprocessing")
    except ValueError as e:
        raise ConversionError(f"{e} (check --mean/--std/--input-size/--interpolation/--crop-pct)") from None
    origin = prep.origin + (f", overridden: {', '.join(k.replace('_', '-') for k in given)}" if given else "")
    return Preprocessing(cfg, origin)


def convert_source(
    src: str | os.PathLike, source: str, overrides: dict[str, Any] | None = None, *, record: bool = True
) -> tuple[MobileNet, Preprocessing | None]:
    """Read and convert ``src``; ``record``: also work out its preprocessing (``model.pretrained_cfg``)."""
    get_source(source)  # an unknown LIBRARY:MODEL is reported before a large file is read
    config, tensors = convert_state_dict(load_source_file(src), source)
    with torch.device("meta"):
        model = MobileNet(config)
    dtypes = {k: v.dtype for k, v in model.state_dict().items()}  # float32 weights, int64 counters, as built
    model.load_state_dict({k: v.to(dtypes[k]) for k, v in tensors.items()}, strict=True, assign=True)
    if not record:
        return model, None
    prep = apply_overrides(source_preprocessing(source, Path(src).name, config), overrides or {},
                           config.num_classes, config.in_chans)
    model.pretrained_cfg = prep.cfg
    return model, prep


def convert_file(
    src: str | os.PathLike, out: str | os.PathLike, source: str, *, overrides: dict[str, Any] | None = None,
    **extra_metadata: Any,
) -> MobileNet:
    """Convert ``src`` (a ``source`` = ``LIBRARY:MODEL[.TAG]`` checkpoint) into a mobilenets safetensors file ``out``.

    The file records the weights' preprocessing and class names (``source_preprocessing``, then ``overrides``)
    as ``pretrained_cfg``, unless ``extra_metadata`` gives one. Nothing is written unless the conversion
    succeeds; ``out`` then appears atomically. Returns the model (with its ``pretrained_cfg``).
    """
    given = extra_metadata.pop("pretrained_cfg", None)
    model, _ = convert_source(src, source, overrides, record=given is None)
    if given is not None:
        model.pretrained_cfg = dict(given)
    save_checkpoint(model, out, source=source, **extra_metadata)
    return model


__all__ = [
    "BN_KEYS",
    "CONVERTERS",
    "ConversionError",
    "Converter",
    "KeyMap",
    "LIBRARIES",
    "Preprocessing",
    "SourceSpec",
    "add_arguments",
    "apply_overrides",
    "convert_file",
    "convert_source",
    "convert_state_dict",
    "get_converter",
    "get_source",
    "key_map",
    "load_source_file",
    "read_labels",
    "run",
    "source_config",
    "source_preprocessing",
    "supported_sources",
    "target_shapes",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``SRC OUT --from LIBRARY:MODEL`` and the preprocessing overrides to ``parser``."""
    parser.description = (
        f"Convert a checkpoint of {', '.join(LIBRARIES)} (the sources listed below) into a mobilenets .safetensors "
        "file that records its architecture, preprocessing and class names (load it with "
        "mobilenets.from_checkpoint)."
    )
    parser.epilog = "supported LIBRARY:MODEL sources:\n  " + "\n  ".join(supported_sources())
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("src", help="source state dict: .pth / .bin (loaded with weights_only=True) or .safetensors")
    parser.add_argument("out", help="output .safetensors path (written atomically)")
    parser.add_argument("--from", dest="source", required=True, metavar="LIBRARY:MODEL[.TAG]",
                        help="the library and its model name, e.g. timm:tf_efficientnet_b0; a timm tag "
                             "(timm:efficientnet_b3.ra2_in1k) or torchvision weights name "
                             "(torchvision:mobilenet_v2.IMAGENET1K_V2) picks whose preprocessing is recorded")
    group = parser.add_argument_group(
        "preprocessing", "recorded from the source library's metadata (or the weights manifest, else ImageNet "
        "defaults); these override it")
    group.add_argument("--mean", type=float, nargs="+", metavar="M", help="normalisation mean (0-1 scale), per "
                       "channel or one value for all")
    group.add_argument("--std", type=float, nargs="+", metavar="S", help="normalisation std, per channel or one")
    group.add_argument("--input-size", type=int, metavar="N", help="eval crop size in pixels (square)")
    group.add_argument("--interpolation", choices=INTERPOLATIONS, help="resize interpolation")
    group.add_argument("--crop-pct", type=float, metavar="P", help="crop / resize (resize = floor(crop / P))")
    group.add_argument("--crop-mode", choices=CROP_MODES, help="center: resize the shorter side; squash: both "
                       "sides; border: the longer side, padding with the mean")
    group.add_argument("--labels", metavar="FILE", help="class names, one per line, as many as the model's classes")


def run(args: argparse.Namespace, prog: str = "mobilenets convert") -> int:
    """Convert as ``args`` (from a parser given :func:`add_arguments`) say; one line on error, exit status 1."""
    if not str(args.out).endswith(".safetensors"):
        print(f"{prog}: error: output must end in .safetensors, got {args.out}", file=sys.stderr)
        return 1
    overrides = {k: getattr(args, k, None) for k in OVERRIDES}
    try:
        model, prep = convert_source(args.src, args.source, overrides)
        save_checkpoint(model, args.out, source=args.source)
    except (ConversionError, OSError, ValueError) as e:  # ValueError: a record that does not validate
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    n = sum(p.numel() for p in model.parameters())
    cfg = prep.cfg
    names = cfg.get("categories")
    classes = "ImageNet-1k class names" if names == IMAGENET_1K else f"{len(names)} class names" if names else \
        "no class names (pass --labels FILE)"
    print(f"wrote {args.out}: {model.config.name} ({n:,} parameters) from {args.source}; preprocessing from "
          f"{prep.origin}: {eval_transform(cfg).describe()}; {classes}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``convert_weights.py SRC OUT.safetensors --from LIBRARY:MODEL``: one line on error, exit status 1."""
    parser = argparse.ArgumentParser(prog="convert_weights.py")
    add_arguments(parser)
    return run(parser.parse_args(argv), prog="convert_weights.py")

"""Pretrained weights: ``load_pretrained`` and the public helpers.

``create_model(name, pretrained=True | "tag")`` ends here. A tag resolves through ``weights/manifest.toml``
(``manifest``) to an upstream file, which ``cache`` downloads once, verifies, converts into a mobilenets
safetensors checkpoint and caches (the cache layout and download bounds are described there). The public names
of ``manifest`` and ``cache`` are re-exported here.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from typing import Any

import torch

from .cache import (
    CHUNK,
    DEADLINE_BASE,
    DEADLINE_UNKNOWN_SIZE,
    DEFAULT_TIMEOUT,
    ENV_DEADLINE,
    ENV_HOME,
    ENV_TIMEOUT,
    MAX_DOWNLOAD_BYTES,
    MIN_RATE,
    STALE_AFTER,
    WORK_MARKER,
    cache_paths,
    download_deadline,
    download_name,
    download_pretrained,
    get_cache_dir,
    load_verified,
    sha256_file,
)
from .checkpoint import (
    FREE_OPTIONS,
    CheckpointError,
    build_model,
    checkpoint_arguments,
    load_state_dict_strict,
)
from .convert import ConversionError, get_source
from .data import adapt_pretrained_cfg, validate_pretrained_cfg
from .manifest import (
    MAX_PREPROCESS_SIZE,
    PREPROCESS_KEYS,
    PREPROCESS_OPTIONAL_KEYS,
    REQUIRED_KEYS,
    URL_SCHEMES,
    PretrainedError,
    get_pretrained_cfg,
    is_plain_name,
    list_pretrained,
    load_manifest,
    lookup_entry,
    manifest_path,
    pretrained_cfg,
    split_tag,
    toml_module,
)
from .model import MobileNet
from .registry import build_config, check_arguments
from .surgery import GROWABLE_OPTIONS, grow_pretrained, plan

STEM_WEIGHT = "stem.conv.weight"


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Stem weights pretrained on RGB for ``in_chans`` inputs, as timm does.

    One channel: the sum over RGB (a grey image gives the same response as its RGB copy). Otherwise the RGB
    filters are repeated to ``in_chans`` channels and scaled by ``3 / in_chans``, keeping activations in range.
    """
    if in_chans == weight.shape[1]:
        return weight
    if weight.shape[1] != 3:
        raise PretrainedError(f"cannot adapt a stem with {weight.shape[1]} input channels to {in_chans}")
    dtype, w = weight.dtype, weight.float()
    if in_chans == 1:
        w = w.sum(dim=1, keepdim=True)
    else:
        w = w.repeat(1, math.ceil(in_chans / 3), 1, 1)[:, :in_chans] * (3 / in_chans)
    return w.to(dtype)


def _check_overrides(entry: dict[str, Any], requested: dict[str, Any]) -> dict[str, Any]:
    """Architecture options passed with ``pretrained`` must equal the weights' (else the weights would not fit),
    except ``FREE_OPTIONS`` and ``GROWABLE_OPTIONS`` that ``surgery.plan`` accepts (checked here, before any
    download). Returns the options of those two kinds that differ from the weights'."""
    try:
        spec = get_source(entry["source"])
    except ConversionError as e:
        raise PretrainedError(f"{entry['model']}.{entry['tag']} cannot be loaded: {e}") from None
    if spec.name != entry["model"]:
        raise PretrainedError(f"the manifest maps {entry['model']}.{entry['tag']} to {entry['source']}, "
                              f"which converts into {spec.name} (a manifest error)")
    theirs = build_config(spec.name, **spec.options).options.to_dict()
    conflicts, changed = {}, {}
    for key, value in requested.items():
        if key in FREE_OPTIONS:
            changed[key] = value
            continue
        listed = list(value) if isinstance(value, tuple) else value
        if listed != theirs[key]:
            conflicts[key] = (listed, theirs[key])
    growth = {k: requested[k] for k in conflicts if k in GROWABLE_OPTIONS}
    refused = {k: v for k, v in conflicts.items() if k not in GROWABLE_OPTIONS}
    if refused:
        detail = ", ".join(f"{k}={v!r} (weights: {w!r})" for k, (v, w) in sorted(refused.items()))
        raise ValueError(
            f"pretrained weights {entry['model']}.{entry['tag']} do not fit the architecture asked for: {detail}. "
            "Drop these options to load the weights, or drop pretrained= for a randomly initialised model "
            "(drop_rate, drop_path_rate, num_classes, in_chans, global_pool and output_stride may be changed with "
            "pretrained weights; se_ratio, repeats and kernel_sizes may grow them, keeping their function)."
        )
    source = build_config(spec.name, **{**spec.options, **changed})  # free options' values checked here
    if growth:
        try:
            plan(source, build_config(spec.name, **{**spec.options, **changed, **growth}))
        except ValueError as e:
            detail = ", ".join(f"{k}={conflicts[k][0]!r} (weights: {conflicts[k][1]!r})" for k in sorted(growth))
            raise ValueError(f"pretrained weights {entry['model']}.{entry['tag']} do not fit the architecture asked "
                             f"for: {detail}: {e}") from None
    return {**changed, **growth}


def load_pretrained(
    name: str,
    pretrained: bool | str = True,
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    num_classes: int = 1000,
    in_chans: int = 3,
    width_mult: float | None = None,
    depth_mult: float | None = None,
    drop_rate: float | None = None,
    drop_path_rate: float = 0.0,
    allow_nonfinite: bool = False,
    **options: Any,
) -> MobileNet:
    """``create_model(name, pretrained=...)``: the model with its pretrained weights, in train mode.

    Args:
        name: a model from ``list_models()`` with entries in ``list_pretrained()``.
        pretrained: ``True`` for the model's default tag, or a tag (``"tv_in1k"`` or ``"mobilenet_v2.tv_in1k"``).
        cache_dir: overrides ``$MOBILENETS_HOME`` and the torch hub cache (see ``get_cache_dir``).
        progress: show a download progress bar on stderr (only when it is a terminal).
        num_classes: other than 1000: the pretrained classifier is replaced by a new one (``reset_classifier``),
            and ``pretrained_cfg["categories"]`` becomes ``None``.
        in_chans: other than 3: the stem is adapted as timm does (``adapt_input_conv``), and ``pretrained_cfg``
            by ``data.adapt_pretrained_cfg``.
        width_mult, depth_mult, **options: allowed only with the weights' own values (else ``ValueError``), except
            ``global_pool`` and ``output_stride`` (free), and ``se_ratio``, ``repeats`` and ``kernel_sizes``, which
            may grow the pretrained network keeping its function (``surgery.grow``; the model then has a
            ``surgery_report``).
        drop_rate, drop_path_rate: free to choose (training only).
        allow_nonfinite: load weights holding NaN or infinity (refused by default).
    """
    requested = check_arguments(name, num_classes=num_classes, in_chans=in_chans, width_mult=width_mult,
                                depth_mult=depth_mult, drop_rate=drop_rate, drop_path_rate=drop_path_rate, **options)
    if pretrained is True:
        tag = None
    elif isinstance(pretrained, str) and pretrained:
        parts = pretrained.split(".")
        if len(parts) > 2 or not all(is_plain_name(p) for p in parts):
            raise ValueError(f"pretrained tag {pretrained[:100]!r} is not a plain name (lowercase letters, digits, "
                             "'_', optionally after 'model.'); see `mobilenets list --pretrained`")
        model, tag = split_tag(pretrained)
        if tag is None:
            tag = model
        elif model != name:
            raise ValueError(f"pretrained={pretrained!r} names weights for {model}, not {name}")
    else:
        raise TypeError(f"pretrained must be True or a tag string, got {pretrained!r}")
    entry = lookup_entry(name, tag)
    changed = _check_overrides(entry, requested)

    path, meta, tensors = load_verified(entry, cache_dir, progress, allow_nonfinite=allow_nonfinite)
    try:
        recorded = checkpoint_arguments(meta, str(path))
    except CheckpointError as e:
        raise PretrainedError(f"{e}; delete {path} to convert again") from None
    file_classes = recorded["num_classes"]
    if recorded["name"] != name:
        raise PretrainedError(f"{path} holds weights for {recorded['name']}, not {name}; delete it to convert again")
    if STEM_WEIGHT in tensors:
        tensors[STEM_WEIGHT] = adapt_input_conv(tensors[STEM_WEIGHT], in_chans)
    free = {k: v for k, v in changed.items() if k in FREE_OPTIONS}
    model = build_model(name, replace(recorded["options"], **free), on_meta=True, num_classes=file_classes,
                        in_chans=in_chans, drop_rate=drop_rate, drop_path_rate=drop_path_rate)
    load_state_dict_strict(model, tensors, str(path))
    growth = {k: v for k, v in changed.items() if k in GROWABLE_OPTIONS}
    if growth:  # build the architecture asked for and grow it from the weights (surgery.grow)
        model = grow_pretrained(model, num_classes=num_classes, **growth)
    if "pretrained_cfg" in meta:  # validated by read_checkpoint
        cfg = validate_pretrained_cfg(json.loads(meta["pretrained_cfg"]), str(path))
    else:
        cfg = validate_pretrained_cfg(pretrained_cfg(entry, file_classes), f"the manifest entry {name}.{entry['tag']}")
    if num_classes != model.num_classes:
        model.reset_classifier(num_classes)
    model.pretrained_cfg = adapt_pretrained_cfg(cfg, num_classes=num_classes, in_chans=in_chans)
    return model


__all__ = [
    "CHUNK",
    "DEADLINE_BASE",
    "DEADLINE_UNKNOWN_SIZE",
    "DEFAULT_TIMEOUT",
    "ENV_DEADLINE",
    "ENV_HOME",
    "ENV_TIMEOUT",
    "MAX_DOWNLOAD_BYTES",
    "MAX_PREPROCESS_SIZE",
    "MIN_RATE",
    "PREPROCESS_KEYS",
    "PREPROCESS_OPTIONAL_KEYS",
    "REQUIRED_KEYS",
    "STALE_AFTER",
    "STEM_WEIGHT",
    "URL_SCHEMES",
    "WORK_MARKER",
    "download_deadline",
    "is_plain_name",
    "sha256_file",
    "toml_module",
    "PretrainedError",
    "adapt_input_conv",
    "cache_paths",
    "download_name",
    "download_pretrained",
    "get_cache_dir",
    "get_pretrained_cfg",
    "list_pretrained",
    "load_manifest",
    "load_pretrained",
    "manifest_path",
    "pretrained_cfg",
]

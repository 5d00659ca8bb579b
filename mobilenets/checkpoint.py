"""Self-describing safetensors checkpoints: the tensors plus the model name and every architecture option.

A checkpoint is untrusted input. Reading one (``read_checkpoint``) checks, in this order and before any tensor
data is loaded: the header size, ``format`` and ``format_version``, every metadata field's type and range (the
same ``Options.validate`` that user calls go through), ``pretrained_cfg``; then it builds the recorded model on the
``meta`` device (no memory) and compares every tensor's name, shape and dtype in the file's header with it. Only
then are tensors read, and floating tensors holding NaN or infinity are refused unless ``allow_nonfinite=True``.

The file is opened once and every check and every tensor goes through that open file (``one_file``): a file renamed
onto the path meanwhile is not what gets read, and one written in place while it is read is refused. The tensors
are copies in the process's own memory, not views of a mapping of the file, so writing the file later (``torch.save``
of the loaded weights to the path they came from, say) cannot change or crash the model loaded from it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import socket
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file
from torch import nn

from .data import adapt_pretrained_cfg, validate_pretrained_cfg
from .features import MobileNetFeatures
from .model import MobileNet
from .registry import build_config, check_arguments, check_build_arguments, get_spec
from .specs import MAX_IN_CHANS, MAX_NUM_CLASSES, ModelConfig, Options, check_output_stride
from .statedict import SHOWN, KeyReport, compare

FORMAT = "mobilenets"
FORMAT_VERSION = "2"  # 2: records ``architecture_sha256``
READABLE_VERSIONS = ("1", FORMAT_VERSION)  # 1: no fingerprint, loaded as before
MAX_HEADER_BYTES = 16 << 20  # safetensors JSON header: tensor index plus our metadata (ours are ~50 kB)
FLOAT_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
INT_DTYPES = {"I64": torch.int64}  # BatchNorm's num_batches_tracked
CONVERT_HINT = "mobilenets convert SRC OUT --from LIBRARY:MODEL"
# Architecture options that leave every weight as it is, so a file's weights load with any value of them.
FREE_OPTIONS = ("output_stride", "global_pool")

# Temporary files and folders we create carry this tag, our host name and our pid, so a later run removes only its
# own leftovers, and those of a killed run at once (its pid is gone), never another program's ``.tmp-*``.
TEMP_TAG = "tmp-mobilenets"
_TEMP_NAME = re.compile(rf"{TEMP_TAG}-(?P<host>[A-Za-z0-9_-]*)-(?P<pid>[0-9]+)-")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not fit the model asked for."""


# ------------------------------------------------------------------------------------------------- writing


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:32]


def owned_temp_prefix(stem: str) -> str:
    """``<stem>tmp-mobilenets-<host>-<pid>-``: the prefix of every temporary path this process makes."""
    return f"{stem}{TEMP_TAG}-{_host()}-{os.getpid()}-"


def owner_is_gone(name: str) -> bool:
    """Whether ``name`` is one of our temporary paths whose process (on this host) no longer runs."""
    match = _TEMP_NAME.search(name)
    if match is None or match["host"] != _host():
        return False
    pid = int(match["pid"])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError, OSError):
        return False  # alive (another user's), or a pid we cannot ask about: keep it
    return False


def file_mode() -> int:
    """``0o666`` less the process umask: the mode ``open()`` gives a new file (``mkstemp`` gives 0o600)."""
    try:  # Linux reports the umask without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def is_disk_full(error: BaseException) -> bool:
    """An ``OSError`` ENOSPC/EDQUOT, or a library error that wraps one in its message (safetensors does)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(error) or "Disk quota exceeded" in str(error)


def atomic_write(path: str | os.PathLike, write: Any) -> Path:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, then rename it over ``path``.

    Either the complete new file is in place or nothing changed: an exception removes the temporary file, and
    temporary files of killed runs for the same ``path`` are removed first. The file gets the umask's mode.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in path.parent.glob(f".{glob_escape(path.name)}.{TEMP_TAG}-*"):
        if owner_is_gone(old.name):
            old.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=owned_temp_prefix(f".{path.name}."), suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def architecture_fingerprint(config: ModelConfig) -> str:
    """SHA-256 of a canonical JSON of the resolved architecture: stem, every block's config, head.

    Stored as metadata ``architecture_sha256``: options alone do not pin an architecture, since a table edited
    since the file was written resolves the same options into other blocks. Rates (dropout, stochastic depth) and
    the classifier size, which are free or recorded on their own, are left out.
    """
    stages = [[[type(b).__name__, {k: v for k, v in sorted(b.recorded_kwargs().items()) if k != "drop_path"}]
               for b in stage] for stage in config.stages]
    doc = dict(arch=config.arch, stem=[config.stem_chs, config.stem_act], stages=stages,
               head=[config.head_chs, config.head_act, config.head_repeats, config.head_hidden, config.head_norm])
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def checkpoint_metadata(config: ModelConfig, source: str | None = None, **extra: Any) -> dict[str, str]:
    """The metadata we record: model name, options, classifier size, input channels, source, and ``extra``.

    An ``extra`` ``pretrained_cfg`` dict is validated (``ValueError`` naming the field) and fitted to ``config``'s
    classifier size and input channels (``data.adapt_pretrained_cfg``) before it is stored as JSON.
    """
    cfg = extra.get("pretrained_cfg")
    if isinstance(cfg, dict):
        cfg = {"num_classes": config.num_classes, **cfg}
        cfg = adapt_pretrained_cfg(validate_pretrained_cfg(cfg, "pretrained_cfg to save"),
                                   num_classes=config.num_classes, in_chans=config.in_chans)
        extra["pretrained_cfg"] = validate_pretrained_cfg(cfg, "pretrained_cfg to save")
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": config.name,
        "options": json.dumps(config.options.to_dict(), sort_keys=True),
        "num_classes": str(config.num_classes),
        "in_chans": str(config.in_chans),
        "architecture": config.arch,
        "architecture_sha256": architecture_fingerprint(config),
    }
    if source:
        meta["source"] = source
    meta.update({k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in extra.items()})
    return meta


_KEEP: Any = object()  # save_checkpoint's default: the model's own pretrained_cfg


def save_checkpoint(
    model: MobileNet,
    path: str | os.PathLike,
    *,
    source: str | None = None,
    pretrained_cfg: dict[str, Any] | None = _KEEP,
    categories: Sequence[str] | None = None,
    **extra: Any,
) -> Path:
    """Write ``model``'s weights, architecture and preprocessing to ``path`` (safetensors), atomically.

    ``pretrained_cfg`` defaults to ``model.pretrained_cfg`` (preprocessing and class names; ``from_checkpoint``
    restores it); pass another dict to record that instead, or ``None`` to record none. ``categories`` (one name
    per class) replaces the recorded class names, e.g. after fine-tuning. The record is validated and fitted to
    the model's classifier and input channels: a classifier of another size drops the old names.
    """
    cfg = getattr(model, "pretrained_cfg", None) if pretrained_cfg is _KEEP else pretrained_cfg
    if categories is not None:
        cfg = {**(cfg or {}), "num_classes": model.num_classes, "categories": list(categories)}
    if cfg is not None and not isinstance(cfg, dict):
        raise TypeError(f"pretrained_cfg must be a dict or None, got {type(cfg).__name__}")
    if cfg is not None:
        extra["pretrained_cfg"] = cfg
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = checkpoint_metadata(model.config, source, **extra)
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


# ------------------------------------------------------------------------------------------------- reading


def _unreadable(path: Path, reason: object) -> CheckpointError:
    return CheckpointError(f"{path} is not a readable safetensors file ({reason}); it may be truncated or corrupt: "
                           "download or convert it again")


def _stamp(st: os.stat_result) -> tuple[int, ...]:
    """What changes when a file is replaced or written: identity, size, modification time. (Not the change time:
    renaming a new file over this one, as ``atomic_write`` does, changes it and leaves the content alone.)"""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


@contextmanager
def one_file(path: str | os.PathLike) -> Iterator[tuple[str, BinaryIO]]:
    """Open ``path`` once; yield a name that reaches this same open file, and the file.

    The name is ``/proc/self/fd/N`` (``/dev/fd/N``), so a library that takes a path (safetensors) reads the file
    that was opened and checked even if another is renamed onto ``path`` meanwhile. Where neither exists it is
    ``path``, and the block fails if ``path`` then names another file. A file written in place before the block
    ends (its size or modification time differ) raises ``CheckpointError``: what was read is not one file.
    """
    path = Path(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise _unreadable(path, e) from None
    with f:
        fd = f.fileno()
        before = _stamp(os.fstat(fd))
        name = next((n for n in (f"/proc/self/fd/{fd}", f"/dev/fd/{fd}") if os.path.exists(n)), None)
        yield name or str(path), f
        now = [_stamp(os.fstat(fd))]
    if name is None:
        try:
            now.append(_stamp(os.stat(path)))
        except OSError:
            now.append(())
    if any(stamp != before for stamp in now):
        raise CheckpointError(f"{path} changed while it was being read (another program is writing or replacing "
                              "it); nothing was loaded. Load it again once it is complete")


def _check_header_size(path: Path, f: BinaryIO) -> None:
    """Refuse a header larger than ``MAX_HEADER_BYTES`` or than the file, before safetensors parses it."""
    f.seek(0)
    prefix = f.read(8)
    size = os.fstat(f.fileno()).st_size
    if len(prefix) < 8:
        raise _unreadable(path, f"{size} bytes, too short for a header")
    n = int.from_bytes(prefix, "little")
    if n > MAX_HEADER_BYTES:
        raise CheckpointError(f"{path}: its safetensors header claims {n} bytes, more than the {MAX_HEADER_BYTES} "
                              "a mobilenets checkpoint needs; refusing to read it (a corrupt or crafted file)")
    if n + 8 > size:
        raise _unreadable(path, f"the header claims {n} bytes of a {size}-byte file")


def _check_format(path: Path, meta: dict[str, str]) -> None:
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} was not written by mobilenets (no architecture metadata); convert it first with "
            f"`{CONVERT_HINT}` (Python: mobilenets.convert.convert_file)"
        )
    version = meta.get("format_version")
    if version in READABLE_VERSIONS:
        return
    if isinstance(version, str) and version.isascii() and version.isdigit() and int(version) > int(FORMAT_VERSION):
        raise CheckpointError(f"{path} has format_version {version}, newer than this mobilenets reads "
                              f"({FORMAT_VERSION}): upgrade mobilenets (pip install -U mobilenets)")
    raise CheckpointError(f"{path}: metadata format_version={str(version)[:40]!r} is not one this mobilenets reads "
                          f"({FORMAT_VERSION}); convert the weights again with `{CONVERT_HINT}`")


def _integer_field(meta: dict[str, str], key: str, high: int, origin: str) -> int:
    value = meta.get(key)
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]{1,9}", value) or int(value) > high:
        raise CheckpointError(f"{origin}: metadata {key}={str(value)[:40]!r} is not an integer in [0, {high}]; "
                              f"convert the weights again with `{CONVERT_HINT}`")
    return int(value)


def checkpoint_arguments(meta: dict[str, str], origin: str = "checkpoint") -> dict[str, Any]:
    """``name``, ``num_classes``, ``in_chans`` and ``options`` recorded in a checkpoint's metadata, type-checked.

    Each bad field raises ``CheckpointError`` naming ``origin`` (the file) and the field. Ranges of the options
    are checked by ``checkpoint_config`` (``Options.validate``).
    """
    missing = [k for k in ("model", "options", "num_classes", "in_chans") if k not in meta]
    if missing:
        raise CheckpointError(f"{origin}: metadata lacks {', '.join(missing)}; convert the weights again with "
                              f"`{CONVERT_HINT}`")
    name = meta["model"]
    try:
        if len(name) > 100:
            raise ValueError("longer than any model name")
        get_spec(name)
    except ValueError as e:
        raise CheckpointError(f"{origin}: metadata model={name[:60]!r} is not a registered model ({str(e)[:200]}); "
                              "see `mobilenets list`") from None
    num_classes = _integer_field(meta, "num_classes", MAX_NUM_CLASSES, origin)
    in_chans = _integer_field(meta, "in_chans", MAX_IN_CHANS, origin)
    try:
        options = Options.from_dict(json.loads(meta["options"]))
    except (ValueError, TypeError, RecursionError) as e:
        raise CheckpointError(f"{origin}: metadata options are invalid ({str(e)[:200]}); convert the weights again "
                              f"with `{CONVERT_HINT}`") from None
    return dict(name=name, num_classes=num_classes, in_chans=in_chans, options=options)


def checkpoint_config(args: dict[str, Any], origin: str, **kwargs: Any) -> ModelConfig:
    """Resolve the recorded architecture (every option's type and range checked); ``CheckpointError`` if invalid."""
    try:
        return build_config(args["name"], **{**args["options"].to_dict(), "num_classes": args["num_classes"],
                                             "in_chans": args["in_chans"], **kwargs})
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{origin}: invalid architecture in its metadata: {e}; convert the weights again "
                              f"with `{CONVERT_HINT}`") from None


def _check_fingerprint(path: Path, meta: dict[str, str], config: ModelConfig) -> None:
    """The recorded ``architecture_sha256`` against the one this mobilenets resolves from the recorded options."""
    recorded = meta.get("architecture_sha256")
    if recorded is None and meta.get("format_version") == "1":
        return  # written before fingerprints: the shapes are still checked
    now = architecture_fingerprint(config)
    if recorded != now:
        found = "none" if recorded is None else repr(str(recorded)[:64])
        raise CheckpointError(
            f"{path}: its architecture fingerprint (metadata architecture_sha256: {found}) does not match what this "
            f"mobilenets builds for {config.name} with the recorded options ({now}): the architecture table changed "
            "since the file was written, so its weights would not mean what they did. Convert the original weights "
            f"again with `{CONVERT_HINT}`, or load the file with the mobilenets version that wrote it"
        )


def _check_pretrained_cfg(meta: dict[str, str], origin: str) -> None:
    if "pretrained_cfg" not in meta:
        return
    try:
        validate_pretrained_cfg(json.loads(meta["pretrained_cfg"]), origin)
    except (ValueError, TypeError, RecursionError) as e:
        raise CheckpointError(f"{e}" if origin in str(e) else f"{origin}: metadata pretrained_cfg is invalid ({e})") \
            from None


def _shape_model(config: ModelConfig) -> MobileNet:
    """``config`` built on the ``meta`` device: shapes and dtypes, no memory, no initialisation cost
    (``MobileNet.reset_parameters`` leaves a meta model as it is)."""
    with torch.device("meta"):
        return MobileNet(config)


def _report(origin: str, report: KeyReport, *more: str) -> None:
    """Raise the one "does not fit" ``CheckpointError``: ``report``'s clauses (``statedict``), then ``more``."""
    parts = [*report.parts(), *more]
    if parts:
        raise CheckpointError(f"{origin} does not fit the model: " + "; ".join(parts))


def _check_index(origin: str, index: dict[str, tuple[tuple[int, ...], str]], own: dict[str, torch.Tensor]) -> None:
    """The file's tensor names, shapes and dtypes (from its header) against the model's state dict."""
    report = compare({k: v.shape for k, v in own.items()}, {k: shape for k, (shape, _) in index.items()},
                     describe=lambda k: "model")
    dtypes = []
    for k in sorted(set(own) & set(index)):
        dtype = index[k][1]
        allowed = FLOAT_DTYPES if own[k].is_floating_point() else INT_DTYPES
        if dtype not in allowed or (not own[k].is_floating_point() and allowed[dtype] != own[k].dtype):
            dtypes.append(f"{k}: file {dtype}, expected {' or '.join(allowed)}")
    wrong = f"wrong dtype ({len(dtypes)}): {', '.join(dtypes[:SHOWN])}{' ...' if len(dtypes) > SHOWN else ''}"
    _report(origin, report, *([wrong] if dtypes else []))


def read_checkpoint(
    path: str | os.PathLike, *, allow_nonfinite: bool = False, verify: Callable[[BinaryIO], None] | None = None
) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Return ``(metadata, tensors)`` of a mobilenets checkpoint, verified, or raise ``CheckpointError`` saying why.

    Every check that does not need tensor data runs first (see the module docstring); the tensors are then read
    and converted to the model's dtype, into memory of their own. ``allow_nonfinite`` lets NaN/infinite weights
    through. ``verify(file)``, if given, checks the open file (the cache compares its SHA-256 with the record)
    before anything else; whatever it raises propagates, and what it checked is what is read.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file")
    origin = str(path)
    with one_file(path) as (name, fh):
        if verify is not None:
            verify(fh)
        try:
            _check_header_size(path, fh)
            with safe_open(name, framework="pt") as f:
                meta = f.metadata() or {}
                _check_format(path, meta)
                args = checkpoint_arguments(meta, origin)
                config = checkpoint_config(args, origin)
                own = _shape_model(config).state_dict()
                _check_pretrained_cfg(meta, origin)
                index = {}
                for k in f.keys():
                    part = f.get_slice(k)
                    index[k] = (tuple(part.get_shape()), part.get_dtype())
                _check_index(origin, index, own)
                _check_fingerprint(path, meta, config)  # after the shapes: a crafted file gets the precise report
                # copy=True: safetensors' tensors are views of a mapping of the file
                tensors = {k: f.get_tensor(k).to(own[k].dtype, copy=True) for k in index}
        except (SafetensorError, OSError, RuntimeError) as e:
            raise _unreadable(path, e) from None
    nonfinite = sorted(k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all()))
    if nonfinite and not allow_nonfinite:
        raise CheckpointError(
            f"{path} holds NaN or infinite weights in {len(nonfinite)} tensor(s): {', '.join(nonfinite[:8])}"
            f"{' ...' if len(nonfinite) > 8 else ''}; the model would output NaN. Re-export the weights, or pass "
            "allow_nonfinite=True to load them anyway"
        )
    return meta, tensors


def load_state_dict_strict(model: nn.Module, tensors: dict[str, torch.Tensor], origin: str) -> None:
    """Copy ``tensors`` into ``model``; any missing, unexpected or mis-shaped key is a ``CheckpointError``.

    A model on the ``meta`` device takes the tensors themselves (``assign=True``): no second copy is allocated.
    """
    own = model.state_dict()
    _report(origin, compare({k: v.shape for k, v in own.items()}, {k: v.shape for k, v in tensors.items()},
                            describe=lambda k: "model"))
    on_meta = any(t.is_meta for t in own.values())
    model.load_state_dict(tensors, strict=True, assign=on_meta)
    if on_meta:
        left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        assert not left, f"tensors outside the state dict stayed on the meta device: {left}"


def build_model(name: str, options: Options, *, on_meta: bool = False, **kwargs: Any) -> MobileNet:
    """A registered model with exactly ``options``, plus ``build_config`` keyword arguments.

    ``on_meta=True`` builds it on the ``meta`` device, to be filled by ``load_state_dict_strict``.
    """
    config = build_config(name, **{**options.to_dict(), **kwargs})
    return _shape_model(config) if on_meta else MobileNet(config)


def _free_options(options: Options, requested: dict[str, Any]) -> Options:
    """``options`` with the ``FREE_OPTIONS`` the caller asked for (``None``: the file's value)."""
    free = {k: v for k, v in requested.items() if k in FREE_OPTIONS and k in Options.names() and v is not None}
    return replace(options, **free)


def from_checkpoint(
    path: str | os.PathLike, *, drop_rate: float | None = None, drop_path_rate: float = 0.0,
    allow_nonfinite: bool = False, features_only: bool = False, out_indices: int | Sequence[int] | None = None,
    output_stride: int | None = None,
) -> MobileNet | MobileNetFeatures:
    """Rebuild the exact model recorded in a mobilenets checkpoint and load its weights (train mode).

    ``allow_nonfinite=True`` loads weights holding NaN or infinity (refused by default). ``features_only=True``
    returns the backbone (``features.MobileNetFeatures``: the feature maps at ``out_indices``, default every
    level) without the classifier; ``output_stride`` (8, 16 or 32; default the file's) dilates the last stages
    instead of striding, with the same weights.
    """
    check_build_arguments(drop_rate=0.0 if drop_rate is None else drop_rate, drop_path_rate=drop_path_rate)
    if out_indices is not None and not features_only:
        raise ValueError("out_indices selects the outputs of a backbone: pass features_only=True with it")
    if output_stride is not None:
        check_output_stride(output_stride)
    meta, tensors = read_checkpoint(path, allow_nonfinite=allow_nonfinite)
    args = checkpoint_arguments(meta, str(path))
    options = _free_options(args["options"], dict(output_stride=output_stride))
    model = build_model(args["name"], options, on_meta=True, num_classes=args["num_classes"],
                        in_chans=args["in_chans"], drop_rate=drop_rate, drop_path_rate=drop_path_rate)
    load_state_dict_strict(model, tensors, str(path))
    _attach_metadata(model, meta, str(path))
    return MobileNetFeatures(model, out_indices) if features_only else model


def load_checkpoint_into(name: str, path: str | os.PathLike, *, allow_nonfinite: bool = False,
                         **kwargs: Any) -> MobileNet:
    """``create_model(name, checkpoint_path=path, ...)``: the file must be for ``name``.

    Architecture options the caller passes must agree with the file's, except ``FREE_OPTIONS`` (which leave the
    weights as they are); the rest are taken from the file. ``num_classes`` left at its default (1000) takes the
    file's. Unknown option names raise ``ValueError``.
    """
    check_arguments(name, **kwargs)
    meta, tensors = read_checkpoint(path, allow_nonfinite=allow_nonfinite)
    args = checkpoint_arguments(meta, str(path))
    if args["name"] != name:
        raise CheckpointError(
            f"{path} holds weights for {args['name']!r}, not {name!r}: call "
            f"create_model({args['name']!r}, checkpoint_path=...) or mobilenets.from_checkpoint(path)"
        )
    file_opts = args["options"].to_dict()
    requested = {k: v for k, v in kwargs.items() if k in file_opts and k not in FREE_OPTIONS and v is not None}
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
    model = build_model(name, _free_options(args["options"], kwargs), on_meta=True, num_classes=args["num_classes"],
                        in_chans=args["in_chans"], drop_rate=kwargs.get("drop_rate"),
                        drop_path_rate=kwargs.get("drop_path_rate", 0.0))
    load_state_dict_strict(model, tensors, str(path))
    _attach_metadata(model, meta, str(path))
    return model


def _attach_metadata(model: MobileNet, meta: dict[str, str], origin: str = "checkpoint") -> None:
    """Restore the recorded ``pretrained_cfg`` (validated; input channels as the model's) onto ``model``."""
    if "pretrained_cfg" not in meta:
        return
    try:
        cfg = validate_pretrained_cfg(json.loads(meta["pretrained_cfg"]), origin)
    except ValueError as e:  # json.JSONDecodeError is a ValueError
        raise CheckpointError(f"{e}" if origin in str(e) else f"{origin}: metadata pretrained_cfg is invalid ({e})") \
            from None
    if cfg["num_classes"] != model.num_classes:
        raise CheckpointError(f"{origin}: pretrained_cfg.num_classes is {cfg['num_classes']}, but the checkpoint's "
                              f"classifier has {model.num_classes} classes; convert or save the weights again")
    model.pretrained_cfg = adapt_pretrained_cfg(cfg, in_chans=model.config.in_chans)

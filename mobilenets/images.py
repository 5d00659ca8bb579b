"""Reading untrusted image files: what ``mobilenets predict`` does before the eval transform sees a pixel.

* Only regular files are read. A FIFO, socket or device is refused from ``os.stat`` and again from ``fstat`` of a
  descriptor opened with ``O_NONBLOCK``, so nothing ever blocks on a pipe or reads ``/dev/zero``.
* Nothing is decoded before its size is checked. Pillow reads the header (size and mode) first; an image with more
  than ``max_pixels`` pixels, or whose decoding and conversion would take more than ``max_bytes``, is refused with
  one line. The memory estimate counts what each mode costs (``BYTES_PER_PIXEL``: a 16-bit or float image takes
  several times what an 8-bit one does on its way to RGB), so a 13000 x 13000 16-bit PNG of 329 KB on disk is
  refused instead of taking 6 GB.
* ``DecodeBudget`` shares ``max_bytes`` between the threads that decode in parallel: together they never hold more.
* EPS files are not read (Pillow would run Ghostscript on them).

Limits: ``MOBILENETS_MAX_IMAGE_PIXELS`` (default 67,108,864 = 8192 x 8192) and ``MOBILENETS_MAX_IMAGE_MB``
(default 1024 MiB, for all images being decoded at once).
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from PIL import Image

ENV_MAX_PIXELS = "MOBILENETS_MAX_IMAGE_PIXELS"
ENV_MAX_MB = "MOBILENETS_MAX_IMAGE_MB"
DEFAULT_MAX_PIXELS = 1 << 26  # 8192 x 8192: above any camera's photos, below Pillow's bomb warning (89.5 M)
DEFAULT_MAX_MB = 1024
MIB = 1 << 20

# Peak bytes per pixel from decoding to the transformed tensor (data.EvalTransform), measured as peak resident
# memory with Pillow 13 on 3000 x 3000 images, plus headroom: Pillow stores every 8-bit multi-band mode in 4 bytes;
# alpha is composited in RGBA; 16-bit, 32-bit and float images are rescaled through int32 and float64 tensors.
BYTES_PER_PIXEL: Mapping[str, int] = {
    "1": 8, "L": 8, "P": 8,  # 6.2 measured for a one-channel model
    "RGB": 10, "RGBX": 10, "YCbCr": 10, "LAB": 10, "HSV": 10,  # progressive JPEG: 7.1 measured, EXIF rotation +4
    "CMYK": 12,
    "RGBA": 24, "RGBa": 24, "LA": 24, "La": 24, "PA": 24,
    "I;16": 40, "I;16L": 40, "I;16B": 40, "I;16N": 40, "I": 40, "F": 40,
}
UNKNOWN_MODE_BYTES = 40

REFUSED_FORMATS = frozenset({"EPS"})  # Pillow decodes EPS by running Ghostscript: not on untrusted files


class ImageError(Exception):
    """An input that cannot be classified; the message names the file and what is wrong."""


@dataclass(frozen=True)
class ImageLimits:
    """The most pixels one image may have, and the most bytes decoding may hold (one image, or all at once)."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_MB * MIB

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ImageLimits:
        """Limits from ``MOBILENETS_MAX_IMAGE_PIXELS`` and ``MOBILENETS_MAX_IMAGE_MB``; ``ValueError`` if malformed."""
        environ = os.environ if environ is None else environ

        def read(name: str, default: int) -> int:
            text = environ.get(name, "").strip()
            if not text:
                return default
            try:
                value = int(text.replace("_", ""))
            except ValueError:
                value = 0
            if value < 1:
                raise ValueError(f"{name} must be a positive integer, got {text!r}; unset it for the default "
                                 f"({default})")
            return value

        return cls(read(ENV_MAX_PIXELS, DEFAULT_MAX_PIXELS), read(ENV_MAX_MB, DEFAULT_MAX_MB) * MIB)

    def cost(self, path: str, size: tuple[int, int], mode: str) -> int:
        """Bytes decoding a ``size`` image of ``mode`` takes; ``ImageError`` if it has too many pixels or bytes."""
        width, height = size
        pixels = width * height
        if pixels > self.max_pixels:
            raise ImageError(f"{path}: image too large: {width}x{height} is {pixels:,} pixels, more than the limit "
                             f"of {self.max_pixels:,} (set {ENV_MAX_PIXELS} to raise it)")
        need = pixels * BYTES_PER_PIXEL.get(mode, UNKNOWN_MODE_BYTES)
        if need > self.max_bytes:
            raise ImageError(f"{path}: image too large to decode: a {width}x{height} {mode} image needs about "
                             f"{need / MIB:,.1f} MiB, more than the limit of {self.max_bytes / MIB:,.0f} MiB (set "
                             f"{ENV_MAX_MB} to raise it)")
        return need


class DecodeBudget:
    """Bytes shared by decoding threads: ``reserve(n)`` waits until ``n`` are free (``n`` <= the capacity)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._free = capacity
        self._cond = threading.Condition()

    def reserve(self, n: int) -> _Reservation:
        n = min(n, self.capacity)
        with self._cond:
            self._cond.wait_for(lambda: self._free >= n)
            self._free -= n
        return _Reservation(self, n)

    def _release(self, n: int) -> None:
        with self._cond:
            self._free += n
            self._cond.notify_all()


class _Reservation:
    def __init__(self, budget: DecodeBudget, n: int) -> None:
        self._budget, self._n = budget, n

    def __enter__(self) -> _Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self._budget._release(self._n)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str) -> BinaryIO:
    """Open ``path`` for reading if it is a regular file (after symlinks); ``ImageError`` otherwise.

    The descriptor is opened non-blocking and checked with ``fstat``, so a FIFO swapped in after ``stat`` is
    refused too, without waiting for a writer.
    """
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(f"{path}: is {_kind(st.st_mode)}, not an image file; only regular files are read")
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except OSError as e:
        raise ImageError(f"{path}: cannot open ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(f"{path}: is {_kind(st.st_mode)}, not an image file; only regular files are read")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _formats() -> list[str]:
    from PIL import Image

    Image.init()
    return [f for f in Image.OPEN if f not in REFUSED_FORMATS]


def image_extensions() -> frozenset[str]:
    """Lower-case file extensions (``".jpg"``) of the formats ``open_image`` reads."""
    from PIL import Image

    formats = set(_formats())
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in formats)


def one_line(e: BaseException) -> str:
    """An exception's message on one line (a ``KeyError``'s key without its quotes), for one-line error reports."""
    text = str(e.args[0]) if isinstance(e, KeyError) and len(e.args) == 1 else str(e)
    return " ".join(text.split()) or type(e).__name__


def open_image(path: str, limits: ImageLimits | None = None, budget: DecodeBudget | None = None,
               convert: Callable[[Image.Image], Any] | None = None) -> Any:
    """Open, check and decode ``path`` (first frame, EXIF orientation applied); ``ImageError`` if impossible.

    ``convert``, if given, is called on the decoded image while its share of ``budget`` is still held (the
    conversion to RGB is part of what the budget counts), and its result is returned instead.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    limits = limits or ImageLimits()
    with open_regular(path) as f:
        try:
            img = Image.open(f, formats=_formats())
        except UnidentifiedImageError:
            raise ImageError(f"{path}: not an image file Pillow can read") from None
        except Image.DecompressionBombError as e:
            raise ImageError(f"{path}: image too large ({one_line(e)})") from None
        except Exception as e:  # noqa: BLE001 - header parsers raise OSError, SyntaxError, ValueError, struct.error
            raise ImageError(f"{path}: cannot read image header ({one_line(e)})") from None
        cost = limits.cost(path, img.size, img.mode)
        with budget.reserve(cost) if budget is not None else contextlib.nullcontext():
            try:
                img.load()
                orientation = img.getexif().get(0x0112, 1)
                decoded = ImageOps.exif_transpose(img) if orientation != 1 else img
            except Image.DecompressionBombError as e:
                raise ImageError(f"{path}: image too large ({one_line(e)})") from None
            except MemoryError:
                raise ImageError(f"{path}: out of memory decoding a {img.size[0]}x{img.size[1]} image") from None
            except Exception as e:  # noqa: BLE001 - decoders raise OSError, SyntaxError, ValueError, ...
                raise ImageError(f"{path}: cannot decode image ({one_line(e)})") from None
            # the pixels are in memory now: closing the file (leaving this block) does not touch them
            return decoded if convert is None else convert(decoded)


def expand_paths(paths: Sequence[str], recursive: bool = False) -> Iterator[tuple[str, ImageError | None]]:
    """Each argument, or for a directory the image files inside it, sorted by path: ``(path, error or None)``.

    A directory contributes its regular files (symlinks followed) whose extension is an image format Pillow reads
    (``image_extensions()``, case-insensitive); names starting with ``.`` are skipped. ``recursive`` descends into
    subdirectories (not into symlinked ones, which could loop). A directory without such files is an error.
    Other arguments pass through unchanged: a file named explicitly is read whatever its extension.
    """
    extensions = image_extensions()
    for path in paths:
        if not os.path.isdir(path):
            yield path, None
            continue
        found: list[str] = []
        skipped_dirs = 0
        pending = [path]
        try:
            while pending:
                folder = pending.pop()
                with os.scandir(folder) as entries:
                    for entry in entries:
                        if entry.name.startswith("."):
                            continue
                        if entry.is_dir(follow_symlinks=False):
                            if recursive:
                                pending.append(entry.path)
                            else:
                                skipped_dirs += 1
                        elif entry.is_file() and os.path.splitext(entry.name)[1].lower() in extensions:
                            found.append(entry.path)
        except OSError as e:
            yield path, ImageError(f"{path}: cannot list directory ({e.strerror or e})")
            continue
        if not found:
            hint = " (use --recursive to search its subdirectories)" if skipped_dirs else ""
            yield path, ImageError(f"{path}: is a directory with no image files{hint}")
            continue
        for name in sorted(found, key=lambda p: os.path.relpath(p, path).split(os.sep)):
            yield name, None


__all__ = [
    "BYTES_PER_PIXEL",
    "DecodeBudget",
    "ImageError",
    "ImageLimits",
    "expand_paths",
    "image_extensions",
    "open_image",
    "open_regular",
]

"""Training data: ImageFolder trees checked before training starts, user datasets, and the training transforms.

    scan = scan_image_folder("photos/", on_bad="skip", min_classes=2)  # every file checked, bad ones listed
    train, val, classes = make_datasets("photos/", val_split=0.2)      # stratified, deterministic split
    train = TransformedDataset(train, train_transform(model.pretrained_cfg, augment="trivial"))
    val = TransformedDataset(val, val_transform(model.pretrained_cfg))

Folders follow torchvision's ImageFolder layout, ``root/CLASS/.../IMAGE`` (class folders sorted by name, so the
class index is the folder's rank). Every file is checked up front without decoding its pixels: Pillow reads the
header, the size and mode are checked against ``mobilenets.images.ImageLimits`` and ``Image.verify()`` checks what
it can cheaply (PNG checksums); so an empty class folder, a folder without classes, a single class, a corrupt or
oversized image or a file that is not an image is reported before the first epoch, not halfway through it.

The transforms are torchvision.transforms.v2 pipelines (``pip install "mobilenets[train]"``) built from the weights'
own preprocessing (``pretrained_cfg``: input size, mean, std, interpolation, input channels).
``val_transform`` gives exactly the tensors of ``mobilenets.data.EvalTransform`` on PIL images, and accepts tensors.
"""

from __future__ import annotations

import math
import os
import stat
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import Dataset, Subset

from .data import WHITE, EvalTransform, _from_cfg, to_rgb
from .images import ImageError, ImageLimits, _formats, one_line, open_image, open_regular

OnBad = Literal["skip", "error"]
AUGMENTS = ("none", "light", "rotate", "trivial", "randaugment")
MAX_LISTED = 10  # offending files named in an error message; the rest are counted
TRAIN_EXTRA = 'pip install "mobilenets[train]"'


# ---------------------------------------------------------------------------------------------------------------
# Scanning a folder
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class FolderScan:
    """An ImageFolder tree after checking: class names (sorted), ``(path, label)`` samples and skipped files."""

    root: Path
    classes: list[str]
    samples: list[tuple[Path, int]]
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]


def _reason(e: ImageError, path: str) -> str:
    """An ``ImageError``'s message without the ``path: `` prefix (the path is listed beside it)."""
    text = one_line(e)
    return text[len(path) + 2:] if text.startswith(f"{path}: ") else text


def check_image_file(path: str | os.PathLike[str], limits: ImageLimits | None = None) -> str | None:
    """Why ``path`` cannot be a training image, or ``None`` if it can: header and size checked, nothing decoded.

    Refused: anything but a regular file (FIFOs, devices, dangling links), files Pillow cannot identify (or EPS),
    images over ``limits`` (pixels or decoding memory), and files whose ``Image.verify()`` fails (truncated or
    corrupt PNGs, for example). A JPEG that does not end with its end-of-image marker (truncated, or followed by
    other data) is decoded at 1/8 scale (``Image.draft``), which reads its whole compressed stream at a fraction of
    the cost; damage inside the compressed data of a complete file shows only when it is decoded.
    """
    from PIL import Image, UnidentifiedImageError

    text = os.fspath(path)
    limits = limits or ImageLimits()
    try:
        with open_regular(text) as f:
            try:
                img = Image.open(f, formats=_formats())
            except UnidentifiedImageError:
                return "not an image file Pillow can read"
            except Image.DecompressionBombError as e:
                return f"image too large ({one_line(e)})"
            except Exception as e:  # noqa: BLE001 - header parsers raise OSError, SyntaxError, struct.error, ...
                return f"cannot read image header ({one_line(e)})"
            with img:
                if img.width < 1 or img.height < 1:
                    return f"image has no pixels ({img.width}x{img.height})"
                limits.cost(text, img.size, img.mode)
                try:
                    img.verify()
                except Exception as e:  # noqa: BLE001 - verify raises whatever the plugin's parser raises
                    return f"corrupt image ({one_line(e)})"
                if img.format == "JPEG" and not _ends_with_jpeg_eoi(f):
                    return _decode_reduced_jpeg(f)
    except ImageError as e:
        return _reason(e, text)
    return None


def _ends_with_jpeg_eoi(f: Any) -> bool:
    """Whether the file ends with JPEG's end-of-image marker (``FF D9``), ignoring trailing padding."""
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(max(0, size - 1024))
    return f.read().rstrip(b"\0\r\n\t ").endswith(b"\xff\xd9")


def _decode_reduced_jpeg(f: Any) -> str | None:
    """Decode the JPEG in ``f`` at 1/8 scale: ``None`` if its compressed data is complete, else the reason."""
    from PIL import Image

    f.seek(0)
    try:
        with Image.open(f, formats=["JPEG"]) as img:
            img.draft(img.mode, (max(1, img.width // 8), max(1, img.height // 8)))
            img.load()
    except Exception as e:  # noqa: BLE001 - the decoder raises OSError for truncated data, others for the rest
        return f"truncated or corrupt JPEG ({one_line(e)})"
    return None


def _walk(folder: Path, seen: set[tuple[int, int]], files: list[Path], bad: list[tuple[Path, str]]) -> None:
    """Non-hidden entries under ``folder`` (symlinks followed, each directory once): files, and entries refused."""
    pending = [folder]
    while pending:
        current = pending.pop()
        try:
            with os.scandir(current) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            bad.append((current, f"cannot list directory ({e.strerror or e})"))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                st = os.stat(entry.path)
            except OSError:
                bad.append((path, "dangling symbolic link" if entry.is_symlink() else "cannot stat"))
                continue
            if stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    bad.append((path, "directory already scanned (a symbolic link loop or a second link to it)"))
                    continue
                seen.add(key)
                pending.append(path)
            else:
                files.append(path)  # non-regular files are refused by check_image_file, with their kind


def _bad_files_message(root: Path, bad: Sequence[tuple[Path, str]]) -> str:
    listed = "; ".join(f"{p}: {why}" for p, why in bad[:MAX_LISTED])
    more = f"; and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
    return (f"{root}: {len(bad)} file(s) or folder(s) cannot be used: {listed}{more}. Fix or remove them, or leave "
            "them out with on_bad='skip'")


def scan_image_folder(root: str | os.PathLike[str], *, on_bad: OnBad = "error", min_classes: int = 1) -> FolderScan:
    """Check an ImageFolder tree ``root/CLASS/.../IMAGE`` and list its samples; ``ValueError`` if unusable.

    Class folders are ``root``'s non-hidden subdirectories, sorted by name; every non-hidden file below a class
    folder must be an image (``check_image_file``; limits from ``MOBILENETS_MAX_IMAGE_PIXELS`` /
    ``MOBILENETS_MAX_IMAGE_MB``). Offending files, and class folders left without images, are refused together in
    one ``ValueError`` naming them (``on_bad="error"``), or listed in ``FolderScan.skipped`` with one warning
    (``on_bad="skip"``). No class folder, or fewer usable classes than ``min_classes``, is always an error.
    """
    if on_bad not in ("skip", "error"):
        raise ValueError(f"on_bad must be 'skip' or 'error', got {on_bad!r}")
    root = Path(root)
    if not root.exists():
        raise ValueError(f"{root}: no such directory")
    if not root.is_dir():
        raise ValueError(f"{root}: is not a directory; expected an image folder laid out as {root}/CLASS/IMAGE")
    limits = ImageLimits.from_env()
    try:
        with os.scandir(root) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        raise ValueError(f"{root}: cannot list directory ({e.strerror or e})") from None
    class_dirs = [Path(e.path) for e in entries if not e.name.startswith(".") and e.is_dir()]
    if not class_dirs:
        loose = sum(1 for e in entries if not e.name.startswith(".") and e.is_file())
        found = f" (it holds {loose} file(s) directly; move them into class folders)" if loose else ""
        raise ValueError(f"{root}: no class folders{found}; expected an image folder laid out as {root}/CLASS/IMAGE, "
                         "one subfolder per class")

    st = os.stat(root)
    seen = {(st.st_dev, st.st_ino)}
    bad: list[tuple[Path, str]] = []
    keys = []
    for folder in class_dirs:  # every class folder is marked first, so no walk enters another class
        st = os.stat(folder)
        key = (st.st_dev, st.st_ino)
        keys.append(None if key in seen else key)
        seen.add(key)
    per_class: list[list[Path]] = []
    for folder, key in zip(class_dirs, keys, strict=True):
        files: list[Path] = []
        if key is None:
            bad.append((folder, "directory already scanned (a link to the root or to another class folder)"))
        else:
            _walk(folder, seen, files, bad)
        per_class.append(files)

    flat = [p for files in per_class for p in files]
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:  # header reads wait on the disk more than on the CPU
        reasons = dict(zip(flat, pool.map(lambda p: check_image_file(p, limits), flat), strict=True))
    bad.extend((p, reasons[p]) for p in flat if reasons[p] is not None)

    classes: list[str] = []
    samples: list[tuple[Path, int]] = []
    for folder, files in zip(class_dirs, per_class, strict=True):
        good = [p for p in files if reasons[p] is None]
        if not good and any(p == folder for p, _ in bad):
            continue
        if not good:
            what = "holds no image files" if not files else "holds no usable image files"
            bad.append((folder, f"class folder {what}"))
            continue
        label = len(classes)
        classes.append(folder.name)
        samples.extend((p, label) for p in good)
    bad.sort(key=lambda item: str(item[0]))

    if bad and on_bad == "error":
        raise ValueError(_bad_files_message(root, bad))
    if bad:
        listed = "; ".join(f"{p}: {why}" for p, why in bad[:MAX_LISTED])
        more = f"; and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
        warnings.warn(f"{root}: skipped {len(bad)} file(s) or folder(s): {listed}{more}", stacklevel=2)
    if len(classes) < min_classes:
        names = ", ".join(classes) or "none"
        raise ValueError(f"{root}: {len(classes)} usable class folder(s) ({names}), at least {min_classes} needed: "
                         f"put each class's images in its own subfolder {root}/CLASS/")
    return FolderScan(root=root, classes=classes, samples=samples, skipped=bad if on_bad == "skip" else [])


# ---------------------------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------------------------


class ImageFolderDataset(Dataset):
    """The samples of a ``FolderScan``: ``(transform(image), label)``, the PIL image itself without a transform.

    Images are decoded with ``mobilenets.images.open_image`` (first frame, EXIF orientation applied, limits
    checked again); a file that fails now (changed since the scan, or a truncated JPEG) raises ``ImageError``
    naming it.
    """

    def __init__(self, scan: FolderScan, transform: Callable[[Any], Any] | None = None) -> None:
        self.scan = scan
        self.transform = transform
        self.classes = list(scan.classes)
        self.samples = list(scan.samples)
        self.targets = [label for _, label in self.samples]
        self._limits = ImageLimits.from_env()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        img = open_image(str(path), self._limits)
        if self.transform is not None:
            try:
                img = self.transform(img)
            except Exception as e:  # noqa: BLE001 - name the file whatever the transform raised
                raise ImageError(f"{path}: cannot transform image ({one_line(e)})") from e
        return img, label


class _Wrapper(Dataset):
    """A dataset over another one, with its length and its ``classes`` / ``targets`` (when it has them)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        for name in ("classes", "targets"):
            if hasattr(dataset, name):
                setattr(self, name, getattr(dataset, name))

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]


class TransformedDataset(_Wrapper):
    """``dataset`` with ``transform`` applied to each image: ``(transform(image), label)``."""

    def __init__(self, dataset: Dataset, transform: Callable[[Any], Any] | None) -> None:
        super().__init__(dataset)
        self.transform = transform

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self.dataset[index]
        return (image if self.transform is None else self.transform(image)), label


def _label(value: Any, index: int, num_classes: int, what: str) -> int:
    """``value`` as a class index in ``range(num_classes)``; ``ValueError`` naming the sample otherwise."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = value.item()
    elif hasattr(value, "dtype") and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()  # a numpy integer
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what}[{index}] has label {value!r} ({type(value).__name__}); labels must be integer "
                         f"class indices in 0..{num_classes - 1}")
    if not 0 <= value < num_classes:
        raise ValueError(f"{what}[{index}] has label {value}, outside 0..{num_classes - 1} ({num_classes} classes)")
    return value


class CheckedDataset(_Wrapper):
    """A user's dataset with each sample checked when it is read: ``(PIL image or tensor, int label)``."""

    def __init__(self, dataset: Dataset, num_classes: int, what: str = "dataset") -> None:
        super().__init__(dataset)
        self.num_classes = num_classes
        self.what = what

    def __getitem__(self, index: int) -> tuple[Any, int]:
        item = self.dataset[index]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ValueError(f"{self.what}[{index}] is a {type(item).__name__}; a dataset must yield (image, label) "
                             "pairs")
        image, label = item
        if not isinstance(image, torch.Tensor) and not _is_pil(image):
            raise ValueError(f"{self.what}[{index}] has an image of type {type(image).__name__}; expected a PIL image "
                             "or a tensor (C, H, W)")
        return image, _label(label, index, self.num_classes, self.what)


def _is_pil(value: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:
        return False
    return isinstance(value, Image.Image)


def _labels_of(dataset: Dataset, what: str) -> list[int] | None:
    """The dataset's labels without reading its images, where it says them (``targets``), else ``None``."""
    targets = getattr(dataset, "targets", None)
    if targets is None:
        return None
    if isinstance(targets, torch.Tensor):
        targets = targets.tolist()
    try:
        labels = list(targets)
    except TypeError:
        return None
    if len(labels) != len(dataset):  # type: ignore[arg-type]
        raise ValueError(f"{what}.targets has {len(labels)} labels for {len(dataset)} samples")  # type: ignore[arg-type]
    return labels


def _user_dataset(dataset: Dataset, what: str, class_names: list[str] | None) -> tuple[Dataset, list[str]]:
    """Check a user's dataset and find its class names: ``classes``, else ``targets``, else one pass over it."""
    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise TypeError(f"{what} must be a folder path or a map-style torch.utils.data.Dataset (with __len__ and "
                        f"__getitem__), got {type(dataset).__name__}")
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ValueError(f"{what} is empty")
    names = getattr(dataset, "classes", None)
    if class_names is not None:
        names = class_names
    elif names is not None:
        names = [str(c) for c in names]
    else:
        labels = _labels_of(dataset, what)
        if labels is None:  # neither classes nor targets: read the labels once
            labels = [dataset[i][1] for i in range(len(dataset))]  # type: ignore[arg-type]
        big = 1_000_000
        checked = [_label(v, i, big, what) for i, v in enumerate(labels)]
        names = [str(i) for i in range(max(checked) + 1)]
    if len(names) < 1:
        raise ValueError(f"{what}.classes is empty")
    return CheckedDataset(dataset, len(names), what), names


def _split(labels: Sequence[int], val_split: float, seed: int) -> tuple[list[int], list[int]]:
    """Stratified ``(train indices, val indices)``: ``round(val_split * n)`` of each class's ``n`` samples (at least
    one when the class has two or more, never all), chosen by a permutation seeded with ``seed``."""
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(i)
    g = torch.Generator().manual_seed(seed)
    train: list[int] = []
    val: list[int] = []
    for label in sorted(by_class):
        members = by_class[label]
        order = torch.randperm(len(members), generator=g).tolist()
        n_val = min(len(members) - 1, max(1 if len(members) > 1 else 0, round(val_split * len(members))))
        val.extend(members[k] for k in order[:n_val])
        train.extend(members[k] for k in order[n_val:])
    return sorted(train), sorted(val)


def _remap(scan: FolderScan, classes: list[str], what: str) -> FolderScan:
    """``scan``'s samples relabelled with the indices of ``classes`` (the training classes), by name."""
    unknown = [c for c in scan.classes if c not in classes]
    if unknown:
        raise ValueError(f"{what} {scan.root} has class folder(s) the training data lacks: {', '.join(unknown)} "
                         f"(training classes: {', '.join(classes)})")
    index = {c: classes.index(c) for c in scan.classes}
    samples = [(p, index[scan.classes[label]]) for p, label in scan.samples]
    return FolderScan(root=scan.root, classes=list(classes), samples=samples, skipped=scan.skipped)


def _subset(dataset: Dataset, indices: list[int], labels: Sequence[int], classes: list[str]) -> Subset:
    subset = Subset(dataset, indices)
    subset.classes = classes  # type: ignore[attr-defined]
    subset.targets = [int(labels[i]) for i in indices]  # type: ignore[attr-defined]
    return subset


def make_datasets(
    train_data: str | os.PathLike[str] | Dataset,
    val_data: str | os.PathLike[str] | Dataset | None = None,
    *,
    val_split: float | None = None,
    seed: int = 0,
    on_bad: OnBad = "error",
) -> tuple[Dataset, Dataset | None, list[str]]:
    """``(train, val or None, class names)`` from folders or user datasets, untransformed (PIL image or tensor).

    A folder is scanned with ``scan_image_folder`` (training needs at least two classes); a validation folder's
    classes are matched to the training classes by name. A user ``Dataset`` yields ``(PIL image or tensor,
    label)``; its class names come from its ``classes`` attribute, else from its ``targets``, else from reading
    its labels once; labels are checked as samples are read. ``val_split`` (0 < f < 1, not with ``val_data``)
    holds out that fraction of each class, chosen by ``seed``: the same split on every run.
    """
    if val_split is not None:
        if val_data is not None:
            raise ValueError("give val_data or val_split, not both")
        if isinstance(val_split, bool) or not isinstance(val_split, (int, float)) or not 0 < val_split < 1:
            raise ValueError(f"val_split must be a fraction between 0 and 1 (exclusive), got {val_split!r}")
    if isinstance(train_data, (str, os.PathLike)):
        scan = scan_image_folder(train_data, on_bad=on_bad, min_classes=2)
        train: Dataset = ImageFolderDataset(scan)
        classes = list(scan.classes)
        labels: Sequence[int] | None = scan.targets
    else:
        train, classes = _user_dataset(train_data, "train_data", None)
        labels = _labels_of(train_data, "train_data")
        if len(classes) < 2:
            raise ValueError(f"train_data has {len(classes)} class; training needs at least 2")

    val: Dataset | None = None
    if val_data is not None:
        if isinstance(val_data, (str, os.PathLike)):
            val = ImageFolderDataset(_remap(scan_image_folder(val_data, on_bad=on_bad), classes, "val_data"))
        else:
            val, names = _user_dataset(val_data, "val_data", classes if not hasattr(val_data, "classes") else None)
            if names != classes:
                raise ValueError(f"val_data.classes ({', '.join(names)}) differ from the training classes "
                                 f"({', '.join(classes)})")
    elif val_split is not None:
        if labels is None:
            labels = [train[i][1] for i in range(len(train))]  # type: ignore[arg-type]
        labels = [_label(v, i, len(classes), "train_data") for i, v in enumerate(labels)]
        train_idx, val_idx = _split(labels, float(val_split), seed)
        if not val_idx:
            raise ValueError(f"val_split={val_split} leaves no validation samples ({len(labels)} samples); use a "
                             "larger fraction or a separate validation folder")
        val = _subset(train, val_idx, labels, classes)
        train = _subset(train, train_idx, labels, classes)
    return train, val, classes


# ---------------------------------------------------------------------------------------------------------------
# ImageNet WordNet ids
# ---------------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _wnids() -> tuple[str, ...]:
    text = resources.files("mobilenets").joinpath("imagenet_wnids.txt").read_text(encoding="utf-8")
    ids = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(ids) != 1000 or len(set(ids)) != 1000:
        raise RuntimeError(f"mobilenets/imagenet_wnids.txt holds {len(ids)} ids, expected 1000 distinct ones")
    return ids


def imagenet_wnids() -> list[str]:
    """The 1000 ImageNet-1k WordNet ids (``n01440764`` ...), in class-index order (``imagenet_categories()``)."""
    return list(_wnids())


# ---------------------------------------------------------------------------------------------------------------
# Transforms (torchvision.transforms.v2)
# ---------------------------------------------------------------------------------------------------------------


def _v2() -> Any:
    try:
        from torchvision.transforms import v2
    except ImportError as e:
        raise ImportError(f"training transforms need torchvision: {TRAIN_EXTRA} ({one_line(e)})") from None
    return v2


def _mode(name: str) -> Any:
    from torchvision.transforms import InterpolationMode

    return InterpolationMode(name)


def _is_tensor_image(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


class ToModelChannels:
    """Any PIL image or image tensor → ``in_chans`` channels (first step of the transforms).

    PIL: ``mobilenets.data.to_rgb`` (transparency over ``background``, high bit depths rescaled), then grey for
    ``in_chans=1``, exactly as ``EvalTransform``. Tensors ``(C, H, W)`` or ``(H, W)``, uint8 or float in [0, 1]:
    one channel is repeated for RGB models, RGB becomes grey with ITU-R 601 luma for grey ones, a fourth (alpha)
    channel is composited over ``background``.
    """

    def __init__(self, in_chans: int = 3, background: Sequence[int] | None = WHITE) -> None:
        if in_chans not in (1, 3):
            raise ValueError(f"images give 1 (grey) or 3 (RGB) channels, not in_chans={in_chans!r}")
        self.in_chans = in_chans
        self.background = None if background is None else tuple(int(c) for c in background)

    def __call__(self, img: Any) -> Any:
        if not _is_tensor_image(img):
            if not _is_pil(img):
                raise TypeError(f"expected a PIL image or a tensor (C, H, W), got {type(img).__name__}")
            img = to_rgb(img, self.background)
            return img.convert("L") if self.in_chans == 1 else img
        from torchvision import tv_tensors
        from torchvision.transforms.v2 import functional as F

        x = img.unsqueeze(0) if img.ndim == 2 else img
        if x.ndim != 3 or x.shape[0] not in (1, 3, 4) or x.shape[1] < 1 or x.shape[2] < 1:
            raise ValueError(f"expected an image tensor (C, H, W) with 1, 3 or 4 channels, got shape "
                             f"{tuple(img.shape)}")
        if x.shape[0] == 4:
            top = 255.0 if not x.is_floating_point() else 1.0
            rgb, alpha = x[:3].double(), x[3:].double() / top
            fill = torch.tensor(self.background or (0, 0, 0), dtype=torch.float64).view(3, 1, 1) * (top / 255)
            mixed = rgb * alpha + fill * (1 - alpha) if self.background is not None else rgb
            x = mixed.round().to(x.dtype) if not x.is_floating_point() else mixed.to(x.dtype)
        if x.shape[0] == 1 and self.in_chans == 3:
            x = x.expand(3, -1, -1).contiguous()
        elif x.shape[0] == 3 and self.in_chans == 1:
            x = F.rgb_to_grayscale(x, num_output_channels=1)
        return tv_tensors.Image(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(in_chans={self.in_chans}, background={self.background})"


class EvalGeometry:
    """``EvalTransform``'s resize and center crop (its ``crop_mode``): on PIL images by ``EvalTransform`` itself
    (exact, and memory-bounded for extreme aspect ratios), on tensors with torchvision's antialiased resize."""

    def __init__(self, transform: EvalTransform) -> None:
        self.transform = transform

    def __call__(self, img: Any) -> Any:
        t = self.transform
        if not _is_tensor_image(img):
            return t.resize_and_crop(img)
        from torchvision import tv_tensors
        from torchvision.transforms.v2 import functional as F

        height, width = img.shape[-2:]
        new_w, new_h = t._resized_size(width, height)
        mode = _mode(t.interpolation)
        if new_w * new_h > (1 << 24) and new_w >= t.crop and new_h >= t.crop:  # only the crop window is resized
            left, top = round((new_w - t.crop) / 2.0), round((new_h - t.crop) / 2.0)
            sy, sx = height / new_h, width / new_w
            box = (int(top * sy), int(left * sx), max(1, round(t.crop * sy)), max(1, round(t.crop * sx)))
            return tv_tensors.Image(F.resized_crop(img, *box, [t.crop, t.crop], interpolation=mode, antialias=True))
        if (new_w, new_h) != (width, height):
            img = F.resize(img, [new_h, new_w], interpolation=mode, antialias=True)
        if t.crop_mode == "border" and (new_w < t.crop or new_h < t.crop):
            pad_w, pad_h = max(t.crop - new_w, 0), max(t.crop - new_h, 0)
            top = 255 if not img.is_floating_point() else 1.0
            fill = [round(255 * m) * top / 255 for m in t.mean]
            img = F.pad(img, [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=fill)
        return tv_tensors.Image(F.center_crop(img, [t.crop, t.crop]))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform.describe()})"


def _eval_of(pretrained_cfg: Any, input_size: int | None, in_chans: int | None) -> EvalTransform:
    """The ``EvalTransform`` of ``pretrained_cfg`` (a mapping, or a model), at ``input_size`` if given."""
    if isinstance(pretrained_cfg, Mapping):
        cfg, default_size = pretrained_cfg, input_size
    else:  # a model: its pretrained_cfg, else its native resolution and channels
        config = getattr(pretrained_cfg, "config", None)
        if config is None:
            raise TypeError(f"expected a pretrained_cfg mapping or a mobilenets model, got "
                            f"{type(pretrained_cfg).__name__}")
        cfg, default_size = getattr(pretrained_cfg, "pretrained_cfg", None) or {}, config.input_size
        in_chans = config.in_chans if in_chans is None else in_chans
    t = _from_cfg(cfg, default_size, WHITE, in_chans)
    if input_size is None or input_size == t.crop:
        return t
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
        raise ValueError(f"input_size must be a positive integer, got {input_size!r}")
    resize = math.floor(input_size * t.resize / t.crop)
    return EvalTransform(resize=resize, crop=input_size, interpolation=t.interpolation, mean=t.mean, std=t.std,
                         background=t.background, crop_mode=t.crop_mode, in_chans=t.in_chans)


class ToFloatImage:
    """An image tensor → plain float32 tensor in [0, 1]: uint8 divided by 255 (as ``EvalTransform`` does, to the
    last bit; v2's ``ToDtype(scale=True)`` multiplies by 1/255, which differs in the last bit); floats are kept."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.as_subclass(torch.Tensor)  # a plain tensor from here on (v2 treats a lone tensor as the image)
        if x.dtype == torch.uint8:
            return x.to(torch.float32).div_(255)
        if not x.is_floating_point():
            raise ValueError(f"expected a uint8 or float image tensor, got {x.dtype}")
        return x.to(torch.float32)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def val_transform(pretrained_cfg: Mapping[str, Any] | Any, input_size: int | None = None) -> Any:
    """The evaluation transform of the weights (``pretrained_cfg``, or a model) as a v2 pipeline.

    PIL image or tensor ``(C, H, W)`` → float tensor ``(in_chans, crop, crop)``. On PIL images the tensors are
    exactly ``mobilenets.data.EvalTransform``'s (resize, crop mode, interpolation, mean, std, in_chans);
    ``input_size`` changes the crop and keeps the ratio of crop to resize.
    """
    v2 = _v2()
    t = _eval_of(pretrained_cfg, input_size, None)
    return v2.Compose([ToModelChannels(t.in_chans, t.background), EvalGeometry(t), v2.ToImage(), ToFloatImage(),
                       v2.Normalize(mean=list(t.mean), std=list(t.std))])


def train_transform(
    pretrained_cfg: Mapping[str, Any] | Any,
    *,
    augment: str = "light",
    input_size: int | None = None,
    random_erasing: float = 0.0,
    in_chans: int | None = None,
) -> Any:
    """The training transform for the weights' preprocessing (``pretrained_cfg``, or a model), as a v2 pipeline.

    Input size, mean, std and interpolation come from the weights (``input_size`` overrides the size; ``in_chans``
    the channels, default the weights' own: grey images become RGB for RGB models, RGB becomes grey for
    one-channel ones). ``augment``:

    * ``none``: the evaluation resize and center crop;
    * ``light``: ``RandomResizedCrop`` (scale 0.08-1, Inception's crop; Szegedy et al. 2015) and a horizontal flip;
    * ``rotate``: ``light`` plus a random rotation up to 15 degrees;
    * ``trivial``: ``light`` plus ``TrivialAugmentWide`` (Müller & Hutter 2021);
    * ``randaugment``: ``light`` plus ``RandAugment`` (Cubuk et al. 2020; 2 ops, magnitude 9).

    then scaling to [0, 1], normalisation, and ``RandomErasing`` with probability ``random_erasing`` (Zhong et al.
    2020). Accepts PIL images and tensors ``(C, H, W)`` (uint8, or float in [0, 1]).
    """
    v2 = _v2()
    if augment not in AUGMENTS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTS)}, got {augment!r}")
    if isinstance(random_erasing, bool) or not isinstance(random_erasing, (int, float)) \
            or not 0 <= random_erasing <= 1:
        raise ValueError(f"random_erasing must be a probability in [0, 1], got {random_erasing!r}")
    t = _eval_of(pretrained_cfg, input_size, in_chans)
    mode = _mode(t.interpolation)
    steps: list[Any] = [ToModelChannels(t.in_chans, t.background)]
    if augment == "none":
        steps.append(EvalGeometry(t))
    else:
        steps += [v2.RandomResizedCrop(t.crop, interpolation=mode, antialias=True), v2.RandomHorizontalFlip()]
    if augment == "rotate":
        steps.append(v2.RandomRotation(15, interpolation=_mode("bilinear")))
    elif augment == "trivial":
        steps.append(v2.TrivialAugmentWide(interpolation=_mode("bilinear")))
    elif augment == "randaugment":
        steps.append(v2.RandAugment(num_ops=2, magnitude=9, interpolation=_mode("bilinear")))
    steps += [v2.ToImage(), ToFloatImage(), v2.Normalize(mean=list(t.mean), std=list(t.std))]
    if random_erasing > 0:
        steps.append(v2.RandomErasing(p=float(random_erasing), value=0))
    return v2.Compose(steps)


def mixup_cutmix(num_classes: int, mixup: float = 0.0, cutmix: float = 0.0) -> Callable[..., Any] | None:
    """A batch transform ``(images, labels) → (mixed images, soft labels (B, num_classes))``, or ``None``.

    ``mixup`` and ``cutmix`` are the Beta distributions' alpha (0: off); with both, each batch gets one of them at
    random (``v2.RandomChoice``), as timm and torchvision's references do. MixUp: Zhang et al. 2018; CutMix:
    Yun et al. 2019.
    """
    for name, value in (("mixup", mixup), ("cutmix", cutmix)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or math.isinf(value):
            raise ValueError(f"{name} must be a non-negative alpha (0 turns it off), got {value!r}")
    if mixup == 0 and cutmix == 0:
        return None
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"mixup / cutmix need num_classes of at least 2, got {num_classes!r}")
    v2 = _v2()
    chosen = ([v2.MixUp(alpha=float(mixup), num_classes=num_classes)] if mixup > 0 else []) + \
             ([v2.CutMix(alpha=float(cutmix), num_classes=num_classes)] if cutmix > 0 else [])
    return chosen[0] if len(chosen) == 1 else v2.RandomChoice(chosen)


__all__ = [
    "AUGMENTS",
    "CheckedDataset",
    "EvalGeometry",
    "FolderScan",
    "ImageFolderDataset",
    "ToFloatImage",
    "ToModelChannels",
    "TransformedDataset",
    "check_image_file",
    "imagenet_wnids",
    "make_datasets",
    "mixup_cutmix",
    "scan_image_folder",
    "train_transform",
    "val_transform",
]

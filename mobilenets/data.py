"""ImageNet class names and the evaluation preprocessing of pretrained weights (Pillow + torch, no torchvision).

    from PIL import Image
    import mobilenets

    model = mobilenets.create_model("efficientnet_lite0", pretrained=True).eval()
    transform = mobilenets.eval_transform(model)      # the weights' own resize / crop / mean / std
    x = transform(Image.open("cat.jpg")).unsqueeze(0)  # (1, 3, 224, 224)

``EvalTransform`` reproduces torchvision's ``Resize(resize, interpolation) → CenterCrop(crop) → ToTensor() →
Normalize(mean, std)`` exactly on RGB images, and first turns any other Pillow mode into RGB (see ``to_rgb``);
timm's ``squash`` and ``border`` crop modes and one-channel (grey) models are supported too. ``pretrained_cfg``
dicts, which carry the preprocessing with the weights, are checked by ``validate_pretrained_cfg``.
Pillow is imported lazily, so ``import mobilenets`` works without it.
"""

from __future__ import annotations

import ctypes
import functools
import math
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

import torch

from .registry import get_spec

if TYPE_CHECKING:
    from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_CROP_PCT = 0.875
DEFAULT_INTERPOLATION = "bilinear"
WHITE = (255, 255, 255)

INTERPOLATIONS = ("nearest", "box", "bilinear", "hamming", "bicubic", "lanczos")
CROP_MODES = ("center", "squash", "border")
IMAGENET_1K = "imagenet-1k"  # ``categories`` value meaning imagenet_categories()

MAX_SIZE = 4096  # pixels, for every size in a pretrained_cfg (and channels)
MAX_CLASSES = 1_000_000
MAX_NAME_CHARS = 256  # a category name, a model name, a tag
MAX_TEXT_CHARS = 4096  # a URL, a source, a license
MAX_METRICS = 64

# Above this many pixels, resizing the whole image before the center crop (what torchvision does) would need
# absurd memory (a 1 x 100000 strip resized to a 256 px short side); such images are resized inside the crop
# window only, which can differ from torchvision by one 8-bit level at some pixels.
_MAX_RESIZED_PIXELS = 1 << 24


@functools.lru_cache(maxsize=1)
def _categories() -> tuple[str, ...]:
    text = resources.files("mobilenets").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != 1000:
        raise RuntimeError(f"mobilenets/imagenet_classes.txt holds {len(names)} names, expected 1000")
    return names


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet-1k class names, in class-index order (read once from the shipped text file)."""
    return list(_categories())


# ---------------------------------------------------------------------------------------------------------------
# pretrained_cfg: the weights' preprocessing and class names (timm's keys)
# ---------------------------------------------------------------------------------------------------------------

# key -> what it must be; every key is optional except num_classes (see docs of validate_pretrained_cfg)
PRETRAINED_CFG_KEYS = (
    "model", "tag", "source", "url", "license", "metrics", "num_classes", "input_size", "test_input_size",
    "resize", "crop", "crop_pct", "test_crop_pct", "crop_mode", "interpolation", "mean", "std", "categories",
)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _text(value: Any, limit: int, fail: Any, optional: bool = True) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or len(value) > limit or not value.isprintable():
        fail(f"must be a non-empty printable string of at most {limit} characters, got {_short(value)}")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _size_triple(value: Any, fail: Any) -> list[int]:
    if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(_is_int(v) for v in value):
        fail(f"must be [channels, height, width] (three integers), got {_short(value)}")
    if not all(1 <= v <= MAX_SIZE for v in value):
        fail(f"values must be between 1 and {MAX_SIZE}, got {list(value)}")
    return [int(v) for v in value]


def crop_pct_for(crop: int, resize: int) -> float:
    """The shortest decimal ``crop_pct`` with ``floor(crop / crop_pct) == resize`` (timm's resize rule)."""
    for digits in range(2, 12):
        pct = round(crop / resize, digits)
        if pct > 0 and math.floor(crop / pct) == resize:
            return pct
    return crop / resize


def validate_pretrained_cfg(cfg: object, origin: str) -> dict[str, Any]:
    """Check a ``pretrained_cfg`` read from a file (untrusted) and return a normalised copy.

    Keys (timm's names and conventions; all optional except ``num_classes``): ``model``, ``tag``, ``source``
    (``LIBRARY:MODEL[.TAG]``), ``url``, ``license``, ``metrics`` (name -> number or short text), ``num_classes``,
    ``input_size`` / ``test_input_size`` (``[C, H, W]``; an integer ``N``, as earlier versions wrote, reads as
    ``[C, N, N]``), ``resize`` / ``crop`` (our eval transform), ``crop_pct`` / ``test_crop_pct``, ``crop_mode``
    (``center``, ``squash`` or ``border``), ``interpolation``, ``mean`` / ``std`` (``C`` values, std > 0),
    ``categories`` (``num_classes`` names, ``"imagenet-1k"`` or ``None``).

    Every size is at most 4096 and every number finite. Raises ``ValueError("<origin>: pretrained_cfg.<field> ...")``
    naming what is wrong; unknown keys are refused.
    """
    if not isinstance(cfg, Mapping):
        raise ValueError(f"{origin}: pretrained_cfg must be a JSON object (a dict), got {type(cfg).__name__}")

    def failer(key: str) -> Any:
        def fail(message: str) -> None:
            raise ValueError(f"{origin}: pretrained_cfg.{key} {message}; fix or remove it")
        return fail

    unknown = sorted(str(k) for k in cfg if k not in PRETRAINED_CFG_KEYS)
    if unknown:
        raise ValueError(f"{origin}: pretrained_cfg has unknown field(s) {', '.join(_short(k) for k in unknown[:8])}; "
                         f"known fields: {', '.join(PRETRAINED_CFG_KEYS)}")
    out: dict[str, Any] = {}
    for key, limit in (("model", MAX_NAME_CHARS), ("tag", MAX_NAME_CHARS), ("source", MAX_TEXT_CHARS),
                       ("url", MAX_TEXT_CHARS), ("license", MAX_TEXT_CHARS)):
        if key in cfg:
            out[key] = _text(cfg[key], limit, failer(key))

    if "metrics" in cfg:
        metrics, fail = cfg["metrics"], failer("metrics")
        if metrics is not None:
            if not isinstance(metrics, Mapping) or len(metrics) > MAX_METRICS:
                fail(f"must be an object of at most {MAX_METRICS} name: value pairs, got {_short(metrics)}")
            clean: dict[str, Any] = {}
            for name, value in metrics.items():
                _text(name, MAX_NAME_CHARS, fail, optional=False)
                if not (_is_number(value) or (isinstance(value, str) and len(value) <= MAX_TEXT_CHARS)):
                    fail(f"[{name!r}] must be a finite number or a string, got {_short(value)}")
                clean[name] = value
            metrics = clean
        out["metrics"] = metrics

    fail = failer("num_classes")
    if "num_classes" not in cfg:
        fail("is missing (the classifier size is required)")
    num_classes = cfg["num_classes"]
    if not _is_int(num_classes) or not 0 <= num_classes <= MAX_CLASSES:
        fail(f"must be an integer between 0 and {MAX_CLASSES}, got {_short(num_classes)}")
    out["num_classes"] = num_classes

    for key in ("mean", "std"):
        if key in cfg:
            values, fail = cfg[key], failer(key)
            if (not isinstance(values, (list, tuple)) or not 1 <= len(values) <= MAX_SIZE
                    or not all(_is_number(v) for v in values)):
                fail(f"must be a list of finite numbers, one per input channel, got {_short(values)}")
            if key == "std" and min(values) <= 0:
                fail(f"values must be positive, got {list(values)}")
            if key == "mean" and not all(-MAX_SIZE <= v <= MAX_SIZE for v in values):
                fail(f"values must lie within +-{MAX_SIZE} (0-1 pixel scale), got {list(values)}")
            out[key] = [float(v) for v in values]
    channels = len(out.get("mean") or out.get("std") or []) or None
    for key in ("input_size", "test_input_size"):
        if key not in cfg or (key == "test_input_size" and cfg[key] is None):
            if key in cfg:
                out[key] = None
            continue
        value, fail = cfg[key], failer(key)
        if _is_int(value):  # written by mobilenets before [C, H, W]
            value = [channels or 3, value, value]
        out[key] = _size_triple(value, fail)
    size_channels = out.get("input_size", [None])[0]
    for key in ("mean", "std", "test_input_size"):
        n = len(out[key]) if key in ("mean", "std") and key in out else (out.get(key) or [None])[0]
        if key in out and size_channels is not None and n is not None and n != size_channels:
            failer(key)(f"has {n} channel(s) but input_size has {size_channels}")
    if "mean" in out and "std" in out and len(out["mean"]) != len(out["std"]):
        failer("std")(f"has {len(out['std'])} values but mean has {len(out['mean'])}")

    for key in ("resize", "crop"):
        if key in cfg:
            value, fail = cfg[key], failer(key)
            if not _is_int(value) or not 1 <= value <= MAX_SIZE:
                fail(f"must be an integer between 1 and {MAX_SIZE}, got {_short(value)}")
            out[key] = value
    if "crop" in out and "input_size" in out and out["input_size"][1:] != [out["crop"]] * 2:
        failer("crop")(f"is {out['crop']} but input_size is {out['input_size']} (the crop is square: they must agree)")
    for key in ("crop_pct", "test_crop_pct"):
        if key in cfg and not (key == "test_crop_pct" and cfg[key] is None):
            value, fail = cfg[key], failer(key)
            if not _is_number(value) or not 0 < value <= 2:
                fail(f"must be a number in (0, 2] (crop / resize), got {_short(value)}")
            out[key] = float(value)
        elif key in cfg:
            out[key] = None
    crop = out.get("crop") or (out["input_size"][1] if "input_size" in out else None)
    if "crop_pct" in out and "resize" in out and crop is not None:
        expected = math.floor(crop / out["crop_pct"])
        if expected != out["resize"]:
            failer("resize")(f"is {out['resize']}, but crop {crop} / crop_pct {out['crop_pct']} gives {expected} "
                             "(timm's rule: resize = floor(crop / crop_pct)); make them agree")
    if "resize" in out and crop is not None and "crop_pct" not in out:
        out["crop_pct"] = crop_pct_for(crop, out["resize"])  # what timm's resolve_data_config reads
    if "crop" in out and "input_size" not in out:
        out["input_size"] = [channels or 3, out["crop"], out["crop"]]

    if "crop_mode" in cfg:
        if cfg["crop_mode"] not in CROP_MODES:
            failer("crop_mode")(f"must be one of {', '.join(CROP_MODES)}, got {_short(cfg['crop_mode'])}")
        out["crop_mode"] = cfg["crop_mode"]
    if "interpolation" in cfg:
        if not isinstance(cfg["interpolation"], str) or cfg["interpolation"].lower() not in INTERPOLATIONS:
            failer("interpolation")(f"must be one of {', '.join(INTERPOLATIONS)}, got {_short(cfg['interpolation'])}")
        out["interpolation"] = cfg["interpolation"].lower()

    if "categories" in cfg:
        categories, fail = cfg["categories"], failer("categories")
        if categories == IMAGENET_1K:
            if num_classes != 1000:
                fail(f"is {IMAGENET_1K!r} but num_classes is {num_classes}")
        elif categories is not None:
            if not isinstance(categories, (list, tuple)) or len(categories) != num_classes:
                count = len(categories) if isinstance(categories, (list, tuple)) else type(categories).__name__
                fail(f"must be a list of num_classes ({num_classes}) names, {IMAGENET_1K!r} or null, got {count}")
            for i, name in enumerate(categories):
                if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_CHARS or "\n" in name:
                    fail(f"[{i}] must be a non-empty one-line string of at most {MAX_NAME_CHARS} characters, "
                         f"got {_short(name)}")
            categories = list(categories)
        out["categories"] = categories
    return {k: out[k] for k in PRETRAINED_CFG_KEYS if k in out}


def adapt_pretrained_cfg(
    cfg: Mapping[str, Any], *, num_classes: int | None = None, in_chans: int | None = None
) -> dict[str, Any]:
    """A copy of a (validated) ``pretrained_cfg`` for a model with another classifier size or input channels.

    Another ``num_classes`` drops ``categories`` (the names belonged to the old classifier). Another ``in_chans``
    rewrites ``input_size`` / ``test_input_size`` and maps ``mean`` / ``std`` as ``adapt_input_conv`` maps the
    stem: RGB to one channel by ``grey_normalization``, one value to every channel, otherwise channel ``k`` takes
    the values of channel ``k mod C``.
    """
    out = dict(cfg)
    if num_classes is not None and out.get("num_classes") != num_classes:
        out.update(num_classes=num_classes, categories=None)
    if in_chans is None:
        return out
    size = out.get("input_size")
    channels = size[0] if size else len(out.get("mean") or out.get("std") or ()) or None
    if channels is None or channels == in_chans:
        return out
    for key in ("input_size", "test_input_size"):
        if out.get(key):
            out[key] = [in_chans, *list(out[key])[1:]]
    mean, std = out.get("mean"), out.get("std")
    if mean is not None and std is not None and len(mean) == len(std) == 3 and in_chans == 1:
        m, s = grey_normalization(mean, std)
        out.update(mean=[m], std=[s])
    else:
        for key in ("mean", "std"):
            if out.get(key) is not None:
                values = list(out[key])
                out[key] = [values[k % len(values)] for k in range(in_chans)]
    return out

# ---------------------------------------------------------------------------------------------------------------
# Any Pillow mode → RGB
# ---------------------------------------------------------------------------------------------------------------

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_HIGH_DEPTH_MODES = ("I", "F")  # plus I;16, I;16B, I;16L, I;16N


def _tensor_bytes(t: torch.Tensor) -> bytes:
    """The raw bytes of a CPU tensor, without numpy (which torch does not require)."""
    t = t.contiguous()
    return ctypes.string_at(t.data_ptr(), t.numel() * t.element_size())


def _rescale_high_depth(img: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float single-channel image as 8-bit ``L`` (``LA`` if it has a transparent value).

    Pillow's own ``convert("L")`` clips such values to 255, which turns most 16-bit images white. Here:

    * ``I;16*`` (16-bit PNG/TIFF): the full 0..65535 range maps to 0..255;
    * ``I`` (32-bit integer): values within 0..255 are taken as 8-bit, within 0..65535 as 16-bit, any other
      range is stretched from its minimum to its maximum;
    * ``F`` (float): values within 0..1 scale by 255, within 0..255 are kept, within 0..65535 are taken as 16-bit,
      any other range is stretched.
    """
    from PIL import Image

    mode = img.mode
    width, height = img.size
    raw = img.convert("F") if mode == "F" else img.convert("I")
    dtype = torch.float32 if mode == "F" else torch.int32
    raw_values = torch.frombuffer(bytearray(raw.tobytes()), dtype=dtype)
    values = raw_values.to(torch.float64)
    finite = torch.isfinite(values)
    if not finite.any():
        return Image.new("L", img.size)
    lo, hi = float(values[finite].min()), float(values[finite].max())
    values = torch.nan_to_num(values, nan=lo, posinf=hi, neginf=lo)
    if mode.startswith("I;16"):
        low, high = 0.0, 65535.0
    elif mode == "F" and lo >= 0.0 and hi <= 1.0:
        low, high = 0.0, 1.0
    elif lo >= 0.0 and hi <= 255.0:
        low, high = 0.0, 255.0
    elif lo >= 0.0 and hi <= 65535.0:
        low, high = 0.0, 65535.0
    else:
        low, high = lo, max(hi, lo + 1.0)
    pixels = ((values - low) * (255.0 / (high - low))).round_().clamp_(0, 255).to(torch.uint8)
    gray = Image.frombytes("L", (width, height), _tensor_bytes(pixels))
    transparent = img.info.get("transparency")
    if isinstance(transparent, (int, float)) and mode != "F":
        alpha = (raw_values != int(transparent)).to(torch.uint8) * 255
        gray = Image.merge("LA", (gray, Image.frombytes("L", (width, height), _tensor_bytes(alpha))))
    return gray


def _background(color: Sequence[int]) -> tuple[int, int, int]:
    fill = tuple(int(c) for c in color)
    if len(fill) != 3 or not all(0 <= c <= 255 for c in fill):
        raise ValueError(f"background must be three 0..255 values (R, G, B), got {color!r}")
    return fill  # type: ignore[return-value]


def to_rgb(img: Image.Image, background: Sequence[int] | None = WHITE) -> Image.Image:
    """Convert a Pillow image of any mode to 8-bit RGB.

    Transparency (an alpha channel, or a palette / grey / RGB value marked transparent) is composited over
    ``background`` (white by default: how viewers and browsers usually show such images); ``background=None``
    drops it instead, exactly like timm's and torchvision's ``img.convert("RGB")``, which exposes whatever colour
    the transparent pixels happen to hold (often black). Fully opaque pixels are the same either way.
    16-bit (``I;16``), 32-bit (``I``) and float (``F``) images are rescaled to 8 bits rather than clipped
    (see ``_rescale_high_depth``). Grey, bilevel, palette, CMYK, YCbCr, LAB and HSV images use Pillow's conversion.
    """
    from PIL import Image

    if img.mode == "RGB" and "transparency" not in img.info:
        return img
    if img.mode.startswith("I;16") or img.mode in _HIGH_DEPTH_MODES:
        img = _rescale_high_depth(img)
    has_alpha = img.mode in _ALPHA_MODES or "transparency" in img.info
    if not has_alpha:
        try:
            return img.convert("RGB")
        except ValueError as e:
            raise ValueError(f"cannot convert a {img.mode} image to RGB ({e})") from None
    if img.mode == "La":
        img = img.convert("LA")  # Pillow converts premultiplied grey+alpha only to LA
    try:
        rgba = img.convert("RGBA")
    except ValueError as e:
        raise ValueError(f"cannot convert a {img.mode} image to RGB ({e})") from None
    if background is None:
        return rgba.convert("RGB")
    canvas = Image.new("RGBA", rgba.size, (*_background(background), 255))
    return Image.alpha_composite(canvas, rgba).convert("RGB")


# ---------------------------------------------------------------------------------------------------------------
# The transform
# ---------------------------------------------------------------------------------------------------------------


def _resampling(name: str) -> int:
    from PIL import Image

    return {
        "nearest": Image.Resampling.NEAREST, "box": Image.Resampling.BOX, "bilinear": Image.Resampling.BILINEAR,
        "hamming": Image.Resampling.HAMMING, "bicubic": Image.Resampling.BICUBIC,
        "lanczos": Image.Resampling.LANCZOS,
    }[name]


def _channels(values: Sequence[float], in_chans: int, what: str) -> tuple[float, ...]:
    out = tuple(float(v) for v in values)
    if len(out) != in_chans:
        names = "R, G, B" if in_chans == 3 else "grey" if in_chans == 1 else "one per channel"
        raise ValueError(f"{what} must have {in_chans} value(s) ({names}), got {values!r}")
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{what} must be finite, got {values!r}")
    return out


def grey_normalization(mean: Sequence[float], std: Sequence[float]) -> tuple[float, float]:
    """One-channel ``(mean, std)`` for RGB weights whose stem was summed over RGB (``adapt_input_conv``).

    The RGB network sees a grey pixel ``g`` as ``(g - mean_c) / std_c`` in each channel ``c``; the adapted stem
    (weights summed over ``c``) sees ``(g - m) / s`` in its one channel. With ``1 / s = average(1 / std_c)`` and
    ``m / s = average(mean_c / std_c)`` both agree exactly when a filter weighs the three channels alike, and
    closely otherwise; equal RGB values (0.5/0.5) map to themselves. ImageNet's give ``m = 0.4488, s = 0.2260``.
    """
    mean, std = _channels(mean, 3, "mean"), _channels(std, 3, "std")
    if min(std) <= 0:
        raise ValueError(f"std must be positive, got {std}")
    inv = sum(1.0 / s for s in std) / 3
    shift = sum(m / s for m, s in zip(mean, std, strict=True)) / 3
    return shift / inv, 1.0 / inv


class EvalTransform:
    """PIL image → normalised float tensor ``(in_chans, crop, crop)``, as ImageNet evaluation does.

    1. any mode to RGB (``to_rgb``: transparency over ``background``, high bit depths rescaled), then to grey
       (Pillow's ITU-R 601 luma, exact for grey images) when ``in_chans == 1``;
    2. resize, by ``crop_mode`` (timm's names):

       * ``center``: the shorter side to ``resize`` (the longer one ``int(resize * long / short)``);
       * ``squash``: both sides to ``resize`` (the aspect ratio is not kept; nothing is cut when crop == resize);
       * ``border``: the longer side to ``resize``, keeping the aspect ratio;

       with Pillow's ``interpolation`` (antialiased when shrinking, as torchvision does on PIL images);
    3. center crop ``crop`` x ``crop``, padding where the image is smaller (zeros; in ``border`` mode the
       ``mean`` colour, so padding normalises to 0);
    4. scale to [0, 1] and normalise with ``mean`` / ``std`` (``in_chans`` values each).

    In ``center`` mode on RGB, steps 2-4 are torchvision's ``Resize → CenterCrop → ToTensor → Normalize``
    operation for operation; ``squash`` and ``border`` follow timm's ``transforms_imagenet_eval``.
    """

    def __init__(
        self,
        resize: int,
        crop: int,
        interpolation: str = DEFAULT_INTERPOLATION,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        background: Sequence[int] | None = WHITE,
        crop_mode: str = "center",
        in_chans: int = 3,
    ) -> None:
        for what, value in (("resize", resize), ("crop", crop)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIZE:
                raise ValueError(f"{what} must be a positive integer of at most {MAX_SIZE}, got {value!r}")
        interpolation = str(interpolation).lower()
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
        if crop_mode not in CROP_MODES:
            raise ValueError(f"crop_mode must be one of {', '.join(CROP_MODES)}, got {crop_mode!r}")
        if in_chans not in (1, 3) or isinstance(in_chans, bool):
            raise ValueError(f"images give 1 (grey) or 3 (RGB) channels, not in_chans={in_chans!r}")
        self.resize = resize
        self.crop = crop
        self.interpolation = interpolation
        self.crop_mode = crop_mode
        self.in_chans = in_chans
        self.mean = _channels(mean, in_chans, "mean")
        self.std = _channels(std, in_chans, "std")
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")
        self.background = None if background is None else _background(background)
        self._mean = torch.tensor(self.mean, dtype=torch.float32).view(in_chans, 1, 1)
        self._std = torch.tensor(self.std, dtype=torch.float32).view(in_chans, 1, 1)

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (self.in_chans, self.crop, self.crop)

    def _resized_size(self, width: int, height: int) -> tuple[int, int]:
        if self.crop_mode == "squash":
            return self.resize, self.resize
        if self.crop_mode == "border":  # timm's ResizeKeepRatio(longest=1)
            ratio = max(height / self.resize, width / self.resize)
            return max(1, round(width / ratio)), max(1, round(height / ratio))
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(self.resize * long / short)
        return (self.resize, new_long) if width <= height else (new_long, self.resize)

    def resize_and_crop(self, img: Image.Image) -> Image.Image:
        """Steps 2-3 on an RGB (or, for ``in_chans=1``, grey) image: the ``crop`` x ``crop`` image the network sees."""
        from PIL import Image

        width, height = img.size
        if width < 1 or height < 1:
            raise ValueError(f"image has no pixels ({width}x{height})")
        new_w, new_h = self._resized_size(width, height)
        resample = _resampling(self.interpolation)
        if new_w * new_h > _MAX_RESIZED_PIXELS and new_w >= self.crop and new_h >= self.crop:
            left, top = int(round((new_w - self.crop) / 2.0)), int(round((new_h - self.crop) / 2.0))
            sx, sy = width / new_w, height / new_h
            box = (left * sx, top * sy, (left + self.crop) * sx, (top + self.crop) * sy)
            return img.resize((self.crop, self.crop), resample, box=box)
        if (new_w, new_h) != (width, height):
            img = img.resize((new_w, new_h), resample)
        if new_w < self.crop or new_h < self.crop:  # torchvision pads with zeros, then crops; timm's border: mean
            pad_w, pad_h = max(self.crop - new_w, 0), max(self.crop - new_h, 0)
            fill = tuple(round(255 * m) for m in self.mean) if self.crop_mode == "border" else 0
            canvas = Image.new(img.mode, (new_w + pad_w, new_h + pad_h), fill[0] if img.mode == "L" and fill else fill)
            canvas.paste(img, (pad_w // 2, pad_h // 2))
            img, (new_w, new_h) = canvas, canvas.size
        left, top = int(round((new_w - self.crop) / 2.0)), int(round((new_h - self.crop) / 2.0))
        return img.crop((left, top, left + self.crop, top + self.crop))

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = to_rgb(img, self.background)
        if self.in_chans == 1:
            img = img.convert("L")
        img = self.resize_and_crop(img)
        data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
        x = data.view(self.crop, self.crop, self.in_chans).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
        return x.sub_(self._mean).div_(self._std)

    def to_dict(self) -> dict[str, Any]:
        return dict(resize=self.resize, crop=self.crop, interpolation=self.interpolation, mean=list(self.mean),
                    std=list(self.std), background=None if self.background is None else list(self.background),
                    crop_mode=self.crop_mode, in_chans=self.in_chans)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EvalTransform) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v, default in (("crop_mode", self.crop_mode, "center"),
                                                             ("in_chans", self.in_chans, 3)) if v != default)
        return (f"EvalTransform(resize={self.resize}, crop={self.crop}, interpolation={self.interpolation!r}, "
                f"mean={self.mean}, std={self.std}, background={self.background}{extra})")

    def describe(self) -> str:
        """One line for logs and the command line, e.g. ``resize 256, crop 224, bilinear, mean 0.5 std 0.5``."""
        def values(v: tuple[float, ...]) -> str:
            return f"{v[0]:g}" if len(set(v)) == 1 else "/".join(f"{x:g}" for x in v)

        mode = "" if self.crop_mode == "center" else f" ({self.crop_mode})"
        grey = ", grey" if self.in_chans == 1 else ""
        return (f"resize {self.resize}{mode}, crop {self.crop}, {self.interpolation}, mean {values(self.mean)} "
                f"std {values(self.std)}{grey}")


def _size(value: Any) -> int | None:
    """``224``, ``(224, 224)`` or ``(3, 224, 224)`` → 224."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        if not value:
            return None
        value = value[-1]
    return int(value)


def _normalization(cfg: Mapping[str, Any], in_chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``mean`` / ``std`` for ``in_chans`` inputs: one value repeats (as timm does); RGB values of weights
    adapted to one channel map through ``grey_normalization``."""
    mean = tuple(cfg.get("mean") or IMAGENET_MEAN)
    std = tuple(cfg.get("std") or IMAGENET_STD)
    if len(mean) == 3 and len(std) == 3 and in_chans == 1:
        m, s = grey_normalization(mean, std)
        return (m,), (s,)
    if len(mean) == 1 and len(std) == 1:
        return mean * in_chans, std * in_chans
    return mean, std


def _from_cfg(
    cfg: Mapping[str, Any], default_size: int | None, background: Sequence[int] | None,
    in_chans: int | None = None, use_test_size: bool = False,
) -> EvalTransform:
    cfg = dict(cfg.get("preprocess", {}), **{k: v for k, v in cfg.items() if k != "preprocess"})
    if in_chans is None:
        size = cfg.get("input_size")
        in_chans = int(size[0]) if isinstance(size, (list, tuple)) and len(size) == 3 else 3
    test_size = _size(cfg.get("test_input_size")) if use_test_size else None
    if test_size is not None:
        crop = test_size
        resize = math.floor(crop / float(cfg.get("test_crop_pct") or cfg.get("crop_pct") or DEFAULT_CROP_PCT))
    else:
        crop = _size(cfg.get("crop")) or _size(cfg.get("input_size")) or default_size
        if crop is None:
            raise ValueError("the pretrained config gives no crop / input_size")
        resize = _size(cfg.get("resize"))
        if resize is None:
            resize = math.floor(crop / float(cfg.get("crop_pct") or DEFAULT_CROP_PCT))
    mean, std = _normalization(cfg, in_chans)
    return EvalTransform(
        resize=resize, crop=crop, interpolation=cfg.get("interpolation") or DEFAULT_INTERPOLATION,
        mean=mean, std=std, background=background, crop_mode=cfg.get("crop_mode") or "center", in_chans=in_chans,
    )


def eval_transform(
    model_or_cfg: Any, *, background: Sequence[int] | None = WHITE, use_test_size: bool = False
) -> EvalTransform:
    """The evaluation transform for a model, a pretrained config or a model name.

    * a model with ``pretrained_cfg`` (set by ``create_model(..., pretrained=...)`` and by checkpoints that
      record one): the weights' own ``resize``, ``crop``, ``crop_mode``, ``interpolation``, ``mean`` and ``std``,
      for the model's ``in_chans`` (1: grey images, see ``grey_normalization``);
    * a ``pretrained_cfg``-like mapping (missing keys take the defaults below; ``crop_pct`` is honoured);
    * a model without ``pretrained_cfg``, or a registered model name: the model's native resolution as the
      crop, resize ``floor(crop / 0.875)``, bilinear, ImageNet mean / std.

    ``use_test_size=True`` evaluates at ``test_input_size`` / ``test_crop_pct`` where the weights record one
    (the size their published accuracy was measured at), as timm's ``use_test_size``.
    """
    if isinstance(model_or_cfg, str):
        return _from_cfg({}, get_spec(model_or_cfg).input_size, background)
    if isinstance(model_or_cfg, Mapping):
        return _from_cfg(model_or_cfg, None, background, use_test_size=use_test_size)
    config = getattr(model_or_cfg, "config", None)
    default_size = getattr(config, "input_size", None)
    in_chans = getattr(config, "in_chans", None)
    cfg = getattr(model_or_cfg, "pretrained_cfg", None)
    if cfg:
        return _from_cfg(cfg, default_size, background, in_chans, use_test_size)
    if default_size is None:
        raise TypeError(
            f"eval_transform expects a mobilenets model, a pretrained config dict or a model name, "
            f"got {type(model_or_cfg).__name__}"
        )
    return _from_cfg({}, default_size, background, in_chans)

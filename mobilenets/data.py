"""ImageNet class names and the evaluation preprocessing of pretrained weights (Pillow + torch, no torchvision).

    from PIL import Image
    import mobilenets

    model = mobilenets.create_model("efficientnet_lite0", pretrained=True).eval()
    transform = mobilenets.eval_transform(model)      # the weights' own resize / crop / mean / std
    x = transform(Image.open("cat.jpg")).unsqueeze(0)  # (1, 3, 224, 224)

``EvalTransform`` reproduces torchvision's ``Resize(resize, interpolation) → CenterCrop(crop) → ToTensor() →
Normalize(mean, std)`` exactly on RGB images, and first turns any other Pillow mode into RGB (see ``to_rgb``).
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

if TYPE_CHECKING:
    from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_CROP_PCT = 0.875
DEFAULT_INTERPOLATION = "bilinear"
WHITE = (255, 255, 255)

INTERPOLATIONS = ("nearest", "box", "bilinear", "hamming", "bicubic", "lanczos")

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


def _triple(values: Sequence[float], what: str) -> tuple[float, float, float]:
    out = tuple(float(v) for v in values)
    if len(out) != 3:
        raise ValueError(f"{what} must have 3 values (R, G, B), got {values!r}")
    return out  # type: ignore[return-value]


class EvalTransform:
    """PIL image → normalised float tensor ``(3, crop, crop)``, as ImageNet evaluation does.

    1. any mode to RGB (``to_rgb``: transparency over ``background``, high bit depths rescaled);
    2. resize so the shorter side is ``resize`` (the longer one ``int(resize * long / short)``), with Pillow's
       ``interpolation`` (antialiased when shrinking, as torchvision does on PIL images);
    3. center crop ``crop`` x ``crop`` (zero padding if the image is smaller, as torchvision does);
    4. scale to [0, 1] and normalise with ``mean`` / ``std``.

    Steps 2-4 are torchvision's ``Resize → CenterCrop → ToTensor → Normalize`` operation for operation.
    """

    def __init__(
        self,
        resize: int,
        crop: int,
        interpolation: str = DEFAULT_INTERPOLATION,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        background: Sequence[int] | None = WHITE,
    ) -> None:
        for what, value in (("resize", resize), ("crop", crop)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{what} must be a positive integer, got {value!r}")
        interpolation = str(interpolation).lower()
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
        self.resize = resize
        self.crop = crop
        self.interpolation = interpolation
        self.mean = _triple(mean, "mean")
        self.std = _triple(std, "std")
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")
        self.background = None if background is None else _background(background)
        self._mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (3, self.crop, self.crop)

    def resize_and_crop(self, img: Image.Image) -> Image.Image:
        """Steps 2-3 on an RGB image: the ``crop`` x ``crop`` PIL image the network sees."""
        from PIL import Image

        width, height = img.size
        if width < 1 or height < 1:
            raise ValueError(f"image has no pixels ({width}x{height})")
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(self.resize * long / short)
        new_w, new_h = (self.resize, new_long) if width <= height else (new_long, self.resize)
        resample = _resampling(self.interpolation)
        if new_w * new_h > _MAX_RESIZED_PIXELS and new_w >= self.crop and new_h >= self.crop:
            left, top = int(round((new_w - self.crop) / 2.0)), int(round((new_h - self.crop) / 2.0))
            sx, sy = width / new_w, height / new_h
            box = (left * sx, top * sy, (left + self.crop) * sx, (top + self.crop) * sy)
            return img.resize((self.crop, self.crop), resample, box=box)
        if (new_w, new_h) != (width, height):
            img = img.resize((new_w, new_h), resample)
        if new_w < self.crop or new_h < self.crop:  # torchvision pads with zeros, then crops
            pad_w, pad_h = max(self.crop - new_w, 0), max(self.crop - new_h, 0)
            canvas = Image.new(img.mode, (new_w + pad_w, new_h + pad_h))
            canvas.paste(img, (pad_w // 2, pad_h // 2))
            img, (new_w, new_h) = canvas, canvas.size
        left, top = int(round((new_w - self.crop) / 2.0)), int(round((new_h - self.crop) / 2.0))
        return img.crop((left, top, left + self.crop, top + self.crop))

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = self.resize_and_crop(to_rgb(img, self.background))
        data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
        x = data.view(self.crop, self.crop, 3).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
        return x.sub_(self._mean).div_(self._std)

    def to_dict(self) -> dict[str, Any]:
        return dict(resize=self.resize, crop=self.crop, interpolation=self.interpolation, mean=list(self.mean),
                    std=list(self.std), background=None if self.background is None else list(self.background))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EvalTransform) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"EvalTransform(resize={self.resize}, crop={self.crop}, interpolation={self.interpolation!r}, "
                f"mean={self.mean}, std={self.std}, background={self.background})")


def _size(value: Any) -> int | None:
    """``224``, ``(224, 224)`` or ``(3, 224, 224)`` → 224."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        if not value:
            return None
        value = value[-1]
    return int(value)


def _from_cfg(cfg: Mapping[str, Any], default_size: int | None, background: Sequence[int] | None) -> EvalTransform:
    cfg = dict(cfg.get("preprocess", {}), **{k: v for k, v in cfg.items() if k != "preprocess"})
    crop = _size(cfg.get("crop")) or _size(cfg.get("input_size")) or default_size
    if crop is None:
        raise ValueError("the pretrained config gives no crop / input_size")
    resize = _size(cfg.get("resize"))
    if resize is None:
        resize = math.floor(crop / float(cfg.get("crop_pct") or DEFAULT_CROP_PCT))
    return EvalTransform(
        resize=resize, crop=crop, interpolation=cfg.get("interpolation") or DEFAULT_INTERPOLATION,
        mean=cfg.get("mean") or IMAGENET_MEAN, std=cfg.get("std") or IMAGENET_STD, background=background,
    )


def eval_transform(model_or_cfg: Any, *, background: Sequence[int] | None = WHITE) -> EvalTransform:
    """The evaluation transform for a model, a pretrained config or a model name.

    * a model with ``pretrained_cfg`` (set by ``create_model(..., pretrained=...)`` and by checkpoints that
      record one): the weights' own ``resize``, ``crop``, ``interpolation``, ``mean`` and ``std``;
    * a ``pretrained_cfg``-like mapping (missing keys take the defaults below; ``crop_pct`` is honoured);
    * a model without ``pretrained_cfg``, or a registered model name: the model's native resolution as the
      crop, resize ``floor(crop / 0.875)``, bilinear, ImageNet mean / std.
    """
    if isinstance(model_or_cfg, str):
        from .registry import get_spec

        return _from_cfg({}, get_spec(model_or_cfg).input_size, background)
    if isinstance(model_or_cfg, Mapping):
        return _from_cfg(model_or_cfg, None, background)
    config = getattr(model_or_cfg, "config", None)
    default_size = getattr(config, "input_size", None)
    cfg = getattr(model_or_cfg, "pretrained_cfg", None)
    if cfg:
        return _from_cfg(cfg, default_size, background)
    if default_size is None:
        raise TypeError(
            f"eval_transform expects a mobilenets model, a pretrained config dict or a model name, "
            f"got {type(model_or_cfg).__name__}"
        )
    return _from_cfg({}, default_size, background)

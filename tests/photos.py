"""Real photos for the int8 checks: scikit-image's and the repository's examples, and random crops/flips of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry", "colorwheel")


def photos() -> list[Image.Image]:
    """scikit-image's photos (``skimage.data``) and ``examples/*.jpg``, RGB."""
    from skimage import data as skdata

    out = [Image.fromarray(getattr(skdata, k)()).convert("RGB") for k in PHOTOS]
    return out + [Image.open(REPO / "examples" / f).convert("RGB") for f in ("chelsea.jpg", "coffee.jpg")]


def crops(n: int, seed: int) -> list[Image.Image]:
    """``n`` random crops (50-100 % of each side) of the photos in turn, half of them mirrored."""
    rng = np.random.default_rng(seed)
    base, out = photos(), []
    for k in range(n):
        img = base[k % len(base)]
        w, h = img.size
        s = rng.uniform(0.5, 1.0)
        cw, ch = int(w * s), int(h * s)
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        c = img.crop((x, y, x + cw, y + ch))
        out.append(c.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else c)
    return out

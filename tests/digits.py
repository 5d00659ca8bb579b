"""Real images for training tests: scikit-learn's handwritten digits (1,797 8x8 scans, 10 classes) as ImageFolders.

``load_digits`` ships inside scikit-learn (no download). The images are written as greyscale PNGs, scaled from the
dataset's 0-16 range to 0-255, into ``root/train/<digit>/`` and ``root/val/<digit>/`` (every ``val_every``-th image
of each class goes to val, so the split is stratified and deterministic).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = [str(d) for d in range(10)]


def write_digits_folder(root: str | Path, *, per_class: int | None = None, val_every: int = 5,
                        size: int = 8) -> tuple[Path, Path]:
    """Write the digits as ``root/train`` and ``root/val`` ImageFolders; returns the two folders.

    ``per_class`` keeps only the first N images of each class (before the split), for fast tests; ``size`` other
    than 8 upscales with nearest-neighbour (the pixels stay the dataset's own).
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = Path(root)
    train, val = root / "train", root / "val"
    seen = dict.fromkeys(range(10), 0)
    for i, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        label = int(label)
        if per_class is not None and seen[label] >= per_class:
            continue
        split = val if seen[label] % val_every == val_every - 1 else train
        seen[label] += 1
        folder = split / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.clip(image * (255.0 / 16.0), 0, 255).round().astype(np.uint8)
        img = Image.fromarray(pixels, mode="L")
        if size != 8:
            img = img.resize((size, size), Image.NEAREST)
        img.save(folder / f"{i:04d}.png")
    return train, val


def load_split(folder: str | Path, transform) -> tuple:  # noqa: ANN001 - a torchvision-style transform
    """Every image of a folder written above, through ``transform``: ``(N, C, H, W)`` inputs and their labels."""
    import torch

    from mobilenets.datasets import scan_image_folder

    samples = scan_image_folder(folder).samples
    x = torch.stack([transform(Image.open(p).convert("RGB")) for p, _ in samples])
    return x, torch.tensor([label for _, label in samples])

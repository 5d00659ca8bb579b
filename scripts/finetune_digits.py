"""Fine-tune the embedded pretrained EfficientNet-Lite0 on all 1,797 scikit-learn digits (issue 8's proof).

Three runs at 64 px: feature extraction (freeze="backbone"), then the top 2 stages with BatchNorm in inference
mode, and the same recipe from random init (everything trains). Prints a markdown table (best validation top-1 and
wall time per mode) and writes the curves of the two fine-tuning phases to docs/finetune_digits.png.

    python scripts/finetune_digits.py [--epochs 5] [--out docs/finetune_digits.png]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mobilenets.training import History, finetune, plot_curves  # noqa: E402
from tests.digits import write_digits_folder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "docs" / "finetune_digits.png"))
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    rows, phases = [], History()
    with tempfile.TemporaryDirectory() as tmp:
        train, val = write_digits_folder(tmp)
        counts = [sum(1 for _ in folder.rglob("*.png")) for folder in (train, val)]
        common = dict(input_size=64, augment="none", progress=False, batch_size=32)
        runs = [("feature extraction (freeze=\"backbone\")", "efficientnet_lite0", dict(freeze="backbone", lr=1e-2)),
                ("top 2 stages (freeze=2, bn=\"eval\"), after it", None, dict(freeze=2, bn="eval", lr=1e-3)),
                ("random init, everything trains", "efficientnet_lite0",
                 dict(freeze=None, pretrained=False, lr=3e-3))]
        model = None
        for label, name, kwargs in runs:
            t0 = time.perf_counter()
            model, history = finetune(name or model, train, val, epochs=args.epochs, **common, **kwargs)
            wall = time.perf_counter() - t0
            rows.append((label, history.best_top1, history["val_top1"][-1], wall))
            if name is not None and kwargs.get("pretrained", True) is False:
                continue
            offset = len(phases.epochs)
            phases.epochs += [dict(r, epoch=r["epoch"] + offset) for r in history.epochs]
            print(f"{label}: {history['val_top1']}", file=sys.stderr, flush=True)
    plot_curves(phases, args.out)
    print(f"EfficientNet-Lite0 on scikit-learn digits ({counts[0]} train / {counts[1]} val, 64 px, "
          f"{args.epochs} epochs per row, "
          f"{torch.get_num_threads()} CPU threads):\n")
    print("| mode | best val top-1 | last val top-1 | wall time |")
    print("|---|---:|---:|---:|")
    for label, best, last, wall in rows:
        print(f"| {label} | {best:.1f} % | {last:.1f} % | {wall:.0f} s |")


if __name__ == "__main__":
    main()

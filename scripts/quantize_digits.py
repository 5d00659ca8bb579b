"""The labelled fp32 -> int8 top-1 change (issue 9): EfficientNet-Lite0 fine-tuned on scikit-learn's digits.

Feature extraction at 64 px on the 1,442 training digits, int8 through ``mobilenets.quantize`` with 300 of the
training images as calibration, then top-1 against the labels of the 355 held-out digits for fp32 and for int8
(OpenVINO and ONNX Runtime), and the share of images whose int8 top-1 equals fp32's. Prints a markdown table.

    python scripts/quantize_digits.py [--epochs 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mobilenets.data import eval_transform  # noqa: E402
from mobilenets.quantize import load_int8, quantize  # noqa: E402
from mobilenets.training import finetune  # noqa: E402
from tests.digits import load_split, write_digits_folder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        train, val = write_digits_folder(Path(tmp) / "digits")
        model, _ = finetune("efficientnet_lite0", train, val, epochs=args.epochs, freeze="backbone", lr=1e-2,
                            input_size=64, augment="none", progress=False, batch_size=32)
        model.eval()
        path = quantize(model, train, Path(tmp) / "digits.int8.onnx", num_samples=300)
        x, labels = load_split(val, eval_transform(model))
        with torch.no_grad():
            fp32 = model(x).argmax(1)
        rows = [("fp32 (PyTorch)", fp32)]
        rows += [(f"int8 ({runtime})", load_int8(path, runtime=runtime)(x).argmax(1))
                 for runtime in ("openvino", "onnxruntime")]
    print(f"| {len(labels)} held-out digits | top-1 | top-1 equal to fp32's |\n|---|---:|---:|")
    for name, pred in rows:
        print(f"| {name} | {100 * float((pred == labels).float().mean()):.1f} % | "
              f"{100 * float((pred == fp32).float().mean()):.1f} % |")


if __name__ == "__main__":
    main()

"""int8 and bf16 top-1 agreement with fp32 on real photos (issue 9), with the near-ties shown apart.

The embedded EfficientNet-Lite0 ImageNet weights, random crops/flips of scikit-image's photos and the repository's
examples (``tests/photos.py``; calibration and evaluation crops drawn with different seeds), int8 through
``mobilenets.quantize`` run by OpenVINO (float layers in f32, and in bf16 where the CPU has it) and ONNX Runtime,
and for reference two other perturbations of the same fp32 model: bfloat16 autocast and Gaussian input noise (std
1e-3). Columns: every crop, then the crops where fp32's top-1 leads its runner-up by at least 5 points of
probability (a near-tie flips under any perturbation). Prints a markdown table.

    python scripts/quantize_photos.py [--crops 600] [--calibration 300]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mobilenets import create_model  # noqa: E402
from mobilenets.data import eval_transform  # noqa: E402
from mobilenets.quantize import load_int8, openvino_has_bf16, quantize  # noqa: E402
from tests.photos import crops  # noqa: E402

MARGIN = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", type=int, default=600)
    parser.add_argument("--calibration", type=int, default=300)
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    model = create_model("efficientnet_lite0", pretrained=True).eval()
    transform = eval_transform(model)
    x = torch.stack([transform(img) for img in crops(args.crops, seed=0)])
    calibration = torch.stack([transform(img) for img in crops(args.calibration, seed=1)])
    with torch.no_grad():
        probs = model(x).softmax(1)
        noisy = model(x + 1e-3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0)))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(x).float()
    top2 = probs.topk(2, dim=1)
    fp32, clear = top2.indices[:, 0], (top2.values[:, 0] - top2.values[:, 1]) >= MARGIN
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = quantize(model, calibration, Path(tmp) / "lite0.int8.onnx")
        runs = [("int8 (OpenVINO)", load_int8(path)), ("int8 (ONNX Runtime)", load_int8(path, runtime="onnxruntime"))]
        if openvino_has_bf16():
            runs.insert(1, ("int8 (OpenVINO, float layers in bf16)", load_int8(path, precision="bf16")))
        for name, run in runs:
            rows.append((name, torch.cat([run(x[i:i + 50]) for i in range(0, len(x), 50)])))
    rows += [("bf16 autocast (PyTorch)", bf16), ("fp32, input noise std 1e-3", noisy)]
    print(f"| Lite0, {len(x)} crops of real photos | top-1 equal to fp32's | the {int(clear.sum())} crops where "
          f"fp32 leads by ≥ {100 * MARGIN:.0f} points |\n|---|---:|---:|")
    for name, logits in rows:
        same = (logits.argmax(1) == fp32).float()
        print(f"| {name} | {100 * float(same.mean()):.1f} % | {100 * float(same[clear].mean()):.1f} % |")


if __name__ == "__main__":
    main()

"""``mobilenets quantize``: int8 through NNCF, checked against fp32 on real photos (scikit-image's and ours).

Agreement measured on this project's CPU (AVX2, no VNNI) for the embedded EfficientNet-Lite0: 85 % of 100 random
crops/flips of real photos keep their fp32 top-1 (97 % of those on which fp32 is more than 30 % confident); the
bounds below leave a margin for calibration-order and kernel differences.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenets import cli, create_model
from mobilenets.data import eval_transform

onnx = pytest.importorskip("onnx")
pytest.importorskip("nncf")
pytest.importorskip("openvino")
skdata = pytest.importorskip("skimage.data")

REPO = Path(__file__).resolve().parent.parent
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry", "colorwheel")


def photos() -> list[Image.Image]:
    out = [Image.fromarray(getattr(skdata, k)()).convert("RGB") for k in PHOTOS]
    return out + [Image.open(REPO / "examples" / f).convert("RGB") for f in ("chelsea.jpg", "coffee.jpg")]


def crops(n: int, seed: int) -> list[Image.Image]:
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


@pytest.fixture(scope="module")
def int8_lite0(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    root = tmp_path_factory.mktemp("quantize")
    cal = root / "calibration"
    cal.mkdir()
    for k, img in enumerate(crops(48, seed=1)):
        img.save(cal / f"{k:03d}.png")
    (cal / "notes.txt").write_text("not an image")  # skipped like predict skips it
    out = root / "lite0.int8.onnx"
    code = cli.main(["quantize", "efficientnet_lite0", "--pretrained", "efficientnet_lite0.ep_in1k",
                     "--calibration", str(cal), str(out)])
    assert code == 0
    return out, create_model("efficientnet_lite0", pretrained=True).eval()


def test_int8_agrees_with_fp32_on_real_photos(int8_lite0) -> None:
    from mobilenets.quantize import load_int8

    path, model = int8_lite0
    transform = eval_transform(model)
    x = torch.stack([transform(img) for img in crops(100, seed=0)])
    with torch.no_grad():
        ref = model(x)
    top = ref.argmax(1)
    confident = ref.softmax(1).max(1).values > 0.3
    for runtime in ("openvino", "onnxruntime"):
        logits = load_int8(path, runtime=runtime)(x)
        agree = logits.argmax(1) == top
        assert agree.float().mean() >= 0.75, runtime
        assert agree[confident].float().mean() >= 0.90, runtime
        assert not torch.equal(logits, ref)  # it is int8, not the fp32 graph


def test_int8_file_is_quantized_and_has_the_export_metadata(int8_lite0) -> None:
    from mobilenets.export import metadata

    path, model = int8_lite0
    proto = onnx.load(str(path))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    meta = {p.key: p.value for p in proto.metadata_props}
    expected = metadata(model)
    assert {k: meta[k] for k in expected} == expected
    info = json.loads(meta["quantization"])
    assert info["overflow_fix"] == "enable" and info["calibration_samples"] == 48
    assert not list(path.parent.glob(".*tmp"))  # the atomic write left no temporary file


def test_quantize_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code = cli.main(["quantize", "efficientnet_lite0", "--calibration", str(empty), str(tmp_path / "q.onnx")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "no readable images" in err
    code = cli.main(["quantize", "efficientnet_lite0", "--calibration", str(tmp_path / "missing"),
                     str(tmp_path / "q.onnx")])
    err = capsys.readouterr().err
    assert code == 1 and "not a directory" in err and err.count("\n") == 1
    assert not (tmp_path / "q.onnx").exists()

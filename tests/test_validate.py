"""mobilenets.evaluate and `mobilenets validate`: metrics against a hand computation, ImageNet WordNet-id folders
validated by the embedded pretrained Lite0 on real photos, the CLI's JSON, plot and one-line errors."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import randomize_bn
from digits import write_digits_folder
from PIL import Image

from mobilenets import create_model
from mobilenets.checkpoint import save_checkpoint
from mobilenets.cli import main
from mobilenets.data import eval_transform
from mobilenets.datasets import ImageFolderDataset, scan_image_folder
from mobilenets.evaluate import Metrics, evaluate, format_report, map_classes

ROOT = Path(__file__).resolve().parent.parent
TINY_CFG = {"input_size": (1, 32, 32), "crop_pct": 1.0, "interpolation": "bilinear", "mean": (0.5,), "std": (0.25,)}
DIGITS = [str(d) for d in range(10)]


def tiny_model(categories: list[str] | None = None) -> torch.nn.Module:
    torch.manual_seed(0)
    model = randomize_bn(create_model("mobilenet_v3_small", num_classes=10, in_chans=1, width_mult=0.35))
    model.pretrained_cfg = dict(TINY_CFG, num_classes=10, categories=categories or DIGITS)
    return model.eval()


@pytest.fixture(scope="module")
def digits_val(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_digits_folder(tmp_path_factory.mktemp("digits"), per_class=10)[1]  # 2 per class


def hand_metrics(model: torch.nn.Module, folder: Path, output_of: list[int]) -> dict:
    """Top-1/top-5/loss/confusion from the logits, one image at a time, with numpy."""
    scan = scan_image_folder(folder)
    transform = eval_transform(model)
    hits1 = hits5 = 0
    loss = 0.0
    k = len(scan.classes)
    confusion = np.zeros((k, k), dtype=np.int64)
    for path, label in scan.samples:
        with torch.no_grad():
            logits = model(transform(Image.open(path))[None]).double().numpy()[0]
        target = output_of[label]
        order = np.argsort(-logits, kind="stable")
        hits1 += order[0] == target
        hits5 += target in order[:5]
        loss += float(np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[target])
        confusion[label, output_of.index(int(order[0]))] += 1
    n = len(scan.samples)
    return dict(top1=100 * hits1 / n, top5=100 * hits5 / n, loss=loss / n, confusion=confusion, n=n)


def test_metrics_equal_a_hand_computation(digits_val):
    model = tiny_model()
    metrics = evaluate(model, digits_val, batch_size=7)
    want = hand_metrics(model, digits_val, list(range(10)))
    assert metrics.n == want["n"] == 20
    assert metrics.top1 == pytest.approx(want["top1"]) and metrics.top5 == pytest.approx(want["top5"])
    assert metrics.loss == pytest.approx(want["loss"], rel=1e-5)
    assert np.array_equal(metrics.confusion.numpy(), want["confusion"])
    assert 0 < want["top5"] < 100 and want["top1"] < want["top5"]  # the test can tell top-1 from top-5 (BN randomised)
    for i, name in enumerate(DIGITS):
        assert metrics.per_class[name] == pytest.approx(100 * want["confusion"][i, i] / 2)
        assert metrics.class_counts[name] == 2
    assert metrics.classes == metrics.columns == DIGITS and metrics.mapping == "the model's own classes"
    assert not model.training
    model.train()
    evaluate(model, digits_val)
    assert model.training  # mode restored
    doc = json.loads(json.dumps(metrics.to_dict()))
    assert doc["top1"] == metrics.top1 and doc["n"] == 20 and set(doc["per_class"]) == set(DIGITS)


def test_classes_matched_by_name_in_any_order(digits_val):
    shuffled = DIGITS[::-1]  # output i is digit 9 - i
    model = tiny_model(shuffled)
    metrics = evaluate(model, digits_val)
    want = hand_metrics(model, digits_val, [9 - d for d in range(10)])
    assert metrics.mapping == "by name"
    assert metrics.top1 == pytest.approx(want["top1"]) and metrics.top5 == pytest.approx(want["top5"])
    assert np.array_equal(metrics.confusion.numpy(), want["confusion"])


def test_datasets_loaders_and_class_mismatch(digits_val, tmp_path):
    model = tiny_model()
    scan = scan_image_folder(digits_val)
    from_folder = evaluate(model, digits_val)
    from_dataset = evaluate(model, ImageFolderDataset(scan), class_names=DIGITS, batch_size=3)
    tensors = [(eval_transform(model)(img), y) for img, y in ImageFolderDataset(scan)]
    loader = torch.utils.data.DataLoader(tensors, batch_size=4)
    from_loader = evaluate(model, loader)  # prepared tensors, labels = output indices
    for m in (from_dataset, from_loader):
        assert (m.top1, m.top5, m.n) == (from_folder.top1, from_folder.top5, from_folder.n)
        assert torch.equal(m.confusion, from_folder.confusion)
    assert from_loader.mapping == "labels are the model's output indices"
    with pytest.raises(ValueError, match=r"a label outside 0\.\.9"):
        evaluate(model, [(tensors[0][0], 12)])
    three = tmp_path / "three"
    for c in ("a", "b", "c"):
        shutil.copytree(digits_val / "1", three / c)
    with pytest.raises(ValueError, match=r"has 3 classes \(a, b, c\) but the model has 10 outputs \(0, 1, 2, 3, 4, "):
        evaluate(model, three)
    unnamed = tiny_model()
    unnamed.pretrained_cfg = dict(TINY_CFG, num_classes=10)
    with pytest.warns(UserWarning, match="matched by position"):
        map_classes([f"x{i}" for i in range(10)], tiny_model())
    assert map_classes([f"x{i}" for i in range(10)], unnamed)[1] == "by position"


# ---- an ImageNet-style folder of real photos, the embedded pretrained Lite0 ------------------------------------------

# (WordNet id, source, sure of top-1): espresso cups (0.96), the cameraman's tripod (0.95, a grey PNG), and
# Chelsea the tabby, whose top-1 among the three cat classes is ambiguous (Lite0 says Egyptian cat): top-5 only.
PHOTOS = [("n07920052", "examples/coffee.jpg"), ("n07920052", "skimage:coffee"), ("n04485082", "skimage:camera"),
          ("n02123045", "examples/chelsea.jpg")]


@pytest.fixture(scope="module")
def imagenet_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import skimage.data

    root = tmp_path_factory.mktemp("imagenet")
    for i, (wnid, source) in enumerate(PHOTOS):
        (root / wnid).mkdir(exist_ok=True)
        if source.startswith("skimage:"):
            Image.fromarray(getattr(skimage.data, source.split(":")[1])()).save(root / wnid / f"{i}.png")
        else:
            shutil.copy(ROOT / source, root / wnid / f"{i}.jpg")
    return root


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    return create_model("efficientnet_lite0", pretrained=True).eval()


def test_pretrained_lite0_on_wordnet_id_folders(imagenet_folder, lite0):
    metrics = evaluate(lite0, imagenet_folder, batch_size=2)
    assert metrics.mapping == "ImageNet WordNet ids mapped onto the model's 1000 ImageNet classes"
    assert metrics.classes == ["n02123045", "n04485082", "n07920052"]
    assert metrics.labels == ["tabby", "tripod", "espresso"]
    assert metrics.n == 4 and metrics.top5 == 100.0 and metrics.top1 == 75.0
    assert metrics.per_class == {"n02123045": 0.0, "n04485082": 100.0, "n07920052": 100.0}
    assert metrics.columns[-1] == "other"  # the cat's top-1 is a class outside the folder (Egyptian cat)
    assert metrics.confusion.tolist() == [[0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 2, 0]]
    report = format_report(metrics)
    assert "n07920052 espresso" in report and "top-1 75.00%  top-5 100.00%" in report


def test_validate_cli_json_plot_and_text(imagenet_folder, tmp_path, capsys):
    plot = tmp_path / "out" / "confusion.png"
    assert main(["validate", str(imagenet_folder), "--model", "efficientnet_lite0", "--pretrained", "--json",
                 "--plot", str(plot), "--batch-size", "3"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["top1"], doc["top5"], doc["n"]) == (75.0, 100.0, 4)
    assert doc["per_class"] == {"n02123045": 0.0, "n04485082": 100.0, "n07920052": 100.0}
    assert doc["model"] == "efficientnet_lite0" and doc["labels"] == ["tabby", "tripod", "espresso"]
    with Image.open(plot) as img:
        assert img.format == "PNG" and img.width > 100
    assert [p.name for p in plot.parent.iterdir()] == ["confusion.png"]  # no temporary file left

    assert main(["validate", str(imagenet_folder)]) == 0  # default: the embedded Lite0
    out = capsys.readouterr().out
    assert out.startswith("efficientnet_lite0 (weights ")
    assert "top-1 75.00%  top-5 100.00%" in out and "confusion matrix" in out and "other" in out


def test_validate_a_checkpoint_with_its_class_names(digits_val, tmp_path, capsys):
    model = tiny_model()
    path = save_checkpoint(model, tmp_path / "digits.safetensors")
    assert main(["validate", str(digits_val), "--checkpoint", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    want = evaluate(model, digits_val)
    assert (doc["top1"], doc["top5"], doc["n"]) == (want.top1, want.top5, 20)
    assert doc["confusion"] == want.confusion.tolist() and doc["checkpoint"] == str(path)


def test_validate_cli_one_line_errors(digits_val, imagenet_folder, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(digits_val, bad)
    (bad / "3" / "notes.txt").write_text("not an image")
    (bad / "empty").mkdir()
    cases = [
        (["validate", str(bad)], r"mobilenets: error: .*2 file\(s\) or folder\(s\) cannot be used: .*notes\.txt: "
                                 r"not an image file.*empty: class folder holds no image files"),
        (["validate", str(tmp_path / "missing")], r"mobilenets: error: .*missing: no such directory"),
        (["validate", str(digits_val)], r"mobilenets: error: .*val has 10 classes \(0, 1, 2, 3, 4, \.\.\. \(10 in "
                                        r"all\)\) but the model has 1000 outputs"),
        (["validate", str(imagenet_folder), "--checkpoint", str(tmp_path / "none.safetensors")],
         r"mobilenets: error: .*none\.safetensors"),
    ]
    for argv, pattern in cases:
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        assert re.search(pattern, err), err
    assert main(["validate", str(digits_val), "--checkpoint", "x", "--pretrained"]) == 2
    assert "mutually exclusive" in capsys.readouterr().err


def test_plot_needs_matplotlib(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    from mobilenets.evaluate import plot_confusion

    metrics = Metrics(top1=0, top5=0, n=1, loss=0.0, per_class={"a": 0.0}, confusion=torch.zeros(1, 1))
    with pytest.raises(ImportError, match=r'pip install "mobilenets\[train\]"'):
        plot_confusion(metrics, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


DISTRIBUTED_RANK = """
import json, os, sys
sys.path[:0] = [{tests!r}, {root!r}]
import torch
import torch.distributed as dist
from test_validate import tiny_model
from mobilenets.evaluate import evaluate

torch.set_num_threads(1)
dist.init_process_group("gloo")
metrics = evaluate(tiny_model(), {folder!r}, batch_size=3, distributed=True)
print(json.dumps(metrics.to_dict()))
dist.destroy_process_group()
"""


def test_distributed_counts_are_summed_over_ranks(digits_val, tmp_path):
    """Two gloo processes, each evaluating every other sample: the all-reduced metrics are the whole folder's."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "rank.py"
    script.write_text(DISTRIBUTED_RANK.format(tests=str(ROOT / "tests"), root=str(ROOT), folder=str(digits_val)))
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
    docs = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    want = evaluate(tiny_model(), digits_val).to_dict()
    for doc in docs:
        assert (doc["n"], doc["top1"], doc["top5"], doc["confusion"]) == (20, want["top1"], want["top5"],
                                                                          want["confusion"])
        assert doc["loss"] == pytest.approx(want["loss"], rel=1e-6)
    with pytest.raises(ValueError, match="initialised torch.distributed process group"):
        evaluate(tiny_model(), digits_val, distributed=True)


def test_fast_path_gives_the_eager_metrics(tmp_path):
    """``fast=True`` (fused, channels-last, traced: what `mobilenets validate` uses) counts as eager does, on
    enough real images to take the fast path."""
    from mobilenets.export import FAST_PATH_MIN_IMAGES

    folder = write_digits_folder(tmp_path, per_class=10, val_every=1)[1]  # every image in val: 100
    model = tiny_model()
    dataset = ImageFolderDataset(scan_image_folder(folder))
    assert len(dataset) >= FAST_PATH_MIN_IMAGES
    eager = evaluate(model, dataset, batch_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fast_or_eager warns when it falls back to eager
        fast = evaluate(model, dataset, batch_size=32, fast=True)
    assert (fast.top1, fast.top5, fast.n) == (eager.top1, eager.top5, eager.n)
    assert torch.equal(fast.confusion, eager.confusion)
    assert fast.loss == pytest.approx(eager.loss, rel=1e-4)
    compiled = evaluate(model, dataset, batch_size=48, compile_model=True)  # a smaller last batch: its own graph
    assert (compiled.top1, compiled.top5, compiled.n) == (eager.top1, eager.top5, eager.n)
    assert torch.equal(compiled.confusion, eager.confusion)

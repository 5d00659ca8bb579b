"""Eval preprocessing (``mobilenets.data``) and the ``python -m mobilenets predict`` command line.

No network: a guard refuses every non-loopback connection, and ``MOBILENETS_HOME`` points into tmp. Most tests use
a small random checkpoint; the default embedded EfficientNet-Lite0 weights run in-process once and in the one real
subprocess run.
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import pytest
import torch
from conftest import randomize_bn
from PIL import Image

import mobilenets
from mobilenets import cli
from mobilenets.data import EvalTransform, eval_transform, imagenet_categories, to_rgb

torchvision = pytest.importorskip("torchvision")
T = torchvision.transforms

REPO = Path(__file__).resolve().parent.parent
TEST_CFG = dict(model="mobilenet_v3_small_050", tag="test", resize=72, crop=64, interpolation="bicubic",
                mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5], num_classes=1000, categories="imagenet-1k")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the module, so the embedded default weights are converted once."""
    return tmp_path_factory.mktemp("mobilenets-home")


@pytest.fixture(autouse=True)
def offline(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOBILENETS_HOME", str(home))
    monkeypatch.delenv("MOBILENETS_DEBUG", raising=False)


def noise(mode: str, size: tuple[int, int], seed: int = 0) -> Image.Image:
    w, h = size
    rgb = Image.frombytes("RGB", size, random.Random(seed).randbytes(w * h * 3))
    return rgb if mode == "RGB" else rgb.convert(mode)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 1000-class MobileNetV3-Small 0.5 with a recorded pretrained_cfg (64 px) and a 10-class one without."""
    d = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    model = randomize_bn(mobilenets.create_model("mobilenet_v3_small_050"))
    with torch.no_grad():
        model.classifier.weight.normal_(0, 0.5)  # peaked, image-dependent probabilities
    paths = dict(imagenet=d / "v3s050.safetensors", ten=d / "v3s050_10.safetensors", gray=d / "gray.safetensors",
                 features=d / "features.safetensors", named=d / "named.safetensors")
    mobilenets.save_checkpoint(model, paths["imagenet"], pretrained_cfg=TEST_CFG)
    mobilenets.save_checkpoint(randomize_bn(mobilenets.create_model("mobilenet_v3_small_050", num_classes=10)),
                               paths["ten"])
    mobilenets.save_checkpoint(mobilenets.create_model("mobilenet_v3_small_050", in_chans=1), paths["gray"])
    mobilenets.save_checkpoint(mobilenets.create_model("mobilenet_v3_small_050", num_classes=0), paths["features"])
    broken = mobilenets.create_model("mobilenet_v3_small_050", num_classes=10)
    with torch.no_grad():
        broken.classifier.weight[0, 0] = float("nan")
    paths["nan"] = d / "nan.safetensors"
    mobilenets.save_checkpoint(broken, paths["nan"])
    mobilenets.save_checkpoint(randomize_bn(mobilenets.create_model("mobilenet_v3_small_050", num_classes=3)),
                               paths["named"], categories=["cat", "dog", "heron"])
    return paths


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One file per Pillow mode the command line must handle, of various sizes, plus unusable inputs."""
    d = tmp_path_factory.mktemp("images")
    out: dict[str, Path] = {}

    def save(name: str, img: Image.Image, **kwargs) -> None:
        out[name] = d / name
        img.save(out[name], **kwargs)

    save("rgb.jpg", noise("RGB", (320, 240)))
    save("gray.png", noise("L", (100, 300), 1))
    rgba = noise("RGBA", (257, 129), 2)
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    save("rgba.png", rgba)
    save("la.png", noise("LA", (64, 64), 3))
    save("palette.png", noise("P", (90, 70), 4))
    save("palette_trns.gif", noise("P", (90, 70), 5), transparency=0)
    i16 = Image.linear_gradient("L").resize((256, 200)).convert("I").point(lambda v: v * 257).convert("I;16")
    save("gray16.png", i16)
    save("int32.tif", Image.linear_gradient("L").resize((120, 80)).convert("I").point(lambda v: v * 200))
    save("cmyk.jpg", noise("CMYK", (80, 80), 6))
    save("bilevel.png", noise("1", (50, 40), 7))
    save("tiny.png", noise("RGB", (1, 1), 8))
    save("strip.png", noise("RGB", (3000, 2), 9))
    bad = dict(missing=d / "missing.png", directory=d / "a_directory", text=d / "notes.txt", empty=d / "empty.jpg",
               truncated=d / "truncated.png")
    bad["directory"].mkdir()
    bad["text"].write_text("not an image\n")
    bad["empty"].write_bytes(b"")
    bad["truncated"].write_bytes(out["gray.png"].read_bytes()[:200])
    return {**out, **bad}


GOOD = ("rgb.jpg", "gray.png", "rgba.png", "la.png", "palette.png", "palette_trns.gif", "gray16.png", "int32.tif",
        "cmyk.jpg", "bilevel.png", "tiny.png", "strip.png")
BAD = ("missing", "directory", "text", "empty", "truncated")


# ---------------------------------------------------------------------------------------------------- data


def test_imagenet_categories() -> None:
    names = imagenet_categories()
    assert len(names) == 1000 and len(set(names)) == 1000
    assert names[0] == "tench" and names[-1] == (REPO / "mobilenets" / "imagenet_classes.txt").read_text().split(
        "\n")[999].strip()
    names.clear()  # a fresh list each call: the cache cannot be mutated
    assert len(mobilenets.imagenet_categories()) == 1000


@pytest.mark.parametrize("size", [(320, 240), (240, 320), (500, 500), (100, 57), (17, 300), (223, 224)])
@pytest.mark.parametrize("interpolation, resize, crop, mean, std", [
    ("bilinear", 256, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ("bicubic", 232, 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    ("bicubic", 200, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # crop > resize: torchvision zero-pads
])
def test_matches_torchvision_on_rgb(size, interpolation, resize, crop, mean, std) -> None:
    img = noise("RGB", size, seed=size[0])
    ours = EvalTransform(resize, crop, interpolation, mean, std)(img)
    mode = getattr(T.InterpolationMode, interpolation.upper())
    ref = T.Compose([T.Resize(resize, interpolation=mode), T.CenterCrop(crop), T.ToTensor(), T.Normalize(mean, std)])
    expected = ref(img)
    assert ours.shape == expected.shape == (3, crop, crop) and ours.dtype == torch.float32
    assert (ours - expected).abs().max() <= 1e-6


def test_extreme_aspect_ratio_is_cheap_and_close() -> None:
    """A 2 x 40000 strip would be resized to 256 x 5.1M pixels first; we resize inside the crop window only."""
    img = noise("RGB", (40000, 2), 3)
    x = EvalTransform(256, 224)(img)
    assert x.shape == (3, 224, 224) and torch.isfinite(x).all()


def test_grayscale_and_opaque_alpha_equal_rgb() -> None:
    t = EvalTransform(80, 64, "bicubic", mean=(0.5,) * 3, std=(0.25,) * 3)
    gray = noise("L", (120, 90))
    assert torch.equal(t(gray), t(gray.convert("RGB")))
    x = t(gray)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    rgb = noise("RGB", (120, 90))
    assert torch.equal(t(rgb.convert("RGBA")), t(rgb))  # fully opaque: compositing changes nothing


def test_transparency_composites_on_white_or_is_dropped() -> None:
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    rgba.putpixel((0, 0), (200, 100, 50, 255))
    white = to_rgb(rgba)
    assert white.mode == "RGB" and white.getpixel((1, 1)) == (255, 255, 255)
    assert white.getpixel((0, 0)) == (200, 100, 50)
    assert to_rgb(rgba, background=(0, 128, 0)).getpixel((1, 1)) == (0, 128, 0)
    assert to_rgb(rgba, background=None).tobytes() == rgba.convert("RGB").tobytes()  # timm / torchvision behaviour
    half = to_rgb(Image.new("RGBA", (1, 1), (0, 0, 0, 128)))
    assert all(abs(c - 127) <= 1 for c in half.getpixel((0, 0)))
    pal = Image.new("P", (2, 1))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putpixel((1, 0), 1)
    pal.info["transparency"] = 1
    assert [to_rgb(pal).getpixel((x, 0)) for x in (0, 1)] == [(255, 0, 0), (255, 255, 255)]
    la = Image.new("LA", (1, 1), (40, 0))
    assert to_rgb(la).getpixel((0, 0)) == (255, 255, 255)


def test_high_bit_depth_is_rescaled_not_clipped() -> None:
    values = [0, 257, 32896, 65535, 1000]
    i16 = Image.new("I;16", (len(values), 1))
    for x, v in enumerate(values):
        i16.putpixel((x, 0), v)
    assert [to_rgb(i16).getpixel((x, 0))[0] for x in range(len(values))] == [0, 1, 128, 255, 4]
    assert i16.convert("L").getpixel((4, 0)) == 255  # what naive conversion does
    i32 = Image.new("I", (2, 1))
    i32.putpixel((1, 0), 65535)
    assert [to_rgb(i32).getpixel((x, 0)) for x in (0, 1)] == [(0, 0, 0), (255, 255, 255)]
    i8 = Image.new("I", (1, 1), 200)  # 8-bit values in a 32-bit container stay as they are
    assert to_rgb(i8).getpixel((0, 0)) == (200, 200, 200)
    wide = Image.new("I", (2, 1), -5)
    wide.putpixel((1, 0), 10**6)  # any other range is stretched
    assert [to_rgb(wide).getpixel((x, 0))[0] for x in (0, 1)] == [0, 255]
    f = Image.new("F", (2, 1), 0.5)
    f.putpixel((1, 0), 1.0)
    assert [to_rgb(f).getpixel((x, 0))[0] for x in (0, 1)] == [128, 255]
    x = EvalTransform(32, 32, mean=(0, 0, 0), std=(1, 1, 1))(Image.linear_gradient("L").convert("I").point(
        lambda v: v * 257).convert("I;16"))
    assert 0.3 < float(x.mean()) < 0.7  # a gradient, not a white image


def test_eval_transform_from_models_and_configs(checkpoints: dict[str, Path]) -> None:
    model = mobilenets.from_checkpoint(checkpoints["imagenet"])
    assert eval_transform(model) == EvalTransform(72, 64, "bicubic", (0.5,) * 3, (0.5,) * 3)
    plain = mobilenets.create_model("efficientnet_b1", num_classes=0)  # no pretrained_cfg: native 240 px
    t = eval_transform(plain)
    assert (t.resize, t.crop, t.interpolation, t.mean, t.std) == (274, 240, "bilinear", (0.485, 0.456, 0.406),
                                                                   (0.229, 0.224, 0.225))
    assert eval_transform("mobilenet_v2") == EvalTransform(256, 224)
    assert eval_transform({"input_size": (3, 300, 300), "crop_pct": 1.0}) == EvalTransform(300, 300)
    entry = mobilenets.get_pretrained_cfg("mobilenet_v2.tv2_in1k")  # a manifest entry: nested preprocess
    assert eval_transform(entry) == EvalTransform(232, 224, "bilinear")
    assert repr(t) == ("EvalTransform(resize=274, crop=240, interpolation='bilinear', mean=(0.485, 0.456, 0.406), "
                       "std=(0.229, 0.224, 0.225), background=(255, 255, 255))")
    assert t.input_size == (3, 240, 240)
    with pytest.raises(ValueError, match="interpolation"):
        EvalTransform(256, 224, "cubic")
    with pytest.raises(ValueError, match="crop"):
        EvalTransform(256, 0)
    with pytest.raises(ValueError, match="background"):
        EvalTransform(256, 224, background=(0, 0, 300))
    with pytest.raises(TypeError):
        eval_transform(torch.nn.Linear(2, 2))


# ---------------------------------------------------------------------------------------------------- CLI


def run_main(capsys: pytest.CaptureFixture, *argv: object) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_table_output(capsys, checkpoints, images) -> None:
    code, out, err = run_main(capsys, "predict", images["rgb.jpg"], images["gray16.png"], "--checkpoint",
                              checkpoints["imagenet"], "--topk", "3")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == (f"mobilenet_v3_small_050 (weights test from {checkpoints['imagenet']}; ImageNet-1k classes): "
                        "resize 72, crop 64 center, bicubic, RGB, mean [0.5, 0.5, 0.5], std [0.5, 0.5, 0.5]")
    assert lines[1] == f"{images['rgb.jpg']}:" and lines[5] == f"{images['gray16.png']}:"
    categories = imagenet_categories()
    for line in lines[2:5] + lines[6:9]:
        rank, percent, rest = line.split(maxsplit=2)
        label, index = rest.rsplit("  ", 1)
        assert categories[int(index.strip("[]"))] == label and percent.endswith("%")
    assert len(lines) == 9


def test_json_matches_direct_inference(capsys, checkpoints, images) -> None:
    paths = [images[n] for n in GOOD]
    code, out, err = run_main(capsys, "predict", *paths, "--checkpoint", checkpoints["imagenet"], "--json",
                              "--topk", "4", "--batch-size", "5")
    assert code == 0 and err == ""
    doc = json.loads(out)
    assert [d["image"] for d in doc] == [str(p) for p in paths]
    model = mobilenets.from_checkpoint(checkpoints["imagenet"]).eval()
    transform = eval_transform(model)
    with torch.no_grad():
        expected = model(torch.stack([transform(Image.open(p)) for p in paths])).softmax(1)
    categories = imagenet_categories()
    for d, probs in zip(doc, expected, strict=True):
        preds = d["predictions"]
        assert len(preds) == 4 and set(preds[0]) == {"index", "label", "probability"}
        assert [p["index"] for p in preds] == probs.topk(4).indices.tolist()  # eval mode, weights' preprocessing
        assert [p["probability"] for p in preds] == pytest.approx(probs.topk(4).values.tolist(), abs=1e-5)
        assert all(p["label"] == categories[p["index"]] for p in preds)


def assert_same_predictions(doc: list[dict], other: list[dict], abs: float) -> None:  # noqa: A002 - approx's name
    """Two ``predict --json`` documents: the same images, errors, classes, and probabilities to ``abs``."""
    assert [d["image"] for d in doc] == [d["image"] for d in other]
    for a, b in zip(doc, other, strict=True):
        assert ("error" in a) == ("error" in b)
        if "predictions" in a:
            assert [p["index"] for p in a["predictions"]] == [p["index"] for p in b["predictions"]]
            assert [p["probability"] for p in a["predictions"]] == pytest.approx(
                [p["probability"] for p in b["predictions"]], abs=abs)


def test_compile_flag_gives_the_eager_predictions(capsys, checkpoints, images) -> None:
    """``--compile``: torch.compile of the folded model, on a few images too (asked for), a smaller last batch."""
    paths = [images[n] for n in GOOD]
    docs = []
    for flags in ((), ("--compile",)):
        code, out, err = run_main(capsys, "predict", *paths, "--checkpoint", checkpoints["imagenet"], "--json",
                                  "--batch-size", "2", *flags)
        # inductor's C++ toolchain probe logs this line with a CUDA build of torch on a CPU-only machine
        assert code == 0 and [line for line in err.splitlines() if "No CUDA runtime is found" not in line] == []
        docs.append(json.loads(out))
    assert_same_predictions(*docs, abs=1e-4)


def test_batching_does_not_change_results(capsys, checkpoints, images, monkeypatch) -> None:
    loads = []
    real = cli.load_model
    monkeypatch.setattr(cli, "load_model", lambda *a: loads.append(a) or real(*a))
    paths = [images[n] for n in ("rgb.jpg", "missing", "gray.png", "rgba.png", "text", "cmyk.jpg")]
    docs = []
    for bs in ("1", "32"):
        code, out, _ = run_main(capsys, "predict", *paths, "--checkpoint", checkpoints["imagenet"], "--json",
                                "--batch-size", bs)
        assert code == 1
        docs.append(json.loads(out))
    assert len(loads) == 2  # one model load per call
    for doc in docs[1:]:
        assert_same_predictions(doc, docs[0], abs=1e-5)


def test_bad_images_are_reported_and_others_classified(capsys, checkpoints, images) -> None:
    argv = [images["rgb.jpg"], *(images[b] for b in BAD), images["palette.png"]]
    code, out, err = run_main(capsys, "predict", *argv, "--checkpoint", checkpoints["imagenet"], "--topk", "1")
    assert code == 1
    err_lines = err.splitlines()
    assert len(err_lines) == len(BAD)
    for line, name in zip(err_lines, BAD, strict=True):
        assert line.startswith("mobilenets: error: ") and str(images[name]) in line
    assert "no such file" in err_lines[0] and "is a directory with no image files" in err_lines[1]
    assert "not an image" in err_lines[2]
    assert f"{images['rgb.jpg']}:" in out.splitlines() and f"{images['palette.png']}:" in out.splitlines()

    code, out, err = run_main(capsys, "predict", images["text"], images["rgb.jpg"], "--json",
                              "--checkpoint", checkpoints["imagenet"])
    doc = json.loads(out)
    assert code == 1 and len(err.splitlines()) == 1
    assert doc[0] == {"image": str(images["text"]), "error": err.splitlines()[0].removeprefix("mobilenets: error: ")}
    assert len(doc[1]["predictions"]) == 5


def test_topk_bounds_and_labels_of_other_class_counts(capsys, checkpoints, images) -> None:
    ten = ("--checkpoint", checkpoints["ten"])
    code, out, _ = run_main(capsys, "predict", images["rgb.jpg"], *ten, "--topk", "10", "--json")
    preds = json.loads(out)[0]["predictions"]
    assert code == 0 and sorted(p["index"] for p in preds) == list(range(10))
    assert all(p["label"] == f"class {p['index']}" for p in preds)
    assert sum(p["probability"] for p in preds) == pytest.approx(1.0, abs=1e-5)
    assert [p["probability"] for p in preds] == sorted((p["probability"] for p in preds), reverse=True)
    for bad in ("11", "0", "-1", "two"):
        code, out, err = run_main(capsys, "predict", images["rgb.jpg"], *ten, "--topk", bad)
        assert code == 2 and out == "" and "--topk" in err and "Traceback" not in err
    code, _, _ = run_main(capsys, "predict", images["rgb.jpg"], "--checkpoint", checkpoints["imagenet"],
                          "--topk", "1000", "--json")
    assert code == 0


@pytest.mark.parametrize("argv, message", [
    (["--model", "mobilenet_v9"], "unknown model 'mobilenet_v9'"),
    (["--pretrained", "no_such_tag"], "unknown pretrained tag 'no_such_tag'"),
    (["--checkpoint", "TEXT"], "notes.txt: its safetensors header"),
    (["--checkpoint", "MISSING"], "does not exist"),
    (["--model", "mobilenet_v2", "--checkpoint", "CKPT"], "holds weights for 'mobilenet_v3_small_050'"),
    (["--device", "nonsense"], "nonsense"),
    (["--checkpoint", "FEATURES"], "no classifier"),
    (["--checkpoint", "NAN"], "NaN or infinite weights"),
    (["--model", "mobilenet_v2", "--pretrained", "nope"], "unknown pretrained tag 'nope' for mobilenet_v2"),
    (["--pretrained", "mobilenet_v2"], "--pretrained mobilenet_v2 names a model, not a tag: use --model mobilenet_v2"),
])
def test_model_errors_are_one_line(capsys, checkpoints, images, argv, message) -> None:
    subst = dict(TEXT=images["text"], MISSING=images["missing"], CKPT=checkpoints["imagenet"],
                 FEATURES=checkpoints["features"], NAN=checkpoints["nan"])
    argv = [subst.get(a, a) for a in argv]
    code, out, err = run_main(capsys, "predict", images["rgb.jpg"], *argv)
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("mobilenets: error: ") and message in err
    code, out, err = run_main(capsys, "predict", images["rgb.jpg"], images["missing"], *argv, "--json")
    assert code == 1 and len(err.splitlines()) == 1 and message in err  # --json: still one valid document
    doc = json.loads(out)
    assert [d["image"] for d in doc] == [str(images["rgb.jpg"]), str(images["missing"])]
    assert all(d["error"].startswith(f"{d['image']}: not classified: ") and message in d["error"] for d in doc)


def test_no_network_is_one_line(capsys, images, monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise urllib.error.URLError(OSError("network is unreachable"))

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    code, out, err = run_main(capsys, "predict", images["rgb.jpg"], "--model", "mobilenet_v3_small")
    assert code == 1 and out == "" and len(err.splitlines()) == 1 and "cannot download" in err


def test_usage_errors(capsys, checkpoints, images) -> None:
    code, _, err = run_main(capsys, "predict", images["rgb.jpg"], "--checkpoint", checkpoints["imagenet"],
                            "--pretrained", "tv_in1k")
    assert code == 2 and "mutually exclusive" in err
    assert run_main(capsys, "predict")[0] == 2  # no image
    assert run_main(capsys)[0] == 2  # no command
    code, out, _ = run_main(capsys, "predict", "--help")
    assert code == 0 and "--topk" in out and "--checkpoint" in out


def test_choose_weights_and_model_tag_selects_the_model(capsys, images, monkeypatch) -> None:
    assert cli.choose_weights(None, None) == (cli.DEFAULT_MODEL, True)
    assert cli.choose_weights(None, "mobilenet_v2.tv2_in1k") == ("mobilenet_v2", "mobilenet_v2.tv2_in1k")
    assert cli.choose_weights("mobilenet_v2", "tv2_in1k") == ("mobilenet_v2", "tv2_in1k")
    assert cli.choose_weights("mobilenet_v2", "mobilenet_v2.tv2_in1k") == ("mobilenet_v2", "mobilenet_v2.tv2_in1k")
    with pytest.raises(cli.UsageError, match="name different models; drop --model"):
        cli.choose_weights("efficientnet_b0", "mobilenet_v2.tv2_in1k")

    calls = []

    def record(name, **kwargs):
        calls.append((name, kwargs))
        raise RuntimeError("stop here")

    monkeypatch.setattr(cli, "create_model", record)
    code, out, err = run_main(capsys, "predict", images["rgb.jpg"], "--pretrained", "mobilenet_v2.tv2_in1k")
    assert code == 1 and calls == [("mobilenet_v2", {"pretrained": "mobilenet_v2.tv2_in1k"})]
    assert err == "mobilenets: error: stop here\n"
    code, _, err = run_main(capsys, "predict", images["rgb.jpg"], "--model", "efficientnet_b0", "--pretrained",
                            "mobilenet_v2.tv2_in1k")
    assert code == 2 and "name different models" in err and len(calls) == 1


def test_pretrained_model_tag_alone_real_weights(capsys) -> None:
    """``--pretrained model.tag`` without ``--model``: the embedded (offline) EfficientNet-Lite0 weights."""
    cat = REPO / "examples" / "chelsea.jpg"
    code, out, err = run_main(capsys, "predict", cat, "--pretrained", "efficientnet_lite0.ep_in1k", "--topk", "1")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith("efficientnet_lite0 (weights ep_in1k; ImageNet-1k classes): resize 256, crop 224 ")
    assert int(lines[2].rsplit("[", 1)[1].rstrip("]")) in CATS


def test_checkpoint_class_names_grey_model_and_header(capsys, checkpoints, images) -> None:
    code, out, err = run_main(capsys, "predict", images["rgb.jpg"], "--checkpoint", checkpoints["named"], "--json",
                              "--topk", "3")
    assert code == 0 and err == ""
    assert sorted(p["label"] for p in json.loads(out)[0]["predictions"]) == ["cat", "dog", "heron"]
    code, out, _ = run_main(capsys, "predict", images["rgb.jpg"], "--checkpoint", checkpoints["named"], "--topk", "3")
    assert out.splitlines()[0].startswith(f"mobilenet_v3_small_050 (checkpoint {checkpoints['named']}; 3 classes "
                                          "named by the weights): resize 256, crop 224 center, bilinear, RGB, mean ")
    # in_chans=1: the transform gives one (grey) channel, and predict feeds it
    code, out, err = run_main(capsys, "predict", images["rgb.jpg"], images["gray16.png"], "--checkpoint",
                              checkpoints["gray"], "--json", "--topk", "2")
    assert code == 0 and err == ""
    assert [len(d["predictions"]) for d in json.loads(out)] == [2, 2]
    code, out, _ = run_main(capsys, "predict", images["rgb.jpg"], "--checkpoint", checkpoints["gray"])
    assert ", grey, mean [" in out.splitlines()[0]


def _model_with(monkeypatch, hook=None, categories=None) -> torch.nn.Module:
    torch.manual_seed(0)
    model = randomize_bn(mobilenets.create_model("mobilenet_v3_small_050", num_classes=3))
    model.pretrained_cfg = dict(num_classes=3, input_size=[3, 64, 64], resize=64, crop=64,
                                categories=categories or ["cat", "dog", "heron"])
    if hook is not None:
        model.classifier.register_forward_hook(hook)
    monkeypatch.setattr(cli, "load_model", lambda *a: model)
    return model


def test_non_finite_outputs_are_errors_never_nan_percent(capsys, images, monkeypatch) -> None:
    """NaN logits for one image: an error for that image (never ``nan%``); the others are classified."""
    _model_with(monkeypatch, hook=lambda m, i, o: o.index_fill(0, torch.tensor([0]), float("nan")))
    paths = [images["rgb.jpg"], images["gray.png"]]
    code, out, err = run_main(capsys, "predict", *paths, "--topk", "3")
    assert code == 1 and "nan" not in out.lower()
    assert err.splitlines() == [f"mobilenets: error: {paths[0]}: the model's output is not finite (NaN or infinity) "
                                "for this image; its weights may be damaged"]
    assert f"{paths[1]}:" in out.splitlines() and f"{paths[0]}:" not in out.splitlines()
    code, out, err = run_main(capsys, "predict", *paths, "--json", "--topk", "3")
    doc = json.loads(out)  # valid JSON (allow_nan=False would raise rather than write NaN)
    assert code == 1 and "NaN" not in out.replace("(NaN or infinity)", "")
    assert "error" in doc[0] and len(doc[1]["predictions"]) == 3

    _model_with(monkeypatch, hook=lambda m, i, o: torch.full_like(o, float("inf")))
    code, out, err = run_main(capsys, "predict", *paths, "--json", "--topk", "3")
    assert code == 1 and [set(d) for d in json.loads(out)] == [{"image", "error"}] * 2


def test_inference_failure_still_gives_one_json_document(capsys, images, monkeypatch) -> None:
    def boom(m, i, o):
        raise RuntimeError("device on fire")

    _model_with(monkeypatch, hook=boom)
    paths = [images["rgb.jpg"], images["missing"], images["gray.png"]]
    code, out, err = run_main(capsys, "predict", *paths, "--json", "--batch-size", "1", "--topk", "3")
    assert code == 1 and err.splitlines()[-1] == "mobilenets: error: inference failed: device on fire"
    doc = json.loads(out)
    assert [d["image"] for d in doc] == [str(p) for p in paths] and all("error" in d for d in doc)


def test_control_characters_are_escaped(capsys, tmp_path, images, monkeypatch) -> None:
    evil = tmp_path / "red\x1b[31m\nfake: 99.00%  tabby  [281]\u202e.png"
    evil.write_bytes(images["rgb.jpg"].read_bytes())
    _model_with(monkeypatch, categories=["\x1b]0;title\x07cat", "dog\r\nfake", "heron"])
    code, out, err = run_main(capsys, "predict", evil, tmp_path / "gone\x1b[2J.png", "--topk", "3")
    assert code == 1
    assert "\x1b" not in out + err and "\u202e" not in out + err and "\r" not in out + err
    lines = out.splitlines()
    assert len(lines) == 5 and lines[1] == "{}:".format(str(evil).replace("\x1b", "\\x1b").replace("\n", "\\n")
                                                       .replace("\u202e", "\\u202e"))
    assert {line.split(maxsplit=2)[2].rsplit("  ", 1)[0] for line in lines[2:]} == {
        "\\x1b]0;title\\x07cat", "dog\\r\\nfake", "heron"}
    assert err == f"mobilenets: error: {tmp_path}/gone\\x1b[2J.png: no such file\n"
    code, out, _ = run_main(capsys, "predict", evil, "--json", "--topk", "3")
    doc = json.loads(out)  # JSON escapes by itself, and gives the names back exactly
    assert doc[0]["image"] == str(evil) and "\x1b" not in out
    assert {p["label"] for p in doc[0]["predictions"]} == {"\x1b]0;title\x07cat", "dog\r\nfake", "heron"}
    assert cli.escape("plain ünïcode/名前.png") == "plain ünïcode/名前.png"
    assert cli.escape("a\tb\x7f\x9b\u2028") == "a\\tb\\x7f\\x9b\\u2028"
    assert cli.escape(os.fsdecode(b"bad\xffname")) == "bad\\xffname"


def test_directories_expand_to_sorted_image_files(capsys, tmp_path, checkpoints, images) -> None:
    d = tmp_path / "photos"
    (d / "sub").mkdir(parents=True)
    (d / ".cache").mkdir()
    for name in ("b.png", "a.JPG", ".hidden.png", "sub/c.gif", ".cache/d.png"):
        Image.open(images["rgb.jpg"]).save(d / name, format={".gif": "GIF", ".png": "PNG"}.get(Path(name).suffix,
                                                                                                  "JPEG"))
    (d / "notes.txt").write_text("not an image")
    (d / "broken.png").symlink_to(tmp_path / "nowhere.png")
    if hasattr(os, "mkfifo"):
        os.mkfifo(d / "pipe.png")  # not a regular file: never opened
    ckpt = ("--checkpoint", checkpoints["imagenet"], "--json", "--topk", "1")
    code, out, err = run_main(capsys, "predict", d, *ckpt)
    assert code == 0 and err == ""
    assert [x["image"] for x in json.loads(out)] == [str(d / "a.JPG"), str(d / "b.png")]
    code, out, err = run_main(capsys, "predict", d, images["rgb.jpg"], "-r", *ckpt)
    assert code == 0 and err == ""
    assert [x["image"] for x in json.loads(out)] == [str(d / "a.JPG"), str(d / "b.png"), str(d / "sub" / "c.gif"),
                                                      str(images["rgb.jpg"])]
    empty = tmp_path / "empty"
    (empty / "nested").mkdir(parents=True)
    code, out, err = run_main(capsys, "predict", empty, images["rgb.jpg"], "--checkpoint", checkpoints["imagenet"])
    assert code == 1
    assert err == (f"mobilenets: error: {empty}: is a directory with no image files (use --recursive to search its "
                   "subdirectories)\n")


def _png(path: Path, width: int, height: int, bit_depth: int = 16, color_type: int = 0) -> Path:
    """A valid PNG of ``width`` x ``height`` black pixels, written row by row: tiny on disk whatever its size."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    row = bytes(1 + width * channels * bit_depth // 8)
    z = zlib.compressobj(9)
    body = b"".join(z.compress(row) for _ in range(height)) + z.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def test_image_limits_per_mode(capsys, tmp_path, checkpoints, images, monkeypatch) -> None:
    gray16 = _png(tmp_path / "gray16.png", 1000, 1000)
    gray8 = _png(tmp_path / "gray8.png", 1000, 1000, bit_depth=8)
    assert Image.open(gray16).mode == "I;16" and Image.open(gray8).mode == "L"
    ckpt = ("--checkpoint", checkpoints["imagenet"], "--topk", "1")
    monkeypatch.setenv("MOBILENETS_MAX_IMAGE_MB", "8")  # 1 M pixels: 7.6 MiB as 8-bit, 38 MiB from 16-bit
    code, out, err = run_main(capsys, "predict", gray16, gray8, *ckpt)
    assert code == 1 and f"{gray8}:" in out.splitlines()
    assert err == (f"mobilenets: error: {gray16}: image too large to decode: a 1000x1000 I;16 image needs about "
                   "38.1 MiB, more than the limit of 8 MiB (set MOBILENETS_MAX_IMAGE_MB to raise it)\n")
    monkeypatch.delenv("MOBILENETS_MAX_IMAGE_MB")
    monkeypatch.setenv("MOBILENETS_MAX_IMAGE_PIXELS", "76799")
    code, out, err = run_main(capsys, "predict", images["rgb.jpg"], images["tiny.png"], *ckpt)
    assert code == 1 and f"{images['tiny.png']}:" in out.splitlines()
    assert err == (f"mobilenets: error: {images['rgb.jpg']}: image too large: 320x240 is 76,800 pixels, more than "
                   "the limit of 76,799 (set MOBILENETS_MAX_IMAGE_PIXELS to raise it)\n")
    monkeypatch.setenv("MOBILENETS_MAX_IMAGE_PIXELS", "lots")
    code, out, err = run_main(capsys, "predict", images["rgb.jpg"], *ckpt)
    assert code == 1 and out == "" and err.startswith("mobilenets: error: MOBILENETS_MAX_IMAGE_PIXELS must be a "
                                                      "positive integer, got 'lots'")
    assert cli.ImageLimits.from_env({}) == cli.ImageLimits(1 << 26, 1024 << 20)


def test_decode_budget_is_shared_between_threads() -> None:
    import threading
    import time

    from mobilenets.images import DecodeBudget

    budget, held, peak, lock = DecodeBudget(100), [0], [0], threading.Lock()

    def work(n: int) -> None:
        with budget.reserve(n):  # more than the capacity: waits until it is all free, then takes all of it
            n = min(n, budget.capacity)
            with lock:
                held[0] += n
                peak[0] = max(peak[0], held[0])
            time.sleep(0.01)
            with lock:
                held[0] -= n

    threads = [threading.Thread(target=work, args=(n,)) for n in (60, 60, 30, 100, 10, 250)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads) and 60 <= peak[0] <= 100 and held[0] == 0


def test_devices_are_refused(capsys, checkpoints) -> None:
    if not os.path.exists("/dev/null"):
        pytest.skip("no /dev/null")
    code, _, err = run_main(capsys, "predict", "/dev/null", "--checkpoint", checkpoints["imagenet"])
    assert code == 1
    assert err == ("mobilenets: error: /dev/null: is a character device, not an image file; only regular files "
                   "are read\n")


def _run_measured(home: Path, *argv: object, env: dict[str, str] | None = None,
                  timeout: float = 180) -> tuple[subprocess.CompletedProcess, float, int]:
    """Run the CLI in a subprocess; returns the process, the seconds ``main`` took and its peak memory (bytes)."""
    # VmHWM is this process's own peak (kB); ru_maxrss would carry over pytest's peak across fork + exec on Linux.
    driver = ("import sys, time; from mobilenets.cli import main; t = time.perf_counter(); "
              "rc = main(sys.argv[1:]); sys.stdout.flush(); "
              "hwm = next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:')); "
              "sys.stderr.write(f'@@ {time.perf_counter() - t} {hwm}\\n'); sys.exit(rc)")
    full_env = {**os.environ, "MOBILENETS_HOME": str(home), "PYTHONPATH": str(REPO), **(env or {})}
    full_env.pop("MOBILENETS_DEBUG", None)
    proc = subprocess.run([sys.executable, "-c", driver, *map(str, argv)], capture_output=True, text=True,
                          env=full_env, timeout=timeout)
    *lines, last = proc.stderr.splitlines()
    seconds, maxrss = last.split()[1:]
    proc.stderr = "".join(f"{line}\n" for line in lines)
    return proc, float(seconds), int(maxrss) * 1024


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_is_refused_without_blocking(home, tmp_path, checkpoints, images) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)  # nobody ever writes: reading it would block forever
    proc, seconds, _ = _run_measured(home, "predict", fifo, images["rgb.jpg"], "--checkpoint", checkpoints["imagenet"],
                                     "--topk", "1", timeout=120)
    assert proc.returncode == 1 and seconds < 60
    assert proc.stderr == (f"mobilenets: error: {fifo}: is a FIFO (named pipe), not an image file; only regular "
                           "files are read\n")
    assert f"{images['rgb.jpg']}:" in proc.stdout.splitlines()


def test_huge_16_bit_png_is_refused_in_bounded_time_and_memory(home, tmp_path, checkpoints, images) -> None:
    """13000 x 13000 16-bit grey, ~330 KB on disk: took 6 GB; now refused from its header, in one line."""
    bomb = _png(tmp_path / "bomb.png", 13000, 13000)
    assert bomb.stat().st_size < 400_000
    proc, seconds, peak = _run_measured(home, "predict", bomb, images["gray16.png"], "--checkpoint",
                                        checkpoints["imagenet"], "--topk", "1")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr == (f"mobilenets: error: {bomb}: image too large: 13000x13000 is 169,000,000 pixels, more "
                           "than the limit of 67,108,864 (set MOBILENETS_MAX_IMAGE_PIXELS to raise it)\n")
    assert f"{images['gray16.png']}:" in proc.stdout.splitlines()
    assert seconds < 60 and peak < 1.5 * 2**30, (seconds, peak)  # torch and the model: ~0.5 GB
    # with the pixel limit raised, the memory limit (default 1 GiB) refuses it: 16-bit pixels cost more
    proc, seconds, peak = _run_measured(home, "predict", bomb, "--checkpoint", checkpoints["imagenet"],
                                        env={"MOBILENETS_MAX_IMAGE_PIXELS": str(10**9)})
    assert proc.returncode == 1 and proc.stderr.startswith(f"mobilenets: error: {bomb}: image too large to decode: "
                                                           "a 13000x13000 I;16 image needs about 6,446.8 MiB")
    assert len(proc.stderr.splitlines()) == 1 and seconds < 60 and peak < 1.5 * 2**30, (seconds, peak)


CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, set[int]]]:
    """The repository's CC0 example photos, as they are and converted to other modes, with their expected classes."""
    d = tmp_path_factory.mktemp("photos")
    cat, coffee = REPO / "examples" / "chelsea.jpg", REPO / "examples" / "coffee.jpg"
    rgba = Image.open(cat).convert("RGBA")
    rgba.paste((0, 0, 0, 0), (0, 0, rgba.width, 20))  # a transparent band
    rgba.save(d / "chelsea_rgba.png")
    Image.open(cat).convert("P", palette=Image.Palette.ADAPTIVE).save(d / "chelsea_palette.png")
    Image.open(coffee).convert("L").convert("I").point(lambda v: v * 257).convert("I;16").save(d / "coffee16.png")
    return {"chelsea.jpg": (cat, CATS), "coffee.jpg": (coffee, {ESPRESSO}), "rgba": (d / "chelsea_rgba.png", CATS),
            "palette": (d / "chelsea_palette.png", CATS), "gray16": (d / "coffee16.png", {ESPRESSO})}


def test_default_embedded_model_on_photos(capsys, photos) -> None:
    """No --model/--pretrained: the embedded EfficientNet-Lite0 weights, offline, with their own preprocessing."""
    paths = [p for p, _ in photos.values()]
    code, out, err = run_main(capsys, "predict", *paths, "--json", "--topk", "3")
    assert code == 0 and err == ""
    doc = json.loads(out)
    for d, (_, expected) in zip(doc, photos.values(), strict=True):
        preds = d["predictions"]
        assert len(preds) == 3 and preds[0]["index"] in expected, (d["image"], preds)
        assert preds[0]["label"] == imagenet_categories()[preds[0]["index"]]


def test_subprocess_every_mode_and_bad_inputs(home, images, photos) -> None:
    """The real command: default embedded weights, every image mode, and each kind of unusable input."""
    good = [images[n] for n in GOOD] + [photos["chelsea.jpg"][0]]
    bad = [images[n] for n in ("missing", "directory", "text")]
    env = {**os.environ, "MOBILENETS_HOME": str(home), "PYTHONPATH": str(REPO)}
    env.pop("MOBILENETS_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "mobilenets", "predict", *map(str, good[:6]), *map(str, bad),
                           *map(str, good[6:]), "--topk", "2"],
                          capture_output=True, text=True, env=env, cwd=images["rgb.jpg"].parent, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    err_lines = proc.stderr.splitlines()
    assert len(err_lines) == len(bad)
    for line, path in zip(err_lines, bad, strict=True):
        assert line.startswith("mobilenets: error: ") and str(path) in line
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("efficientnet_lite0 (weights ep_in1k; ImageNet-1k classes): resize 256, crop 224 ")
    for path in good:
        i = lines.index(f"{path}:")
        assert [line.split()[0] for line in lines[i + 1:i + 3]] == ["1.", "2."]
    assert len(lines) == 1 + 3 * len(good)
    assert lines[-2].endswith(("tabby  [281]", "tiger cat  [282]", "Egyptian cat  [285]"))  # chelsea.jpg

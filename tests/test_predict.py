"""Eval preprocessing (``mobilenets.data``) and the ``python -m mobilenets predict`` command line.

No network: a guard refuses every non-loopback connection, and ``MOBILENETS_HOME`` points into tmp. Most tests use
a small random checkpoint; the default embedded EfficientNet-Lite0 weights run in-process once and in the one real
subprocess run.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import urllib.error
import urllib.request
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
                 features=d / "features.safetensors")
    mobilenets.save_checkpoint(model, paths["imagenet"], pretrained_cfg=TEST_CFG)
    mobilenets.save_checkpoint(randomize_bn(mobilenets.create_model("mobilenet_v3_small_050", num_classes=10)),
                               paths["ten"])
    mobilenets.save_checkpoint(mobilenets.create_model("mobilenet_v3_small_050", in_chans=1), paths["gray"])
    mobilenets.save_checkpoint(mobilenets.create_model("mobilenet_v3_small_050", num_classes=0), paths["features"])
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
    assert lines[0].startswith("mobilenet_v3_small_050 (weights test from ")
    assert lines[0].endswith("resize 72, crop 64, bicubic")
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
        assert [d["image"] for d in doc] == [d["image"] for d in docs[0]]
        for a, b in zip(doc, docs[0], strict=True):
            assert ("error" in a) == ("error" in b)
            if "predictions" in a:
                assert [p["index"] for p in a["predictions"]] == [p["index"] for p in b["predictions"]]
                assert [p["probability"] for p in a["predictions"]] == pytest.approx(
                    [p["probability"] for p in b["predictions"]], abs=1e-5)


def test_bad_images_are_reported_and_others_classified(capsys, checkpoints, images) -> None:
    argv = [images["rgb.jpg"], *(images[b] for b in BAD), images["palette.png"]]
    code, out, err = run_main(capsys, "predict", *argv, "--checkpoint", checkpoints["imagenet"], "--topk", "1")
    assert code == 1
    err_lines = err.splitlines()
    assert len(err_lines) == len(BAD)
    for line, name in zip(err_lines, BAD, strict=True):
        assert line.startswith("mobilenets: error: ") and str(images[name]) in line
    assert "no such file" in err_lines[0] and "directory" in err_lines[1] and "not an image" in err_lines[2]
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
    (["--checkpoint", "TEXT"], "not a readable safetensors file"),
    (["--checkpoint", "MISSING"], "does not exist"),
    (["--model", "mobilenet_v2", "--checkpoint", "CKPT"], "holds weights for 'mobilenet_v3_small_050'"),
    (["--device", "nonsense"], "nonsense"),
    (["--checkpoint", "GRAY"], "takes 1 input channels"),
    (["--checkpoint", "FEATURES"], "no classifier"),
])
def test_model_errors_are_one_line(capsys, checkpoints, images, argv, message) -> None:
    subst = dict(TEXT=images["text"], MISSING=images["missing"], CKPT=checkpoints["imagenet"], GRAY=checkpoints["gray"],
                 FEATURES=checkpoints["features"])
    code, out, err = run_main(capsys, "predict", images["rgb.jpg"], *(subst.get(a, a) for a in argv))
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("mobilenets: error: ") and message in err


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
    assert lines[0].startswith("efficientnet_lite0 (weights ep_in1k)")
    for path in good:
        i = lines.index(f"{path}:")
        assert [line.split()[0] for line in lines[i + 1:i + 3]] == ["1.", "2."]
    assert len(lines) == 1 + 3 * len(good)
    assert lines[-2].endswith(("tabby  [281]", "tiger cat  [282]", "Egyptian cat  [285]"))  # chelsea.jpg

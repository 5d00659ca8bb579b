"""Parity with timm: convert randomly initialised timm models and compare float64 logits.

Every ``timm:`` source is built with ``timm.create_model(name, pretrained=False)`` (no download), its BatchNorm
statistics randomised, converted with ``convert_state_dict`` (the CLI's path) and run side by side at 128x128.
"""

from __future__ import annotations

import re

import pytest
import torch
from conftest import PARITY_SIZE, assert_converts_exactly, randomize_bn, relative_error

from mobilenets.checkpoint import from_checkpoint
from mobilenets.convert import ConversionError, convert_file, convert_state_dict, get_source, supported_sources
from mobilenets.model import MobileNet

timm = pytest.importorskip("timm")

SOURCES = [s for s in supported_sources() if s.startswith("timm:")]

# The timm models we convert, as patterns over timm.list_models(): a new timm model in these families makes
# test_every_timm_model_is_supported fail instead of going silently unsupported.
TIMM_PATTERNS = (
    r"mobilenetv1_.*",
    r"mobilenetv2_.*",
    r"mobilenetv3_(large|small)_.*",
    r"tf_mobilenetv3_.*",
    r"(tf_)?efficientnet_b\d",
    r"(tf_)?efficientnet_lite\d",
    r"efficientnetv2_(?!rw_).*",
    r"tf_efficientnetv2_.*",
    r"mobilenetv4_(conv|hybrid)_(small|medium|large)(_\d{3})?",
    r"mobilenetv4_conv_(aa|blur)_(medium|large)",
)

# Conversions that also go through the files: timm weights -> convert_file -> .safetensors -> from_checkpoint.
ROUND_TRIP = ("timm:mobilenetv1_100h", "timm:mobilenetv3_small_050", "timm:tf_efficientnet_lite0",
              "timm:tf_efficientnetv2_b1", "timm:mobilenetv4_hybrid_medium_075",
              "timm:mobilenetv4_conv_blur_medium")


def _timm_model(source: str) -> torch.nn.Module:
    """A timm model with random BatchNorm statistics, and random layer scales (MobileNetV4-Hybrid: timm starts
    them at 1e-5, which would hide a wrong attention or residual branch from the comparison)."""
    torch.manual_seed(0)
    model = randomize_bn(timm.create_model(source.split(":")[1], pretrained=False)).eval()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layer_scale.gamma"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
    return model


def _input() -> torch.Tensor:
    return torch.randn(1, 3, PARITY_SIZE, PARITY_SIZE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def test_every_timm_model_is_supported() -> None:
    expected = {n for n in timm.list_models() if any(re.fullmatch(p, n) for p in TIMM_PATTERNS)}
    assert set(timm.list_models("mobilenetv4_*")) <= expected  # issue 7: every MobileNetV4 timm registers
    assert {s.split(":")[1] for s in SOURCES} == expected
    unmatched = [p for p in TIMM_PATTERNS if not any(re.fullmatch(p, n) for n in timm.list_models())]
    assert not unmatched, f"patterns that match no timm model (renamed in timm?): {unmatched}"


@pytest.mark.parametrize("source", SOURCES)
def test_parity(source: str) -> None:
    ours = assert_converts_exactly(_timm_model(source).double(), source, _input())
    assert ours.config.name == get_source(source).name


@pytest.mark.parametrize("source", ROUND_TRIP)
def test_file_round_trip(source: str, tmp_path) -> None:
    from safetensors.torch import save_file

    ref = _timm_model(source)
    src = tmp_path / "timm.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(src))
    converted = convert_file(src, tmp_path / "ours.safetensors", source)
    loaded = from_checkpoint(tmp_path / "ours.safetensors").eval()
    assert loaded.config == converted.config
    assert loaded.config.options.to_dict() == get_source(source).options
    x = _input()
    with torch.no_grad():
        expected, actual = ref.double()(x), loaded.double()(x)
    assert relative_error(expected, actual) < 1e-9


@pytest.mark.parametrize(("name", "down", "layer"), [("mobilenetv4_conv_aa_medium", "avg", "AvgPool2d"),
                                                     ("mobilenetv4_conv_blur_medium", "blur", "BlurPool")])
def test_anti_aliased_downsampling_matches_timm(name: str, down: str, layer: str) -> None:
    """timm's ``aa`` layers and ours sit on the same convs (stride moved off the conv), none in the state dict."""
    ours = get_source(f"timm:{name}")
    assert ours.options["downsample"] == down
    ref = timm.create_model(name, pretrained=False)
    model = MobileNet(convert_state_dict(ref.state_dict(), f"timm:{name}")[0])
    theirs = sorted(n.replace("blocks.", "").removesuffix(".aa") for n, m in ref.named_modules()
                    if n.endswith(".aa") and not isinstance(m, torch.nn.Identity))
    mine = [n for n, m in model.named_modules() if n.endswith(".aa") and type(m).__name__ == layer]
    assert len(mine) == len(theirs) == 4  # the strided blocks of Conv-M after the stem
    assert model.stem.conv.stride == (2, 2) and all(model.get_submodule(n[:-3]).conv.stride == (1, 1) for n in mine)
    assert not any(k.endswith(("filt", ".aa")) for k in model.state_dict())


@pytest.fixture(scope="module")
def small_state() -> dict[str, torch.Tensor]:
    return _timm_model("timm:mobilenetv3_small_050").state_dict()


def test_missing_tensor_is_named(small_state: dict[str, torch.Tensor]) -> None:
    state = dict(small_state)
    del state["blocks.2.1.conv_dw.weight"]
    with pytest.raises(ConversionError, match=r"missing in source \(1\): blocks\.2\.1\.conv_dw\.weight"):
        convert_state_dict(state, "timm:mobilenetv3_small_050")


def test_extra_tensor_is_named(small_state: dict[str, torch.Tensor]) -> None:
    state = dict(small_state, **{"blocks.2.1.extra.weight": torch.zeros(3)})
    with pytest.raises(ConversionError, match=r"unexpected in source \(1\): blocks\.2\.1\.extra\.weight"):
        convert_state_dict(state, "timm:mobilenetv3_small_050")


@pytest.mark.parametrize("key, change", [
    ("blocks.2.1.bn2.running_var", lambda t: t[:-1]),  # one channel short
    ("blocks.2.1.conv_pwl.weight", lambda t: t.transpose(0, 1).contiguous()),  # same size, transposed 1x1 conv
    ("conv_head.weight", lambda t: t.flatten(1).t().contiguous()),  # transposed conv_head -> pre_logits.fc
])
def test_misshaped_tensor_is_named(small_state: dict[str, torch.Tensor], key: str, change) -> None:
    state = dict(small_state, **{key: change(small_state[key])})
    with pytest.raises(ConversionError, match=rf"mis-shaped \(1\): {re.escape(key)} "):
        convert_state_dict(state, "timm:mobilenetv3_small_050")


def test_wrong_family_is_refused() -> None:
    state = _timm_model("timm:mobilenetv2_100").state_dict()
    with pytest.raises(ConversionError, match="does not match the architecture"):
        convert_state_dict(state, "timm:mobilenetv2_140")


def test_converters_are_one_typed_registry() -> None:
    from mobilenets.convert import CONVERTERS, Converter

    assert set(CONVERTERS) == {"torchvision", "timm", "efficientnet_pytorch", "keras"}
    assert all(isinstance(c, Converter) and c.library == lib for lib, c in CONVERTERS.items())
    assert supported_sources() == sorted(f"{lib}:{m}" for lib, c in CONVERTERS.items() for m in c.sources)
    with pytest.raises(ConversionError, match="unknown library 'keras2'"):
        get_source("keras2:mobilenet")


def test_fills_and_set_aside_keys_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A declared fill stands for a missing source tensor and a set-aside key must be present: both are counted by
    the same strict check as the pairs (Keras' BatchNorm counts and input Normalization use them)."""
    from mobilenets import create_model
    from mobilenets.convert import CONVERTERS, Converter, KeyMap

    ours = create_model("mobilenet_v3_small", num_classes=10).state_dict()

    def key_map(config, model, fill_unknown: bool = False) -> KeyMap:
        km = KeyMap()
        for k in ours:
            if k.endswith("num_batches_tracked"):
                km.fill(k, torch.tensor(0))
            else:
                km.add(k, f"src/{k}")
        km.set_aside("norm/mean")
        if fill_unknown:
            km.fill("no.such.key", torch.tensor(0))
        return km

    toy = Converter("toy", {"v3s": ("mobilenet_v3_small", {})}, key_map)
    monkeypatch.setitem(CONVERTERS, "toy", toy)
    source = {f"src/{k}": v + 1 for k, v in ours.items() if not k.endswith("num_batches_tracked")}
    source["norm/mean"] = torch.zeros(3)
    config, state = convert_state_dict(source, "toy:v3s")
    assert config.num_classes == 10 and set(state) == set(ours)
    counts = [k for k in ours if k.endswith("num_batches_tracked")]
    assert counts and all(int(state[k]) == 0 for k in counts)
    assert torch.equal(state["stem.conv.weight"], ours["stem.conv.weight"] + 1) and "norm/mean" not in state
    del source["norm/mean"]
    with pytest.raises(ConversionError, match=r"missing in source \(1\): norm/mean"):
        convert_state_dict(source, "toy:v3s")
    source["norm/mean"] = torch.zeros(3)
    monkeypatch.setitem(CONVERTERS, "toy", Converter("toy", toy.sources, lambda c, m: key_map(c, m, True)))
    with pytest.raises(ConversionError, match=r"internal key map mismatch: unfilled \[\], unknown \['no.such.key'\]"):
        convert_state_dict(source, "toy:v3s")


def test_key_map_transforms_are_declared() -> None:
    from mobilenets.convert import key_map, source_config

    km = key_map("timm:mobilenetv3_small_100", source_config("timm:mobilenetv3_small_100"))
    assert list(km.transforms) == ["pre_logits.fc.weight"]  # timm's 1x1 conv_head is our Linear
    assert km.apply("pre_logits.fc.weight", torch.zeros(1024, 576, 1, 1)).shape == (1024, 576)
    assert not key_map("timm:mobilenetv2_100", source_config("timm:mobilenetv2_100")).transforms


def test_target_shapes_need_no_weights() -> None:
    from mobilenets.convert import source_config, target_shapes

    shapes = target_shapes(source_config("timm:efficientnetv2_xl"))
    assert shapes["stem.conv.weight"] == (32, 3, 3, 3) and shapes["classifier.weight"] == (1000, 1280)
    assert sum(s.numel() for k, s in shapes.items() if "running" not in k and "num_batches" not in k) == 208_119_808


def test_strict_report_counts_and_names() -> None:
    from mobilenets.statedict import compare

    report = compare({"a": (2, 3), "b": (4,), "c": (1,)}, {"a": (3, 2), "c": (1,), "d": (5,)})
    assert (report.missing, report.unexpected, report.misshaped) == (["b"], ["d"], ["a (3, 2) -> a (2, 3)"])
    assert report.parts(" in source") == ["missing in source (1): b", "unexpected in source (1): d",
                                          "mis-shaped (1): a (3, 2) -> a (2, 3)"]
    assert not compare({"a": (1,)}, {"a": (1,)})
    many = compare({f"k{i}": (1,) for i in range(10)}, {})
    assert many.parts() == ["missing (10): k0, k1, k2, k3, k4, k5, k6, k7 ..."]


def test_mobilenet_v4_key_layout() -> None:
    """UIB, Mobile MQA and the MobileNetV4 head map onto timm's names, layer scale included."""
    from mobilenets.convert import key_map, source_config

    pairs = dict(key_map("timm:mobilenetv4_hybrid_medium", source_config("timm:mobilenetv4_hybrid_medium")).pairs)
    assert pairs["stages.1.0.dw_start.conv.weight"] == "blocks.1.0.dw_start.conv.weight"
    assert pairs["stages.2.1.pw_exp.bn.running_var"] == "blocks.2.1.pw_exp.bn.running_var"  # FFN: no depthwise
    assert "stages.2.1.dw_mid.conv.weight" not in pairs and "stages.2.1.dw_start.conv.weight" not in pairs
    assert pairs["stages.2.4.key_down.conv.weight"] == "blocks.2.4.attn.key.down_conv.weight"
    assert pairs["stages.2.4.out_proj.weight"] == "blocks.2.4.attn.output.proj.weight"
    assert pairs["stages.2.4.layer_scale.gamma"] == "blocks.2.4.layer_scale.gamma"
    assert pairs["stages.3.8.key_proj.weight"] == "blocks.3.8.attn.key.proj.weight"
    assert "stages.3.8.key_down.conv.weight" not in pairs  # stage 3's MQA blocks do not downsample keys
    assert pairs["head.conv.weight"] == "blocks.4.0.conv.weight" and pairs["pre_logits.bn.weight"] == "norm_head.weight"
    assert "pre_logits.fc.bias" not in pairs
    small = dict(key_map("timm:mobilenetv4_conv_small", source_config("timm:mobilenetv4_conv_small")).pairs)
    assert small["stages.1.1.bn.running_mean"] == "blocks.1.1.bn1.running_mean"  # a Conv row: timm's ConvBnAct
    assert not any("layer_scale" in k for k in small)

"""Model surgery keeps the pretrained function: more repeats, larger kernels and new squeeze-excite give the same
logits as the pretrained network on real photos, before any training; what would lose the function is refused."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import mobilenets
from mobilenets.data import eval_transform
from mobilenets.profile import count_macs, count_params
from mobilenets.surgery import SIGMOID_GATE_BIAS, SurgeryReport, grow
from tests.conftest import randomize_bn

ROOT = Path(__file__).resolve().parent.parent
LITE = "efficientnet_lite0"
LITE_REPEATS = (1, 2, 2, 3, 3, 4, 1)  # the EfficientNet-B0 table's (Tan & Le, 2019, Table 1)
LITE_KERNELS = (3, 3, 5, 3, 5, 5, 3)
# float32 tolerance for grown kernels: the padded taps are exact zeros, but a larger kernel may make the conv sum
# its products in another order (measured: bit-identical in float32 here, 3e-15 relative apart in float64).
KERNEL_RTOL = 1e-6


@pytest.fixture(scope="module", autouse=True)
def home(tmp_path_factory: pytest.TempPathFactory):
    """One cache for the module: the embedded Lite0 weights are converted once."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOBILENETS_HOME", str(tmp_path_factory.mktemp("home")))
        yield


@pytest.fixture(scope="module")
def lite() -> torch.nn.Module:
    return mobilenets.create_model(LITE, pretrained=True).eval()


@pytest.fixture(scope="module")
def photos(lite: torch.nn.Module) -> torch.Tensor:
    """Four real photos (two shipped examples, two from scikit-image), preprocessed as the weights expect."""
    skimage_data = pytest.importorskip("skimage.data")
    images = [Image.open(ROOT / "examples" / f).convert("RGB") for f in ("chelsea.jpg", "coffee.jpg")]
    images += [Image.fromarray(skimage_data.astronaut()), Image.fromarray(skimage_data.rocket())]
    transform = eval_transform(lite)
    return torch.stack([transform(img) for img in images])


def logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / a.abs().max())


def odd(x: torch.Tensor) -> torch.Tensor:
    """The photos at 225x225 (odd): SAME padding of the stride-2 convs is then asymmetric the other way."""
    return F.interpolate(x, size=(225, 225), mode="bilinear", align_corners=False)


# ------------------------------------------------------------------------------------------- same function


def test_added_repeats_are_exact(lite, photos, caplog) -> None:
    repeats = tuple(r + 1 for r in LITE_REPEATS)
    with caplog.at_level(logging.INFO, logger="mobilenets"):
        grown = mobilenets.create_model(LITE, pretrained=True, repeats=repeats)
    assert grown.training  # as create_model returns every model
    report = grown.surgery_report
    assert [r.getMessage() for r in caplog.records if r.name == "mobilenets"] == [str(report)]  # logged once
    expected = logits(lite, photos)
    for x in (photos, odd(photos)):
        assert torch.equal(logits(lite, x), logits(grown, x))  # bit for bit: new blocks add exact zeros
    assert logits(grown, photos).argmax(1).tolist() == expected.argmax(1).tolist()
    assert expected.argmax(1)[:2].tolist() != [0, 0]  # real predictions, not a degenerate head

    # the report: every pretrained tensor loaded, one new block per row, its last BatchNorm zero
    assert isinstance(report, SurgeryReport)
    assert report.new_blocks == ["stages.0.1", "stages.1.2", "stages.2.2", "stages.3.3", "stages.4.3", "stages.5.4",
                                 "stages.6.1"]
    assert len(report.loaded) == len(lite.state_dict()) and not report.adapted and not report.reinitialised
    assert set(report.loaded) | set(report.new) == set(grown.state_dict())
    bn = grown.stages[1][2].conv_pwl.bn
    assert torch.equal(bn.weight, torch.zeros_like(bn.weight)) and torch.equal(bn.bias, torch.zeros_like(bn.bias))
    assert report.params_before == count_params(lite) and report.params_after == count_params(grown)
    assert report.macs_before == count_macs(lite, 224) < report.macs_after == count_macs(grown, 224)
    text = str(report)
    assert "16 -> 23" in text and "stages.5.4" in text and f"{report.params_after / 1e6:,.2f}M" in text
    # the grown model is a normal MobileNet: its options and the weights' preprocessing are kept
    assert grown.config.options.repeats == repeats and grown.pretrained_cfg == lite.pretrained_cfg


def test_larger_kernels_keep_the_centre(lite, photos) -> None:
    kernels = tuple(k + 2 for k in LITE_KERNELS)  # every row, the stride-2 ones (SAME padding) included
    grown = mobilenets.create_model(LITE, pretrained=True, kernel_sizes=kernels)
    for x in (photos, odd(photos)):
        assert rel(logits(lite, x), logits(grown, x)) <= KERNEL_RTOL
        assert rel(logits(lite.double(), x.double()), logits(grown.double(), x.double())) < 1e-12
        lite.float(), grown.float()
    old, new = lite.stages[2][0].conv_dw.conv.weight, grown.stages[2][0].conv_dw.conv.weight
    assert new.shape[-2:] == (7, 7) and torch.equal(new[:, :, 1:6, 1:6], old)
    border = new.detach().clone()
    border[:, :, 1:6, 1:6] = 0
    assert not border.any()
    assert grown.surgery_report.adapted["stages.2.0.conv_dw.conv.weight"] == "zero-padded 5x5 -> 7x7"


def test_new_sigmoid_squeeze_excite_and_combinations(lite, photos) -> None:
    expected = logits(lite, photos)
    se = mobilenets.create_model(LITE, pretrained=True, se_ratio=0.25)
    assert rel(expected, logits(se, photos)) < 1e-4 and torch.equal(expected.argmax(1), logits(se, photos).argmax(1))
    gate = se.stages[3][1].se
    assert gate.conv_reduce.out_channels == 20 and torch.equal(gate.conv_expand.weight, torch.zeros_like(
        gate.conv_expand.weight)) and torch.all(gate.conv_expand.bias == SIGMOID_GATE_BIAS)

    both = mobilenets.create_model(LITE, pretrained=True, num_classes=10, se_ratio=0.25,
                                   repeats=(1, 3, 2, 3, 4, 4, 2), kernel_sizes=(3, 5, 5, 3, 7, 5, 3))
    report = both.surgery_report
    assert report.new_blocks == ["stages.1.2", "stages.4.3", "stages.6.1"]
    assert report.reinitialised == ["classifier.bias", "classifier.weight"] and both.num_classes == 10
    assert report.params_before == count_params(mobilenets.create_model(LITE, num_classes=10)) < report.params_after
    assert "stages.0.0.se (4 tensors)" in str(report)
    assert both.pretrained_cfg["num_classes"] == 10 and both.pretrained_cfg["categories"] is None
    with torch.no_grad():  # the features (what the new head reads) are the pretrained ones
        a, b = lite.forward_head(lite.forward_features(photos), pre_logits=True), \
            both.eval().forward_head(both.forward_features(photos), pre_logits=True)
    assert rel(a, b) < 1e-4


def test_hard_sigmoid_squeeze_excite_is_exact_and_widening_too() -> None:
    """MobileNetV3 (no offline weights: random, with random BatchNorm statistics): SE on every row (new ones
    gate at exactly 0.5, their projection doubled), more blocks and larger kernels, all bit-exact; wider SE where
    the table has it, exact up to the convolution kernel's order of summation."""
    torch.manual_seed(0)
    source = randomize_bn(mobilenets.create_model("mobilenet_v3_small")).eval()
    torch.nn.init.normal_(source.classifier.weight, 0, 0.5)  # logits of a useful size
    x = torch.randn(2, 3, 96, 96)
    for options in (dict(se_ratio=0.25), dict(se_ratio=0.5),
                    dict(repeats=(1, 2, 1, 1, 2, 1, 1, 1, 2, 1, 1), kernel_sizes=(3, 5, 3, 7, 5, 5, 5, 5, 7, 5, 5))):
        target = mobilenets.create_model("mobilenet_v3_small", **options)
        report = grow(source, target)
        for dtype in (torch.float32, torch.float64):
            a, b = logits(source.to(dtype), x.to(dtype)), logits(target.to(dtype), x.to(dtype))
            if "se_ratio" in options and options["se_ratio"] > 0.25:
                # widened SE: the same sums, but oneDNN may order a wider convolution's sums differently (5e-16
                # relative in float64 on an AVX-512/AMX Xeon, bit-exact on AMD EPYC)
                assert rel(a, b) < (1e-12 if dtype == torch.float64 else 1e-6), options
            else:
                assert torch.equal(a, b), options
        source.float()
    se_new = grow(source, mobilenets.create_model("mobilenet_v3_small", se_ratio=0.25))
    assert "stages.1.0.se.conv_reduce.weight" in se_new.new
    assert se_new.adapted["stages.1.0.conv_pwl.conv.weight"].startswith("doubled")
    assert "stages.0.0.se.conv_reduce.weight" in se_new.loaded  # the table's SE, unchanged
    wide_target = mobilenets.create_model("mobilenet_v3_small", se_ratio=0.5)
    wide = grow(source, wide_target)
    assert wide.adapted["stages.2.0.se.conv_reduce.weight"] == "widened 24 -> 48 channels (new ones as initialised)"
    assert wide.adapted["stages.2.0.se.conv_expand.weight"] == "widened 24 -> 48 inputs (new ones zero)"
    expand = wide_target.stages[2][0].se.conv_expand.weight
    assert not expand[:, 24:].any() and torch.equal(expand[:, :24], source.stages[2][0].se.conv_expand.weight)
    # rows 4 and 5 are the same block: the new one is placed after both (same function either way)
    assert report.new_blocks == ["stages.1.1", "stages.2.3", "stages.4.1"]


# ------------------------------------------------------------------------------------------------ training


def test_new_parts_train_and_train_mode_is_kept(lite) -> None:
    """The identity holds in train mode too (zeroed BatchNorm, constant gates); one step moves the new parts."""
    grown = mobilenets.create_model(LITE, pretrained=True, se_ratio=0.25, repeats=(1, 3, 2, 3, 3, 4, 1))
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    expected = lite.train()(x)
    torch.manual_seed(1)  # the same dropout mask
    out = grown(x)
    lite.eval()
    assert rel(expected, out) < 1e-4
    new_bn, gate = grown.stages[1][2].conv_pwl.bn, grown.stages[3][1].se.conv_expand
    # The new block's BatchNorm bias is left out: the next stage opens with a 1x1 conv into a train-mode
    # BatchNorm, which removes any per-channel shift, so its gradient is zero in exact arithmetic (only rounding).
    # The gate's bias gets a gradient, but at lr 0.1 one step moves it (at 12.0) by less than half a float32 ulp.
    F.cross_entropy(out, torch.tensor([281, 967, 0, 1])).backward()
    assert all(float(t.grad.abs().sum()) > 0 for t in (new_bn.weight, gate.weight, gate.bias))
    before = [t.detach().clone() for t in (new_bn.weight, gate.weight)]
    torch.optim.SGD(grown.parameters(), lr=0.1).step()
    assert all(not torch.equal(a, b) for a, b in zip(before, (new_bn.weight, gate.weight), strict=True))


def test_hard_sigmoid_gates_get_gradients() -> None:
    torch.manual_seed(0)
    source = mobilenets.create_model("mobilenet_v3_small")
    target = mobilenets.create_model("mobilenet_v3_small", se_ratio=0.25)
    grow(source, target)
    target(torch.randn(2, 3, 64, 64)).logsumexp(1).sum().backward()
    expand = target.stages[1][0].se.conv_expand
    assert float(expand.weight.grad.abs().sum()) > 0 and float(expand.bias.grad.abs().sum()) > 0


def test_grown_model_round_trips_a_checkpoint(lite, photos, tmp_path) -> None:
    grown = mobilenets.create_model(LITE, pretrained=True, repeats=(1, 3, 2, 3, 3, 4, 1), se_ratio=0.25)
    path = mobilenets.save_checkpoint(grown, tmp_path / "grown.safetensors")
    again = mobilenets.from_checkpoint(path)
    assert again.config == grown.config and again.pretrained_cfg == grown.pretrained_cfg
    assert torch.equal(logits(again, photos), logits(grown, photos))
    same = mobilenets.create_model(LITE, checkpoint_path=str(path))
    assert same.config.options.se_ratio == 0.25 and same.config.options.repeats == (1, 3, 2, 3, 3, 4, 1)


# -------------------------------------------------------------------------------------------------- refused


@pytest.mark.parametrize("options, words", [
    (dict(repeats=(1, 1, 2, 3, 3, 4, 1)), ["row 1 (stage 1, MobileBlock to 24 channels)", "repeats 1 is fewer than "
                                           "the pretrained 2", "repeats=[1, 1, 2, 3, 3, 4, 1] (weights: None)"]),
    (dict(kernel_sizes=(3, 3, 3, 3, 5, 5, 3)), ["row 2 (stage 2", "kernel 3", "pretrained 5", "never shrink"]),
    (dict(width_mult=1.1), ["do not fit the architecture asked for: width_mult=1.1 (weights: 1.0)",
                            "se_ratio, repeats and kernel_sizes may grow"]),
])
def test_refused_growth_says_which_row(options, words) -> None:
    with pytest.raises(ValueError) as e:
        mobilenets.create_model(LITE, pretrained=True, **options)
    for w in words:
        assert w in str(e.value), str(e.value)


def test_refused_without_residual_or_when_squeeze_excite_shrinks() -> None:
    v1 = mobilenets.create_model("mobilenet_v1_050")
    with pytest.raises(ValueError, match=r"row 1 \(stage 1, DepthwiseSeparable to 128 channels\): a "
                                         r"DepthwiseSeparable block has no residual connection"):
        grow(v1, mobilenets.create_model("mobilenet_v1_050", repeats=(1, 2, 1, 1, 1, 1, 5, 1, 1)))
    bigger = mobilenets.create_model("mobilenet_v1_050", kernel_sizes=(5,) * 9)  # kernels of any block may grow
    assert len(grow(v1, bigger).adapted) == 13
    v3 = mobilenets.create_model("mobilenet_v3_small")
    for ratio, word in ((0.0, "below the pretrained 0.25"), (0.125, "below the pretrained 0.25")):
        with pytest.raises(ValueError, match=r"row 0 \(stage 0, MobileBlock to 16 channels\): squeeze-excite ratio "
                                             rf"{ratio} is {word}"):
            grow(v3, mobilenets.create_model("mobilenet_v3_small", se_ratio=ratio))
    with pytest.raises(ValueError, match="cannot grow MobileNetV3-Small weights into a MobileNetV3-Large network"):
        grow(v3, mobilenets.create_model("mobilenet_v3_large"))
    with pytest.raises(ValueError, match=r"stage 0 \(1 pretrained blocks, 1 asked for\) cannot be grown keeping the "
                                         r"function: stages.0.0: in_chs 16 -> 24, out_chs 16 -> 24"):
        grow(v3, mobilenets.create_model("mobilenet_v3_small", width_mult=1.5))

"""Unit tests for the shared layers: channel rounding, activations, SE widths and TF SAME padding."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import mobilenets
from mobilenets import ConvNormAct, LayerOptions, SqueezeExcite, adjust_channels, build_config, h_sigmoid, h_swish
from mobilenets.layers import BlurPool, DropPath, PadSame, make_activation, make_downsample


@pytest.mark.parametrize(
    "channels, divisor, minimum, expected",
    [
        (32, 8, None, 32),
        (32 * 0.35, 8, None, 16),  # 11.2 rounds to 8, which loses > 10%, so one divisor is added
        (16 * 0.5, 8, None, 8),
        (3.0, 8, None, 8),  # never below the divisor
        (3.0, 8, 4, 4),  # an explicit minimum below the divisor
        (1280 * 1.1, 8, None, 1408),
        (24 * 0.75, 8, None, 24),  # 18 -> 16 loses 11%, so 24
        (100, 16, None, 96),
        (60, 16, None, 64),
    ],
)
def test_adjust_channels(channels, divisor, minimum, expected):
    assert adjust_channels(channels, divisor, minimum) == expected


def test_adjust_channels_properties():
    for c in range(1, 2000):
        for d in (4, 8, 16):
            r = adjust_channels(c * 0.73, d)
            assert r % d == 0 and r >= d
            assert r >= 0.9 * c * 0.73 or r == d
            assert abs(r - c * 0.73) <= d


def test_adjust_channels_round_limit_off():
    assert adjust_channels(18, 8, round_limit=0.0) == 16
    assert adjust_channels(18, 8) == 24


def test_adjust_channels_rejects_bad_divisor():
    with pytest.raises(ValueError, match="divisor"):
        adjust_channels(32, 0)


def test_hard_activations_match_their_formulas():
    x = torch.linspace(-6, 6, 1001, dtype=torch.float64)
    torch.testing.assert_close(h_sigmoid()(x), F.relu6(x + 3) / 6)
    torch.testing.assert_close(h_swish()(x), x * F.relu6(x + 3) / 6)


def test_make_activation_unknown():
    with pytest.raises(ValueError, match="unknown activation 'mish'"):
        make_activation("mish")


@pytest.mark.parametrize("size", [7, 8, 9, 15, 16, 17, 224, 225])
@pytest.mark.parametrize("kernel, stride", [(3, 2), (5, 2), (3, 1), (5, 1), (1, 2)])
def test_same_padding_matches_tensorflow(size, kernel, stride):
    opts = LayerOptions(padding="same")
    layer = ConvNormAct(2, 2, kernel, stride, opts=opts)
    out = layer(torch.randn(1, 2, size, size))
    assert out.shape[-1] == math.ceil(size / stride)  # TF SAME: out = ceil(in / stride)
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    if stride > 1 and kernel > 1:
        assert isinstance(layer.pad, PadSame)
        padded = layer.pad(torch.zeros(1, 1, size, size))
        assert padded.shape[-1] == size + total
        # TF puts the extra pixel at the end (bottom/right)
        probe = layer.pad(torch.ones(1, 1, size, size))
        assert probe[0, 0, 0, :].sum() == (0 if total // 2 else size)
    else:
        assert isinstance(layer.pad, torch.nn.Identity)


def test_symmetric_padding_keeps_shape():
    layer = ConvNormAct(3, 4, 5, 1)
    assert layer(torch.randn(1, 3, 11, 13)).shape == (1, 4, 11, 13)
    assert layer.conv.padding == (2, 2)


@pytest.mark.parametrize("size", [7, 8, 13, 16])
def test_blur_pool_is_the_binomial_filter_at_stride_2(size):
    """Two box pools equal the 3x3 filter [1,2,1]x[1,2,1]/16, zero-padded by one, at stride 2 (Zhang, 2019)."""
    x = torch.randn(2, 5, size, size + 1, dtype=torch.float64)
    taps = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)
    filt = (taps[:, None] * taps[None, :] / 16).expand(5, 1, 3, 3)
    expected = F.conv2d(x, filt, stride=2, padding=1, groups=5)
    torch.testing.assert_close(BlurPool(5)(x), expected, rtol=1e-12, atol=1e-12)
    assert not list(BlurPool(5).parameters()) and not list(BlurPool(5).buffers())
    with pytest.raises(ValueError, match="stride 3"):
        BlurPool(5, 3)


@pytest.mark.parametrize("down, layer", [("stride", torch.nn.Identity), ("avg", torch.nn.AvgPool2d),
                                         ("blur", BlurPool)])
def test_downsample_moves_the_stride_after_the_activation(down, layer):
    """timm's aa_layer: the conv runs at stride 1, then ``aa`` downsamples; a stride-1 layer never gets one."""
    opts = LayerOptions(downsample=down)
    strided, plain = ConvNormAct(4, 6, 3, 2, opts=opts), ConvNormAct(4, 6, 3, 1, opts=opts)
    assert type(strided.aa) is layer and isinstance(plain.aa, torch.nn.Identity)
    assert strided.conv.stride == ((2, 2) if down == "stride" else (1, 1))
    assert list(strided.state_dict()) == list(ConvNormAct(4, 6, 3, 2).state_dict())
    strided.eval()
    x = torch.randn(1, 4, 16, 16)
    out = strided(x)
    assert out.shape == (1, 6, 8, 8)
    if down == "avg":
        full = strided.act(strided.bn(strided.conv(x)))
        torch.testing.assert_close(out, F.avg_pool2d(full, 2))
    with pytest.raises(ValueError, match="max"):
        make_downsample("max", 4, 2)


def test_squeeze_excite_scales_per_channel():
    se = SqueezeExcite(8, 2, gate="hard_sigmoid").double()
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64)
    s = se.conv_expand(torch.relu(se.conv_reduce(x.mean((2, 3), keepdim=True))))
    torch.testing.assert_close(se(x), x * F.hardsigmoid(s))


@pytest.mark.parametrize(
    "name, block, expected_se",
    [
        # EfficientNet: a quarter of the block's input channels (Tan & Le, 2019)
        ("efficientnet_b0", (1, 0), 4),  # in 16 -> 4
        ("efficientnet_b0", (5, 3), 48),  # in 192 -> 48
        # MobileNetV3: a quarter of the expanded channels, rounded to 8 (Howard et al., 2019)
        ("mobilenet_v3_large", (2, 0), 24),  # exp 72 -> 18 -> 24
        ("mobilenet_v3_large", (4, 1), 168),  # exp 672 -> 168
        ("mobilenet_v3_small", (0, 0), 8),  # exp 16 -> 4 -> 8
    ],
)
def test_se_width_rules(name, block, expected_se):
    stage, index = block
    assert build_config(name).stages[stage][index].se_chs == expected_se


def test_se_can_be_added_to_any_family():
    config = build_config("mobilenet_v2", se_ratio=0.25)
    assert all(b.se_chs > 0 for stage in config.stages for b in stage)
    assert all(b.se_chs == 0 for stage in build_config("mobilenet_v2").stages for b in stage)


def test_drop_path():
    dp = DropPath(0.5)
    x = torch.ones(1000, 4)
    dp.train()
    y = dp(x)
    kept = (y[:, 0] > 0).float().mean()
    assert 0.4 < kept < 0.6 and torch.allclose(y[y > 0], torch.tensor(2.0))
    dp.eval()
    assert torch.equal(dp(x), x)
    with pytest.raises(ValueError):
        DropPath(1.0)


def test_in_place_hard_activations_keep_gradients():
    """Our models apply h_swish / h_sigmoid in place (as torchvision does); gradients must not change."""
    torch.manual_seed(0)
    model = mobilenets.create_model("mobilenet_v3_small", drop_rate=0.0).double()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)

    def grads() -> dict[str, torch.Tensor]:
        model.zero_grad()
        model(x).square().sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    in_place = grads()
    for m in model.modules():
        if isinstance(m, (h_swish, h_sigmoid)):
            assert m.inplace
            m.inplace = False
    for name, grad in grads().items():
        torch.testing.assert_close(in_place[name], grad, rtol=0, atol=0, msg=name)

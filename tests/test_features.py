"""Multi-scale features (issue 9): ``features_only``, ``feature_info``, ``output_stride``, ``forward_intermediates``.

Parity: randomly initialised timm classifiers (random BatchNorm statistics) are converted with our converter, and
our feature maps are compared in float64 with timm's ``features_only`` maps, level by level, at output stride 32,
16 and 8.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace

import pytest
import torch
from conftest import randomize_bn, relative_error
from torch import nn

from mobilenets import build_config, create_model, from_checkpoint, save_checkpoint
from mobilenets.checkpoint import build_model
from mobilenets.convert import convert_state_dict, source_config
from mobilenets.features import FeatureInfo, MobileNetFeatures, feature_levels
from mobilenets.specs import dilate

timm = pytest.importorskip("timm")

SIZE = 64  # float64 inputs; at output stride 8 the last map is still 8x8
PARITY = ("mobilenetv1_100", "mobilenetv2_100", "mobilenetv3_large_100", "mobilenetv3_small_100", "efficientnet_b0",
          "tf_efficientnet_lite0", "tf_efficientnetv2_b0", "mobilenetv4_conv_small", "mobilenetv4_hybrid_medium")


def _input(size: int = SIZE) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.fixture(scope="module")
def converted() -> dict[str, tuple]:
    """timm name -> (its classifier's state dict, our converted config and state dict); built once."""
    out = {}
    for name in PARITY:
        torch.manual_seed(0)
        ref = randomize_bn(timm.create_model(name, pretrained=False))
        with torch.no_grad():  # MobileNetV4-Hybrid's layer scales start at 1e-5: make the attention branch count
            for key, p in ref.named_parameters():
                if key.endswith("layer_scale.gamma"):
                    p.copy_(torch.rand(p.shape, generator=torch.Generator().manual_seed(2)) + 0.5)
        state = ref.double().state_dict()
        out[name] = (state, *convert_state_dict(state, f"timm:{name}"))
    return out


def _ours(converted: dict, name: str, output_stride: int, out_indices=None) -> MobileNetFeatures:
    _, config, state = converted[name]
    model = build_model(config.name, replace(config.options, output_stride=output_stride), on_meta=True,
                        num_classes=config.num_classes, in_chans=config.in_chans)
    model.load_state_dict(state, strict=True, assign=True)
    return MobileNetFeatures(model.eval(), out_indices)


def _theirs(converted: dict, name: str, output_stride: int) -> nn.Module:
    state = converted[name][0]
    with torch.device("meta"):  # no initialisation: every tensor comes from the classifier's state dict
        ref = timm.create_model(name, pretrained=False, features_only=True, output_stride=output_stride)
    ref.load_state_dict({k: state[k] for k in ref.state_dict()}, strict=True, assign=True)
    return ref.eval()


@pytest.mark.parametrize("output_stride", [32, 16, 8])
@pytest.mark.parametrize("name", PARITY)
def test_features_equal_timm(converted, name: str, output_stride: int) -> None:
    ours, theirs = _ours(converted, name, output_stride), _theirs(converted, name, output_stride)
    assert ours.feature_info.channels() == theirs.feature_info.channels()
    assert ours.feature_info.reduction() == theirs.feature_info.reduction()
    assert [d["stage"] for d in ours.feature_info.get_dicts()] == [d["stage"] for d in theirs.feature_info.get_dicts()]
    x = _input()
    with torch.no_grad():
        expected, actual = theirs(x), ours(x)
    assert len(actual) == len(expected) == 5
    for level, (e, a) in enumerate(zip(expected, actual, strict=True)):
        assert a.shape == e.shape, (level, a.shape, e.shape)
        assert a.shape[-1] == -(-SIZE // ours.feature_info.reduction(level))
        assert relative_error(e, a) < 1e-9, level
    # the same levels from the classifier, and from a backbone with fewer of them
    classifier = build_model(ours.config.name, ours.config.options, on_meta=True,
                             num_classes=ours.config.num_classes)
    classifier.load_state_dict(converted[name][2], strict=True, assign=True)
    with torch.no_grad():
        final, inter = classifier.eval().forward_intermediates(x)
        assert torch.equal(final, classifier.forward_features(x))
        assert all(torch.equal(a, b) for a, b in zip(inter, actual, strict=True))
        fewer = MobileNetFeatures(classifier, (3, 1))(x)
    assert torch.equal(fewer[0], actual[3]) and torch.equal(fewer[1], actual[1])


# One model per family and reference quirk beyond PARITY's: widths, depth-scaled heads, minimal, fixed stems,
# anti-aliased downsampling, the large V4s.
INFO_ONLY = ("mobilenetv1_100h", "mobilenetv2_110d", "mobilenetv3_large_150d", "mobilenetv3_small_050",
             "tf_mobilenetv3_large_minimal_100", "efficientnet_b3", "tf_efficientnet_lite4", "efficientnetv2_s",
             "tf_efficientnetv2_b3", "mobilenetv4_conv_aa_medium", "mobilenetv4_conv_large",
             "mobilenetv4_hybrid_large_075")


@pytest.mark.parametrize("name", INFO_ONLY)
def test_feature_info_equals_timm(name: str) -> None:
    """Channels, reductions and stages at output stride 8 (built on the meta device: no weights)."""
    config = source_config(f"timm:{name}")
    config = build_config(config.name, **{**config.options.to_dict(), "output_stride": 8})
    with torch.device("meta"):
        ref = timm.create_model(name, pretrained=False, features_only=True, output_stride=8)
    mine = [(d["num_chs"], d["reduction"], d["stage"]) for d in feature_levels(config)]
    assert mine == [(d["num_chs"], d["reduction"], d["stage"]) for d in ref.feature_info.get_dicts()]


def test_dilation_rule() -> None:
    """timm's: the block that gives up its stride keeps the dilation before it; the growth starts after it."""
    strides = [1, 2, 1, 2, 1, 2, 1, 1, 2, 1]
    assert dilate(strides, 32) == [(s, 1) for s in strides]
    assert dilate(strides, 16) == [(1, 1), (2, 1), (1, 1), (2, 1), (1, 1), (2, 1), (1, 1), (1, 1), (1, 1), (1, 2)]
    assert dilate(strides, 8) == [(1, 1), (2, 1), (1, 1), (2, 1), (1, 1), (1, 1), (1, 2), (1, 2), (1, 2), (1, 4)]
    config = build_config("mobilenet_v4_hybrid_medium", output_stride=8)
    convs = [m for m in MobileNetFeatures(create_model("mobilenet_v4_hybrid_medium", output_stride=8)).modules()
             if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1]
    assert {c.dilation[0] for c in convs} == {1, 2, 4} and all(c.padding[0] == c.dilation[0] * (c.kernel_size[0] // 2)
                                                               for c in convs if c.stride == (1, 1))
    assert config.stages[-1][-1].kwargs()["dilation"] == 4 and config.options.output_stride == 8


def test_feature_info_api() -> None:
    model = create_model("mobilenet_v3_large", features_only=True, out_indices=(1, 2, 4))
    info = model.feature_info
    assert isinstance(info, FeatureInfo) and len(info) == 5 and info.out_indices == (1, 2, 4)
    assert info.channels() == [24, 40, 960] and info.reduction() == [4, 8, 32]
    assert info.module_name() == ["stages.1", "stages.2", "head"]
    assert info.channels(0) == 16 and info.reduction([0, 3]) == [2, 16] and info[3]["module"] == "stages.4"
    assert info.get_dicts(keys=("num_chs", "reduction")) == [{"num_chs": 24, "reduction": 4},
                                                             {"num_chs": 40, "reduction": 8},
                                                             {"num_chs": 960, "reduction": 32}]
    assert info.from_other((0,)).channels() == [16]
    assert [f.shape[1] for f in model(torch.randn(1, 3, 64, 64))] == info.channels()
    assert create_model("mobilenet_v3_large", features_only=True, out_indices=2).feature_info.out_indices == (3, 4)
    assert create_model("mobilenet_v3_large", features_only=True, out_indices=[-1]).out_indices == (4,)
    classifier = create_model("efficientnet_b0")
    assert [d["module"] for d in classifier.feature_info] == [f"stages.{i}" for i in (0, 1, 2, 4, 6)]


def test_state_dict_is_the_classifiers_without_the_head() -> None:
    for name, dropped in (("efficientnet_b0", ("head.", "pre_logits.", "classifier.")),
                          ("mobilenet_v3_small", ("pre_logits.", "classifier."))):
        classifier = create_model(name)
        features = MobileNetFeatures(classifier)
        expected = {k for k in classifier.state_dict() if not k.startswith(dropped)}
        assert set(features.state_dict()) == expected
        features.load_state_dict({k: v for k, v in classifier.state_dict().items() if k in expected}, strict=True)


def test_checkpoint_to_backbone(tmp_path) -> None:
    torch.manual_seed(0)
    model = randomize_bn(create_model("mobilenet_v3_small_050", num_classes=7)).eval()
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model.forward_intermediates(x, indices=(1, 4), intermediates_only=True)
        backbone = from_checkpoint(path, features_only=True, out_indices=(1, 4)).eval()
        # a reloaded model may pick other conv kernels (memory layout): equal up to float32 rounding
        assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(backbone(x), expected, strict=True))
        dense = from_checkpoint(path, features_only=True, output_stride=8).eval()
        same = create_model("mobilenet_v3_small_050", checkpoint_path=path, features_only=True, output_stride=8)
        assert dense.feature_info.reduction() == [2, 4, 8, 8, 8]
        assert all(torch.equal(a, b) for a, b in zip(dense(x), same.eval()(x), strict=True))
    dilated = create_model("mobilenet_v3_small_050", checkpoint_path=path, output_stride=16)
    assert dilated.config.options.output_stride == 16 and dilated.num_classes == 7
    saved = save_checkpoint(dilated, tmp_path / "os16.safetensors")  # records 16; loads at 32 again
    assert from_checkpoint(saved).config.options.output_stride == 16
    assert create_model("mobilenet_v3_small_050", checkpoint_path=saved).config.options.output_stride == 32
    with pytest.raises(ValueError, match="architecture"):
        create_model("mobilenet_v3_small_050", checkpoint_path=path, width_mult=1.0)  # not a free option
    with pytest.raises(ValueError, match="output_stride must be one of 8, 16, 32, got 12"):
        from_checkpoint(path, output_stride=12)
    with pytest.raises(ValueError, match="features_only=True"):
        from_checkpoint(path, out_indices=(1,))


def test_pretrained_lite0_backbone_at_output_stride_16() -> None:
    """The embedded EfficientNet-Lite0 weights load offline into a dilated backbone; the levels before the
    dilation are the undilated network's."""
    dense = create_model("efficientnet_lite0", pretrained=True, features_only=True, output_stride=16).eval()
    plain = create_model("efficientnet_lite0", pretrained=True, features_only=True).eval()
    assert dense.feature_info.reduction() == [2, 4, 8, 16, 16] and dense.feature_info.channels()[-1] == 320
    assert dense.pretrained_cfg["mean"] == [0.5, 0.5, 0.5] and "num_classes" not in dense.pretrained_cfg
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        a, b = dense(x), plain(x)
    assert all(torch.equal(a[i], b[i]) for i in range(4)) and a[4].shape[-1] == 8 and b[4].shape[-1] == 4
    assert not torch.equal(a[4][..., ::2, ::2], b[4])


def test_prune_intermediate_layers() -> None:
    model = create_model("efficientnet_b0").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        full = model.forward_intermediates(x, indices=(1, 2), intermediates_only=True)
        early = model.forward_intermediates(x, indices=(1, 2), stop_early=True, intermediates_only=True)
        assert model.prune_intermediate_layers((1, 2)) == [1, 2]
        pruned = model.forward_intermediates(x, indices=(1, 2), intermediates_only=True)
    assert all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(full, early, pruned, strict=True))
    assert len(model.stages) == 3 and isinstance(model.head, nn.Identity) and model.num_features == 40
    assert model(x).shape == (1, 40) and len(model.feature_info) == 3
    v3 = create_model("mobilenet_v3_large")
    v3.prune_intermediate_layers(5)  # every level: the head conv is the last, so it stays; the classifier goes
    assert len(v3.stages) == 6 and not isinstance(v3.head, nn.Identity) and v3(x).shape == (1, 960)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"out of range: .*5 feature levels: 0 \(16 channels, stride 2\), 1 "):
        create_model("efficientnet_b0", features_only=True, out_indices=(1, 5))
    with pytest.raises(ValueError, match="names a level twice"):
        create_model("efficientnet_b0", features_only=True, out_indices=(1, 1))
    with pytest.raises(ValueError, match="names a level twice"):
        create_model("efficientnet_b0", features_only=True, out_indices=(4, -1))
    for bad in ("1,2", (1.0, 2.0), (), {1, 2}, True):
        with pytest.raises(ValueError, match="out_indices"):
            create_model("efficientnet_b0", features_only=True, out_indices=bad)
    with pytest.raises(ValueError, match="last 6 levels"):
        create_model("efficientnet_b0", features_only=True, out_indices=6)
    with pytest.raises(ValueError, match="features_only=True"):
        create_model("efficientnet_b0", out_indices=(1, 2))
    with pytest.raises(ValueError, match="output_stride must be one of 8, 16, 32, got 12"):
        create_model("efficientnet_b0", output_stride=12)
    with pytest.raises(ValueError, match="output_stride must be one of 8, 16, 32"):
        create_model("efficientnet_lite0", pretrained=True, output_stride=12)
    with pytest.raises(ValueError, match="out of range"):
        create_model("mobilenet_v2").forward_intermediates(torch.randn(1, 3, 32, 32), indices=[7])
    with pytest.raises(ValueError, match="output_fmt"):
        create_model("mobilenet_v2").forward_intermediates(torch.randn(1, 3, 32, 32), output_fmt="NHWC")


def test_torchvision_feature_extractor_and_compile() -> None:
    """torchvision's FX feature extractor and a full-graph ``torch.compile`` on the symmetric-padded families."""
    from torchvision.models.feature_extraction import create_feature_extractor

    x = torch.randn(1, 3, 64, 64)
    for name in ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "efficientnet_v2_b0",
                 "mobilenet_v4_hybrid_medium"):
        model = create_model(name, output_stride=16).eval()
        features = MobileNetFeatures(model)
        nodes = {d["module"]: str(i) for i, d in enumerate(model.feature_info)}
        extractor = create_feature_extractor(model, return_nodes=nodes)
        traced = create_feature_extractor(features, return_nodes={m: m for m in nodes})
        with torch.no_grad():
            expected = features(x)
            assert all(torch.equal(a, b) for a, b in zip(extractor(x).values(), expected, strict=True)), name
            assert all(torch.equal(a, b) for a, b in zip(traced(x).values(), expected, strict=True)), name
    # one graph holds every kind of block but the fused ones: UIB, ConvNext-like, FFN, Mobile MQA, dilated
    features = create_model("mobilenet_v4_hybrid_medium", features_only=True, output_stride=8).eval()
    compiled = torch.compile(features, fullgraph=True, backend="eager")
    with torch.no_grad():
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(compiled(x), features(x), strict=True))


def test_torchvision_faster_rcnn_backbone() -> None:
    """Our backbone + torchvision's FPN and Faster R-CNN: a training step (forward with losses, backward)."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    class Backbone(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = create_model("mobilenet_v3_small_050", features_only=True, out_indices=(2, 3, 4))
            self.fpn = FeaturePyramidNetwork(self.body.feature_info.channels(), 32, extra_blocks=LastLevelMaxPool())
            self.out_channels = 32

        def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
            return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(self.body(x))))

    torch.manual_seed(0)
    anchors = AnchorGenerator(sizes=((16,), (32,), (64,), (128,)), aspect_ratios=((0.5, 1.0, 2.0),) * 4)
    detector = FasterRCNN(Backbone(), num_classes=3, min_size=128, max_size=128, rpn_anchor_generator=anchors,
                          box_roi_pool=MultiScaleRoIAlign(["0", "1", "2"], 7, 2), rpn_batch_size_per_image=32,
                          rpn_pre_nms_top_n_train=64, rpn_post_nms_top_n_train=32, box_batch_size_per_image=16)
    images = [torch.rand(3, 128, 128), torch.rand(3, 112, 128)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 70.0, 90.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[30.0, 5.0, 100.0, 60.0], [0.0, 0.0, 40.0, 40.0]]),
                "labels": torch.tensor([2, 1])}]
    losses = detector(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    grad = detector.backbone.body.stem.conv.weight.grad
    assert grad is not None and bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0
    detections = detector.eval()(images[:1])
    assert detections[0]["boxes"].shape[-1] == 4


@pytest.mark.parametrize(("kernel", "stride", "dilation"), [(3, 2, 2), (5, 2, 2), (3, 1, 4), (5, 1, 2)])
def test_same_padding_with_dilation_matches_timm(kernel: int, stride: int, dilation: int) -> None:
    """TF SAME padding of a dilated conv (strided: MobileNetV4's key/value downsampling) equals timm's, at odd and
    even sizes."""
    from timm.layers import create_conv2d

    from mobilenets.layers import conv2d

    torch.manual_seed(0)
    pad, ours = conv2d(4, 4, kernel, stride, dilation, groups=4, padding="same")
    ref = create_conv2d(4, 4, kernel, stride=stride, dilation=dilation, groups=4, padding="same")
    ours.weight.data.copy_(ref.weight.data)
    for size in (15, 16, 17):
        x = torch.randn(1, 4, size, size + 1, dtype=torch.float64)
        with torch.no_grad():
            expected, actual = ref.double()(x), ours.double()(pad(x))
        assert actual.shape == expected.shape and relative_error(expected, actual) < 1e-12

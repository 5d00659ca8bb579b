"""Every registered model: tables resolve to the papers' numbers, forward/backward, scripting, API and errors."""

from __future__ import annotations

import pytest
import torch

import mobilenets
from mobilenets import (
    CheckpointError,
    FusedMobileBlock,
    MobileBlock,
    build_config,
    create_model,
    from_checkpoint,
    list_models,
    save_checkpoint,
)

ALL = list_models()


def stage_outs(name: str, **kw) -> list[int]:
    return [stage[-1].out_chs for stage in build_config(name, **kw).stages]


def repeats(name: str, **kw) -> list[int]:
    return [len(stage) for stage in build_config(name, **kw).stages]


# -- the tables resolve to the papers' numbers -------------------------------------------------------------------


def test_mobilenet_v1_table():  # Howard et al., 2017, Table 1
    c = build_config("mobilenet_v1")
    assert c.stem_chs == 32 and stage_outs("mobilenet_v1") == [64, 128, 256, 512, 1024]
    assert repeats("mobilenet_v1") == [1, 2, 2, 6, 2]
    assert [b.stride for s in c.stages for b in s] == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    assert stage_outs("mobilenet_v1_025") == [16, 32, 64, 128, 256]


def test_mobilenet_v2_table():  # Sandler et al., 2018, Table 2
    c = build_config("mobilenet_v2")
    assert c.stem_chs == 32 and c.head_chs == 1280
    assert stage_outs("mobilenet_v2") == [16, 24, 32, 64, 96, 160, 320]
    assert repeats("mobilenet_v2") == [1, 2, 3, 4, 3, 3, 1]
    assert [b.mid_chs for b in c.stages[1]] == [96, 144]  # t = 6
    assert build_config("mobilenet_v2_140").head_chs == 1792  # the head grows with width > 1 ...
    assert build_config("mobilenet_v2_050").head_chs == 1280  # ... but never shrinks


def test_mobilenet_v3_tables():  # Howard et al., 2019, Tables 1 and 2
    large = build_config("mobilenet_v3_large")
    assert [b.mid_chs or b.in_chs for s in large.stages for b in s] == [
        16, 64, 72, 72, 120, 120, 240, 200, 184, 184, 480, 672, 672, 960, 960]
    assert [b.out_chs for s in large.stages for b in s][-1] == 160
    assert (large.stem_chs, large.head_chs, large.head_hidden) == (16, 960, 1280)
    small = build_config("mobilenet_v3_small")
    expanded = [b.mid_chs or b.in_chs for s in small.stages for b in s]
    assert expanded == [16, 72, 88, 96, 240, 240, 120, 144, 288, 576, 576]
    assert (small.head_chs, small.head_hidden) == (576, 1024)
    assert [b.act for s in small.stages for b in s][:4] == ["relu", "relu", "relu", "hard_swish"]


def test_mobilenet_v3_expanded_rounding_options():
    # torchvision scales the paper's exp size; TF/timm scale the ratio times the rounded input width
    tv = build_config("mobilenet_v3_large_075")
    tf = build_config("mobilenet_v3_large_075", expand_rounding="divisor")
    assert tv.stages[3][3].mid_chs == 136  # adjust(184 * 0.75)
    assert tf.stages[3][3].mid_chs == 144  # adjust(64 * 184 / 80)


def test_minimal_variants():
    c = build_config("mobilenet_v3_large_minimal")
    blocks = [b for s in c.stages for b in s]
    assert all(b.se_chs == 0 and b.kernel_size == 3 and b.act == "relu" for b in blocks)
    assert c.stem_act == c.head_act == "relu"


def test_efficientnet_scaling():  # Tan & Le, 2019, Table 1 and Sec. 3.3
    assert stage_outs("efficientnet_b0") == [16, 24, 40, 80, 112, 192, 320]
    assert repeats("efficientnet_b0") == [1, 2, 2, 3, 3, 4, 1]
    assert stage_outs("efficientnet_b7") == [32, 48, 80, 160, 224, 384, 640]
    assert repeats("efficientnet_b7") == [4, 7, 7, 10, 10, 13, 4]
    assert build_config("efficientnet_b7").head_chs == 2560
    lite4 = build_config("efficientnet_lite4")
    assert lite4.stem_chs == 32 and lite4.head_chs == 1280  # fixed stem and head
    assert repeats("efficientnet_lite4")[0] == 1 and repeats("efficientnet_lite4")[-1] == 1


def test_efficientnet_v2_s_table():  # Tan & Le, 2021, Table 4
    c = build_config("efficientnet_v2_s")
    assert c.stem_chs == 24 and c.head_chs == 1280
    assert stage_outs("efficientnet_v2_s") == [24, 48, 64, 128, 160, 256]
    assert repeats("efficientnet_v2_s") == [2, 4, 4, 6, 9, 15]
    assert [type(s[0]) for s in c.stages] == [FusedMobileBlock.Config] * 3 + [MobileBlock.Config] * 3


def test_repeats_and_kernel_overrides():
    c = build_config("mobilenet_v2", repeats=(1, 1, 1, 1, 1, 1, 1), kernel_sizes=(3, 5, 5, 5, 3, 3, 7))
    assert repeats("mobilenet_v2", repeats=[1] * 7) == [1] * 7
    assert [s[0].kernel_size for s in c.stages] == [3, 5, 5, 5, 3, 3, 7]
    with pytest.raises(ValueError, match="one entry per row"):
        build_config("mobilenet_v2", repeats=(1, 2))


def test_stochastic_depth_grows_linearly():
    c = build_config("efficientnet_b0", drop_path_rate=0.2)
    rates = [b.drop_path for s in c.stages for b in s]
    assert rates[0] == 0.0 and rates == sorted(rates) and rates[-1] == pytest.approx(0.2 * 15 / 16)


# -- every registered model runs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_forward_backward(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, drop_path_rate=0.1)
    assert model.training
    x = torch.randn(2, 3, 32, 32)  # the smallest input a stride-32 network takes; keeps B8 / V2-XL quick
    out = model(x)
    assert out.shape == (2, 7)
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    feats = model.forward_features(x)
    assert feats.shape == (2, model.num_features, 1, 1)
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.head_hidden_size)


def test_in_chans_and_headless():
    model = create_model("mobilenet_v3_small", in_chans=1, num_classes=0).eval()
    assert model(torch.randn(1, 1, 96, 96)).shape == (1, model.head_hidden_size)


def test_reset_classifier():
    model = create_model("efficientnet_b0")
    model.reset_classifier(5)
    assert model.get_classifier().out_features == 5 and model.config.num_classes == 5
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 5)
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), torch.nn.Identity)


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_lite0",
                                  "efficientnet_v2_b0", "mobilenet_v4_hybrid_medium"])
def test_torchscript(name: str) -> None:
    model = create_model(name).eval()
    x = torch.randn(1, 3, 96, 96)
    scripted = torch.jit.script(model)
    torch.testing.assert_close(scripted(x), model(x))


@pytest.mark.parametrize("name", ["mobilenet_v3_large", "efficientnet_b0", "efficientnet_v2_s",
                                  "mobilenet_v4_hybrid_medium"])
def test_torch_export(name: str) -> None:
    model = create_model(name, num_classes=10).eval()
    x = torch.randn(1, 3, 96, 96)
    exported = torch.export.export(model, (x,))
    torch.testing.assert_close(exported.module()(x), model(x))


# -- API and errors ------------------------------------------------------------------------------------------------


def test_list_models():
    assert list_models("efficientnet_lite*") == [f"efficientnet_lite{i}" for i in range(5)]
    assert list_models("mobilenet_v3_*") == [
        "mobilenet_v3_large", "mobilenet_v3_large_050", "mobilenet_v3_large_075", "mobilenet_v3_large_150d",
        "mobilenet_v3_large_minimal", "mobilenet_v3_small", "mobilenet_v3_small_050", "mobilenet_v3_small_075",
        "mobilenet_v3_small_minimal"]
    assert list_models("efficientnet_v2_*") == [f"efficientnet_v2_{v}" for v in ("b0", "b1", "b2", "b3", "l", "m",
                                                                                 "s", "xl")]
    assert len(list_models("mobilenet_v1*")) == 5 and len(list_models("efficientnet_b*")) == 9
    assert list_models("no_such_*") == []


def test_unknown_model_suggests_close_names():
    with pytest.raises(ValueError, match="mobilenet_v3_large"):
        create_model("mobilenet_v3_larg")


def test_unknown_option_is_named():
    with pytest.raises(ValueError, match="bn_epsilon"):
        create_model("mobilenet_v2", bn_epsilon=1e-3)


@pytest.mark.parametrize("kw, match", [
    (dict(padding="valid"), "padding"),
    (dict(downsample="max"), "downsample"),
    (dict(downsample=None), "downsample"),
    (dict(width_mult=0), "width_mult"),
    (dict(drop_rate=1.5), "drop_rate"),
    (dict(act="mish"), "act"),  # gelu is known since MobileNetV4-Hybrid-L
    (dict(num_classes=-1), "num_classes"),
])
def test_invalid_values(kw, match):
    with pytest.raises(ValueError, match=match):
        create_model("mobilenet_v2", **kw)


def test_config_table_reads_like_the_paper():
    rows = {line.split()[0]: line.split()[1:] for line in create_model("mobilenet_v2").config.table().splitlines()[2:]}
    assert rows["stem"] == ["ConvNormAct", "3", "2", "3", "32", "relu6"]
    assert rows["stages.1.0"] == ["MobileBlock", "3", "2", "16", "96", "24", "relu6"]  # k s in mid out act
    assert rows["stages.6.0"] == ["MobileBlock", "3", "1", "160", "960", "320", "relu6"]
    assert rows["head"] == ["ConvNormAct", "1", "1", "320", "1280", "relu6"]
    assert rows["classifier"] == ["Linear", "1280", "1000"]
    assert len(rows) == 1 + 17 + 2  # stem, the paper's 17 bottlenecks, head conv, classifier
    v3 = {line.split()[0]: line.split()[1:] for line in build_config("mobilenet_v3_small").table().splitlines()[2:]}
    assert v3["stages.0.0"] == ["MobileBlock", "3", "2", "16", "16", "8", "relu"]  # no expansion: mid empty, SE 8
    assert v3["pre_logits"] == ["Linear", "576", "1024", "hard_swish"]
    v1 = {line.split()[0]: line.split()[1:] for line in build_config("mobilenet_v1").table().splitlines()[2:]}
    assert v1["stages.3.5"] == ["DepthwiseSeparable", "3", "1", "512", "512", "relu6"] and "head" not in v1


def test_public_names():
    from mobilenets import blocks, cache, checkpoint, factory, layers, manifest, pretrained, registry, specs

    assert mobilenets.MobileBlock is blocks.MobileBlock and mobilenets.MobileBlock.Config is blocks.MobileBlock.Config
    assert mobilenets.create_model is registry.create_model is factory.create_model
    assert mobilenets.from_checkpoint is checkpoint.from_checkpoint
    assert pretrained.load_manifest is manifest.load_manifest and pretrained.get_cache_dir is cache.get_cache_dir
    assert pretrained.PretrainedError is manifest.PretrainedError
    assert pretrained.download_deadline is cache.download_deadline
    assert mobilenets.resolve is specs.resolve and mobilenets.SqueezeExcite is layers.SqueezeExcite
    assert mobilenets.adjust_channels(32 * 0.35) == 16 and mobilenets.list_models("mobilenet_v2") == ["mobilenet_v2"]
    assert sorted(mobilenets.__all__) == sorted(set(mobilenets.__all__))  # no name listed twice
    missing = [n for n in mobilenets.__all__ if getattr(mobilenets, n, None) is None]
    assert not missing, missing


# -- declared stages and typed block configs -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_stages_are_declared_and_stride_only_first(name: str) -> None:
    """Every stage comes from the table; only a stage's first block may change resolution (timm, TF builders)."""
    config = build_config(name)
    arch = mobilenets.ARCHITECTURES[mobilenets.get_spec(name).arch]
    assert len(config.stages) == len(arch.stages)
    for stage, rows in zip(config.stages, arch.stages, strict=True):
        assert [b.stride for b in stage[1:]] == [1] * (len(stage) - 1)
        assert {type(b) for b in stage} == {r.block.Config for r in rows}


def test_stages_match_timm_blocks_layout():
    # timm's blocks.<stage>.<block> for MobileNetV3 (its head conv is one more stage there)
    assert repeats("mobilenet_v3_large") == [1, 2, 3, 4, 2, 3]
    assert repeats("mobilenet_v3_small") == [1, 2, 3, 2, 3]
    assert repeats("mobilenet_v3_large_150d") == [2, 3, 4, 5, 3, 4]  # ceil(n * 1.2) per stage (parity-tested)


def test_a_declared_stage_may_mix_widths():
    """MobileNetV4-Conv-S's second stage is 96 then 64 channels: one stage, as timm's blocks.1.{0,1}."""
    from mobilenets.specs import Architecture, Row

    rows = (Row(MobileBlock, 3, 2, 1, 96, 1, 0, "relu"), Row(MobileBlock, 1, 1, 1, 64, 1, 0, "relu"))
    arch = Architecture("mixed", "test", stem=32, stages=(rows[:1], rows), head=960)
    config = mobilenets.resolve(arch, mobilenets.Options())
    assert [[b.out_chs for b in stage] for stage in config.stages] == [[96], [96, 64]]
    with torch.device("meta"):
        keys = mobilenets.MobileNet(config).state_dict()
    assert "stages.1.1.conv_pwl.conv.weight" in keys and "stages.2.0.conv_dw.conv.weight" not in keys


def test_block_configs_hold_only_what_their_block_reads():
    from dataclasses import fields

    names = {cls: {f.name for f in fields(cls)} for cls in
             (mobilenets.DepthwiseSeparable.Config, MobileBlock.Config, FusedMobileBlock.Config)}
    assert "drop_path" not in names[mobilenets.DepthwiseSeparable.Config]
    assert "mid_chs" not in names[mobilenets.DepthwiseSeparable.Config]
    assert {"mid_chs", "drop_path"} <= names[MobileBlock.Config] and names[MobileBlock.Config] == names[
        FusedMobileBlock.Config]
    config = build_config("efficientnet_v2_s", drop_path_rate=0.2).stages[1][1]
    block = config.build(mobilenets.LayerOptions(bn_eps=1e-3))
    assert isinstance(block, FusedMobileBlock) and block.conv_exp.bn.eps == 1e-3
    assert block.drop_path.p == pytest.approx(config.drop_path) and config.drop_path > 0
    v1 = build_config("mobilenet_v1", drop_path_rate=0.2).stages[1][0]
    assert isinstance(v1, mobilenets.DepthwiseSeparable.Config) and not hasattr(v1, "drop_path")


def test_depthwise_separable_rejects_an_expansion():
    from dataclasses import replace

    arch = mobilenets.ARCHITECTURES["mobilenet_v1"]
    row = replace(arch.stages[0][0], expand=6)
    bad = replace(arch, stages=((row,),) + arch.stages[1:])
    with pytest.raises(ValueError, match="DepthwiseSeparable has no expansion layer"):
        mobilenets.resolve(bad, mobilenets.Options())


def test_width_rules():
    from mobilenets import specs

    o = mobilenets.Options
    assert specs.expanded_width(24, 24, 6, o()) == 144 and specs.expanded_width(24, 24, 1, o()) is None
    assert specs.expanded_width(20, 24, 184 / 80, o(expand_rounding="round")) == 46  # round(20 * 2.3)
    assert specs.expanded_width(64, 80, 184 / 80, o(expand_rounding="width", width_mult=0.75)) == 136
    assert specs.se_width(40, 120, 0.25, o()) == 10 and specs.se_width(40, 120, 0.25, o(se_width="expanded")) == 32
    assert specs.se_width(40, 120, 0.0, o()) == 0
    v2 = mobilenets.ARCHITECTURES["mobilenet_v2"]
    widths = {mode: specs.head_width(v2, o(width_mult=0.5, head_scaling=mode))
              for mode in ("scaled", "at_least", "fixed", "none")}
    assert widths == {"scaled": 640, "at_least": 1280, "fixed": 1280, "none": 0}
    assert specs.drop_path_rates(4, 0.2) == [0.0, 0.05, 0.1, pytest.approx(0.15)]
    assert specs.scale_depth([1, 2], 1.2) == [1, 3] and specs.scale_depth([4], 1.1) == [5]


# -- checkpoints -------------------------------------------------------------------------------------------------


def test_checkpoint_round_trip(tmp_path):
    model = create_model("mobilenet_v3_small", num_classes=10, bn_eps=1e-5, padding="same").eval()
    path = save_checkpoint(model, tmp_path / "m.safetensors", source="test")
    assert not list(tmp_path.glob(".*tmp"))
    loaded = from_checkpoint(path).eval()
    assert loaded.config == model.config
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(loaded(x), model(x))
    again = create_model("mobilenet_v3_small", checkpoint_path=path).eval()  # takes the file's options
    torch.testing.assert_close(again(x), model(x))
    with pytest.raises(CheckpointError, match="not 'mobilenet_v3_large'"):
        create_model("mobilenet_v3_large", checkpoint_path=path)
    with pytest.raises(CheckpointError, match="padding"):
        create_model("mobilenet_v3_small", checkpoint_path=path, padding="symmetric")
    with pytest.raises(CheckpointError, match="num_classes"):
        create_model("mobilenet_v3_small", checkpoint_path=path, num_classes=5)


@pytest.mark.parametrize("name, down", [("mobilenet_v4_conv_aa_medium", "avg"),
                                        ("mobilenet_v4_conv_blur_medium", "blur")])
def test_downsample_option_round_trips_through_a_checkpoint(tmp_path, name, down):
    model = create_model(name, num_classes=10).eval()
    assert model.config.options.downsample == down and model.stem.conv.stride == (2, 2)
    path = save_checkpoint(model, tmp_path / "m.safetensors", source="test")
    loaded = from_checkpoint(path).eval()
    assert loaded.config.options.downsample == down
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(loaded(x), model(x))
    with pytest.raises(CheckpointError, match="downsample"):
        create_model(name, checkpoint_path=path, downsample="stride")
    plain = create_model("mobilenet_v4_conv_medium", num_classes=10, downsample=down).eval()
    plain.load_state_dict(model.state_dict())  # the same keys: the downsampling layers have no state
    torch.testing.assert_close(plain(x), model(x))


def test_corrupt_and_foreign_checkpoints(tmp_path):
    path = save_checkpoint(create_model("mobilenet_v3_small"), tmp_path / "m.safetensors")
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        from_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="does not exist"):
        from_checkpoint(tmp_path / "nope.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(CheckpointError, match="not written by mobilenets"):
        from_checkpoint(tmp_path / "foreign.safetensors")


# -- MobileNetV4 (Qin et al., 2024) --------------------------------------------------------------------------------


def test_mobilenet_v4_tables():
    """The appendix tables' stage layout (timm's blocks.<i>), the UIB variants, and the 1280-wide normed head."""
    assert repeats("mobilenet_v4_conv_small") == [2, 2, 6, 6] and stage_outs("mobilenet_v4_conv_small") == [
        32, 64, 96, 128]
    assert repeats("mobilenet_v4_conv_medium") == [1, 2, 8, 11] and repeats("mobilenet_v4_conv_large") == [
        1, 2, 11, 13]
    assert repeats("mobilenet_v4_hybrid_medium") == [1, 2, 12, 16] and repeats("mobilenet_v4_hybrid_large") == [
        1, 2, 15, 18]
    config = build_config("mobilenet_v4_conv_small")
    assert [type(b).__name__ for b in config.stages[1]] == ["Config", "Config"]
    assert all(isinstance(b, mobilenets.ConvBN.Config) for s in config.stages[:2] for b in s)
    uib = config.stages[2]
    assert (uib[0].start_kernel, uib[0].kernel_size, uib[0].stride, uib[0].mid_chs) == (5, 5, 2, 192)  # ExtraDW, 64 in
    assert (uib[1].start_kernel, uib[1].kernel_size, uib[1].mid_chs) == (0, 3, 192)  # IB
    assert (uib[5].start_kernel, uib[5].kernel_size, uib[5].mid_chs) == (3, 0, 384)  # ConvNext-like
    assert (config.head_chs, config.head_hidden, config.head_norm) == (960, 1280, True)
    assert all(b.layer_scale == 0.0 for s in config.stages[2:] for b in s)
    narrow = build_config("mobilenet_v4_conv_small_035")
    assert narrow.stem_chs == 32 and stage_outs("mobilenet_v4_conv_small_035") == [16, 24, 32, 48]
    assert (narrow.head_chs, narrow.head_hidden) == (336, 1280)  # head conv scaled, the 1280 FC not (timm)


def test_mobilenet_v4_blocks():
    from mobilenets.blocks import MobileMultiQueryAttention, UniversalInvertedBottleneck

    ffn = UniversalInvertedBottleneck(16, 16, start_kernel=0, kernel_size=0, mid_chs=32)
    assert isinstance(ffn.dw_start, torch.nn.Identity) and isinstance(ffn.dw_mid, torch.nn.Identity)
    convnext = UniversalInvertedBottleneck(16, 24, start_kernel=5, kernel_size=0, stride=2, mid_chs=64)
    assert convnext.dw_start.conv.stride == (2, 2) and convnext(torch.randn(1, 16, 8, 8)).shape == (1, 24, 4, 4)
    extra = UniversalInvertedBottleneck(16, 24, start_kernel=3, kernel_size=5, stride=2, mid_chs=64, layer_scale=0.5)
    assert extra.dw_start.conv.stride == (1, 1) and extra.dw_mid.conv.stride == (2, 2)  # stride on the middle dw
    assert torch.equal(extra.layer_scale.gamma, torch.full((24,), 0.5))
    with pytest.raises(ValueError, match="strided UniversalInvertedBottleneck needs"):
        UniversalInvertedBottleneck(16, 16, start_kernel=0, kernel_size=0, stride=2)
    hybrid = build_config("mobilenet_v4_hybrid_medium")
    mqa = hybrid.stages[2][4]
    assert isinstance(mqa, MobileMultiQueryAttention.Config) and (mqa.num_heads, mqa.key_dim, mqa.kv_stride) == (
        4, 64, 2)
    assert hybrid.stages[3][8].kv_stride == 1 and mqa.layer_scale == 1e-5 and hybrid.stages[1][0].layer_scale == 1e-5
    block = mqa.build().eval()
    x = torch.randn(2, 160, 6, 6)
    assert block.key_proj.weight.shape == (64, 160, 1, 1) and block.query_proj.weight.shape == (256, 160, 1, 1)
    torch.nn.init.ones_(block.layer_scale.gamma)
    with torch.no_grad():
        out = block(x)
        # each query head attends over the same (downsampled) keys and values: the heads' outputs, one per head
        y = block.norm(x)
        q = block.query_proj(y).reshape(2, 4, 64, 36)
        k = block.key_proj(block.key_down(y)).reshape(2, 64, 9)
        v = block.value_proj(block.value_down(y)).reshape(2, 64, 9)
        heads = [torch.softmax(q[:, h].transpose(1, 2) @ k / 8.0, -1) @ v.transpose(1, 2) for h in range(4)]
        expected = block.out_proj(torch.cat([o.transpose(1, 2) for o in heads], 1).reshape(2, 256, 6, 6)) + x
    torch.testing.assert_close(out, expected)
    assert build_config("mobilenet_v4_hybrid_large").stages[0][0].act == "gelu"

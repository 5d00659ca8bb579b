"""timm-compatible training hooks: global_pool, set_grad_checkpointing, group_matcher (timm's layer decay)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import mobilenets
from tests.conftest import randomize_bn


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MOBILENETS_HOME", str(tmp_path / "home"))


def test_global_pool_choices(tmp_path) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    base = randomize_bn(mobilenets.create_model("mobilenet_v3_small", num_classes=0)).eval()
    with torch.no_grad():
        fmap = base.forward_features(x)
        avg, mx = fmap.mean((2, 3)), fmap.amax((2, 3))
        for kind, pooled in (("avg", avg), ("max", mx), ("avgmax", 0.5 * (avg + mx))):
            model = mobilenets.create_model("mobilenet_v3_small", num_classes=0, global_pool=kind)
            model.load_state_dict(base.state_dict())
            out = model.eval()(x)
            assert model.num_features == base.num_features and isinstance(model.pool, torch.nn.Module)
            torch.testing.assert_close(out, base.pre_logits(pooled), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"global_pool='sum' is not one of \('avg', 'max', 'avgmax'\)"):
        mobilenets.create_model("mobilenet_v3_small", global_pool="sum")

    # reset_classifier changes the pool, the config records it, a checkpoint keeps it
    base.reset_classifier(7, global_pool="max")
    assert isinstance(base.pool, torch.nn.AdaptiveMaxPool2d) and base.classifier.out_features == 7
    assert base.config.options.global_pool == "max"
    base.reset_classifier(5)  # None keeps the pool
    assert isinstance(base.pool, torch.nn.AdaptiveMaxPool2d) and base.config.num_classes == 5
    with pytest.raises(ValueError, match="global_pool='median'"):
        base.reset_classifier(5, global_pool="median")
    again = mobilenets.from_checkpoint(mobilenets.save_checkpoint(base, tmp_path / "m.safetensors"))
    assert again.config.options.global_pool == "max" and isinstance(again.pool, torch.nn.AdaptiveMaxPool2d)


def test_global_pool_with_pretrained_weights() -> None:
    ref = mobilenets.create_model("efficientnet_lite0", pretrained=True)
    model = mobilenets.create_model("efficientnet_lite0", pretrained=True, global_pool="avgmax")
    assert model.config.options.global_pool == "avgmax" and model.pretrained_cfg == ref.pretrained_cfg
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in model.state_dict().items())
    assert not hasattr(model, "surgery_report")


def test_grad_checkpointing_recomputes_blocks_with_equal_gradients() -> None:
    torch.manual_seed(0)
    model = randomize_bn(mobilenets.create_model("mobilenet_v3_small", num_classes=10)).double()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    calls = []
    block = model.stages[2][1]
    block.register_forward_pre_hook(lambda *_: calls.append(1))  # recomputation stops early, before post-hooks

    def grads(enable: bool) -> dict[str, torch.Tensor]:
        model.zero_grad()
        model.set_grad_checkpointing(enable)
        calls.clear()
        F.cross_entropy(model(x), torch.tensor([1, 2])).backward()
        return {k: p.grad.clone() for k, p in model.named_parameters()}

    model.eval()  # BatchNorm statistics unchanged between the two runs
    plain, plain_calls = grads(False), len(calls)
    checkpointed, checkpointed_calls = grads(True), len(calls)
    assert plain_calls == 1 and checkpointed_calls == 2  # forward, then again in backward
    assert plain.keys() == checkpointed.keys()
    for k, g in plain.items():
        torch.testing.assert_close(checkpointed[k], g, rtol=1e-12, atol=0, msg=k)
    with torch.no_grad():  # no recomputation without autograd
        calls.clear()
        model(x)
    assert len(calls) == 1

    # train mode: the same gradients (dropout and stochastic depth replay their random draws), and BatchNorm's
    # running statistics updated once, not again by the recomputation
    model.train()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    states = []
    for enable in (False, True):
        model.load_state_dict(start)
        torch.manual_seed(1)
        states.append((grads(enable), {k: v.clone() for k, v in model.state_dict().items()}))
    (g0, s0), (g1, s1) = states
    assert not torch.equal(s0["stages.2.1.conv_dw.bn.running_mean"], start["stages.2.1.conv_dw.bn.running_mean"])
    for k in s0:
        assert torch.equal(s0[k], s1[k]), k
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], rtol=1e-12, atol=0, msg=k)


def _scales(model: torch.nn.Module, **kwargs) -> dict[str, float]:
    timm_optim = pytest.importorskip("timm.optim")
    optimizer = timm_optim.create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, **kwargs)
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: (g["lr_scale"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}


def test_timm_layer_decay() -> None:
    """timm's create_optimizer_v2(layer_decay=0.7) crashed on our models (no group_matcher, pretrained_cfg None)."""
    model = mobilenets.create_model("efficientnet_lite0")  # 16 blocks
    scales = _scales(model, layer_decay=0.7)
    assert set(scales) == {n for n, _ in model.named_parameters()}
    # layers: stem 0, one per block 1..16, classifier 17 (the head conv joins the last block, as in timm)
    assert scales["stem.conv.weight"] == (pytest.approx(0.7 ** 17), 0.05)
    assert scales["stem.bn.weight"] == (pytest.approx(0.7 ** 17), 0.0)  # 1-d: no weight decay
    assert scales["stages.3.1.conv_dw.conv.weight"][0] == pytest.approx(0.7 ** (17 - 7))  # block 7 of 16
    assert scales["stages.6.0.conv_pwl.conv.weight"][0] == scales["head.conv.weight"][0] == pytest.approx(0.7)
    assert scales["classifier.weight"] == (1.0, 0.05) and scales["classifier.bias"] == (1.0, 0.0)

    coarse = model.group_matcher(coarse=True)
    timm_models = pytest.importorskip("timm.models")
    layers = timm_models.group_parameters(model, coarse, reverse=True)
    assert layers["stem.conv.weight"] == 0 and layers["stages.3.0.conv_pw.conv.weight"] == \
        layers["stages.3.2.conv_pwl.bn.bias"] == 4 and layers["head.conv.weight"] == 7
    # MobileNetV3: the FC after pooling (pre_logits) comes last with the classifier
    v3 = _scales(mobilenets.create_model("mobilenet_v3_small"), layer_decay=0.5)
    assert v3["pre_logits.fc.weight"][0] == v3["classifier.weight"][0] == 1.0
    assert v3["stem.conv.weight"][0] == pytest.approx(0.5 ** 12)  # 11 blocks + stem + last group

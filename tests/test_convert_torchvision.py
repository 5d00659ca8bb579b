"""Parity with torchvision: convert randomly initialised torchvision models and compare float64 logits."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_converts_exactly, randomize_bn

from mobilenets.convert import supported_sources

torchvision = pytest.importorskip("torchvision")

SOURCES = [s for s in supported_sources() if s.startswith("torchvision:")]


def test_every_torchvision_model_is_supported():
    expected = {"mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small"}
    expected |= {f"efficientnet_b{i}" for i in range(8)} | {f"efficientnet_v2_{v}" for v in "sml"}
    assert {s.split(":")[1] for s in SOURCES} == expected


@pytest.mark.parametrize("source", SOURCES)
def test_parity(source: str, parity_input: torch.Tensor) -> None:
    torch.manual_seed(0)
    ref = randomize_bn(getattr(torchvision.models, source.split(":")[1])()).double().eval()
    assert_converts_exactly(ref, source, parity_input)

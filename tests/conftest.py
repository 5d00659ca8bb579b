"""Shared test helpers: randomised BatchNorm statistics and float64 logit comparison."""

from __future__ import annotations

import signal
import socket
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


PARITY_SIZE = 128  # small inputs keep the float64 parity suite fast


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters, so a wrong eps or mapping shows."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.rand(n, generator=g) * 0.6 - 0.3)
                m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=g)))
    return model


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / a.abs().max().clamp_min(1e-30))


def param_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def assert_converts_exactly(reference: torch.nn.Module, source: str, x: torch.Tensor) -> torch.nn.Module:
    """Convert ``reference`` (float64, eval) as ``source`` through the CLI's code path and prove it equal.

    Checks: strict conversion, equal parameter counts, the same BatchNorm eps and momentum layer by layer, and
    float64 logits within a relative error of 1e-9. Returns our model (float64, eval).
    """
    from mobilenets.convert import convert_state_dict, key_map
    from mobilenets.model import MobileNet

    config, state = convert_state_dict(reference.state_dict(), source)
    with torch.device("meta"):  # no random init: every tensor comes from the converted state dict
        ours = MobileNet(config)
    ours.load_state_dict(state, strict=True, assign=True)
    ours.eval()
    assert param_count(ours) == param_count(reference)
    for our_key, their_key in key_map(source, config).pairs:
        if our_key.endswith(".bn.weight"):
            a, b = ours.get_submodule(our_key[: -len(".weight")]), reference.get_submodule(their_key[: -len(".weight")])
            assert a.eps == b.eps and a.momentum == pytest.approx(b.momentum), our_key  # EfficientNet-PyTorch: 1 - 0.99
    with torch.no_grad():
        expected, actual = reference(x), ours(x)
    assert relative_error(expected.flatten(1), actual) < 1e-9
    return ours


@pytest.fixture(autouse=True)
def fast_cpu():
    """One thread, denormals flushed. The tests run many small (often float64, per-channel depthwise) ops, which
    gain nothing from threads: a second thread made them slower even on an idle 2-core machine, and 10-20x slower
    on a busy one. Randomly initialised weights produce denormals, which are slow on CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach beyond loopback: a connection elsewhere fails the test."""
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address):  # noqa: ANN001
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1"):
            raise AssertionError(f"test tried to reach the network: {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture
def parity_input() -> torch.Tensor:
    return torch.randn(2, 3, PARITY_SIZE, PARITY_SIZE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.fixture(autouse=True)
def restore_sigchld():
    """A DataLoader with workers installs PyTorch's SIGCHLD handler in this process for good; each test gets back
    the disposition it found, so one test's handler does not run in the next. (The SIGSEGVs once blamed on it, when a
    child ended after the OpenVINO tests, came from OpenVINO's freed signal stack: see
    ``mobilenets.quantize.openvino_core``.)"""
    previous = signal.getsignal(signal.SIGCHLD)
    yield
    if signal.getsignal(signal.SIGCHLD) is not previous:
        signal.signal(signal.SIGCHLD, previous)

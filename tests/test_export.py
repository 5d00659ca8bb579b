"""Export, BatchNorm folding and the fast inference path (issue 9).

One small model per family (reduced width and depth, randomized BatchNorm statistics): every graph capture and
export (FX, ``torch.compile`` graph capture, ``torch.export`` with dynamic sizes, TorchScript script and trace,
ONNX in onnxruntime) equals the eager model at input sizes other than the one it was captured at, SAME padding
included; folded BatchNorm leaves the logits unchanged on real images.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import pytest
import torch
from conftest import randomize_bn
from PIL import Image

import mobilenets
from mobilenets import cli, create_model
from mobilenets.data import eval_transform
from mobilenets.export import (
    MIN_SIZE,
    export_onnx,
    export_program,
    export_torchscript,
    fuse,
    metadata,
    optimize_for_inference,
    read_metadata,
)
from mobilenets.layers import PadSame

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# family -> (model name, build options): one representative each, made small to keep capture times short
FAMILIES = {
    "v1": ("mobilenet_v1", dict(width_mult=0.25)),
    "v2": ("mobilenet_v2", dict(width_mult=0.35, depth_mult=0.3)),
    "v3_large": ("mobilenet_v3_large", dict(width_mult=0.35, depth_mult=0.3)),  # hard-swish, SE, BN-free FC head
    "v3_small": ("mobilenet_v3_small", dict(width_mult=0.5, depth_mult=0.3)),
    "efficientnet": ("efficientnet_b0", dict(width_mult=0.25, depth_mult=0.3)),  # SiLU, SE
    "lite_same": ("efficientnet_lite0", dict(width_mult=0.25, depth_mult=0.3)),  # TF SAME padding, k3/k5 stride 2
    "v2_same": ("efficientnet_v2_b0", dict(width_mult=0.25, depth_mult=0.3, padding="same")),  # Fused-MBConv
    "v4_conv": ("mobilenet_v4_conv_small", dict(width_mult=0.25, depth_mult=0.3)),  # UIB, BatchNorm1d head
    "v4_hybrid": ("mobilenet_v4_hybrid_medium", dict(width_mult=0.25, depth_mult=0.3)),  # attention, layer scale
}
CAPTURE = (1, 3, 96, 96)  # the size graphs are captured at
OTHER = [(2, 3, 129, 97), (1, 3, MIN_SIZE, 160)]  # odd and even, other than CAPTURE


def small_model(family: str) -> torch.nn.Module:
    name, options = FAMILIES[family]
    torch.manual_seed(0)
    model = randomize_bn(create_model(name, num_classes=10, **options)).eval()
    with torch.no_grad():  # He-init convs over many layers give large logits; scale the classifier down to ~1
        model.classifier.weight.mul_(10.0)
    return model


@pytest.fixture(scope="module", params=list(FAMILIES))
def family_model(request: pytest.FixtureRequest) -> tuple[str, torch.nn.Module]:
    return request.param, small_model(request.param)


def inputs() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return [torch.randn(*shape, generator=g) for shape in OTHER]


def assert_same(run, model: torch.nn.Module, atol: float = 1e-5, batch: int | None = None) -> None:
    for x in inputs():
        if batch is not None:
            x = x[:batch]
        with torch.no_grad():
            expected, actual = model(x), run(x)
        assert actual.shape == expected.shape
        scale = max(1.0, float(expected.abs().max()))
        assert float((actual - expected).abs().max()) <= atol * scale, tuple(x.shape)


def test_same_padding_has_the_tf_amounts_at_every_size() -> None:
    """The branch-free formula equals TF's ``max((ceil(n / s) - 1) * s + e - n, 0)`` (odd/even sizes, dilation)."""
    for k in (3, 5, 7):
        for s in (2, 3, 4):
            for d in (1, 2):
                pad = PadSame(k, s, d)
                effective = (k - 1) * d + 1
                for n in range(1, 40):
                    expected = max((-(-n // s) - 1) * s + effective - n, 0)
                    assert pad._total(n) == expected, (k, s, d, n)
                    x = torch.zeros(1, 1, n, n + 1, dtype=torch.float64)
                    conv_out = torch.nn.functional.conv2d(pad(x), torch.zeros(1, 1, k, k, dtype=torch.float64),
                                                          stride=s, dilation=d)
                    assert conv_out.shape[-2:] == (-(-n // s), -(-(n + 1) // s))


def test_fx_feature_extractor(family_model) -> None:
    from torchvision.models.feature_extraction import create_feature_extractor

    _, model = family_model
    extractor = create_feature_extractor(model, ["classifier"])
    assert_same(lambda x: extractor(x)["classifier"], model)


def test_compile_captures_one_graph(family_model) -> None:
    """``fullgraph=True``: no graph break (the ``eager`` backend skips inductor's compile; symbolic sizes are
    covered by ``torch.export`` below, which runs the same capture at a fraction of dynamo's dynamic-shape cost)."""
    _, model = family_model
    torch._dynamo.reset()  # every family shares MobileNet.forward's code object and its recompile budget
    compiled = torch.compile(model, fullgraph=True, backend="eager", dynamic=False)
    x = inputs()[0]
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), rtol=0, atol=1e-5 * max(1.0, float(model(x).abs().max())))


def test_torch_export_dynamic_batch_and_size(family_model, tmp_path) -> None:
    family, model = family_model
    # SAME padding: a symbolic batch on top of symbolic sizes works too, but costs 4x the export time (100 s)
    dynamic_batch = family not in ("lite_same", "v2_same")
    path = export_program(model, tmp_path / f"{family}.pt2", dynamic_batch=dynamic_batch, dynamic_size=True, fuse=False)
    assert_same(torch.export.load(path).module(), model, batch=None if dynamic_batch else 1)


def test_torchscript_script_and_trace(family_model) -> None:
    _, model = family_model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_same(torch.jit.script(model), model)
        assert_same(torch.jit.trace(model, torch.randn(*CAPTURE)), model)


def test_onnx_dynamic_batch_and_size_in_onnxruntime(family_model, tmp_path) -> None:
    import onnxruntime as ort

    family, model = family_model
    path = export_onnx(model, tmp_path / f"{family}.onnx", dynamic_batch=True, dynamic_size=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 257, 241, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = model(x)
    (actual,) = session.run(None, {"input": x.numpy()})
    assert float((torch.from_numpy(actual) - expected).abs().max()) <= 1e-4 * max(1.0, float(expected.abs().max()))
    meta = read_metadata(path)
    assert meta["model"] == FAMILIES[family][0] and meta["num_classes"] == 10
    assert meta["categories"] == [f"class {i}" for i in range(10)]


def test_fuse_keeps_the_logits(family_model) -> None:
    family, model = family_model
    fused = fuse(model)
    kinds = {type(m) for m in fused.modules()}
    assert torch.nn.BatchNorm1d not in kinds
    if family != "v4_hybrid":  # its attention blocks' pre-norm has no conv before it and stays
        assert torch.nn.BatchNorm2d not in kinds
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    transform = eval_transform({"input_size": (3, 96, 96)})
    x = torch.stack([transform(Image.open(EXAMPLES / n)) for n in ("chelsea.jpg", "coffee.jpg")])
    with torch.no_grad():
        expected, actual = model(x), fused(x)
    assert float((actual - expected).abs().max()) <= 1e-5 * max(1.0, float(expected.abs().max()))
    model64 = copy.deepcopy(model).double()  # in float64 folding is exact to rounding
    with torch.no_grad():
        assert torch.allclose(fuse(model64)(x.double()), model64(x.double()), rtol=0, atol=1e-10)


def test_fuse_pretrained_lite0_on_real_images() -> None:
    model = create_model("efficientnet_lite0", pretrained=True).eval()
    transform = eval_transform(model)
    x = torch.stack([transform(Image.open(EXAMPLES / n)) for n in ("chelsea.jpg", "coffee.jpg")])
    fused = model.fuse()
    with torch.no_grad():
        expected, actual = model(x), fused(x)
    assert float((actual - expected).abs().max()) <= 1e-5 * float(expected.abs().max())
    assert actual.argmax(1).tolist() == expected.argmax(1).tolist()
    fast = optimize_for_inference(model, x)
    with torch.no_grad():
        assert float((fast(x) - expected).abs().max()) <= 1e-4
        assert float((fast(x[:1]) - expected[:1]).abs().max()) <= 1e-4  # another batch size
    assert_same(fast, model, atol=1e-4)  # other input sizes (traced SAME padding)


@pytest.mark.parametrize("family", ["v3_large", "lite_same"])  # hard-swish + SE; TF SAME padding
def test_compiled_fast_path_equals_eager(family: str) -> None:
    """``compile_model=True`` (predict/validate --compile): inductor with freezing, one graph per input shape."""
    model = small_model(family)
    fast = optimize_for_inference(model, torch.randn(*CAPTURE), compile_model=True)
    assert_same(fast, model, atol=1e-4)  # other batch sizes and odd sizes: each compiles its own graph


def test_compiled_fast_path_is_not_cut_to_eager_by_dynamo_recompile_limit(capfd: pytest.CaptureFixture) -> None:
    """All our models share ``MobileNet.forward``: a process that compiled a few (a test suite, a benchmark) reaches
    dynamo's recompile limit, after which a new shape silently ran eager. Simulated here with a limit of 1."""
    model = small_model("v3_small")
    with torch._dynamo.config.patch(recompile_limit=1):
        fast = optimize_for_inference(model, torch.randn(*CAPTURE), compile_model=True)
        assert_same(fast, model, atol=1e-4)  # two more shapes: two more graphs
    assert "recompile_limit" not in capfd.readouterr().err


def test_fast_or_eager_falls_back_when_compiling_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    from mobilenets.export import fast_or_eager

    def no_compiler(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")

    model = small_model("v3_small")
    monkeypatch.setattr(torch, "compile", no_compiler)
    with pytest.warns(UserWarning, match="torch.compile failed .*no C\\+\\+ compiler.*traced fast path"):
        run = fast_or_eager(model, torch.randn(*CAPTURE), compile_model=True)
    assert run is not model
    assert_same(run, model, atol=1e-4)


def test_metadata_round_trips_through_every_format(tmp_path) -> None:
    model = create_model("efficientnet_lite0", pretrained=True).eval()
    expected = {k: json.loads(v) if k not in ("model", "tag", "interpolation", "crop_mode", "mobilenets_version")
                else v for k, v in metadata(model).items()}
    assert expected["mean"] == [0.5, 0.5, 0.5] and expected["input_size"] == [3, 224, 224]
    assert expected["interpolation"] == "bilinear" and expected["crop_pct"] == 0.875
    assert expected["categories"][:2] == ["tench", "goldfish"] and len(expected["categories"]) == 1000
    assert expected["mobilenets_version"] == mobilenets.__version__ and expected["tag"] == "ep_in1k"
    small = small_model("lite_same")
    small.pretrained_cfg = dict(model.pretrained_cfg, num_classes=10, categories=[f"c{i}" for i in range(10)])
    for path in (export_torchscript(small, tmp_path / "m.ts"), export_program(small, tmp_path / "m.pt2")):
        meta = read_metadata(path)
        assert meta["categories"] == [f"c{i}" for i in range(10)] and meta["mean"] == [0.5, 0.5, 0.5]


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
        return torch.jit.load(str(path))


def run_main(capsys: pytest.CaptureFixture, *argv: object) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_writes_each_format(capsys, tmp_path) -> None:
    import onnxruntime as ort

    model = small_model("lite_same")
    checkpoint = tmp_path / "small.safetensors"
    mobilenets.save_checkpoint(model, checkpoint)
    x = torch.randn(2, 3, 129, 97, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = model(x)
    onnx_path, ts_path, pt2_path = tmp_path / "out" / "m.onnx", tmp_path / "m.ts", tmp_path / "m.pt2"
    for fmt, path in (("onnx", onnx_path), ("torchscript", ts_path), ("exported-program", pt2_path)):
        dynamic = ["--dynamic-batch", "--dynamic-size"] if fmt != "exported-program" else []  # tested above
        code, out, err = run_main(capsys, "export", "--checkpoint", checkpoint, "--format", fmt, *dynamic, path)
        assert code == 0 and err == "", err
        assert out.startswith(f"wrote {path} ({fmt},")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    outputs = {
        "onnx": torch.from_numpy(session.run(None, {"input": x.numpy()})[0]),
        "torchscript": load_torchscript(ts_path)(x),
    }
    with torch.no_grad():
        x224 = torch.randn(1, 3, 224, 224)
        outputs["exported-program"], expected224 = torch.export.load(pt2_path).module()(x224), model(x224)
    assert float((outputs.pop("exported-program") - expected224).abs().max()) <= 1e-4
    for fmt, actual in outputs.items():
        assert float((actual - expected).abs().max()) <= 1e-4 * max(1.0, float(expected.abs().max())), fmt
    # no BatchNorm folding, another opset, a fixed size
    code, out, err = run_main(capsys, "export", "--checkpoint", checkpoint, "--format", "onnx", "--no-fuse",
                              "--opset", 17, tmp_path / "plain.onnx")
    assert code == 0 and err == "", err
    import onnx

    proto = onnx.load(str(tmp_path / "plain.onnx"))
    assert proto.opset_import[0].version == 17
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 224, 224]
    (plain,) = ort.InferenceSession(str(tmp_path / "plain.onnx")).run(None, {"input": x224.numpy()})
    assert float((torch.from_numpy(plain) - expected224).abs().max()) <= 1e-4
    # MODEL before the options and OUT after them
    code, out, err = run_main(capsys, "export", "efficientnet_lite0", "--format", "torchscript", tmp_path / "l0.ts")
    assert code == 0 and err == "", err
    assert read_metadata(tmp_path / "l0.ts")["model"] == "efficientnet_lite0"


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (["--format", "onnx", "{tmp}/x.onnx"], 2, "give MODEL"),
        (["efficientnet_lite0", "--format", "onnx", "{tmp}"], 1, "is a directory"),
        (["efficientnet_lite0", "--format", "onnx", "{tmp}/file.txt/x.onnx"], 1, "is not a directory"),
        (["efficientnet_lite0", "--format", "torchscript", "--opset", "17", "{tmp}/x.ts"], 2, "--opset applies"),
        (["no_such_model", "--format", "torchscript", "{tmp}/x.ts"], 1, "no_such_model"),
        (["--checkpoint", "{tmp}/missing.safetensors", "--format", "onnx", "{tmp}/x.onnx"], 1, "missing.safetensors"),
    ],
)
def test_cli_errors_are_one_line(capsys, tmp_path, argv, code, message) -> None:
    (tmp_path / "file.txt").write_text("not a directory")
    got, out, err = run_main(capsys, "export", *[a.format(tmp=tmp_path) for a in argv])
    assert got == code and message in err
    if code == 1:
        assert err.count("\n") == 1 and err.startswith("mobilenets: error: ")
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "x.ts").exists()

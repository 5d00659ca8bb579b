"""The ``mobilenets`` command: ``--version``, ``list``, ``convert``, and what every command does with errors.

``predict`` has its own file (tests/test_predict.py). No network: ``list`` reads the manifest only.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import mobilenets
from mobilenets import cli
from mobilenets.profile import count_params

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOBILENETS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MOBILENETS_DEBUG", raising=False)


def run_main(capsys: pytest.CaptureFixture, *argv: object) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_subprocess(*argv: object, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MOBILENETS_DEBUG", None)
    return subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)


# ---------------------------------------------------------------------------------------------------- top level


def test_version(capsys) -> None:
    code, out, err = run_main(capsys, "--version")
    assert code == 0 and err == "" and out == f"mobilenets {mobilenets.__version__}\n"
    assert mobilenets.__version__ == importlib.metadata.version("mobilenets")


def test_help_and_no_command(capsys) -> None:
    code, out, _ = run_main(capsys, "--help")
    assert code == 0 and all(c in out for c in ("predict", "list", "convert", "--version"))
    code, out, err = run_main(capsys)
    assert code == 2 and out == "" and "COMMAND" in err
    code, _, err = run_main(capsys, "frobnicate")
    assert code == 2 and "invalid choice: 'frobnicate'" in err


def test_unforeseen_errors_and_warnings_are_one_line(capsys, monkeypatch) -> None:
    def broken(pattern):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(cli, "model_rows", broken)
    code, out, err = run_main(capsys, "list")
    assert code == 1 and out == ""
    assert err == "mobilenets: error: boom second line (RuntimeError; set MOBILENETS_DEBUG=1 for a traceback)\n"
    monkeypatch.setenv("MOBILENETS_DEBUG", "1")
    with pytest.raises(RuntimeError, match="boom"):
        cli.main(["list"])

    def noisy(pattern):
        warnings.warn("careful\nnow \x1b[5m", UserWarning, stacklevel=1)
        return [dict(model="m", params=1, resolution=224, summary="s")]

    monkeypatch.setattr(cli, "model_rows", noisy)
    code, out, err = run_main(capsys, "list")
    assert code == 0 and err == "mobilenets: warning: careful now \\x1b[5m\n"


def test_module_and_version_in_a_subprocess() -> None:
    proc = run_subprocess("-m", "mobilenets", "--version")
    assert proc.returncode == 0 and proc.stdout == f"mobilenets {mobilenets.__version__}\n" and proc.stderr == ""


# ---------------------------------------------------------------------------------------------------------- list


def _rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines()[1:]]


def test_list_models(capsys) -> None:
    code, out, err = run_main(capsys, "list")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["model", "params", "(M)", "resolution", "summary"]
    assert [r[0] for r in _rows(out)] == mobilenets.list_models()
    rows = {r[0]: r for r in _rows(out)}
    assert rows["mobilenet_v2"][1:3] == ["3.50", "224"] and rows["efficientnet_b3"][1:3] == ["12.23", "300"]
    assert " ".join(rows["mobilenet_v1"][3:]) == mobilenets.get_spec("mobilenet_v1").summary
    real = count_params(mobilenets.create_model("mobilenet_v3_small_075"))
    assert rows["mobilenet_v3_small_075"][1] == f"{real / 1e6:.2f}"

    code, out, _ = run_main(capsys, "list", "v3_small")  # no wildcard: a substring
    assert [r[0] for r in _rows(out)] == mobilenets.list_models("*v3_small*") and len(_rows(out)) == 4
    code, out, _ = run_main(capsys, "list", "efficientnet_b[01]", "--json")
    doc = json.loads(out)
    assert [d["model"] for d in doc] == ["efficientnet_b0", "efficientnet_b1"]
    assert doc[0] == dict(model="efficientnet_b0", params=count_params(mobilenets.create_model("efficientnet_b0")),
                          resolution=224, summary=mobilenets.get_spec("efficientnet_b0").summary)


def test_list_pretrained(capsys) -> None:
    code, out, err = run_main(capsys, "list", "mobilenet_v3_small", "--pretrained")
    assert code == 0 and err == ""
    assert out.splitlines()[0].split() == ["weights", "top-1", "params", "(M)", "resolution"]
    assert _rows(out) == [["mobilenet_v3_small.lamb_in1k", "67.66", "2.54", "224"],
                          ["mobilenet_v3_small.tf_in1k", "67.92", "2.54", "224"],
                          ["mobilenet_v3_small.tv_in1k", "(default)", "67.67", "2.54", "224"]]
    code, out, _ = run_main(capsys, "list", "--pretrained", "--json")
    doc = json.loads(out)
    assert [d["weights"] for d in doc] == mobilenets.list_pretrained()
    entry = {d["weights"]: d for d in doc}["efficientnet_lite0.ep_in1k"]
    assert entry == dict(weights="efficientnet_lite0.ep_in1k", model="efficientnet_lite0", tag="ep_in1k", default=True,
                         top1=None, top5=None, params=4652008, resolution=224,
                         source="efficientnet_pytorch:efficientnet-lite0", license=entry["license"])
    assert isinstance(entry["license"], str) and entry["license"]
    manifest = mobilenets.pretrained.load_manifest()
    assert all(d["params"] == manifest[d["weights"]]["params"] for d in doc)
    code, out, _ = run_main(capsys, "list", "--pretrained", "efficientnet_b2.t?_in1k")
    assert [r[0] for r in _rows(out)] == ["efficientnet_b2.tf_in1k", "efficientnet_b2.tv_in1k"]
    assert _rows(out)[1][1:] == ["(default)", "80.61", "9.11", "288"]


def test_list_without_matches(capsys) -> None:
    code, out, err = run_main(capsys, "list", "resnet")
    assert code == 1 and out == ""
    assert err == "mobilenets: error: no models match 'resnet'; run `mobilenets list` to see them all\n"
    code, out, err = run_main(capsys, "list", "mobilenet_v1_025", "--pretrained")
    assert code == 1 and "run `mobilenets list --pretrained` to see them all" in err


def test_errors_name_the_command_to_run() -> None:
    with pytest.raises(ValueError, match="see `mobilenets list`"):
        mobilenets.get_spec("resnet")
    with pytest.raises(ValueError, match="run `mobilenets list --pretrained`"):
        mobilenets.create_model("mobilenet_v1_025", pretrained=True)


# ------------------------------------------------------------------------------------------------------- convert


@pytest.fixture(scope="module")
def torchvision_weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A randomly initialised torchvision MobileNetV3-Small: its state dict, with prefixes, and the pickled model."""
    torchvision = pytest.importorskip("torchvision")
    d = tmp_path_factory.mktemp("tv")
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small().eval()
    state = model.state_dict()
    paths = dict(plain=d / "plain.pth", ddp_compiled=d / "ddp_compiled.pth", compiled_ddp=d / "compiled_ddp.pth",
                 full=d / "full_model.pth")
    torch.save(state, paths["plain"])
    torch.save({f"module._orig_mod.{k}": v for k, v in state.items()}, paths["ddp_compiled"])
    torch.save({"state_dict": {f"_orig_mod.module.{k}": v for k, v in state.items()}}, paths["compiled_ddp"])
    torch.save(model, paths["full"])
    return paths


def test_convert_command(capsys, tmp_path, torchvision_weights) -> None:
    out_path = tmp_path / "mnv3.safetensors"
    code, out, err = run_main(capsys, "convert", torchvision_weights["plain"], out_path, "--from",
                              "torchvision:mobilenet_v3_small")
    assert code == 0 and err == "" and out.startswith(f"wrote {out_path}: mobilenet_v3_small (")
    reference = mobilenets.from_checkpoint(out_path).state_dict()
    for name in ("ddp_compiled", "compiled_ddp"):  # DDP and torch.compile prefixes, in either order
        other = tmp_path / f"{name}.safetensors"
        code, _, err = run_main(capsys, "convert", torchvision_weights[name], other, "--from",
                                "torchvision:mobilenet_v3_small")
        assert code == 0 and err == "", err
        state = mobilenets.from_checkpoint(other).state_dict()
        assert state.keys() == reference.keys() and all(torch.equal(state[k], reference[k]) for k in state)


def test_convert_refuses_a_pickled_model_in_one_line(capsys, tmp_path, torchvision_weights) -> None:
    out_path = tmp_path / "never.safetensors"
    code, out, err = run_main(capsys, "convert", torchvision_weights["full"], out_path, "--from",
                              "torchvision:mobilenet_v3_small")
    assert code == 1 and out == "" and not out_path.exists()
    assert len(err.splitlines()) == 1 and "\x1b" not in err
    assert err.startswith(f"mobilenets convert: error: {torchvision_weights['full']} holds a pickled Python object "
                          "(torchvision.models.mobilenetv3.MobileNetV3), not a state_dict of tensors")
    assert "save a state_dict" in err and "torch.save(model.state_dict(), 'weights.pth')" in err


def test_convert_usage_and_source_errors(capsys, tmp_path, torchvision_weights) -> None:
    code, _, err = run_main(capsys, "convert", torchvision_weights["plain"], tmp_path / "x.safetensors")
    assert code == 2 and "--from" in err
    code, out, err = run_main(capsys, "convert", torchvision_weights["plain"], tmp_path / "x.safetensors", "--from",
                              "torchvision:mobilenet_v9")
    assert code == 1 and out == "" and len(err.splitlines()) == 1 and "mobilenet_v9" in err
    code, out, _ = run_main(capsys, "convert", "--help")
    assert code == 0 and "torchvision:mobilenet_v3_small" in out  # the supported sources are listed


def test_convert_script_is_the_same_command(tmp_path, torchvision_weights) -> None:
    script = REPO / "scripts" / "convert_weights.py"
    proc = run_subprocess(script, torchvision_weights["full"], tmp_path / "x.safetensors", "--from",
                          "torchvision:mobilenet_v3_small")
    assert proc.returncode == 1 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "save a state_dict" in proc.stderr
    proc = run_subprocess("-m", "mobilenets", "convert", torchvision_weights["plain"], tmp_path / "y.safetensors",
                          "--from", "torchvision:mobilenet_v3_small")
    assert proc.returncode == 0 and proc.stderr == "" and (tmp_path / "y.safetensors").is_file()

"""``mobilenets benchmark``: every mode runs, every candidate predicts what our eager model predicts, the JSON
document and the Markdown table have their fields, errors are one line. No timing is asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mobilenets import cli

pytest.importorskip("timm")
pytest.importorskip("torchvision")
pytest.importorskip("skimage")

from mobilenets.benchmark import benchmark, machine, markdown, ratios, targets  # noqa: E402

SMALL = dict(batch_sizes=[2], rounds=1, min_seconds=0.0, image_size=64, calibration_samples=8)


def _by(results):
    return {(r.mode, r.candidate): r for r in results}


def _check_low_precision(r) -> None:
    """A bf16/int8 candidate: any agreement, and a disagreement labelled as not an accuracy figure."""
    assert 0.0 <= r.extra["top1_agreement"] <= 1.0
    assert r.note == "" if r.extra["top1_agreement"] == 1.0 else "not an accuracy figure" in r.note


def test_fp32_modes_match_our_eager_predictions() -> None:
    results = benchmark(["mobilenet_v3_small"], modes=["eager", "onnxruntime"], **SMALL)
    results += benchmark(["mobilenet_v3_small"], modes=["channels_last", "traced", "fast", "bf16", "train"],
                         compare=["timm"], **SMALL)
    got = _by(results)
    expected = {(m, c) for m in ("eager", "onnxruntime") for c in ("ours(torchvision)", "torchvision", "ours(timm)",
                                                                  "timm")}
    expected |= {(m, c) for m in ("channels_last", "traced", "fast", "bf16", "train") for c in ("ours(timm)", "timm")}
    assert set(got) == expected
    for (mode, name), r in got.items():
        assert r.img_per_s > 0 and r.rounds == 1, (mode, name)
        if mode == "bf16":  # reduced precision: random-weight logits are close together, so top-1 may flip
            _check_low_precision(r)
            continue
        assert r.note == "", (mode, name, r.note)
        if mode == "train":
            assert r.extra["loss_diff"] <= 1e-3
        else:
            assert r.extra["top1_agreement"] == 1.0
    assert {(q["mode"], q["ours_candidate"].startswith("ours(")) for q in ratios(results)} == {
        (m, True) for m in ("eager", "onnxruntime", "channels_last", "traced", "fast", "bf16", "train")}
    goals = {g["target"]: g for g in targets(results)}
    assert set(goals) == {"export / peers' ONNX Runtime", "best deployable / peers' ONNX Runtime"}  # no compile run
    ort = max(got["onnxruntime", c].img_per_s for c in ("torchvision", "timm"))
    best = max(got[m, c].img_per_s for m in ("bf16", "onnxruntime") for c in ("ours(torchvision)", "ours(timm)")
               if (m, c) in got)
    assert goals["best deployable / peers' ONNX Runtime"]["ratio"] == pytest.approx(best / ort)


def test_compile_and_int8_modes_run() -> None:
    from mobilenets.quantize import openvino_has_bf16

    modes = ["compile", "fast_compile", "int8", "int8_bf16"]
    results = benchmark(["mobilenet_v3_small"], modes=modes, compare=["timm"], **SMALL)
    got = _by(results)
    assert set(got) == {(m, c) for m in modes for c in ("ours(timm)", "timm")}
    for name in ("ours(timm)", "timm"):  # the same int8 file, its float layers in bf16 where the CPU has it
        bf16 = got["int8_bf16", name]
        if openvino_has_bf16():
            assert bf16.img_per_s > 0 and 0.0 <= bf16.extra["top1_agreement"] <= 1.0
        else:
            assert bf16.rounds == 0 and "no bf16" in bf16.note
    for name in ("ours(timm)", "timm"):
        assert got["compile", name].extra["top1_agreement"] == 1.0
        assert got["fast_compile", name].extra["top1_agreement"] == 1.0 and got["fast_compile", name].note == ""
    goal = next(g for g in targets(results) if g["target"] == "predict path / peers' compile")
    assert goal["ours_mode"] == "fast_compile" and goal["peer"] == "timm compile"
    ours, peer = got["fast_compile", "ours(timm)"], got["compile", "timm"]
    assert goal["ratio"] == pytest.approx(ours.img_per_s / peer.img_per_s)
    for name in ("ours(timm)", "timm"):  # int8 agreement is measured on real weights in test_quantize.py
        assert got["int8", name].img_per_s > 0
        _check_low_precision(got["int8", name])


def test_cli_json_and_markdown(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bench.json"
    code = cli.main(["benchmark", "mobilenet_v3_small", "--modes", "eager", "--compare", "timm", "--batch-size", "1",
                     "--rounds", "2", "--min-seconds", "0", "--image-size", "64", "--json", str(out), "--markdown"])
    assert code == 0
    table = capsys.readouterr().out
    assert "| mobilenet_v3_small | 1 |" in table and "2 rounds interleaved" in table
    doc = json.loads(out.read_text())
    assert set(doc) == {"machine", "rounds", "results", "ratios", "targets"} and doc["rounds"] == 2
    assert {"cpu", "cores", "date", "versions"} <= set(doc["machine"])
    assert [(r["candidate"], r["mode"], r["batch_size"], r["rounds"]) for r in doc["results"]] == [
        ("ours(timm)", "eager", 1, 2), ("timm", "eager", 1, 2)]
    assert all(r["img_per_s_min"] <= r["img_per_s"] <= r["img_per_s_max"] for r in doc["results"])
    (ratio,) = doc["ratios"]
    assert ratio["ratio"] == pytest.approx(ratio["ours"] / ratio["best_peer"])


@pytest.mark.parametrize("argv, message", [
    (["--modes", "warp"], "unknown mode 'warp'"),
    (["--compare", "keras"], "unknown library 'keras'"),
    (["--device", "cuda"], "no CUDA device"),
    (["efficientnet_b7"], "no peers for 'efficientnet_b7'"),
])
def test_errors_are_one_line(argv, message, capsys: pytest.CaptureFixture) -> None:
    import torch

    if argv == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert cli.main(["benchmark", *argv, "--rounds", "1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_memory_is_measured_in_a_fresh_process_and_tabled() -> None:
    results = benchmark(["mobilenet_v3_small"], modes=["eager"], compare=["timm"], memory=True, **SMALL)
    assert all(r.peak_rss_mib and r.peak_rss_mib > 50 for r in results), [(r.candidate, r.note) for r in results]
    assert all(r.extra["build_peak_rss_mib"] > 50 for r in results)
    doc = dict(machine=machine(), rounds=1, ratios=ratios(results), targets=targets(results))
    (q,) = doc["ratios"]
    by = {r.candidate: r.peak_rss_mib for r in results}
    assert (q["ours_peak_rss_mib"], q["peer_peak_rss_mib"]) == (by["ours(timm)"], by["timm"])
    table = markdown(doc)
    assert "Peak resident memory" in table and f"| {by['ours(timm)']:.0f} / {by['timm']:.0f} |" in table


def test_the_running_peak_leaves_out_what_the_build_freed() -> None:
    """--memory's running peak: VmHWM reset once a candidate is built drops a peak the build reached and freed."""
    import subprocess
    import sys

    code = ("import numpy as np\n"
            "from mobilenets.benchmark import _high_water_mib, _reset_high_water\n"
            "a = np.ones(300 << 17); before = _high_water_mib(); del a\n"  # 300 MiB touched, then freed
            "assert _reset_high_water()\n"
            "print(before, _high_water_mib())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    before, after = map(float, out)
    assert before - after > 250, (before, after)

"""``mobilenets benchmark``: our models against torchvision's and timm's, side by side, with the same weights.

For each model and peer library, the peer is built with a fixed seed, its BatchNorm statistics are calibrated on
real photos (crops and flips of scikit-image's photos), and its state dict is converted into ours
(``mobilenets.convert``): both run the same weights. Denormals are flushed. For every mode, each candidate gets a
warm-up call, then rounds are interleaved (A B C A B C ...) so that load from other processes hits all alike; we
report the median img/s over rounds, the min and max, and the ratio of our best to the best peer's median.

Modes: ``eager``, ``channels_last``, ``traced`` (``torch.jit.trace`` + ``freeze``), ``fast`` (ours:
``export.optimize_for_inference``, the path ``predict`` and ``validate`` take; peers: channels-last, traced and
frozen), ``compile`` (``torch.compile``, static shapes), ``bf16`` (autocast), ``onnxruntime`` (fp32: ours through
``export.export_onnx``, peers through ``torch.onnx.export`` as their users would), ``int8`` (``quantize.quantize``
on both, run by OpenVINO), ``int8_bf16`` (the same file, OpenVINO running its float layers in bf16:
``load_int8(precision="bf16")``, on CPUs with AMX or AVX512-BF16) and ``train`` (forward + backward + SGD step).
``--memory`` adds each candidate's peak resident memory (VmHWM, read in a fresh subprocess per candidate, so one
candidate's allocations do not hide another's): over two runs once built (``peak_rss``; the build's own peak, an
export's or a quantization's, is kept apart as ``build_peak_rss_mib``). On CUDA (``--device cuda``) the modes ``eager``,
``channels_last``, ``compile``, ``fp16``, ``bf16`` and ``cuda_graphs`` run there instead.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .export import dynamo_limits

CPU_MODES = ("eager", "channels_last", "traced", "fast", "fast_compile", "compile", "bf16", "onnxruntime", "int8",
             "int8_bf16", "train")
FILE_MODES = ("onnxruntime", "int8", "int8_bf16")  # built once per model: their files take any batch size
LOW_PRECISION = ("bf16", "fp16", "int8", "int8_bf16")  # may flip near-tied top-1s of the benchmark's random weights
CUDA_MODES = ("eager", "channels_last", "compile", "fp16", "bf16", "cuda_graphs")
PEERS = ("torchvision", "timm")
# our model -> the peer libraries' names for it
TARGETS: dict[str, dict[str, str]] = {
    "mobilenet_v2": {"torchvision": "mobilenet_v2", "timm": "mobilenetv2_100"},
    "mobilenet_v3_large": {"torchvision": "mobilenet_v3_large", "timm": "mobilenetv3_large_100"},
    "mobilenet_v3_small": {"torchvision": "mobilenet_v3_small", "timm": "mobilenetv3_small_100"},
    "efficientnet_b0": {"torchvision": "efficientnet_b0", "timm": "efficientnet_b0"},
    "efficientnet_lite0": {"timm": "efficientnet_lite0"},
}
DEFAULT_MODELS = tuple(TARGETS)
BENCH_EXTRA = 'pip install "mobilenets[test]"'

__all__ = ["Candidate", "Result", "benchmark", "benchmark_command", "markdown", "real_images"]


def real_images(n: int, size: int, *, seed: int = 0) -> torch.Tensor:
    """``n`` real photos (scikit-image's, cropped and flipped at random) as ``(n, 3, size, size)`` in ImageNet norm."""
    import numpy as np
    from PIL import Image

    try:
        import skimage.data as data
    except ImportError:
        raise ImportError(f"the benchmark calibrates BatchNorm on scikit-image's photos: {BENCH_EXTRA}") from None
    photos = [Image.fromarray(getattr(data, k)()).convert("RGB")
              for k in ("astronaut", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry", "colorwheel")]
    rng = np.random.default_rng(seed)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    out = []
    for k in range(n):
        img = photos[k % len(photos)]
        w, h = img.size
        s = rng.uniform(0.4, 1.0)
        cw, ch = max(1, int(w * s)), max(1, int(h * s))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = img.crop((x, y, x + cw, y + ch)).resize((size, size), Image.BILINEAR)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        t = torch.from_numpy(np.asarray(crop, dtype=np.float32).copy()).permute(2, 0, 1) / 255
        out.append((t - mean) / std)
    return torch.stack(out)


@torch.no_grad()
def calibrate_bn(model: nn.Module, images: torch.Tensor, batch_size: int = 16) -> nn.Module:
    """Set every BatchNorm's running statistics to those of ``images`` (cumulative average), then eval mode."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    for i in range(0, len(images), batch_size):
        model(images[i:i + batch_size])
    return model.eval()


def _peer(library: str, name: str) -> nn.Module:
    try:
        if library == "torchvision":
            import torchvision

            return torchvision.models.get_model(name, weights=None)
        import timm

        return timm.create_model(name, pretrained=False)
    except ImportError:
        raise ImportError(f"--compare {library} needs {library}: {BENCH_EXTRA}") from None


def model_pair(model: str, library: str, images: torch.Tensor, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """``(ours, peer)`` in eval mode with the same weights: the peer's (BatchNorm calibrated), converted into ours."""
    from .convert import convert_state_dict
    from .model import MobileNet

    if model not in TARGETS or library not in TARGETS[model]:
        known = ", ".join(f"{m} ({'/'.join(p)})" for m, p in TARGETS.items())
        raise ValueError(f"no {library} peer for {model!r}; the benchmark knows {known}")
    torch.manual_seed(seed)
    peer = calibrate_bn(_peer(library, TARGETS[model][library]), images)
    config, state = convert_state_dict(peer.state_dict(), f"{library}:{TARGETS[model][library]}")
    ours = MobileNet(config)
    ours.load_state_dict(state)
    return ours.eval(), peer


@dataclass
class Candidate:
    """One model of one library in one mode: ``fn(x)`` returns logits (``train``: the loss before the step)."""

    name: str
    library: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    ours: bool


@dataclass
class Result:
    model: str
    batch_size: int
    mode: str
    candidate: str
    img_per_s: float
    img_per_s_min: float
    img_per_s_max: float
    rounds: int
    peak_rss_mib: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _onnx_session(path: str) -> Callable[[torch.Tensor], torch.Tensor]:
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"input": x.contiguous().numpy()})[0])


def _peer_onnx(peer: nn.Module, path: str, example: torch.Tensor) -> str:
    """The peer exported the way its users do: ``torch.onnx.export``, dynamic batch."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(peer, (example,), path, dynamo=False, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=18)
    return path


def build(mode: str, model: nn.Module, ours: bool, example: torch.Tensor, tmp: str, calibration: torch.Tensor,
          device: str = "cpu") -> Callable[[torch.Tensor], torch.Tensor]:
    """The callable that runs ``model`` in ``mode`` (inputs are given on the CPU, in NCHW)."""
    tag = f"{'ours' if ours else 'peer'}{id(model)}"  # the caller's model: int8 and int8_bf16 share one file
    model = copy.deepcopy(model).eval()
    if device == "cuda":
        return _build_cuda(mode, model.cuda(), example)
    if mode == "eager":
        return torch.inference_mode()(model)
    if mode == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        return torch.inference_mode()(lambda x: model(x.contiguous(memory_format=torch.channels_last)))
    if mode == "traced":
        import warnings

        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notices
            frozen = torch.jit.freeze(torch.jit.trace(model, example))
        return torch.inference_mode()(frozen)
    if mode in ("fast", "fast_compile"):  # what predict / validate run (fast_compile: with --compile); on a peer
        # ``fuse`` finds nothing of ours to fold, and freezing folds its BatchNorm instead: the same recipe for both
        from .export import optimize_for_inference

        return optimize_for_inference(model, example, compile_model=mode == "fast_compile")
    if mode == "compile":  # static shapes: one graph per batch size, as a deployment would compile it
        compiled = torch.compile(model, dynamic=False)
        return torch.inference_mode()(compiled)
    if mode == "bf16":
        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                return model(x).float()
        return run
    if mode == "onnxruntime":
        path = os.path.join(tmp, f"{tag}.onnx")
        if ours:
            from .export import export_onnx

            export_onnx(model, path, dynamic_batch=True, dynamic_size=_other_size(model, example), fuse=True)
        else:
            _peer_onnx(model, path, example[:1])
        return _onnx_session(path)
    if mode in ("int8", "int8_bf16"):
        from .quantize import load_int8, quantize

        path = os.path.join(tmp, f"{tag}.int8.onnx")
        if not os.path.exists(path):  # int8 and int8_bf16 share it
            if ours:
                quantize(model, calibration, path, dynamic_size=_other_size(model, example))
            else:  # the same toolchain and settings on the peer's own export
                _int8_peer(model, path, example, calibration, tmp)
        return load_int8(path, precision="bf16" if mode == "int8_bf16" else "f32")
    if mode == "train":
        model.train()
        for m in model.modules():  # dropout draws differ between libraries; the step is timed without it
            if isinstance(m, nn.Dropout):
                m.p = 0.0
        opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        target = torch.zeros(example.shape[0], dtype=torch.long)

        def step(x: torch.Tensor) -> torch.Tensor:
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x), target[: x.shape[0]])
            loss.backward()
            opt.step()
            return loss.detach()
        return step
    raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(CPU_MODES)}")


def _no_dropout(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    return model


def _other_size(model: nn.Module, example: torch.Tensor) -> bool:
    """Whether ``example``'s height and width differ from the model's native input size (ONNX then needs them free)."""
    size = getattr(getattr(model, "config", None), "input_size", None)
    return size is None or tuple(example.shape[-2:]) != (size, size)


def _int8_peer(peer: nn.Module, path: str, example: torch.Tensor, calibration: torch.Tensor, tmp: str) -> None:
    import onnx

    from .quantize import quantize_onnx

    fp32 = _peer_onnx(peer, os.path.join(tmp, f"peer{id(peer)}.fp32.onnx"), example[:1])
    onnx.save(quantize_onnx(onnx.load(fp32), calibration)[0], path)


def _build_cuda(mode: str, model: nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    if mode == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    if mode in ("compile", "cuda_graphs"):
        model = torch.compile(model, mode="reduce-overhead" if mode == "cuda_graphs" else "default")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mode)

    def run(x: torch.Tensor) -> torch.Tensor:
        x = x.cuda(non_blocking=True)
        if mode == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), (torch.autocast("cuda", dtype=dtype) if dtype else contextlib.nullcontext()):
            out = model(x).float()
        torch.cuda.synchronize()
        return out.cpu()
    return run


def _high_water_mib() -> float:
    """This process's peak resident memory so far (``VmHWM``), in MiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def _reset_high_water() -> bool:
    """Reset ``VmHWM`` to the current resident size (Linux 4.0+: ``5`` to ``/proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _peak_rss_child(model: str, library: str, which: str, mode: str, batch_size: int, conn: Any) -> None:
    try:
        torch.set_flush_denormal(True)
        images = real_images(32, 224)
        ours, peer = model_pair(model, library, images)
        net = ours if which == "ours" else peer
        x = images[:batch_size] if batch_size <= len(images) else images.repeat(batch_size // 32 + 1, 1, 1, 1)
        x = x[:batch_size]
        with tempfile.TemporaryDirectory() as tmp:
            fn = build(mode, net, which == "ours", x, tmp, images)
            build_peak = _high_water_mib()
            reset = _reset_high_water()
            fn(x)
            fn(x)
            conn.send({"peak_rss_mib": _high_water_mib(), "build_peak_rss_mib": build_peak, "reset": reset})
    except Exception as e:  # noqa: BLE001 - reported as a note, the benchmark goes on
        conn.send(f"{type(e).__name__}: {e}")


def peak_rss(model: str, library: str, which: str, mode: str, batch_size: int) -> dict[str, Any] | str:
    """Peak resident memory (MiB, ``VmHWM``) of one candidate in a fresh process, or why it could not be read.

    ``build_peak_rss_mib``: the process's peak up to the end of building the candidate (an export, or a
    quantization's calibration, counts there); ``peak_rss_mib``: its peak over two runs after that, the high-water
    mark reset once built (what a deployment that loads a ready file holds), the build's peak where the kernel cannot
    reset it (``reset`` false).
    """
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_peak_rss_child, args=(model, library, which, mode, batch_size, child))
    proc.start()
    value = parent.recv() if parent.poll(900) else "timed out"
    proc.join(10)
    return value


def _time(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, min_seconds: float) -> float:
    """img/s of ``fn(x)``, repeated for at least ``min_seconds`` (at least once)."""
    calls, start = 0, time.perf_counter()
    while True:
        fn(x)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return calls * x.shape[0] / elapsed


def benchmark(models: Sequence[str] = DEFAULT_MODELS, *, batch_sizes: Sequence[int] = (1, 32),
              modes: Sequence[str] = CPU_MODES, compare: Sequence[str] = PEERS, rounds: int = 5,
              min_seconds: float = 0.3, memory: bool = False, device: str = "cpu", image_size: int = 224,
              check: bool = True, calibration_samples: int = 32,
              progress: Callable[[str], None] | None = None) -> list[Result]:
    """Run every (model, batch size, mode): candidates interleaved per round; returns one ``Result`` each.

    ``check``: every candidate's top-1 predictions must equal our eager model's on the benchmark's real images
    (``train``: its first loss must equal ours to 1e-3, dropout off); a candidate that differs is reported in its
    ``note``, with ``extra["top1_agreement"]``. bf16, fp16 and int8 are not expected to agree exactly: the
    benchmark's weights are random, their logits nearly tied, so their note says it is not an accuracy figure (the
    README's int8 accuracy is measured on real weights).
    """
    allowed = CUDA_MODES if device == "cuda" else CPU_MODES
    for mode in modes:
        if mode not in allowed:
            raise ValueError(f"--modes: unknown mode {mode!r} for {device}; expected some of {', '.join(allowed)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available; run the CPU modes instead")
    for lib in compare:
        if lib not in PEERS:
            raise ValueError(f"--compare: unknown library {lib!r}; expected some of {', '.join(PEERS)}")
    if not 32 <= image_size <= 1024:
        raise ValueError(f"--image-size must be between 32 and 1024, got {image_size}")
    if rounds < 1:
        raise ValueError(f"--rounds must be at least 1, got {rounds}")
    torch.set_flush_denormal(True)
    images = real_images(max(calibration_samples, max(batch_sizes)), image_size)
    calibration = images[:calibration_samples]
    results: list[Result] = []
    say = progress or (lambda _: None)
    for model in models:
        libs = [lib for lib in compare if lib in TARGETS.get(model, {})]
        if model not in TARGETS:
            raise ValueError(f"the benchmark has no peers for {model!r}; it knows {', '.join(TARGETS)}")
        pairs = {lib: model_pair(model, lib, calibration) for lib in libs}
        # All our models share MobileNet.forward: past dynamo's recompile limit (8 per code object), later
        # compiles of the same classes would silently run eager. Each model starts afresh.
        torch._dynamo.reset()
        cache: dict[tuple[str, str, str], Callable[[torch.Tensor], torch.Tensor]] = {}
        keep = tempfile.TemporaryDirectory()  # the ONNX files of this model's sessions
        for bs in batch_sizes:
            x = images[:bs]
            for mode in modes:
                say(f"{model} batch {bs} {mode}")
                cands: list[Candidate] = []
                notes: dict[str, str] = {}
                with dynamo_limits():
                    tmp = keep.name
                    for lib, (ours, peer) in pairs.items():
                        for name, net, is_ours in ((f"ours({lib})", ours, True), (lib, peer, False)):
                            try:
                                key = (lib, name, mode)  # ONNX files take any batch: built once per model
                                if key not in cache or mode not in FILE_MODES or device != "cpu":
                                    cache[key] = build(mode, net, is_ours, x, tmp, calibration, device)
                                cands.append(Candidate(name, lib, cache[key], is_ours))
                            except Exception as e:  # noqa: BLE001 - a mode a library cannot do is a note, not a crash
                                notes[name] = f"failed: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
                    reference = {lib: pair[0](x).argmax(1) if mode != "train" else None
                                 for lib, pair in pairs.items()}
                    if mode == "train":
                        reference = {lib: nn.functional.cross_entropy(_no_dropout(copy.deepcopy(pair[0]).train())(x),
                                                                      torch.zeros(bs, dtype=torch.long)).detach()
                                     for lib, pair in pairs.items()}
                    first: dict[str, torch.Tensor] = {}
                    for c in cands:  # warm-up (compiles, first-call allocations) and the predictions check
                        first[c.name] = c.fn(x)
                    times: dict[str, list[float]] = {c.name: [] for c in cands}
                    for _ in range(rounds):
                        for c in cands:
                            times[c.name].append(_time(c.fn, x, min_seconds))
                for c in cands:
                    note = notes.get(c.name, "")
                    extra: dict[str, Any] = {}
                    if check:
                        if mode == "train":
                            diff = float((first[c.name] - reference[c.library]).abs())
                            extra["loss_diff"] = diff
                            if diff > 1e-3:
                                note = f"first loss differs from ours by {diff:.2g}"
                        else:
                            agree = float((first[c.name].argmax(1) == reference[c.library]).float().mean())
                            extra["top1_agreement"] = agree
                            if agree < 1.0:
                                note = f"top-1 agrees with our eager model on {100 * agree:.0f}% of the images"
                                if mode in LOW_PRECISION:  # real-weight agreement: scripts/quantize_photos.py
                                    note += " (random weights, near-tied logits: not an accuracy figure)"
                    t = times[c.name]
                    results.append(Result(model, bs, mode, c.name, statistics.median(t), min(t), max(t), rounds,
                                          note=note, extra=extra))
                for name, note in notes.items():
                    results.append(Result(model, bs, mode, name, float("nan"), float("nan"), float("nan"), 0,
                                          note=note))
                if memory and device == "cpu":
                    for r in results:
                        if r.model == model and r.batch_size == bs and r.mode == mode and r.rounds:
                            lib = r.candidate[5:-1] if r.candidate.startswith("ours(") else r.candidate
                            value = peak_rss(model, lib, "ours" if r.candidate.startswith("ours(") else "peer",
                                             mode, bs)
                            if isinstance(value, dict):
                                r.peak_rss_mib = value["peak_rss_mib"]
                                r.extra["build_peak_rss_mib"] = value["build_peak_rss_mib"]
                                value = "" if value["reset"] else "peak includes the build"
                            if value:  # why it could not be read, or that the build's peak is in it
                                r.note = (r.note + "; " if r.note else "") + f"memory: {value}"
    return results


def ratios(results: Sequence[Result]) -> list[dict[str, Any]]:
    """Per (model, batch size, mode): our best median img/s, the best peer's, and ours / best peer."""
    out = []
    keys = sorted(dict.fromkeys((r.model, r.batch_size, r.mode) for r in results), key=lambda k: (k[0], k[1]))
    for key in keys:
        group = [r for r in results if (r.model, r.batch_size, r.mode) == key and r.rounds]
        ours = [r for r in group if r.candidate.startswith("ours(")]
        peers = [r for r in group if not r.candidate.startswith("ours(")]
        if not ours or not peers:
            continue
        best_ours = max(ours, key=lambda r: r.img_per_s)
        best_peer = max(peers, key=lambda r: r.img_per_s)
        entry = dict(model=key[0], batch_size=key[1], mode=key[2], ours=best_ours.img_per_s,
                     ours_candidate=best_ours.candidate, best_peer=best_peer.img_per_s,
                     best_peer_candidate=best_peer.candidate, ratio=best_ours.img_per_s / best_peer.img_per_s)
        memory = [[r.peak_rss_mib for r in side if r.peak_rss_mib] for side in (ours, peers)]
        if all(memory):  # --memory: the lowest peak RSS on each side
            entry.update(ours_peak_rss_mib=min(memory[0]), peer_peak_rss_mib=min(memory[1]))
        out.append(entry)
    return out


# Speed goals, each ours in some modes / the best peer in others (same model and batch size).
GOALS = {
    "export / peers' ONNX Runtime": (("onnxruntime",), ("onnxruntime",)),
    "best deployable / peers' ONNX Runtime": (("int8", "int8_bf16", "bf16", "onnxruntime"), ("onnxruntime",)),
    "predict path / peers' compile": (("fast", "fast_compile"), ("compile",)),
}


def targets(results: Sequence[Result]) -> list[dict[str, Any]]:
    """Per (model, batch size) and goal in ``GOALS``: our best img/s in its modes / the best peer's in its."""
    out = []
    for model, bs in dict.fromkeys((r.model, r.batch_size) for r in results):
        group = [r for r in results if (r.model, r.batch_size) == (model, bs) and r.rounds]
        for name, (our_modes, peer_modes) in GOALS.items():
            ours = [r for r in group if r.mode in our_modes and r.candidate.startswith("ours(")]
            peers = [r for r in group if r.mode in peer_modes and not r.candidate.startswith("ours(")]
            if ours and peers:
                a, b = max(ours, key=lambda r: r.img_per_s), max(peers, key=lambda r: r.img_per_s)
                out.append(dict(model=model, batch_size=bs, target=name, ours_mode=a.mode, ours=a.img_per_s,
                                peer=f"{b.candidate} {b.mode}", best_peer=b.img_per_s, ratio=a.img_per_s / b.img_per_s))
    return out


def machine() -> dict[str, Any]:
    """The CPU model (``lscpu``'s model name), cores, threads torch uses, library versions, date."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    versions = {"torch": torch.__version__}
    for lib in ("torchvision", "timm", "onnxruntime", "openvino", "nncf"):
        with contextlib.suppress(ImportError, AttributeError):
            versions[lib] = __import__(lib).__version__
    return dict(cpu=cpu, cores=os.cpu_count(), torch_threads=torch.get_num_threads(),
                date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), versions=versions,
                cuda=torch.cuda.get_device_name() if torch.cuda.is_available() else None)


def _grid(items: Sequence[dict[str, Any]], column: str, cell: Callable[[dict[str, Any]], str]) -> list[str]:
    """Markdown rows: one per (model, batch size) of ``items``, one column per distinct ``item[column]``."""
    columns = list(dict.fromkeys(q[column] for q in items))
    lines = ["| model | batch | " + " | ".join(columns) + " |", "|---|---:|" + "---:|" * len(columns)]
    for key in dict.fromkeys((q["model"], q["batch_size"]) for q in items):
        cells = []
        for name in columns:
            q = next((q for q in items if (q["model"], q["batch_size"], q[column]) == (*key, name)), None)
            cells.append(cell(q) if q else "–")
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
    return lines


def markdown(document: dict[str, Any]) -> str:
    """Tables: per mode, ``ratio (ours img/s)``; with ``--memory``, per mode, ``our / the lowest peer's peak RSS``;
    then per goal in ``GOALS``, ``ratio (our mode)``."""
    m = document["machine"]
    lines = [f"Measured on {m['cpu']} ({m['cores']} cores), {m['date']}, torch {m['versions'].get('torch')}; "
             f"{document['rounds']} rounds interleaved in one run, median img/s. Cells: ours / best peer "
             "(our img/s).", ""]
    lines += _grid(document["ratios"], "mode", lambda q: f"{q['ratio']:.2f} ({q['ours']:.0f})")
    memory = [q for q in document["ratios"] if "ours_peak_rss_mib" in q]
    if memory:
        lines += ["", "Peak resident memory while running (VmHWM, MiB, a fresh process per candidate, reset once the "
                  "candidate is built; two runs). Cells: ours "
                  "/ lowest peer.", ""]
        lines += _grid(memory, "mode", lambda q: f"{q['ours_peak_rss_mib']:.0f} / {q['peer_peak_rss_mib']:.0f}")
    if document.get("targets"):
        lines += ["", "Targets, from the same run. Cells: ratio (our mode).", ""]
        lines += _grid(document["targets"], "target", lambda q: f"{q['ratio']:.2f} ({q['ours_mode']})")
    return "\n".join(lines)


def _csv(text: str, what: str, cast: Callable[[str], Any] = str) -> list[Any]:
    try:
        return [cast(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}: expected a comma-separated list, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="*", metavar="MODEL", help=f"models (default: {', '.join(DEFAULT_MODELS)})")
    p.add_argument("--batch-size", default=[1, 32], type=lambda t: _csv(t, "--batch-size", int),
                   help="comma-separated batch sizes (default: 1,32)")
    p.add_argument("--modes", default=None, type=lambda t: _csv(t, "--modes"),
                   help=f"comma-separated (default CPU: {','.join(CPU_MODES)}; CUDA: {','.join(CUDA_MODES)})")
    p.add_argument("--compare", default=list(PEERS), type=lambda t: _csv(t, "--compare"),
                   help="peer libraries (default: torchvision,timm)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds per mode (default 5)")
    p.add_argument("--min-seconds", type=float, default=0.3, help="seconds per candidate per round (default 0.3)")
    p.add_argument("--memory", action="store_true", help="also measure each candidate's peak RSS in a subprocess")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--image-size", type=int, default=224, help="input height and width (default 224)")
    p.add_argument("--json", metavar="OUT", help="write the results as JSON")
    p.add_argument("--markdown", action="store_true", help="print the README's table instead of the plain results")


def benchmark_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import sys

    from .checkpoint import atomic_write

    if any(b < 1 or b > 1024 for b in args.batch_size):
        parser.error("--batch-size: each must be between 1 and 1024")
    modes = args.modes or list(CUDA_MODES if args.device == "cuda" else CPU_MODES)
    results = benchmark(args.models or DEFAULT_MODELS, batch_sizes=args.batch_size, modes=modes,
                        compare=args.compare, rounds=args.rounds, min_seconds=args.min_seconds, memory=args.memory,
                        device=args.device, image_size=args.image_size,
                        progress=lambda s: print(f"... {s}", file=sys.stderr, flush=True))
    document = dict(machine=machine(), rounds=args.rounds, results=[asdict(r) for r in results],
                    ratios=ratios(results), targets=targets(results))
    if args.json:
        text = json.dumps(document, indent=2)
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(text))
    if args.markdown:
        print(markdown(document))
    else:
        for r in results:
            mem = f"  {r.peak_rss_mib:.0f} MiB" if r.peak_rss_mib else ""
            print(f"{r.model:20s} b{r.batch_size:<3d} {r.mode:13s} {r.candidate:22s} {r.img_per_s:9.1f} img/s "
                  f"[{r.img_per_s_min:.1f}, {r.img_per_s_max:.1f}]{mem}{'  ' + r.note if r.note else ''}")
        for q in document["ratios"]:
            print(f"{q['model']:20s} b{q['batch_size']:<3d} {q['mode']:13s} ours/best peer {q['ratio']:.2f}")
    return 0

"""Where an int8 file's time goes in OpenVINO, against the peers' ONNX Runtime fp32 export (issue 9's 2x goal).

The benchmark's setup (``mobilenets.benchmark``): a torchvision peer (timm's for Lite0) with BatchNorm calibrated
on real photos, its weights converted into ours, int8 through ``mobilenets.quantize`` on the same 32 calibration
photos. Timed interleaved, median ms per call: the peer's own ONNX Runtime export and our int8 file as
``load_int8`` runs it. Then one more OpenVINO plan with ``PERF_COUNT`` on gives each node's own time, summed per
layer type over the profiled calls. If the nodes' sum alone is past half of ONNX Runtime's call, no change outside
OpenVINO's execution of the graph (Python overhead, input copies, runtime settings) gets int8 to 2x: only faster
kernels or fewer layers can.

    python scripts/int8_profile.py mobilenet_v3_small --batch-size 1 [--rounds 9] [--calls 200]
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mobilenets.benchmark import TARGETS, _time, build, model_pair, real_images  # noqa: E402
from mobilenets.quantize import load_int8, openvino_core, quantize  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=list(TARGETS))
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=200, help="profiled calls")
    parser.add_argument("--top", type=int, default=12, help="layer types shown")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    images = real_images(max(32, args.batch_size), 224)
    calibration, x = images[:32], images[:args.batch_size]
    library = next(iter(TARGETS[args.model]))  # torchvision's, or timm's where torchvision has none
    ours, peer = model_pair(args.model, library, calibration)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "ours.int8.onnx")
        quantize(ours, calibration, path)
        runs = {"peer ONNX Runtime fp32": build("onnxruntime", peer, False, x, tmp, calibration),
                "our int8 (load_int8)": load_int8(path)}
        times: dict[str, list[float]] = {name: [] for name in runs}
        for fn in runs.values():
            fn(x)
        for _ in range(args.rounds):
            for name, fn in runs.items():
                times[name].append(1000 * len(x) / _time(fn, x, 0.3))  # ms per call
        core = openvino_core()
        model = core.read_model(path)
        model.reshape(list(x.shape))
        request = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERF_COUNT": True}
                                     ).create_infer_request()
        data = x.contiguous().numpy()
        for _ in range(20):
            request.infer({0: data})
        per_type: collections.Counter[str] = collections.Counter()
        for _ in range(args.calls):
            request.infer({0: data})
            for node in request.get_profiling_info():
                per_type[f"{node.node_type} ({node.exec_type})"] += node.real_time.total_seconds() * 1000
    ort_ms, int8_ms = (statistics.median(t) for t in times.values())
    kernels = sum(per_type.values()) / args.calls
    print(f"{args.model} ({library} peer), batch {args.batch_size}, {args.rounds} rounds interleaved, "
          "median ms per call\n")
    print("| what | ms per call | peer ONNX Runtime / it |\n|---|---:|---:|")
    for name, ms in (("peer ONNX Runtime fp32", ort_ms), ("our int8 (load_int8)", int8_ms),
                     ("our int8, OpenVINO's kernels alone (PERF_COUNT)", kernels)):
        print(f"| {name} | {ms:.3f} | {ort_ms / ms:.2f} |")
    print(f"\nThe 2x goal needs {ort_ms / 2:.3f} ms per call; the kernels alone take {kernels / (ort_ms / 2):.2f}x "
          "that.\n\n| layer type (OpenVINO kernel) | share of kernel time | ms per call |\n|---|---:|---:|")
    for name, total in per_type.most_common(args.top):
        print(f"| {name} | {100 * total / sum(per_type.values()):.1f} % | {total / args.calls:.3f} |")


if __name__ == "__main__":
    main()

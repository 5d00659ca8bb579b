"""Untrusted input (issue 6, section 4): crafted checkpoints, converter inputs, manifest entries and cache states.

Each case asserts the error type, that the message names the file and the field, and that nothing was written or
lost. The cases that used to hang or allocate gigabytes also run in one subprocess that measures, per case, the
wall time and the peak RSS over a baseline taken in that same process (``resource.getrusage``).
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import re
import stat
import subprocess
import sys
import textwrap
import time
import urllib.request
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import mobilenets
from mobilenets import CheckpointError, build_config, cache, create_model, from_checkpoint, save_checkpoint
from mobilenets import checkpoint as ck
from mobilenets import manifest as mf
from mobilenets import pretrained as pt
from mobilenets.convert import ConversionError, load_source_file
from mobilenets.pretrained import PretrainedError
from mobilenets.specs import ARCHITECTURES, Architecture

SMALL = "mobilenet_v1_025"  # 0.47M parameters: crafted files stay small and fast
MAX_SECONDS = 10.0  # per dangerous case, on a loaded 2-core machine (each takes well under a second when idle)
MAX_PEAK_BYTES = 1.5e9  # peak RSS over the subprocess's baseline; the unchecked loader wanted 5.7 GB to petabytes


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes: equal before and after means nothing was written or lost."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def raw(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(create_model(SMALL, num_classes=10), tmp_path_factory.mktemp("good") / "good.safetensors")


def craft(good: Path, out: Path, options: dict | None = None, meta: dict | None = None,
          tensors: dict | None = None) -> Path:
    """A copy of ``good`` with changed metadata fields, options (merged into its JSON) and tensors (None drops)."""
    m, t = raw(good)
    if options is not None:
        m["options"] = json.dumps({**json.loads(m["options"]), **options})
    m.update(meta or {})
    for k, v in (tensors or {}).items():
        if v is None:
            t.pop(k)
        else:
            t[k] = v
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(t, str(out), metadata=m)
    return out


def _cfg(**changes) -> str:
    cfg = dict(num_classes=10, input_size=[3, 224, 224], resize=256, crop=224, interpolation="bilinear",
               mean=[0.5] * 3, std=[0.5] * 3)
    return json.dumps({**cfg, **changes})


# (id, craft keyword arguments, the field the message must name)
BAD_METADATA = [
    ("depth_1e6", dict(options=dict(depth_mult=1e6)), "depth_mult"),
    ("width_30", dict(options=dict(width_mult=30)), "width_mult"),
    ("num_classes_1e12", dict(meta=dict(num_classes="1000000000000")), "num_classes"),
    ("num_classes_float", dict(meta=dict(num_classes="1e12")), "num_classes"),
    ("width_str", dict(options=dict(width_mult="1.0")), "width_mult"),
    ("width_bool", dict(options=dict(width_mult=True)), "width_mult"),
    ("divisor_float", dict(options=dict(divisor=8.5)), "divisor"),
    ("divisor_huge", dict(options=dict(divisor=1 << 40)), "divisor"),
    ("minimal_int", dict(options=dict(minimal=1)), "minimal"),
    ("bn_eps_nan", dict(options=dict(bn_eps=math.nan)), "bn_eps"),
    ("width_inf", dict(options=dict(width_mult=math.inf)), "width_mult"),
    ("bn_eps_negative", dict(options=dict(bn_eps=-1e-3)), "bn_eps"),
    ("momentum_2", dict(options=dict(bn_momentum=2.0)), "bn_momentum"),
    ("round_limit_nan", dict(options=dict(round_limit=math.nan)), "round_limit"),
    ("padding_list", dict(options=dict(padding=["same"])), "padding"),
    ("downsample_unknown", dict(options=dict(downsample="maxpool")), "downsample"),
    ("downsample_bool", dict(options=dict(downsample=True)), "downsample"),
    ("act_dict", dict(options=dict(act={"x": 1})), "act"),
    ("repeats_1000", dict(options=dict(repeats=[1000] * 9)), "repeats"),
    ("repeats_float", dict(options=dict(repeats=[1.5] * 9)), "repeats"),
    ("kernel_even", dict(options=dict(kernel_sizes=[4] * 9)), "kernel_sizes"),
    ("kernel_huge", dict(options=dict(kernel_sizes=[10001] * 9)), "kernel_sizes"),
    ("blocks_too_many", dict(options=dict(repeats=[64] * 9, depth_mult=16.0)), "blocks"),
    ("unknown_option", dict(options=dict(bn_epsilon=1e-3)), "bn_epsilon"),
    ("options_list", dict(meta=dict(options="[1, 2]")), "options"),
    ("options_not_json", dict(meta=dict(options="{not json")), "options"),
    ("in_chans_0", dict(meta=dict(in_chans="0")), "in_chans"),
    ("in_chans_negative", dict(meta=dict(in_chans="-3")), "in_chans"),
    ("model_path", dict(meta=dict(model="../../etc/passwd")), "model"),
    ("format_version_newer", dict(meta=dict(format_version="3")), "format_version"),
    ("format_version_junk", dict(meta=dict(format_version="1.0-evil")), "format_version"),
    ("cfg_crop_huge", dict(meta=dict(pretrained_cfg=_cfg(crop=100_000))), "crop"),
    ("cfg_resize_str", dict(meta=dict(pretrained_cfg=_cfg(resize="256"))), "resize"),
    ("cfg_std_zero", dict(meta=dict(pretrained_cfg=_cfg(std=[0.0, 0.5, 0.5]))), "std"),
    ("cfg_not_json", dict(meta=dict(pretrained_cfg="{")), "pretrained_cfg"),
]


@pytest.mark.parametrize("kwargs, field", [c[1:] for c in BAD_METADATA], ids=[c[0] for c in BAD_METADATA])
def test_crafted_metadata_is_refused(tmp_path, good, kwargs, field) -> None:
    path = craft(good, tmp_path / "crafted.safetensors", **kwargs)
    before = snapshot(tmp_path)
    for load in (from_checkpoint, lambda p: create_model(SMALL, checkpoint_path=p)):
        with pytest.raises(CheckpointError) as e:
            load(path)
        assert str(path) in str(e.value) and field in str(e.value), str(e.value)
        assert "\n" not in str(e.value)
    assert snapshot(tmp_path) == before


def test_newer_format_version_says_upgrade(tmp_path, good) -> None:
    path = craft(good, tmp_path / "new.safetensors", meta=dict(format_version="7"))
    with pytest.raises(CheckpointError, match=r"format_version 7, newer than this mobilenets reads \(2\): upgrade"):
        from_checkpoint(path)


def _edited_v1_table() -> Architecture:
    """MobileNetV1's table with its first row's stride changed: other blocks, the very same weight shapes."""
    arch = ARCHITECTURES["mobilenet_v1"]
    row = arch.stages[0][0]
    return replace(arch, stages=((replace(row, stride=3 - row.stride), *arch.stages[0][1:]), *arch.stages[1:]))


def test_checkpoint_records_architecture_fingerprint(good) -> None:
    meta, _ = raw(good)
    assert meta["format_version"] == ck.FORMAT_VERSION == "2"
    assert re.fullmatch(r"[0-9a-f]{64}", meta["architecture_sha256"])
    assert meta["architecture_sha256"] == ck.architecture_fingerprint(build_config(SMALL, num_classes=10))
    assert ck.architecture_fingerprint(build_config(SMALL, num_classes=10, drop_path_rate=0.5)) \
        == meta["architecture_sha256"]  # rates are free to change
    assert ck.architecture_fingerprint(build_config(SMALL, width_mult=0.5)) != meta["architecture_sha256"]


def test_edited_table_refuses_old_checkpoint(good, monkeypatch) -> None:
    before = from_checkpoint(good)
    monkeypatch.setitem(ARCHITECTURES, "mobilenet_v1", _edited_v1_table())
    edited = create_model(SMALL, num_classes=10)
    assert {k: v.shape for k, v in edited.state_dict().items()} == {k: v.shape for k, v in before.state_dict().items()}
    assert edited.config.stages != before.config.stages  # only the fingerprint tells them apart
    expected = rf"{re.escape(str(good))}: its architecture fingerprint .* table changed .*mobilenets convert"
    for load in (lambda: from_checkpoint(good), lambda: create_model(SMALL, checkpoint_path=str(good))):
        with pytest.raises(CheckpointError, match=expected):
            load()
    monkeypatch.undo()  # the table as it was: the file loads again, with the same weights
    after = from_checkpoint(good)
    assert all(torch.equal(t, before.state_dict()[k]) for k, t in after.state_dict().items())


def test_format_1_without_fingerprint_loads(tmp_path, good, monkeypatch) -> None:
    meta, tensors = raw(good)
    del meta["architecture_sha256"]
    save_file(tensors, str(tmp_path / "v1.safetensors"), metadata={**meta, "format_version": "1"})
    save_file(tensors, str(tmp_path / "v2.safetensors"), metadata=meta)
    model = from_checkpoint(tmp_path / "v1.safetensors")
    assert torch.equal(model.state_dict()["stem.conv.weight"], tensors["stem.conv.weight"])
    monkeypatch.setitem(ARCHITECTURES, "mobilenet_v1", _edited_v1_table())
    assert from_checkpoint(tmp_path / "v1.safetensors").config.stages != model.config.stages  # undetectable in v1
    with pytest.raises(CheckpointError, match=r"v2.safetensors: its architecture fingerprint \(metadata "
                                              r"architecture_sha256: none\)"):
        from_checkpoint(tmp_path / "v2.safetensors")


def test_foreign_file_names_the_convert_command(tmp_path) -> None:
    save_file({"w": torch.zeros(1)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(CheckpointError, match="mobilenets convert SRC OUT --from LIBRARY:MODEL"):
        from_checkpoint(tmp_path / "foreign.safetensors")


def _tensor_cases(good: Path) -> list[tuple[str, dict, str]]:
    _, t = raw(good)
    w = "stem.conv.weight"
    return [
        ("shape_mismatch", dict(tensors={"classifier.weight": torch.zeros(11, 256)}), "mis-shaped"),
        ("int8_weight", dict(tensors={w: t[w].to(torch.int8)}), "wrong dtype"),
        ("bool_weight", dict(tensors={w: t[w] > 0}), "wrong dtype"),
        ("uint8_running_var", dict(tensors={"stem.bn.running_var": torch.ones(8, dtype=torch.uint8)}), "wrong dtype"),
        ("float_counter", dict(tensors={"stem.bn.num_batches_tracked": torch.tensor(1.0)}), "wrong dtype"),
        ("missing_key", dict(tensors={w: None}), "missing"),
        ("extra_key", dict(tensors={"evil.weight": torch.zeros(3)}), "unexpected"),
        ("nan_weight", dict(tensors={w: torch.full_like(t[w], math.nan)}), "NaN"),
        ("inf_running_var", dict(tensors={"stem.bn.running_var": torch.full((8,), math.inf)}), "NaN or infinite"),
    ]


@pytest.mark.parametrize("case", range(9), ids=["shape_mismatch", "int8_weight", "bool_weight", "uint8_running_var",
                                                "float_counter", "missing_key", "extra_key", "nan_weight",
                                                "inf_running_var"])
def test_crafted_tensors_are_refused(tmp_path, good, case) -> None:
    name, kwargs, message = _tensor_cases(good)[case]
    path = craft(good, tmp_path / f"{name}.safetensors", **kwargs)
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError) as e:
        from_checkpoint(path)
    assert str(path) in str(e.value) and message in str(e.value), str(e.value)
    key = next(iter(kwargs["tensors"]))
    assert key in str(e.value)
    assert snapshot(tmp_path) == before


def test_nonfinite_weights_load_only_when_allowed(tmp_path, good) -> None:
    _, t = raw(good)
    path = craft(good, tmp_path / "nan.safetensors", tensors={"classifier.bias": torch.full((10,), math.nan)})
    with pytest.raises(CheckpointError, match="allow_nonfinite=True"):
        create_model(SMALL, checkpoint_path=path)
    model = create_model(SMALL, checkpoint_path=path, allow_nonfinite=True).eval()
    assert torch.isnan(model.classifier.bias).all()
    assert from_checkpoint(path, allow_nonfinite=True).classifier.bias.isnan().all()


def test_allow_nonfinite_reaches_every_loading_path(monkeypatch) -> None:
    """create_model passes the flag to the pretrained loader as it does to the checkpoint loader."""
    import mobilenets.factory as factory

    seen = {}
    monkeypatch.setattr(factory, "load_pretrained", lambda *a, **kw: seen.update(kw))
    create_model(SMALL, pretrained=True, allow_nonfinite=True)
    assert seen["allow_nonfinite"] is True


def test_half_precision_file_loads_as_float32(tmp_path, good) -> None:
    m, t = raw(good)
    path = tmp_path / "half.safetensors"
    save_file({k: v.half() if v.is_floating_point() else v for k, v in t.items()}, str(path), metadata=m)
    model = from_checkpoint(path)
    assert model.stem.conv.weight.dtype == torch.float32
    torch.testing.assert_close(model.stem.conv.weight, t["stem.conv.weight"].half().float())


@pytest.mark.parametrize("cut", [0, 7, 100, 5000, -10])
def test_truncated_file(tmp_path, good, cut) -> None:
    data = good.read_bytes()
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(data[:cut] if cut >= 0 else data[:cut])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as e:
        from_checkpoint(path)
    assert str(path) in str(e.value)


def test_header_claiming_gigabytes_is_refused_unread(tmp_path) -> None:
    path = tmp_path / "huge_header.safetensors"
    path.write_bytes((10 << 30).to_bytes(8, "little") + b"{}")
    with pytest.raises(CheckpointError, match="header claims") as e:
        from_checkpoint(path)
    assert str(path) in str(e.value)


def test_loaded_model_shares_no_meta_tensors_and_trains(tmp_path, good) -> None:
    model = from_checkpoint(good)
    tensors = [*model.parameters(), *model.buffers()]
    assert all(t.device.type == "cpu" for t in tensors) and all(p.requires_grad for p in model.parameters())
    _, t = raw(good)
    assert all(torch.equal(v, t[k]) for k, v in model.state_dict().items())
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    assert model.stem.conv.weight.grad is not None


def test_a_loaded_model_keeps_its_weights_when_its_file_is_rewritten(tmp_path, good) -> None:
    """The loaded tensors are the process's own memory. safetensors' are views of a mapping of the file: before, a
    file written in place changed the model loaded from it, and one truncated (``torch.save`` of the loaded weights
    to the same path) killed the process with SIGBUS. The converter's safetensors reader likewise."""
    path = tmp_path / "w.safetensors"
    path.write_bytes(good.read_bytes())
    model = from_checkpoint(path)
    src = tmp_path / "src.safetensors"
    save_file({"w": torch.ones(4096)}, src)
    data = load_source_file(src)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for f in (path, src):
        size = f.stat().st_size
        with open(f, "r+b") as out:
            out.seek(size // 2)
            out.write(bytes(size - size // 2))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(data["w"], torch.ones(4096))


def _without_fd_names(monkeypatch) -> None:
    """As on a system without ``/proc/self/fd`` and ``/dev/fd``: ``one_file`` falls back to the path."""
    exists = os.path.exists
    monkeypatch.setattr(ck.os.path, "exists",
                        lambda p: False if str(p).startswith(("/proc/self/fd/", "/dev/fd/")) else exists(p))


@pytest.mark.parametrize("names", ["fd", "path"])
def test_a_file_renamed_onto_the_path_while_loading_is_not_what_loads(tmp_path, good, monkeypatch, names) -> None:
    """Checks and tensors come from one open file: another checkpoint renamed onto the path after the file was
    opened is not read (through ``/proc/self/fd``); without fd names, the load is refused instead."""
    path = tmp_path / "w.safetensors"
    path.write_bytes(good.read_bytes())
    torch.manual_seed(1)
    other = save_checkpoint(create_model(SMALL, num_classes=10), tmp_path / "other.safetensors")
    real = ck.safe_open

    def replaced_first(name: str, **kwargs):
        os.replace(other, path)
        return real(name, **kwargs)

    monkeypatch.setattr(ck, "safe_open", replaced_first)
    if names == "path":
        _without_fd_names(monkeypatch)
        with pytest.raises(CheckpointError, match="changed while it was being read") as e:
            from_checkpoint(path)
        assert str(path) in str(e.value)
        return
    model = from_checkpoint(path)
    _, t = raw(good)
    assert all(torch.equal(v, t[k]) for k, v in model.state_dict().items())


def test_a_file_written_while_it_is_read_is_refused(tmp_path, good, monkeypatch) -> None:
    path = tmp_path / "w.safetensors"
    path.write_bytes(good.read_bytes())
    os.utime(path, ns=(10**18, 10**18))  # its modification time: not the one a write now gives it
    real = ck.safe_open

    def written_first(name: str, **kwargs):
        with open(path, "r+b") as f:
            f.seek(-4, os.SEEK_END)
            f.write(bytes(4))
        return real(name, **kwargs)

    monkeypatch.setattr(ck, "safe_open", written_first)
    with pytest.raises(CheckpointError, match="changed while it was being read") as e:
        from_checkpoint(path)
    assert str(path) in str(e.value) and "Load it again" in str(e.value)


# --------------------------------------------------------------------- bounds, measured in a subprocess

# Files that claim an architecture the tensors do not have: width 16 (allowed) on EfficientNet-B0 would be
# gigabytes of weights if built for real; it is built on the meta device and refused before any tensor is read.
DANGEROUS = ["depth_1e6", "width_30", "num_classes_1e12", "blocks_too_many", "divisor_huge", "kernel_huge"]

# Peak memory of a probe process: VmHWM, the high-water mark of its own memory. ru_maxrss is not usable: Linux
# carries it over from the forked parent (pytest, often several GB) across exec.
_PEAK = """
def peak():
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
"""

_PROBE = textwrap.dedent("""
    import json, resource, sys, time
    import mobilenets
    from mobilenets import CheckpointError, from_checkpoint

    {peak}
    base = peak()
    results = {}
    for name, path in json.loads(sys.argv[1]).items():
        start = time.monotonic()
        try:
            from_checkpoint(path)
            error = None
        except CheckpointError as e:
            error = str(e)
        results[name] = dict(seconds=time.monotonic() - start, error=error, peak=peak() - base)
    print(json.dumps(results))
""").replace("{peak}", _PEAK.strip())


@pytest.fixture(scope="module")
def bounds(good, tmp_path_factory) -> dict[str, dict]:
    d = tmp_path_factory.mktemp("dangerous")
    cases = {c[0]: c[1] for c in BAD_METADATA if c[0] in DANGEROUS}
    paths = {name: str(craft(good, d / f"{name}.safetensors", **kw)) for name, kw in cases.items()}
    b0 = save_checkpoint(create_model("mobilenet_v1_025"), d / "b0.safetensors")
    paths["wide_b0_small_tensors"] = str(craft(b0, d / "wide.safetensors", meta=dict(model="efficientnet_b0"),
                                               options=dict(width_mult=16.0, depth_mult=4.0)))
    before = snapshot(d)
    out = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(paths)], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert snapshot(d) == before  # nothing written next to the files
    return {name: dict(r, path=paths[name]) for name, r in json.loads(out.stdout.splitlines()[-1]).items()}


@pytest.mark.parametrize("name", [*DANGEROUS, "wide_b0_small_tensors"])
def test_dangerous_files_are_refused_fast_and_small(bounds, name) -> None:
    r = bounds[name]
    assert r["error"] is not None and r["path"] in r["error"], r
    assert r["seconds"] < MAX_SECONDS, r
    assert r["peak"] < MAX_PEAK_BYTES, r
    if name == "wide_b0_small_tensors":
        assert "mis-shaped" in r["error"] and "missing" in r["error"]


# ------------------------------------------------------------------------------------- user arguments


@pytest.mark.parametrize("kwargs, field", [
    (dict(width_mult=True), "width_mult"),
    (dict(width_mult=17.0), "width_mult"),
    (dict(depth_mult=1e6), "depth_mult"),
    (dict(depth_mult=math.nan), "depth_mult"),
    (dict(divisor=8.5), "divisor"),
    (dict(divisor=True), "divisor"),
    (dict(round_limit=1.5), "round_limit"),
    (dict(bn_eps=0.0), "bn_eps"),
    (dict(bn_eps=-1e-5), "bn_eps"),
    (dict(bn_eps="1e-5"), "bn_eps"),
    (dict(bn_momentum=math.inf), "bn_momentum"),
    (dict(se_ratio=-0.25), "se_ratio"),
    (dict(stem_scaled="yes"), "stem_scaled"),
    (dict(repeats=(1, 1, 1, 1, 1, 1, True, 1, 1)), "repeats"),
    (dict(kernel_sizes=(3,) * 8 + (17,)), "kernel_sizes"),
    (dict(num_classes=10**12), "num_classes"),
    (dict(num_classes=10.0), "num_classes"),
    (dict(num_classes=False), "num_classes"),
    (dict(in_chans=0), "in_chans"),
    (dict(in_chans=65), "in_chans"),
    (dict(drop_rate=math.nan), "drop_rate"),
    (dict(drop_path_rate=-0.1), "drop_path_rate"),
])
def test_user_arguments_are_validated_before_building(kwargs, field) -> None:
    start = time.monotonic()
    with pytest.raises(ValueError, match=field):
        build_config(SMALL, **kwargs)
    with pytest.raises(ValueError, match=field):
        create_model(SMALL, **kwargs)
    assert time.monotonic() - start < MAX_SECONDS


def test_registered_models_are_within_the_bounds() -> None:
    for name in mobilenets.list_models():
        build_config(name)  # raises if a default left the accepted ranges


@pytest.mark.parametrize("path_kind", ["plain", "checkpoint_path", "pretrained"])
def test_misspelled_option_raises_on_every_path(tmp_path, good, path_kind) -> None:
    kwargs = dict(plain={}, checkpoint_path=dict(checkpoint_path=good), pretrained=dict(pretrained=True))[path_kind]
    with pytest.raises(ValueError, match="unknown option.*bn_epsilon"):
        create_model("mobilenet_v1_025" if path_kind != "pretrained" else "mobilenet_v3_small", bn_epsilon=1e-3,
                     **kwargs)
    if path_kind == "checkpoint_path":
        with pytest.raises(ValueError, match="unknown option.*bn_epsilon"):
            ck.load_checkpoint_into(SMALL, good, bn_epsilon=1e-3)


# ---------------------------------------------------------------------------------- converter inputs


def test_converter_zip_claiming_more_than_its_records(tmp_path) -> None:
    """A torch.save archive whose pickle claims 2**31 elements for a 16-byte record: refused, nothing allocated."""
    src = tmp_path / "s.pth"
    torch.save({"w": torch.zeros(4)}, src)
    with zipfile.ZipFile(src) as z:
        records = {n: z.read(n) for n in z.namelist()}
    pkl = next(n for n in records if n.endswith("data.pkl"))
    data = records[pkl]
    i = data.index(b"K\x04", data.index(b"cpu"))  # the storage's numel, then the tensor's size
    data = data[:i] + b"J" + (2**31 - 1).to_bytes(4, "little") + data[i + 2:]
    j = data.index(b"K\x04\x85", i)
    records[pkl] = data[:j] + b"J" + (2**31 - 1).to_bytes(4, "little") + data[j + 2:]
    crafted = tmp_path / "crafted.pth"
    with zipfile.ZipFile(crafted, "w", zipfile.ZIP_STORED) as z:
        for n, b in records.items():
            z.writestr(n, b)
    compressed = tmp_path / "compressed.pth"
    with zipfile.ZipFile(compressed, "w", zipfile.ZIP_DEFLATED) as z:
        for n, b in records.items():
            z.writestr(n, b)
    for path, message in ((crafted, "does not match expected size"), (compressed, "compressed records")):
        start = time.monotonic()
        with pytest.raises(ConversionError, match=message) as e:
            load_source_file(path)
        assert str(path) in str(e.value) and time.monotonic() - start < MAX_SECONDS


_CONVERT_PROBE = textwrap.dedent("""
    import json, resource, sys, time
    from mobilenets.convert import ConversionError, load_source_file

    {peak}
    base, results = peak(), {}
    for path in sys.argv[1:]:
        start = time.monotonic()
        try:
            load_source_file(path)
            error = None
        except ConversionError as e:
            error = str(e)
        results[path] = dict(seconds=time.monotonic() - start, error=error, peak=peak() - base)
    print(json.dumps(results))
""").replace("{peak}", _PEAK.strip())


def test_converter_claims_are_bounded_in_time_and_memory(tmp_path) -> None:
    """Pickles claiming 8 GB (zip archive and legacy format) for 16 bytes of data: refused, nothing allocated."""
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(4)}, buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    i = data.index(b"K\x04", data.index(b"cpu"))  # the storage's element count
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(data[:i] + b"J" + (2**31 - 1).to_bytes(4, "little") + data[i + 2:])
    test_converter_zip_claiming_more_than_its_records(tmp_path)  # writes crafted.pth and compressed.pth
    paths = [str(legacy), str(tmp_path / "crafted.pth"), str(tmp_path / "compressed.pth")]
    before = snapshot(tmp_path)
    out = subprocess.run([sys.executable, "-c", _CONVERT_PROBE, *paths], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    for path, r in json.loads(out.stdout.splitlines()[-1]).items():
        assert r["error"] is not None and path in r["error"], r
        assert r["seconds"] < MAX_SECONDS and r["peak"] < MAX_PEAK_BYTES, r
    assert snapshot(tmp_path) == before


def test_converter_safetensors_header_bounds(tmp_path) -> None:
    path = tmp_path / "huge.safetensors"
    path.write_bytes((1 << 40).to_bytes(8, "little") + b"{}")
    with pytest.raises(ConversionError, match="header claims") as e:
        load_source_file(path)
    assert str(path) in str(e.value)


# ---------------------------------------------------------------------------------------------- cache

MODEL, SOURCE = "mobilenet_v3_small", "torchvision:mobilenet_v3_small"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MOBILENETS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> Path:
    torchvision = pytest.importorskip("torchvision")
    path = tmp_path_factory.mktemp("upstream") / "mobilenet_v3_small-a.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), path)
    return path


def entry(tag: str, url: str, **extra) -> dict:
    e = dict(model=MODEL, tag=tag, default=True, url=url, source=SOURCE, format="pth", license="BSD-3-Clause",
             preprocess=dict(input_size=224, resize=256, crop=224, interpolation="bilinear",
                             mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]))
    e.update(extra)
    return e


def _toml(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return json.dumps(value)  # strings, numbers and booleans are written alike


def use_manifest(monkeypatch, tmp_path: Path, *entries: dict) -> Path:
    lines = []
    for e in entries:
        lines.append("[[weights]]")
        lines += [f"{k} = {_toml(v)}" for k, v in e.items() if not isinstance(v, dict)]
        lines.append("[weights.preprocess]")
        lines += [f"{k} = {_toml(v)}" for k, v in e["preprocess"].items()]
    path = tmp_path / "manifest.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setattr(mf, "manifest_path", lambda: path)
    return path


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def host() -> str:
    return ck._host()


def test_killed_conversion_leaves_no_orphan(tmp_path, monkeypatch, upstream, home) -> None:
    """A run SIGKILLed inside its work folder: the next run removes the folder at once; other folders stay."""
    home.mkdir()
    script = (f"import os, signal; from pathlib import Path; from mobilenets import cache, pretrained as pt; "
              f"w = cache._make_work_dir(Path({str(home)!r})); (w / 'partial.pth').write_bytes(bytes(1 << 20)); "
              f"os.kill(os.getpid(), signal.SIGKILL)")
    assert subprocess.run([sys.executable, "-c", script]).returncode == -9
    (orphan,) = home.glob(".tmp-mobilenets-*")
    assert (orphan / "partial.pth").stat().st_size == 1 << 20
    foreign = [home / ".tmp-x", home / f".tmp-mobilenets-{host()}-{dead_pid()}-nomarker"]
    for d in foreign:
        d.mkdir()
        (d / "keep.txt").write_text("not ours")
    use_manifest(monkeypatch, tmp_path, entry("a", upstream.as_uri()))
    create_model(MODEL, pretrained=True)
    assert not orphan.exists()
    assert all((d / "keep.txt").read_text() == "not ours" for d in foreign)
    assert not [p for p in home.glob(".tmp-mobilenets-*") if (p / pt.WORK_MARKER).exists()]


def test_killed_atomic_write_temp_is_removed(tmp_path, good) -> None:
    target = tmp_path / "m.safetensors"
    dead = tmp_path / f".m.safetensors.tmp-mobilenets-{host()}-{dead_pid()}-abc.tmp"
    foreign = tmp_path / ".m.safetensors.abc.tmp"
    for p in (dead, foreign):
        p.write_bytes(b"x" * 1000)
    save_checkpoint(from_checkpoint(good), target)
    assert not dead.exists() and foreign.read_bytes() == b"x" * 1000 and target.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [foreign.name, target.name]


def test_home_is_a_file(tmp_path, monkeypatch, upstream, home) -> None:
    home.parent.mkdir(parents=True, exist_ok=True)
    home.write_text("my notes")
    use_manifest(monkeypatch, tmp_path, entry("a", upstream.as_uri()))
    with pytest.raises(PretrainedError) as e:
        create_model(MODEL, pretrained=True)
    msg = str(e.value)
    assert f"the weights cache {home} is not a folder" in msg and "MOBILENETS_HOME" in msg and "\n" not in msg
    assert "network" not in msg
    assert home.read_text() == "my notes"


def test_read_only_home(tmp_path, monkeypatch, upstream, home) -> None:
    """As root, permission bits do not stop writes and a read-only mount needs privileges tests should not use,
    so there the kernel's answer is simulated: ``os.mkdir`` under ``home`` fails with EROFS, as on a read-only
    file system. As another user the folder is really made read-only."""
    home.mkdir(parents=True)
    use_manifest(monkeypatch, tmp_path, entry("a", upstream.as_uri()))
    if os.geteuid() == 0:
        real_mkdir = os.mkdir

        def mkdir(path, *args, **kwargs):
            if str(path).startswith(str(home)):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", mkdir)
    else:
        home.chmod(0o555)
    try:
        with pytest.raises(PretrainedError) as e:
            create_model(MODEL, pretrained=True)
    finally:
        home.chmod(0o755)
    msg = str(e.value)
    assert f"the weights cache {home} is not writable" in msg and "MOBILENETS_HOME" in msg and "\n" not in msg
    assert list(home.iterdir()) == []


def test_disk_full_during_conversion(tmp_path, monkeypatch, upstream, home) -> None:
    use_manifest(monkeypatch, tmp_path, entry("a", upstream.as_uri()))

    def full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)

    monkeypatch.setattr(ck, "save_file", full)
    with pytest.raises(PretrainedError) as e:
        create_model(MODEL, pretrained=True)
    msg = str(e.value)
    assert f"no space left on the device of the weights cache {home}" in msg and "\n" not in msg
    assert "network" not in msg and "conversion" not in msg
    assert [p.name for p in home.iterdir()] == ["locks"]  # no work folder, no partial file


def test_disk_full_during_download(tmp_path, monkeypatch, upstream, home) -> None:
    url = "https://example.invalid/mobilenet_v3_small-00000000.pth"
    use_manifest(monkeypatch, tmp_path, entry("net", url))
    monkeypatch.setattr(urllib.request, "urlopen", lambda request, timeout: Trickle(b"x" * 100, 0.0))

    class Full:
        def __init__(self, *args):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def write(self, chunk):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cache, "open", Full, raising=False)
    with pytest.raises(PretrainedError, match="no space left on the device") as e:
        create_model(MODEL, pretrained=True)
    assert "no network" not in str(e.value)
    assert [p.name for p in home.iterdir()] == ["locks"]


class Trickle:
    """A response that sends ``data`` a few bytes at a time, sleeping ``pause`` s before each read."""

    def __init__(self, data: bytes, pause: float) -> None:
        self.data, self.pause = data, pause
        self.headers = {"Content-Length": str(len(data))}

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def read(self, n: int) -> bytes:
        time.sleep(self.pause)
        chunk, self.data = self.data[:10], self.data[10:]
        return chunk


def test_download_deadline(tmp_path, monkeypatch, home) -> None:
    """A server that trickles bytes (each read within the per-read timeout) is cut off at the overall deadline."""
    url = "https://example.invalid/mobilenet_v3_small-00000000.pth"
    use_manifest(monkeypatch, tmp_path, entry("net", url))
    monkeypatch.setenv("MOBILENETS_DOWNLOAD_DEADLINE", "0.5")
    monkeypatch.setattr(urllib.request, "urlopen", lambda request, timeout: Trickle(b"x" * 10_000, 0.05))
    start = time.monotonic()
    with pytest.raises(PretrainedError, match="longer than its deadline of 0.5 s") as e:
        create_model(MODEL, pretrained=True)
    assert time.monotonic() - start < 5 and "MOBILENETS_DOWNLOAD_DEADLINE" in str(e.value)
    assert [p.name for p in home.iterdir()] == ["locks"]
    monkeypatch.delenv("MOBILENETS_DOWNLOAD_DEADLINE")
    assert pt.download_deadline(10_000_000) == pt.DEADLINE_BASE + 200
    assert pt.download_deadline(None) == pt.DEADLINE_UNKNOWN_SIZE


@pytest.mark.parametrize("tag", ["../x", "a/b", "x.y", "Tv_in1k", "tv in1k", "tv_in1k/../../etc", "\x00", "é"])
def test_tags_that_are_not_plain_names(tag, home) -> None:
    with pytest.raises(ValueError, match="not a plain name"):
        create_model("mobilenet_v2", pretrained=f"mobilenet_v2.{tag}")
    with pytest.raises(ValueError, match="not a plain name"):
        mobilenets.get_pretrained_cfg(f"mobilenet_v2.{tag}")
    assert not home.exists()


@pytest.mark.parametrize("change, field", [
    (dict(tag="../../evil"), "tag"),
    (dict(model="mobilenet_v3_small/../x"), "model"),
    (dict(url="ftp://example.invalid/x.pth"), "scheme"),
    (dict(format="pickle"), "format"),
    (dict(default="yes"), "default"),
    (dict(sha256="not-hex"), "sha256"),
    (dict(preprocess=dict(input_size=224, resize=100_000, crop=224, interpolation="bilinear",
                          mean=[0.5] * 3, std=[0.5] * 3)), "preprocess.resize"),
    (dict(preprocess=dict(input_size=224, resize=256, crop=224, interpolation="bilinear",
                          mean=[0.5] * 3, std=[0.0, 0.5, 0.5])), "preprocess.std"),
    (dict(preprocess=dict(input_size=224, resize=256, crop=224, interpolation="magic",
                          mean=[0.5] * 3, std=[0.5] * 3)), "preprocess.interpolation"),
    (dict(preprocess=dict(input_size=224, resize=256, crop=224, interpolation="bilinear",
                          mean=[math.nan] * 3, std=[0.5] * 3)), "preprocess.mean"),
])
def test_bad_manifest_entries(tmp_path, monkeypatch, home, change, field) -> None:
    path = use_manifest(monkeypatch, tmp_path, {**entry("a", "file:///nonexistent.pth"), **change})
    mf._parse_manifest.cache_clear()
    with pytest.raises(PretrainedError) as e:
        create_model(MODEL, pretrained=True)
    assert str(path) in str(e.value) and field in str(e.value), str(e.value)
    assert not home.exists()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_files_get_the_umask_mode(tmp_path, monkeypatch, upstream, home, good, umask, mode) -> None:
    old = os.umask(umask)
    try:
        assert ck.file_mode() == mode
        saved = save_checkpoint(from_checkpoint(good), tmp_path / "out" / "m.safetensors")
        use_manifest(monkeypatch, tmp_path, entry("a", upstream.as_uri()))
        cached = pt.download_pretrained(MODEL)
    finally:
        os.umask(old)
    for path in (saved, cached, cached.with_name(cached.name + ".sha256")):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path


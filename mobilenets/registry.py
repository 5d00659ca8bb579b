"""Model names → (table, options, defaults): ``list_models``, ``get_spec``, ``build_config`` and the one validation of
``create_model``'s arguments (``check_arguments``). ``create_model`` itself lives in ``factory``, on top."""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, replace
from typing import Any

from . import references as ref
from .specs import ARCHITECTURES, MAX_IN_CHANS, MAX_NUM_CLASSES, ModelConfig, Options, is_integer, is_number, resolve


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: which table, which options by default, its head dropout and native resolution."""

    name: str
    arch: str
    options: Options
    drop_rate: float
    input_size: int
    summary: str


_REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, arch: str, options: Options, drop_rate: float, input_size: int, summary: str) -> None:
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture table {arch!r}")
    _REGISTRY[name] = ModelSpec(name, arch, options, drop_rate, input_size, summary)


# Default options follow torchvision where torchvision has the model, else timm; converters record the
# options of the weights they convert, so defaults only matter for randomly initialised models.
_V1 = ref.options(ref.TIMM_V1)  # timm's mobilenetv1_100 (paper: ReLU)
_V2 = ref.options(ref.TORCHVISION_V2)
_V3 = ref.options(ref.TORCHVISION_V3)
_EFF = Options()  # torchvision B0-B4
_EFF_TF = ref.options(ref.TF_BN)  # torchvision B5-B7, ported from TF
_LITE = ref.options(ref.LITE, ref.TF_LAYERS)  # TF's Lite, as the embedded EfficientNet-PyTorch weights need
_EFF_V2 = ref.options(ref.TORCHVISION_EFFICIENTNET_V2)
_EFF_V2_BASE = ref.options(ref.EFFICIENTNET_V2_BASE, ref.TF_BN)  # TF / timm tf_efficientnetv2_b*


for _w in (1.0, 0.25, 0.5, 0.75, 1.25):
    register(ref.width_name("mobilenet_v1", _w), "mobilenet_v1", replace(_V1, width_mult=_w), 0.0, 224,
             f"MobileNetV1 at width {_w} (Howard et al., 2017).")
for _w in (1.0, 0.35, 0.5, 0.75, 1.3, 1.4):  # 1.3: Keras Applications has ImageNet weights at it
    register(ref.width_name("mobilenet_v2", _w), "mobilenet_v2", replace(_V2, width_mult=_w), 0.2, 224,
             f"MobileNetV2 at width {_w} (Sandler et al., 2018).")
for _name, _w, _d in (("mobilenet_v2_110d", 1.1, 1.2), ("mobilenet_v2_120d", 1.2, 1.4)):
    register(_name, "mobilenet_v2", ref.options(ref.TIMM_V2_DEEP, width_mult=_w, depth_mult=_d), 0.2, 224,
             f"MobileNetV2 at width {_w} and depth {_d} with fixed stem and head (timm's {_name.replace('_v', 'v')}).")
for _size in ("large", "small"):
    for _w in (1.0, 0.5, 0.75):
        register(ref.width_name(f"mobilenet_v3_{_size}", _w), f"mobilenet_v3_{_size}", replace(_V3, width_mult=_w),
                 0.2, 224, f"MobileNetV3-{_size.capitalize()} at width {_w} (Howard et al., 2019).")
    register(f"mobilenet_v3_{_size}_minimal", f"mobilenet_v3_{_size}", replace(_V3, minimal=True), 0.2, 224,
             f"MobileNetV3-{_size.capitalize()} minimal: no SE, ReLU only, 3x3 kernels (Howard et al., 2019).")
register("mobilenet_v3_large_150d", "mobilenet_v3_large",
         ref.options(ref.TIMM_V3, width_mult=1.5, depth_mult=1.2), 0.2, 256,
         "MobileNetV3-Large at width 1.5 and depth 1.2 (timm's mobilenetv3_large_150d).")

# EfficientNet (Tan & Le, 2019): (width, depth, resolution, dropout) per variant, Sec. 3.3 and TF's params table.
_EFFICIENTNET_SCALING = {
    "b0": (1.0, 1.0, 224, 0.2), "b1": (1.0, 1.1, 240, 0.2), "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3), "b4": (1.4, 1.8, 380, 0.4), "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5), "b7": (2.0, 3.1, 600, 0.5), "b8": (2.2, 3.6, 672, 0.5),
}
for _v, (_w, _d, _res, _drop) in _EFFICIENTNET_SCALING.items():
    _base = _EFF if _v < "b5" else _EFF_TF
    register(f"efficientnet_{_v}", "efficientnet", replace(_base, width_mult=_w, depth_mult=_d), _drop, _res,
             f"EfficientNet-{_v.upper()} (Tan & Le, 2019): width {_w}, depth {_d}, {_res}px.")
_LITE_SCALING = {
    "lite0": (1.0, 1.0, 224, 0.2), "lite1": (1.0, 1.1, 240, 0.2), "lite2": (1.1, 1.2, 260, 0.3),
    "lite3": (1.2, 1.4, 280, 0.3), "lite4": (1.4, 1.8, 300, 0.3),
}
for _v, (_w, _d, _res, _drop) in _LITE_SCALING.items():
    register(f"efficientnet_{_v}", "efficientnet", replace(_LITE, width_mult=_w, depth_mult=_d), _drop, _res,
             f"EfficientNet-{_v.capitalize()}: EfficientNet without SE, with ReLU6, fixed stem and head; "
             f"width {_w}, depth {_d}, {_res}px.")
for _v, _res, _drop in (("s", 384, 0.2), ("m", 480, 0.3), ("l", 480, 0.4), ("xl", 512, 0.4)):
    register(f"efficientnet_v2_{_v}", f"efficientnet_v2_{_v}", _EFF_V2, _drop, _res,
             f"EfficientNetV2-{_v.upper()} (Tan & Le, 2021), {_res}px.")
for _v, (_w, _d, _res, _drop) in {"b0": (1.0, 1.0, 224, 0.2), "b1": (1.0, 1.1, 240, 0.2),
                                  "b2": (1.1, 1.2, 260, 0.3), "b3": (1.2, 1.4, 300, 0.3)}.items():
    register(f"efficientnet_v2_{_v}", "efficientnet_v2_base", replace(_EFF_V2_BASE, width_mult=_w, depth_mult=_d),
             _drop, _res, f"EfficientNetV2-{_v.upper()} (Tan & Le, 2021): width {_w}, depth {_d}, {_res}px.")

# MobileNetV4 (Qin et al., 2024), as timm builds it (the only reference with weights in PyTorch): timm's layers,
# and the stem kept at the paper's width below width 1. Native resolution: timm's default weights'.
_V4 = ref.options(ref.TIMM_LAYERS)
for _size, _widths, _res in (("conv_small", (1.0, 0.35, 0.5), 224), ("conv_medium", (1.0,), 256),
                             ("conv_large", (1.0,), 384), ("hybrid_medium", (1.0, 0.75), 256),
                             ("hybrid_large", (1.0, 0.75), 384)):
    for _w in _widths:
        register(ref.width_name(f"mobilenet_v4_{_size}", _w), f"mobilenet_v4_{_size}",
                 replace(_V4, width_mult=_w, stem_scaled=_w >= 1.0), 0.2, _res,
                 f"MobileNetV4-{_size.replace('_', ' ').title().replace(' ', '-')} at width {_w} (Qin et al., 2024).")
# timm's anti-aliased MobileNetV4-Conv models: every strided block conv runs at stride 1 and is followed by a 2x2
# average pool (``aa``) or a 3x3 blur (``blur``), Zhang, 2019; the tables are Conv-M's and Conv-L's.
for _name, _size, _down, _res in (("conv_aa_medium", "conv_medium", "avg", 256),
                                  ("conv_blur_medium", "conv_medium", "blur", 224),
                                  ("conv_aa_large", "conv_large", "avg", 448)):
    register(f"mobilenet_v4_{_name}", f"mobilenet_v4_{_size}", replace(_V4, downsample=_down), 0.2, _res,
             f"MobileNetV4-{_size.replace('_', ' ').title().replace(' ', '-')} with {_down} anti-aliased "
             "downsampling (Qin et al., 2024; timm).")


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of the registered models matching an fnmatch ``pattern``."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_spec(name: str) -> ModelSpec:
    """The registered spec of ``name``; an unknown name raises ``ValueError`` listing the closest names."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=5, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "see `mobilenets list` (Python: list_models())"
        raise ValueError(f"unknown model {name!r}; {hint}")
    return _REGISTRY[name]


def check_option_names(name: str, options: dict[str, Any]) -> None:
    """Refuse keyword arguments that are not architecture options (a misspelled ``bn_epsilon``), on every path."""
    unknown = sorted(set(options) - set(Options.names()))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for {name}; accepted: num_classes, in_chans, width_mult, "
            f"depth_mult, drop_rate, drop_path_rate, checkpoint_path, pretrained, {', '.join(Options.names())}"
        )


def check_build_arguments(
    *, num_classes: Any = 1000, in_chans: Any = 3, drop_rate: Any = 0.0, drop_path_rate: Any = 0.0
) -> None:
    """Type and range of the sizes and rates ``build_config`` takes (bounds: ``specs.MAX_NUM_CLASSES`` etc.)."""
    for key, value, high in (("num_classes", num_classes, MAX_NUM_CLASSES), ("in_chans", in_chans, MAX_IN_CHANS)):
        low = 0 if key == "num_classes" else 1
        if not is_integer(value) or not low <= value <= high:
            raise ValueError(f"{key} must be an integer in [{low}, {high}], got {value!r}")
    for key, value in (("drop_rate", drop_rate), ("drop_path_rate", drop_path_rate)):
        if not is_number(value) or not 0.0 <= value < 1.0:
            raise ValueError(f"{key} must be in [0, 1), got {value!r}")


def check_arguments(
    name: str,
    *,
    num_classes: Any = 1000,
    in_chans: Any = 3,
    width_mult: Any = None,
    depth_mult: Any = None,
    drop_rate: Any = None,
    drop_path_rate: Any = 0.0,
    **options: Any,
) -> dict[str, Any]:
    """The one check of ``create_model``'s keyword arguments, on every path (new, checkpoint, pretrained).

    The model name, the option names, and the sizes' and rates' types and ranges (``ValueError`` saying which).
    Returns the architecture options asked for: ``options`` plus ``width_mult`` / ``depth_mult`` when given, lists
    as tuples. Their values are checked where they are used (``Options.validate``, or against a file's).
    """
    get_spec(name)
    check_option_names(name, options)
    check_build_arguments(num_classes=num_classes, in_chans=in_chans, drop_path_rate=drop_path_rate,
                          drop_rate=0.0 if drop_rate is None else drop_rate)
    requested = dict(options)
    requested.update({k: v for k, v in (("width_mult", width_mult), ("depth_mult", depth_mult)) if v is not None})
    for key in ("repeats", "kernel_sizes"):
        if isinstance(requested.get(key), list):
            requested[key] = tuple(requested[key])
    return requested


def build_config(
    name: str,
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    width_mult: float | None = None,
    depth_mult: float | None = None,
    drop_rate: float | None = None,
    drop_path_rate: float = 0.0,
    **options: Any,
) -> ModelConfig:
    """Resolve a registered model with user overrides into a ``ModelConfig`` (no module is built)."""
    requested = check_arguments(name, num_classes=num_classes, in_chans=in_chans, width_mult=width_mult,
                                depth_mult=depth_mult, drop_rate=drop_rate, drop_path_rate=drop_path_rate, **options)
    spec = get_spec(name)
    return resolve(
        ARCHITECTURES[spec.arch],
        replace(spec.options, **requested),
        name=name,
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=spec.drop_rate if drop_rate is None else drop_rate,
        drop_path_rate=drop_path_rate,
        input_size=spec.input_size,
    )


def __getattr__(name: str) -> Any:
    """``registry.create_model``, where it used to live: a re-export of ``factory.create_model`` (PEP 562).

    The one deferred import in the package: ``factory`` sits above this module, so it cannot be imported here.
    """
    if name == "create_model":
        from .factory import create_model

        return create_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

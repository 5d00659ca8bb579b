"""torchvision's ``mobilenet_v2``, ``mobilenet_v3_*``, ``efficientnet_b*`` and ``efficientnet_v2_*`` key layout.

torchvision stores layers in index-keyed ``nn.Sequential``s whose indices shift when an optional layer is
absent; the map below walks our resolved blocks and counts those indices.
"""

from __future__ import annotations

from .. import references as ref
from ..blocks import FusedMobileBlock
from ..specs import ModelConfig
from .base import ConversionError, Converter, KeyMap

SOURCES: dict[str, tuple[str, dict]] = {
    "mobilenet_v2": ("mobilenet_v2", dict(ref.TORCHVISION_V2)),
    "mobilenet_v3_large": ("mobilenet_v3_large", dict(ref.TORCHVISION_V3)),
    "mobilenet_v3_small": ("mobilenet_v3_small", dict(ref.TORCHVISION_V3)),
    **{f"efficientnet_b{i}": (f"efficientnet_b{i}", {} if i < 5 else dict(ref.TF_BN)) for i in range(8)},
    **{f"efficientnet_v2_{v}": (f"efficientnet_v2_{v}", dict(ref.TORCHVISION_EFFICIENTNET_V2)) for v in "sml"},
}


def key_map(config: ModelConfig, model: str) -> KeyMap:
    km = KeyMap()
    km.conv_bn("stem", "features.0.0", "features.0.1")
    flat = model.startswith("mobilenet")  # MobileNets: features.<block + 1>; EfficientNets: features.<stage + 1>.<j>
    index = 0
    for i, stage in enumerate(config.stages):
        for j, b in enumerate(stage):
            index += 1
            ours = f"stages.{i}.{j}"
            theirs = f"features.{index}" if flat else f"features.{i + 1}.{j}"
            seq = f"{theirs}.conv" if model == "mobilenet_v2" else f"{theirs}.block"
            layers = []  # our layer name, kind
            if isinstance(b, FusedMobileBlock.Config):
                layers.append(("conv_exp", "cna"))
                layers += [("conv_pwl", "cna")] if b.mid_chs is not None else []
            else:
                layers += [("conv_pw", "cna")] if b.mid_chs is not None else []
                layers.append(("conv_dw", "cna"))
                layers += [("se", "se")] if b.se_chs else []
                layers.append(("conv_pwl", "split" if model == "mobilenet_v2" else "cna"))
            k = 0
            for name, kind in layers:
                if kind == "cna":
                    km.conv_bn(f"{ours}.{name}", f"{seq}.{k}.0", f"{seq}.{k}.1")
                elif kind == "se":
                    km.se(f"{ours}.se", f"{seq}.{k}.fc1", f"{seq}.{k}.fc2")
                else:  # MobileNetV2's projection: a bare conv and a BatchNorm, two indices
                    km.conv(f"{ours}.{name}.conv", f"{seq}.{k}")
                    k += 1
                    km.bn(f"{ours}.{name}.bn", f"{seq}.{k}")
                k += 1
    last = f"features.{index + 1}" if flat else f"features.{len(config.stages) + 1}"
    km.conv_bn("head", f"{last}.0", f"{last}.1")
    if config.head_hidden:
        km.conv("pre_logits.fc", "classifier.0", bias=True)
        classifier = "classifier.3"
    else:
        classifier = "classifier.1"
    if config.num_classes:
        km.conv("classifier", classifier, bias=True)
    return km


def preprocessing(model: str, tag: str | None, file_name: str, config: ModelConfig) -> tuple[dict, str] | None:
    """The eval transform, class names and accuracy that torchvision records with its weights (``Weights`` enums).

    The weights are the ones whose URL ends in ``file_name``, else ``tag`` (an enum member name such as
    ``IMAGENET1K_V2``), else the model's ``DEFAULT``. ``None`` when torchvision is not installed.
    """
    try:
        from torchvision.models import get_model_weights
    except ImportError:
        return None
    enum = get_model_weights(model)
    if tag is not None:
        if tag not in enum.__members__:
            raise ConversionError(f"torchvision has no weights {tag!r} for {model}; its weights are "
                                  f"{', '.join(enum.__members__)} (or give no tag)")
        weights, how = enum[tag], ""
    else:
        by_file = [w for w in enum if w.url.rsplit("/", 1)[-1] == file_name]
        weights = by_file[0] if by_file else enum.DEFAULT
        how = "" if by_file else f" (no {model} weights are named {file_name}: assumed the DEFAULT ones)"
    t = weights.transforms()
    crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
    cfg = dict(tag=weights.name, url=weights.url, input_size=[len(t.mean), crop, crop], resize=resize, crop=crop,
               crop_mode="center", interpolation=t.interpolation.value, mean=list(t.mean), std=list(t.std),
               categories=list(weights.meta["categories"]))
    metrics = weights.meta.get("_metrics", {}).get("ImageNet-1K", {})
    if "acc@1" in metrics:
        cfg["metrics"] = dict(top1=metrics["acc@1"], top5=metrics.get("acc@5"), source="torchvision weight metadata")
        cfg["metrics"] = {k: v for k, v in cfg["metrics"].items() if v is not None}
    return cfg, f"torchvision's {type(weights).__name__}.{weights.name}{how}"


CONVERTER = Converter("torchvision", SOURCES, key_map, preprocessing)

"""mobilenets: MobileNetV1/V2/V3, EfficientNet and EfficientNetV2 built from the papers' tables.

Quick start::

    import mobilenets
    model = mobilenets.create_model("mobilenet_v3_large", num_classes=10)
    print(model.config.table())
"""

from .blocks import (
    BlockConfig,
    ConvBN,
    DepthwiseSeparable,
    FusedMobileBlock,
    MobileBlock,
    MobileMultiQueryAttention,
    UniversalInvertedBottleneck,
)
from .checkpoint import CheckpointError, from_checkpoint, save_checkpoint
from .data import eval_transform, imagenet_categories
from .factory import create_model
from .features import FeatureInfo, MobileNetFeatures
from .layers import ConvNormAct, DropPath, LayerOptions, SqueezeExcite, adjust_channels, h_sigmoid, h_swish
from .model import MobileNet
from .pretrained import PretrainedError, download_pretrained, get_cache_dir, get_pretrained_cfg, list_pretrained
from .registry import build_config, get_spec, list_models
from .specs import ARCHITECTURES, Architecture, ModelConfig, Options, Row, resolve
from .training import finetune

__version__ = "0.1.0"

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "BlockConfig",
    "CheckpointError",
    "ConvBN",
    "ConvNormAct",
    "DepthwiseSeparable",
    "DropPath",
    "FeatureInfo",
    "FusedMobileBlock",
    "LayerOptions",
    "MobileBlock",
    "MobileMultiQueryAttention",
    "MobileNet",
    "MobileNetFeatures",
    "ModelConfig",
    "Options",
    "PretrainedError",
    "Row",
    "SqueezeExcite",
    "UniversalInvertedBottleneck",
    "adjust_channels",
    "build_config",
    "create_model",
    "download_pretrained",
    "eval_transform",
    "finetune",
    "from_checkpoint",
    "get_cache_dir",
    "get_pretrained_cfg",
    "get_spec",
    "h_sigmoid",
    "h_swish",
    "imagenet_categories",
    "list_models",
    "list_pretrained",
    "resolve",
    "save_checkpoint",
]

"""``create_model``: one entry point over a new model, a checkpoint and pretrained weights.

The top of the import order: ``registry`` (names → specs, ``build_config``, ``check_arguments``) ← ``checkpoint``
(read, write, validate) ← ``manifest`` ← ``cache`` ← ``pretrained`` (load) ← ``factory``. Every path checks its
arguments with the same ``registry.check_arguments``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from torch import nn

from .checkpoint import load_checkpoint_into
from .features import MobileNetFeatures
from .model import MobileNet
from .pretrained import load_pretrained
from .registry import build_config, check_arguments
from .specs import check_output_stride


def create_model(
    name: str,
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    width_mult: float | None = None,
    depth_mult: float | None = None,
    drop_rate: float | None = None,
    drop_path_rate: float = 0.0,
    checkpoint_path: str | None = None,
    pretrained: bool | str = False,
    cache_dir: str | os.PathLike | None = None,
    allow_nonfinite: bool = False,
    features_only: bool = False,
    out_indices: int | Sequence[int] | None = None,
    output_stride: int = 32,
    **options: Any,
) -> nn.Module:
    """Build a registered model, in train mode, optionally loading a checkpoint or pretrained weights.

    Args:
        name: a name from ``list_models()``.
        num_classes: classifier outputs (0: no classifier, ``forward`` returns pooled features).
        in_chans: input channels of the stem.
        width_mult, depth_mult: override the variant's multipliers.
        drop_rate: dropout before the classifier (default: the variant's).
        drop_path_rate: stochastic depth rate of the last block, growing linearly from 0 at the first.
        checkpoint_path: a ``.safetensors`` file written by mobilenets; its recorded architecture is used.
        pretrained: ``True`` for the model's default pretrained tag, or a tag from ``list_pretrained()``.
        cache_dir: where pretrained weights are cached (default ``$MOBILENETS_HOME``, else the torch hub cache).
        allow_nonfinite: load a checkpoint whose weights hold NaN or infinity (refused by default).
        features_only: return the backbone, ``features.MobileNetFeatures``: ``forward`` gives the feature maps of
            the levels ``out_indices`` (timm's levels for the family; ``feature_info`` describes them).
        out_indices: with ``features_only``, which levels (default all; an int ``n``: the last ``n``).
        output_stride: 32, or 16 / 8: the last stages dilate instead of striding (any weights load at any value).
        **options: architecture options, see ``mobilenets.Options``.
    """
    kwargs = dict(num_classes=num_classes, in_chans=in_chans, width_mult=width_mult, depth_mult=depth_mult,
                  drop_rate=drop_rate, drop_path_rate=drop_path_rate, **options)
    check_arguments(name, output_stride=output_stride, **kwargs)  # a misspelled option is never silently ignored
    check_output_stride(output_stride)  # before any weights are read
    if pretrained and checkpoint_path is not None:
        raise ValueError("pass either pretrained or checkpoint_path, not both")
    if out_indices is not None and not features_only:
        raise ValueError("out_indices selects the outputs of a backbone: pass features_only=True with it")
    if pretrained:
        model = load_pretrained(name, pretrained, cache_dir=cache_dir, allow_nonfinite=allow_nonfinite,
                                output_stride=output_stride, **kwargs)
    elif checkpoint_path is not None:
        model = load_checkpoint_into(name, checkpoint_path, allow_nonfinite=allow_nonfinite,
                                     output_stride=output_stride, **kwargs)
    else:
        model = MobileNet(build_config(name, output_stride=output_stride, **kwargs))
    return MobileNetFeatures(model, out_indices) if features_only else model


__all__ = ["create_model"]

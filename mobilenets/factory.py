"""``create_model``: one entry point over a new model, a checkpoint and pretrained weights.

The top of the import order: ``registry`` (names → specs, ``build_config``, ``check_arguments``) ← ``checkpoint``
(read, write, validate) ← ``manifest`` ← ``cache`` ← ``pretrained`` (load) ← ``factory``. Every path checks its
arguments with the same ``registry.check_arguments``.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from .checkpoint import load_checkpoint_into
from .model import MobileNet
from .pretrained import load_pretrained
from .registry import build_config, check_arguments


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
        **options: architecture options, see ``mobilenets.Options``.
    """
    kwargs = dict(num_classes=num_classes, in_chans=in_chans, width_mult=width_mult, depth_mult=depth_mult,
                  drop_rate=drop_rate, drop_path_rate=drop_path_rate, **options)
    check_arguments(name, **kwargs)  # on every path: a misspelled option is never silently ignored
    if pretrained and checkpoint_path is not None:
        raise ValueError("pass either pretrained or checkpoint_path, not both")
    if pretrained:
        return load_pretrained(name, pretrained, cache_dir=cache_dir, allow_nonfinite=allow_nonfinite, **kwargs)
    if checkpoint_path is not None:
        return load_checkpoint_into(name, checkpoint_path, allow_nonfinite=allow_nonfinite, **kwargs)
    return MobileNet(build_config(name, **kwargs))


__all__ = ["create_model"]

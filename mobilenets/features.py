"""Multi-scale feature maps for detection and segmentation: ``MobileNetFeatures`` and ``FeatureInfo``.

The levels are those of timm's ``features_only`` models for the same families, so a detection codebase can swap
timm's backbone for ours: the output of each stage whose successor downsamples, and of the last stage (the stem
too when the first stage downsamples, as in MobileNetV3-Small and MobileNetV4). Where timm builds the 1x1 conv
before pooling as its last stage (MobileNetV3 and V4, the families with a hidden layer after pooling), the last
level is our ``head`` conv; elsewhere (V1, V2, EfficientNet, EfficientNetV2) the head conv is not a feature level.
Each level is described as timm does: ``num_chs``, ``reduction`` (its output stride), ``module`` (the submodule
whose output it is), ``stage`` (its position: 0 the stem, ``i + 1`` stage ``i``, one past the stages the head).
"""

from __future__ import annotations

from collections.abc import Sequence
from copy import deepcopy
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .specs import ModelConfig, is_integer

if TYPE_CHECKING:
    from .model import MobileNet

# pretrained_cfg keys that describe the classifier, dropped from a backbone's (as timm's pretrained_cfg_for_features)
CLASSIFIER_KEYS = ("num_classes", "categories", "classifier", "global_pool")


def head_is_level(config: ModelConfig) -> bool:
    """Whether the head conv is the last feature level: MobileNetV3/V4, whose 1x1 conv before pooling timm builds
    as its last stage (they are the families with a hidden layer after pooling)."""
    return bool(config.head_chs and config.head_hidden)


def feature_levels(config: ModelConfig) -> list[dict[str, Any]]:
    """The feature levels of a resolved network, as timm's ``feature_info`` dicts, in network order.

    A level ends a stage whose next stage starts with a stride in the table (``ModelConfig.stage_strides``; an
    ``output_stride`` below 32 turns that stride into dilation but keeps the level), and the last stage ends one.
    ``reduction`` counts the strides actually taken, so it stops growing at ``output_stride``.
    """
    strides = config.stage_strides or tuple(stage[0].stride for stage in config.stages)
    levels: list[dict[str, Any]] = []
    reduction = 2  # the stem's stride
    if strides[0] > 1:
        levels.append(dict(num_chs=config.stem_chs, reduction=reduction, module="stem", stage=0))
    last = len(config.stages) - 1
    for i, stage in enumerate(config.stages):
        for block in stage:
            reduction *= block.stride
        if i == last or strides[i + 1] > 1:
            levels.append(dict(num_chs=stage[-1].out_chs, reduction=reduction, module=f"stages.{i}", stage=i + 1))
    if head_is_level(config):
        levels[-1] = dict(num_chs=config.head_chs, reduction=reduction, module="head", stage=len(config.stages) + 1)
    for index, level in enumerate(levels):
        level["index"] = index
    return levels


def check_out_indices(out_indices: Any, levels: Sequence[dict[str, Any]], name: str = "the model") -> tuple[int, ...]:
    """``out_indices`` as non-negative level indices; ``ValueError`` naming the valid ones if it does not fit.

    ``None``: every level. An integer ``n``: the last ``n`` levels (timm's convention). A sequence: those levels,
    in that order; negative indices count from the end. Duplicates are refused.
    """
    n = len(levels)
    valid = ", ".join(f"{i} ({lv['num_chs']} channels, stride {lv['reduction']})" for i, lv in enumerate(levels))
    hint = f"{name} has {n} feature levels: {valid}"
    if out_indices is None:
        return tuple(range(n))
    if is_integer(out_indices):
        if not 1 <= out_indices <= n:
            raise ValueError(f"out_indices={out_indices} asks for the last {out_indices} levels, but {hint}")
        return tuple(range(n - out_indices, n))
    if isinstance(out_indices, (str, bytes)) or not isinstance(out_indices, Sequence) or not out_indices:
        raise ValueError(f"out_indices must be a non-empty sequence of level indices (or an int: the last n), got "
                         f"{out_indices!r}; {hint}")
    if not all(is_integer(i) for i in out_indices):
        raise ValueError(f"out_indices must hold integers, got {list(out_indices)!r}; {hint}")
    bad = [i for i in out_indices if not -n <= i < n]
    if bad:
        raise ValueError(f"out_indices {bad} out of range: {hint}")
    indices = tuple(i % n for i in out_indices)
    if len(set(indices)) != len(indices):
        raise ValueError(f"out_indices={list(out_indices)} names a level twice; {hint}")
    return indices


class FeatureInfo:
    """What each output of a backbone is, with timm's ``FeatureInfo`` interface.

    ``info`` lists every level of the network; ``out_indices`` those returned. The accessors ``channels()``,
    ``reduction()``, ``module_name()`` and ``get(key)`` answer for the returned levels, or for the levels ``idx``
    names (an int or a list) when given; indexing and ``len`` reach every level, as in timm.
    """

    def __init__(self, info: list[dict[str, Any]], out_indices: Sequence[int]) -> None:
        self.info = [dict(level) for level in info]
        self.out_indices = tuple(out_indices)

    def from_other(self, out_indices: Sequence[int]) -> FeatureInfo:
        return FeatureInfo(deepcopy(self.info), check_out_indices(out_indices, self.info))

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, (list, tuple)):
            return [self.info[i][key] for i in idx]
        return self.info[idx][key]

    def get_dicts(self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None) -> Any:
        def pick(i: int) -> dict[str, Any]:
            return self.info[i] if keys is None else {k: self.info[i][k] for k in keys}

        if idx is None:
            return [pick(i) for i in self.out_indices]
        if isinstance(idx, (list, tuple)):
            return [pick(i) for i in idx]
        return pick(idx)

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("module", idx)

    def __getitem__(self, item: int) -> dict[str, Any]:
        return self.info[item]

    def __len__(self) -> int:
        return len(self.info)

    def __repr__(self) -> str:
        return f"FeatureInfo(out_indices={self.out_indices}, info={self.info})"


def features_pretrained_cfg(cfg: dict[str, Any] | None) -> dict[str, Any] | None:
    """A classifier's ``pretrained_cfg`` for its backbone: preprocessing and provenance, no classifier keys."""
    if cfg is None:
        return None
    return {k: v for k, v in deepcopy(cfg).items() if k not in CLASSIFIER_KEYS}


class MobileNetFeatures(nn.Module):
    """A MobileNet without its classifier: ``forward(x)`` returns the feature maps at ``out_indices``.

    Made from a ``MobileNet`` whose submodules it takes over (no copy): ``stem``, ``stages`` and, where the head
    conv is a feature level (MobileNetV3/V4), ``head``; its state-dict keys are the classifier's less the head's,
    so ``load_state_dict`` of a classifier's weights without ``head``/``pre_logits``/``classifier`` keys is strict.
    ``feature_info`` describes the outputs (``FeatureInfo``); ``config`` is the classifier's resolved architecture,
    ``pretrained_cfg`` its preprocessing. Stages after the last level asked for are kept but not run.
    """

    def __init__(self, model: MobileNet, out_indices: int | Sequence[int] | None = None) -> None:
        super().__init__()
        levels = feature_levels(model.config)
        indices = check_out_indices(out_indices, levels, model.config.name or model.config.arch)
        self.config = model.config
        self.stem = model.stem
        self.stages = model.stages
        self.head = model.head if head_is_level(model.config) else nn.Identity()
        self.feature_info = FeatureInfo(levels, indices)
        self.pretrained_cfg = features_pretrained_cfg(getattr(model, "pretrained_cfg", None))
        self._positions = tuple(levels[i]["stage"] for i in indices)  # 0: stem, i + 1: stage i, then the head
        self._take = frozenset(self._positions)
        self._last = max(self._positions)
        self.train(model.training)

    @property
    def out_indices(self) -> tuple[int, ...]:
        return self.feature_info.out_indices

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        found = {0: x} if 0 in self._take else {}
        for i, stage in enumerate(self.stages, start=1):
            if i > self._last:
                break
            x = stage(x)
            if i in self._take:
                found[i] = x
        if self._last > len(self.stages):
            found[self._last] = self.head(x)
        return [found[p] for p in self._positions]


__all__ = ["FeatureInfo", "MobileNetFeatures", "check_out_indices", "feature_levels", "features_pretrained_cfg"]

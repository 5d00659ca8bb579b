"""What a converter is: a library's sources and its key map, with per-tensor transforms where layouts differ.

A library module (``torchvision``, ``timm``, ``efficientnet_pytorch``, ``keras``) defines one ``Converter``; adding
a library or a block is adding a ``Converter`` or a case in its key map, nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..specs import ModelConfig

BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

Transform = Callable[[torch.Tensor], torch.Tensor]
PreprocessingHook = Callable[..., tuple[dict[str, Any], str] | None]
"""A pure function from a source tensor to ours (a reshape, transpose or split); shapes are checked on its result,
so it must accept any tensor (it is also applied to meta tensors of the source's shapes)."""


class ConversionError(ValueError):
    """A source that cannot be converted: unknown model, unreadable file or keys that do not match."""


def conv1x1_as_linear(t: torch.Tensor) -> torch.Tensor:
    """A 1x1 conv weight ``(out, in, 1, 1)`` as a ``Linear`` weight ``(out, in)``; other shapes pass unchanged."""
    return t.flatten(1) if t.dim() == 4 and t.shape[2:] == (1, 1) else t


@dataclass
class KeyMap:
    """Ordered pairs ``(our_key, source_key)``, built layer by layer, the transforms some pairs need, and the two
    special cases a source may need, both counted by the same strict check as the pairs:

    ``fills``: our keys the source has no tensor for, with the value they get (Keras keeps no BatchNorm count).
    ``aside``: source keys that must be present but are not copied into our state dict (Keras' input
    ``Normalization``, which the converter records as preprocessing).
    """

    pairs: list[tuple[str, str]] = field(default_factory=list)
    transforms: dict[str, Transform] = field(default_factory=dict)  # our key -> transform of the source tensor
    fills: dict[str, torch.Tensor] = field(default_factory=dict)
    aside: list[str] = field(default_factory=list)

    def add(self, ours: str, theirs: str, transform: Transform | None = None) -> None:
        self.pairs.append((ours, theirs))
        if transform is not None:
            self.transforms[ours] = transform

    def fill(self, ours: str, value: torch.Tensor) -> None:
        """Our key ``ours`` gets ``value``, from no source tensor."""
        self.fills[ours] = value

    def set_aside(self, theirs: str) -> None:
        """The source key ``theirs`` is expected and read, but fills none of ours."""
        self.aside.append(theirs)

    def conv(self, ours: str, theirs: str, bias: bool = False, transform: Transform | None = None) -> None:
        """A bare conv or linear layer: ``weight`` (through ``transform``) and ``bias``."""
        self.add(f"{ours}.weight", f"{theirs}.weight", transform)
        if bias:
            self.add(f"{ours}.bias", f"{theirs}.bias")

    def bn(self, ours: str, theirs: str) -> None:
        for k in BN_KEYS:
            self.add(f"{ours}.{k}", f"{theirs}.{k}")

    def conv_bn(self, ours: str, conv: str, bn: str) -> None:
        """One of our ``ConvNormAct`` layers from a source conv and its BatchNorm."""
        self.conv(f"{ours}.conv", conv)
        self.bn(f"{ours}.bn", bn)

    def se(self, ours: str, reduce: str, expand: str) -> None:
        self.conv(f"{ours}.conv_reduce", reduce, bias=True)
        self.conv(f"{ours}.conv_expand", expand, bias=True)

    def apply(self, ours: str, tensor: torch.Tensor) -> torch.Tensor:
        """The source tensor for ``ours`` after its transform, if it has one."""
        transform = self.transforms.get(ours)
        return tensor if transform is None else transform(tensor)


@dataclass(frozen=True)
class Converter:
    """One library's contract: the models it converts and where each of our tensors comes from.

    Attributes:
        library: the ``LIBRARY`` of ``LIBRARY:MODEL`` source names.
        sources: ``{library_model_name: (our_model_name, {architecture options})}``.
        key_map: ``key_map(config, model) -> KeyMap`` for a config resolved from ``sources[model]``.
        preprocessing: optional ``preprocessing(model, tag, file_name, config) -> (pretrained_cfg fields, origin)``
            or ``None``: what the library itself records about its weights' inputs and classes (``None`` when it
            is not installed or knows nothing of ``model``); ``convert.source_preprocessing`` falls back on the
            weights manifest, then ImageNet defaults.
    """

    library: str
    sources: Mapping[str, tuple[str, Mapping[str, Any]]]
    key_map: Callable[[ModelConfig, str], KeyMap]
    preprocessing: PreprocessingHook | None = None


__all__ = ["BN_KEYS", "ConversionError", "Converter", "KeyMap", "PreprocessingHook", "Transform", "conv1x1_as_linear"]

"""``MobileNet``: one network class for every family, built from a resolved ``ModelConfig``."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from .layers import ConvNormAct, make_activation
from .specs import ModelConfig


class MobileNet(nn.Module):
    """stem → stages → head conv → global average pool → [hidden FC] → dropout → classifier.

    Submodules: ``stem``, ``stages.<i>.<j>`` (blocks), ``head`` (``nn.Identity`` when the family has no head
    conv), ``pre_logits`` (MobileNetV3's FC + activation, else ``nn.Identity``), ``dropout``, ``classifier``.
    The resolved architecture is ``model.config``; ``print(model.config.table())`` shows it.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.num_classes = config.num_classes
        self.num_features = config.num_features
        self.head_hidden_size = config.head_hidden_size
        self.pretrained_cfg: dict[str, Any] | None = None
        opts = config.options.layer_options

        stem_opts = replace(opts, downsample="stride")  # the stem always strides in its conv (timm: no aa there)
        self.stem = ConvNormAct(config.in_chans, config.stem_chs, 3, 2, act=config.stem_act, opts=stem_opts)
        self.stages = nn.Sequential(*(nn.Sequential(*(b.build(opts) for b in stage)) for stage in config.stages))
        self.head = self._make_head(config)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.pre_logits = self._make_pre_logits(config)
        self.dropout = nn.Dropout(config.drop_rate)
        self.classifier = self._make_classifier(config.num_classes)
        self.reset_parameters()

    @staticmethod
    def _make_head(config: ModelConfig) -> nn.Module:
        """The 1x1 conv before pooling; a chain of them only for timm's depth-scaled head (``head.<i>``)."""
        if not config.head_chs:
            return nn.Identity()
        opts, last = config.options.layer_options, config.stages[-1][-1].out_chs
        convs = [ConvNormAct(last if i == 0 else config.head_chs, config.head_chs, 1, act=config.head_act, opts=opts)
                 for i in range(config.head_repeats)]
        return convs[0] if len(convs) == 1 else nn.Sequential(*convs)

    @staticmethod
    def _make_pre_logits(config: ModelConfig) -> nn.Module:
        """MobileNetV3's FC + activation after pooling; MobileNetV4's has no bias and a BatchNorm (``bn``)."""
        if not config.head_hidden:
            return nn.Identity()
        layers = OrderedDict(fc=nn.Linear(config.num_features, config.head_hidden, bias=not config.head_norm))
        if config.head_norm:
            opts = config.options.layer_options
            layers["bn"] = nn.BatchNorm1d(config.head_hidden, eps=opts.bn_eps, momentum=opts.bn_momentum)
        layers["act"] = make_activation(config.head_act)
        return nn.Sequential(layers)

    def _make_classifier(self, num_classes: int) -> nn.Module:
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 removes the classifier), got {num_classes}")
        return nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def reset_parameters(self) -> None:
        """He-normal (fan-out) convs, unit BatchNorm, small-normal linear layers, zero biases.

        A model built on the meta device (for shapes only) has nothing to initialise, and is left as it is.
        """
        if next(self.parameters()).is_meta:
            return
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map after the head conv (before pooling): ``(N, num_features, H/32, W/32)``."""
        return self.head(self.stages(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool a feature map and classify it; ``pre_logits=True`` returns the vector fed to the classifier."""
        x = self.pre_logits(self.pool(x).flatten(1))
        if pre_logits:
            return x
        return self.classifier(self.dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def train(self, mode: bool = True) -> MobileNet:
        """``nn.Module.train``, except that submodules marked ``_mobilenets_frozen = True`` (by
        ``mobilenets.training.freeze``) stay in eval mode: frozen BatchNorm keeps its running statistics."""
        super().train(mode)
        if mode:
            for module in self.modules():
                if getattr(module, "_mobilenets_frozen", False):
                    module.train(False)
        return self

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialised one (0 removes it); the rest is untouched."""
        self.classifier = self._make_classifier(num_classes)
        if isinstance(self.classifier, nn.Linear):
            nn.init.normal_(self.classifier.weight, 0.0, 0.01)
            nn.init.zeros_(self.classifier.bias)
        self.num_classes = num_classes
        self.config = replace(self.config, num_classes=num_classes)

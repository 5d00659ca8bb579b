"""``MobileNet``: one network class for every family, built from a resolved ``ModelConfig``."""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .features import check_out_indices, feature_levels, head_is_level
from .layers import ConvNormAct, make_activation
from .specs import GLOBAL_POOLS, ModelConfig


class AdaptiveAvgMaxPool2d(nn.Module):
    """``0.5 * (global average + global max)``, timm's ``"avgmax"`` pooling: same width as either alone."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (F.adaptive_avg_pool2d(x, 1) + F.adaptive_max_pool2d(x, 1))


@contextlib.contextmanager
def _running_stats_kept(module: nn.Module) -> Iterator[None]:
    """BatchNorm running statistics of ``module`` left as they are: a block recomputed for its gradients must not
    count the batch a second time (momentum 0 keeps the averages exactly; the batch counter is restored)."""
    norms = [m for m in module.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats]
    saved = [(m, m.momentum, m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, count in saved:
            m.momentum = momentum
            m.num_batches_tracked.copy_(count)


def make_global_pool(kind: str) -> nn.Module:
    """The pooling module for ``Options.global_pool``: ``"avg"``, ``"max"`` or ``"avgmax"`` (output ``N, C, 1, 1``)."""
    if kind not in GLOBAL_POOLS:
        raise ValueError(f"global_pool={kind!r} is not one of {GLOBAL_POOLS}")
    if kind == "avg":
        return nn.AdaptiveAvgPool2d(1)
    if kind == "max":
        return nn.AdaptiveMaxPool2d(1)
    return AdaptiveAvgMaxPool2d()


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
        self.feature_info = feature_levels(config)  # timm's list of dicts: num_chs, reduction, module, stage, index
        opts = config.options.layer_options

        stem_opts = replace(opts, downsample="stride")  # the stem always strides in its conv (timm: no aa there)
        self.stem = ConvNormAct(config.in_chans, config.stem_chs, 3, 2, act=config.stem_act, opts=stem_opts)
        self.stages = nn.Sequential(*(nn.Sequential(*(b.build(opts) for b in stage)) for stage in config.stages))
        self.head = self._make_head(config)
        self.pool = make_global_pool(config.options.global_pool)
        self.grad_checkpointing = False
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
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            x = self._checkpointed_stages(x)
        else:
            x = self.stages(x)
        return self.head(x)

    @torch.jit.unused
    def _checkpointed_stages(self, x: torch.Tensor) -> torch.Tensor:
        """The stages, each block's activations dropped after forward and recomputed in backward."""
        for stage in self.stages:
            for block in stage:
                x = checkpoint(block, x, use_reentrant=False,
                               context_fn=lambda b=block: (contextlib.nullcontext(), _running_stats_kept(b)))
        return x

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute every block in the backward pass instead of storing its activations (timm's name).

        Trades compute for memory (Chen et al., 2016, "Training Deep Nets with Sublinear Memory Cost"), through
        ``torch.utils.checkpoint`` (non-reentrant); gradients are unchanged, and so are BatchNorm's running
        statistics (the recomputation does not update them a second time). Inference and ``torch.no_grad`` are
        not affected.
        """
        self.grad_checkpointing = bool(enable)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups in timm's format, so timm's layer-wise learning-rate decay works on this model.

        ``timm.optim.create_optimizer_v2(model, "adamw", layer_decay=0.7)`` gives the stem the smallest scale, then
        one group per block (``coarse=True``: per stage), the head conv shares the last block's group, and the
        layers after pooling (``pre_logits``, ``classifier``) come last with scale 1: timm's EfficientNet grouping.
        """
        return dict(
            stem=r"^stem\.",
            blocks=[
                (r"^stages\.(\d+)" if coarse else r"^stages\.(\d+)\.(\d+)", None),
                (r"^head\.", (99999,)),  # timm's MATCH_PREV_GROUP: joins the last block's group
            ],
        )

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool a feature map and classify it; ``pre_logits=True`` returns the vector fed to the classifier."""
        x = self.pre_logits(self.pool(x).flatten(1))
        if pre_logits:
            return x
        return self.classifier(self.dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The feature maps of the levels in ``feature_info`` (those of ``features_only``), timm's interface.

        ``indices``: ``None`` every level, an int the last n, a sequence those levels. Returns ``(final,
        intermediates)``, ``final`` being ``forward_features``' output, or only the list with ``intermediates_only``.
        ``stop_early`` skips the stages after the last level asked for (``final`` is then the last map computed).
        ``norm`` is accepted for timm's signature; these networks have no final norm layer.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take = [self.feature_info[i]["stage"] for i in check_out_indices(indices, self.feature_info, "the model")]
        head = len(self.config.stages) + 1  # the head conv's position; 0 is the stem, i + 1 stage i
        last = max(take) if stop_early else head
        found: dict[int, torch.Tensor] = {}
        x = self.stem(x)
        if 0 in take:
            found[0] = x
        for i, stage in enumerate(self.stages, start=1):
            if i > last:
                break
            x = stage(x)
            if i in take:
                found[i] = x
        if last == head:
            x = self.head(x)
            found[head] = x
        intermediates = [found[p] for p in take]
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(
        self, indices: int | list[int] | tuple[int, ...] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Remove what the feature levels ``indices`` do not need (timm's interface); returns the kept indices.

        Stages after the last level asked for are dropped, and the head conv unless it is that level (or, with
        ``prune_head=False``, unless every stage is kept); ``feature_info`` ends at that level. With ``prune_head``
        or when anything was dropped the classifier goes too (``forward`` then returns the pooled features of the
        last level kept). ``prune_norm`` is accepted for timm's signature (no final norm here). The pruned model
        is for feature extraction: it no longer matches ``config`` and cannot be saved as a checkpoint.
        """
        kept = list(check_out_indices(indices, self.feature_info, "the model"))
        last = max(self.feature_info[i]["stage"] for i in kept)
        stages = len(self.config.stages)
        truncated = last < stages
        self.stages = self.stages[:last] if truncated else self.stages
        head_needed = last > stages if head_is_level(self.config) else not (prune_head or truncated)
        if not head_needed:
            self.head = nn.Identity()
        if truncated or prune_head:
            self.num_features = self.head_hidden_size = self.feature_info[max(kept)]["num_chs"]
            self.pre_logits = nn.Identity()
            self.dropout = nn.Identity()
            self.classifier = nn.Identity()
            self.num_classes = 0
        self.feature_info = self.feature_info[:max(kept) + 1]
        return kept

    def fuse(self) -> MobileNet:
        """A copy for inference with every BatchNorm folded into its convolution (``mobilenets.export.fuse``)."""
        from .export import fuse

        return fuse(self)

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

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with a freshly initialised one (0 removes it); the rest is untouched.

        ``global_pool`` (``"avg"``, ``"max"``, ``"avgmax"``; ``None`` keeps the current one) replaces the pooling,
        recorded in ``config.options`` so checkpoints keep it. The classifier's width does not depend on it.
        """
        pool = None if global_pool is None else make_global_pool(global_pool)
        self.classifier = self._make_classifier(num_classes)
        if pool is not None:
            self.pool = pool
            self.config = replace(self.config, options=replace(self.config.options, global_pool=global_pool))
        if isinstance(self.classifier, nn.Linear):
            nn.init.normal_(self.classifier.weight, 0.0, 0.01)
            nn.init.zeros_(self.classifier.bias)
        self.num_classes = num_classes
        self.config = replace(self.config, num_classes=num_classes)

"""Model surgery that keeps the pretrained function: more blocks, larger kernels, squeeze-excite.

``create_model(name, pretrained=..., repeats=(...), kernel_sizes=(...), se_ratio=...)`` builds the architecture
asked for and fills it from the pretrained network (``grow``) so that, before any training, it computes the same
function. Every pretrained tensor is copied to its place in the new network; the new parts start so that they change
nothing:

- a new block (a row repeated more often) is a residual block whose branch ends in a BatchNorm with weight and bias
  zero, so the block is the identity in train and eval mode alike ("zero-init residual", Goyal et al., 2017,
  "Accurate, Large Minibatch SGD", Sec. 5.1), appended after the row's pretrained blocks;
- a larger kernel is the pretrained one zero-padded around its centre. Symmetric padding keeps the centre aligned
  by construction; TensorFlow's SAME padding too, because ``pad_before = floor(total / 2)`` grows by exactly
  ``(k_new - k_old) / 2`` when the kernel grows (``total`` never clamps at 0 once ``(k - 1) * dilation >=
  stride - 1``, which every pretrained kernel satisfies);
- a new squeeze-excite gate starts with its expand conv's weight at zero, so its output is a constant: a sigmoid gate
  with bias ``SIGMOID_GATE_BIAS`` (within 1e-5 of 1, still trainable); a hard-sigmoid gate cannot sit at 1 and learn
  (``relu6(x + 3) / 6`` has zero gradient there), so it starts at exactly 0.5 (bias 0, slope 1/6) and the 1x1
  projection after it is doubled: both scalings are powers of two, so the products are bit-identical;
- a wider squeeze-excite keeps its pretrained channels, and the new ones feed the expand conv through zero weights
  (the same sums; a convolution kernel may add them in another order for the wider shape, so equal to rounding).

What would lose the pretrained function is refused with a message naming the table row: fewer repeats, smaller
kernels, narrower or removed squeeze-excite, and new blocks without a residual connection (MobileNetV1's
``DepthwiseSeparable``, MobileNetV4's ``ConvBN``), which no initialisation makes the identity in train mode.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from .blocks import (
    BlockConfig,
    FusedMobileBlock,
    MobileBlock,
    MobileMultiQueryAttention,
    UniversalInvertedBottleneck,
)
from .data import adapt_pretrained_cfg
from .layers import ConvNormAct, SqueezeExcite, h_sigmoid
from .model import MobileNet
from .profile import count_macs, count_params
from .registry import build_config
from .specs import ARCHITECTURES, Architecture, ModelConfig, override_rows

logger = logging.getLogger("mobilenets")

GROWABLE_OPTIONS = ("se_ratio", "repeats", "kernel_sizes")  # may differ from pretrained weights through ``grow``
SIGMOID_GATE_BIAS = 12.0  # sigmoid(12) = 1 - 6.1e-6; float32 still resolves 1 - sigmoid, so it trains
_RESIDUAL_BLOCKS = (MobileBlock, FusedMobileBlock, UniversalInvertedBottleneck, MobileMultiQueryAttention)
_FREE_FIELDS = ("kernel_size", "se_chs", "drop_path")  # block-config fields that may grow (drop_path: free)
SHOWN = 12  # lines per list in ``str(SurgeryReport)``


@dataclass
class SurgeryReport:
    """What ``grow`` did, key by key (target state-dict keys, sorted), and what it cost.

    ``loaded``: copied unchanged; ``adapted``: filled from a pretrained tensor of another shape or scale (key ->
    what was done); ``new``: no pretrained counterpart, initialised to keep the function; ``reinitialised``: fresh
    weights that do not keep the function (a classifier of another size). ``blocks`` maps each target block to the
    pretrained block it came from (``None``: new). Parameters and MACs (``mobilenets.profile``, one image at
    ``input_size``) are counted with the target's classifier on both sides, so they show what the growth costs.
    ``str(report)`` is a readable summary.
    """

    model: str
    loaded: list[str] = field(default_factory=list)
    adapted: dict[str, str] = field(default_factory=dict)
    new: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)
    blocks: dict[str, str | None] = field(default_factory=dict)
    params_before: int = 0
    params_after: int = 0
    macs_before: int = 0
    macs_after: int = 0
    input_size: int = 224

    @property
    def new_blocks(self) -> list[str]:
        return [t for t, s in self.blocks.items() if s is None]

    def _new_parts(self) -> list[str]:
        """New modules outside new blocks (a block's new squeeze-excite), one line each."""
        parts: dict[str, int] = {}
        for key in self.new:
            if not any(key.startswith(b + ".") for b in self.new_blocks):
                module = ".".join(key.split(".")[:4])  # stages.<i>.<j>.<part>
                parts[module] = parts.get(module, 0) + 1
        return [f"{m} ({n} tensors)" for m, n in parts.items()]

    def __str__(self) -> str:
        def change(a: int, b: int, unit: float, suffix: str) -> str:
            pct = f" ({(b - a) / a:+.1%})" if a else ""
            return f"{a / unit:,.2f}{suffix} -> {b / unit:,.2f}{suffix}{pct}"

        moved = {t: s for t, s in self.blocks.items() if s is not None and s != t}
        lines = [f"surgery on {self.model}: the pretrained function is kept"]
        lines.append(f"  blocks      {len(self.blocks) - len(self.new_blocks)} -> {len(self.blocks)}"
                     + (f" (new, starting as the identity: {', '.join(self.new_blocks)})" if self.new_blocks else ""))
        lines.append(f"  tensors     {len(self.loaded)} loaded, {len(self.adapted)} adapted, {len(self.new)} new, "
                     f"{len(self.reinitialised)} reinitialised")
        lines.append(f"  params      {change(self.params_before, self.params_after, 1e6, 'M')}")
        lines.append(f"  MACs        {change(self.macs_before, self.macs_after, 1e6, 'M')} at "
                     f"{self.input_size}x{self.input_size}")
        for title, items in (("moved", [f"{t} <- {s}" for t, s in moved.items()]),
                             ("adapted", [f"{k}: {v}" for k, v in self.adapted.items()]),
                             ("new", self._new_parts()),
                             ("reinitialised", self.reinitialised)):
            if items:
                lines.append(f"  {title}:")
                lines += [f"    {item}" for item in items[:SHOWN]]
                if len(items) > SHOWN:
                    lines.append(f"    ... and {len(items) - SHOWN} more")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- planning


def _architecture(config: ModelConfig) -> Architecture:
    for arch in ARCHITECTURES.values():
        if arch.name == config.arch:
            return arch
    raise ValueError(f"{config.name}: unknown architecture table {config.arch!r}")


def _row_label(i: int, stage: int, row: Any) -> str:
    return f"row {i} (stage {stage}, {row.block.__name__} to {row.out} channels)"


def check_rows(source: ModelConfig, target: ModelConfig) -> None:
    """Refuse, naming the table row, what would lose the pretrained function (see the module docstring)."""
    arch = _architecture(source)
    if target.arch != source.arch:
        raise ValueError(f"cannot grow {source.arch} weights into a {target.arch} network")
    rows_s, rows_t = override_rows(arch.stages, source.options), override_rows(arch.stages, target.options)
    i = 0
    for stage, (stage_s, stage_t) in enumerate(zip(rows_s, rows_t, strict=True)):
        for s, t in zip(stage_s, stage_t, strict=True):
            label = _row_label(i, stage, s)
            if t.repeats < s.repeats:
                raise ValueError(f"{label}: repeats {t.repeats} is fewer than the pretrained {s.repeats}; dropping "
                                 "trained blocks changes what the network computes, so repeats may only grow")
            if t.repeats > s.repeats and not issubclass(t.block, _RESIDUAL_BLOCKS):
                raise ValueError(
                    f"{label}: a {t.block.__name__} block has no residual connection, so a new one cannot start "
                    f"as the identity (and keep the pretrained function); keep this row's repeats at {s.repeats} "
                    "and add blocks to rows of residual blocks"
                )
            if 0 < t.kernel < s.kernel or (s.kernel == 0 < t.kernel) or (t.kernel == 0 < s.kernel):
                raise ValueError(f"{label}: kernel {t.kernel} is not a kernel grown from the pretrained {s.kernel}; "
                                 "kernels may only grow (the pretrained one is zero-padded), never shrink")
            if s.se > 0 and t.se < s.se:
                raise ValueError(f"{label}: squeeze-excite ratio {t.se} is below the pretrained {s.se}; removing or "
                                 "narrowing a trained squeeze-excite changes the function, it may only be added or "
                                 "widened")
            i += 1


def _has_skip(config: BlockConfig) -> bool:
    """Whether a block of this config adds its input (so a zeroed branch makes it the identity)."""
    return issubclass(config.block, _RESIDUAL_BLOCKS) and config.stride == 1 and config.in_chs == config.out_chs


def _mismatch(s: BlockConfig, t: BlockConfig, padding: str) -> str | None:
    """Why pretrained block ``s`` cannot be grown into ``t`` (``None``: it can)."""
    if type(s) is not type(t):
        return f"{s.block.__name__} is not {t.block.__name__}"
    ks, kt = s.kwargs(), t.kwargs()
    differ = [k for k in ks if k not in _FREE_FIELDS and ks[k] != kt[k]]
    if differ:
        return ", ".join(f"{k} {ks[k]} -> {kt[k]}" for k in differ)
    k_s, k_t = ks.get("kernel_size", 0), kt.get("kernel_size", 0)
    if k_t < k_s or (k_s == 0) != (k_t == 0) or (k_t - k_s) % 2:
        return f"kernel {k_s} -> {k_t}"
    if k_t != k_s and padding == "same" and s.stride > 1 and (k_s - 1) * ks.get("dilation", 1) < s.stride - 1:
        return f"kernel {k_s} at stride {s.stride} with SAME padding cannot grow centred"
    se_s, se_t = ks.get("se_chs", 0), kt.get("se_chs", 0)
    if se_t < se_s:
        return f"squeeze-excite {se_s} -> {se_t} channels"
    if se_t > se_s == 0 and kt.get("se_gate") not in ("sigmoid", "hard_sigmoid"):
        return f"a new squeeze-excite with gate {kt.get('se_gate')!r}"
    return None


def _same(s: BlockConfig, t: BlockConfig) -> bool:
    """Equal configs but for the stochastic-depth rate: the block's tensors copy unchanged."""
    ks, kt = s.kwargs(), t.kwargs()
    return type(s) is type(t) and all(ks[k] == kt[k] for k in ks if k != "drop_path")


def _align(source: tuple[BlockConfig, ...], target: tuple[BlockConfig, ...], padding: str) -> list[int | None] | None:
    """For each target block, the index of the pretrained block it grows from, or ``None`` for a new identity
    block; order kept, every pretrained block used. ``None`` when no such alignment exists.

    Any such alignment keeps the function; this one copies the most blocks unchanged (so a row's new block is
    not mistaken for a kernel-grown copy of the next row's first block), then matches pretrained blocks as early
    as possible (new blocks follow the pretrained blocks they repeat).
    """
    m, n = len(source), len(target)
    fits = [[_mismatch(s, t, padding) is None for t in target] for s in source]
    same = [[_same(s, t) for t in target] for s in source]
    # best[i][j]: most unchanged copies aligning pretrained blocks i: with target blocks j:, None if impossible
    best: list[list[int | None]] = [[None] * (n + 1) for _ in range(m + 1)]
    best[m][n] = 0
    for j in range(n - 1, -1, -1):
        best[m][j] = best[m][j + 1] if _has_skip(target[j]) else None
    for i in range(m - 1, -1, -1):
        for j in range(n - 1, -1, -1):
            match = best[i + 1][j + 1] + same[i][j] if fits[i][j] and best[i + 1][j + 1] is not None else None
            skip = best[i][j + 1] if _has_skip(target[j]) else None
            best[i][j] = max((v for v in (match, skip) if v is not None), default=None)
    if best[0][0] is None:
        return None
    out: list[int | None] = []
    i = 0
    for j in range(n):
        if i < m and fits[i][j] and best[i + 1][j + 1] is not None and best[i + 1][j + 1] + same[i][j] == best[i][j]:
            out.append(i)
            i += 1
        else:
            out.append(None)
    return out


def plan(source: ModelConfig, target: ModelConfig) -> list[list[int | None]]:
    """Check that ``target`` can be grown from ``source`` keeping its function; per stage, ``_align``'s answer.

    Raises ``ValueError`` saying which row or stage cannot (no weights needed: it runs before any download).
    """
    check_rows(source, target)
    if source.options.padding != target.options.padding:
        raise ValueError(f"padding {source.options.padding!r} -> {target.options.padding!r} changes the function")
    if len(source.stages) != len(target.stages):
        raise ValueError(f"{len(source.stages)} stages -> {len(target.stages)}")
    stages = []
    for k, (s, t) in enumerate(zip(source.stages, target.stages, strict=True)):
        aligned = _align(s, t, target.options.padding)
        if aligned is None:
            first = next((f"stages.{k}.{j}: {why}" for j, (a, b) in enumerate(zip(s, t, strict=False))
                          if (why := _mismatch(a, b, target.options.padding))), "")
            raise ValueError(
                f"stage {k} ({len(s)} pretrained blocks, {len(t)} asked for) cannot be grown keeping the function"
                f"{': ' + first if first else ''}; only repeats, kernel_sizes and se_ratio may grow"
            )
        stages.append(aligned)
    return stages


# ----------------------------------------------------------------------------------------------- copying


def _zero_padded(weight: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``weight`` (``out, in, k, k``) centred in zeros of ``shape`` (``out, in, K, K``, ``K - k`` even)."""
    out = weight.new_zeros(shape)
    dh, dw = (shape[2] - weight.shape[2]) // 2, (shape[3] - weight.shape[3]) // 2
    out[:, :, dh:dh + weight.shape[2], dw:dw + weight.shape[3]] = weight
    return out


def _zero_branch(block: nn.Module) -> str:
    """Make a new residual block the identity: zero its branch's last BatchNorm (or MQA's output projection).

    Returns the prefix (inside the block) of what was zeroed. The branch's activation after that BatchNorm, where
    there is one (a Fused-MBConv without projection), must map 0 to 0.
    """
    if isinstance(block, MobileMultiQueryAttention):
        nn.init.zeros_(block.out_proj.weight)
        return "out_proj"
    if isinstance(block, MobileBlock):
        name, last = "conv_pwl", block.conv_pwl
    elif isinstance(block, UniversalInvertedBottleneck):
        name, last = "pw_proj", block.pw_proj
    elif isinstance(block, FusedMobileBlock):
        name, last = ("conv_pwl", block.conv_pwl) if isinstance(block.conv_pwl, ConvNormAct) \
            else ("conv_exp", block.conv_exp)
    else:
        raise AssertionError(f"not a residual block: {type(block).__name__}")
    if float(last.act(torch.zeros(1)).abs()) != 0.0:
        raise ValueError(f"a new {type(block).__name__} block ends in {type(last.act).__name__}, which does not map 0 "
                         "to 0, so it cannot start as the identity")
    nn.init.zeros_(last.bn.weight)
    nn.init.zeros_(last.bn.bias)
    return name


def _after_se(block: nn.Module) -> tuple[str, nn.Conv2d] | None:
    """The 1x1 projection that reads a block's squeeze-excite output, if it has one (hard-sigmoid gates use it)."""
    for name in ("conv_pwl", "conv_pw"):
        layer = getattr(block, name, None)
        if isinstance(layer, ConvNormAct):
            return f"{name}.conv.weight", layer.conv
    return None


def _init_new_se(block: nn.Module, prefix: str, report: SurgeryReport) -> None:
    """A new squeeze-excite whose gate is a constant that keeps the function (module docstring)."""
    se: SqueezeExcite = block.se
    nn.init.zeros_(se.conv_expand.weight)
    after = _after_se(block)
    half = isinstance(se.gate, h_sigmoid) and after is not None
    with torch.no_grad():
        if half:
            nn.init.zeros_(se.conv_expand.bias)  # hard sigmoid(0) = 0.5 exactly, slope 1/6
            name, conv = after
            conv.weight.mul_(2.0)
            report.adapted[f"{prefix}{name}"] = "doubled: the new squeeze-excite's hard-sigmoid gate starts at 0.5"
        elif isinstance(se.gate, nn.Sigmoid):
            nn.init.constant_(se.conv_expand.bias, SIGMOID_GATE_BIAS)
        else:  # a hard-sigmoid gate with nothing after it: exactly 1, but no gradient until its bias drops below 3
            nn.init.constant_(se.conv_expand.bias, 3.0)


def _copy_block(src: nn.Module, dst: nn.Module, s_prefix: str, t_prefix: str, report: SurgeryReport) -> None:
    src_state, dst_state = src.state_dict(), dst.state_dict()
    used = set()
    se_new = isinstance(getattr(src, "se", None), nn.Identity) and isinstance(getattr(dst, "se", None), SqueezeExcite)
    with torch.no_grad():
        for rel, value in dst_state.items():
            key = t_prefix + rel
            if rel not in src_state:
                if not (se_new and rel.startswith("se.")):
                    raise AssertionError(f"{key}: no pretrained tensor at {s_prefix + rel}")
                report.new.append(key)
                continue
            old = src_state[rel]
            used.add(rel)
            if old.shape == value.shape:
                value.copy_(old)
                report.loaded.append(key)
            elif rel.endswith("conv.weight") and old.shape[:2] == value.shape[:2] and old.dim() == 4:
                value.copy_(_zero_padded(old, value.shape))
                report.adapted[key] = (f"zero-padded {old.shape[2]}x{old.shape[3]} -> "
                                       f"{value.shape[2]}x{value.shape[3]}")
            elif rel.startswith("se.conv_reduce."):  # wider squeeze: pretrained channels first, new ones as built
                value[: old.shape[0]] = old
                report.adapted[key] = f"widened {old.shape[0]} -> {value.shape[0]} channels (new ones as initialised)"
            elif rel == "se.conv_expand.weight":  # new squeeze channels reach the gate through zero weights
                value.zero_()
                value[:, : old.shape[1]] = old
                report.adapted[key] = f"widened {old.shape[1]} -> {value.shape[1]} inputs (new ones zero)"
            else:
                raise AssertionError(f"{key}: pretrained {tuple(old.shape)}, new {tuple(value.shape)}")
    left = set(src_state) - used
    assert not left, f"pretrained tensors of {s_prefix} without a place: {sorted(left)}"
    if se_new:
        _init_new_se(dst, t_prefix, report)


def _on_meta(config: ModelConfig) -> MobileNet:
    """``config`` built on the meta device, for counting (no memory, no initialisation)."""
    with torch.device("meta"):
        return MobileNet(config)


def grow(source: MobileNet, target: MobileNet) -> SurgeryReport:
    """Copy ``source``'s weights into ``target`` (in place) so that ``target`` computes the same function.

    ``target`` is ``source``'s architecture grown by the options ``GROWABLE_OPTIONS`` (more repeats per row, larger
    kernels, squeeze-excite added or widened); its new parts are initialised as the module docstring describes,
    everything else is copied. A classifier of another size is left as ``target`` built it (``reinitialised``).
    Raises ``ValueError`` saying what would lose the function. The report is also logged (logger ``mobilenets``).
    """
    if not isinstance(source, MobileNet) or not isinstance(target, MobileNet):
        raise TypeError("grow takes two mobilenets.MobileNet models (source, target)")
    stages = plan(source.config, target.config)
    report = SurgeryReport(model=target.config.name or target.config.arch, input_size=target.config.input_size)
    src_state, dst_state = source.state_dict(), target.state_dict()
    outside = [k for k in dst_state if not k.startswith("stages.")]
    missing = sorted(set(k for k in src_state if not k.startswith(("stages.", "classifier."))) - set(outside))
    if missing:
        raise ValueError(f"the new network has no place for the pretrained {', '.join(missing[:SHOWN])}")
    with torch.no_grad():
        for key in outside:
            value, old = dst_state[key], src_state.get(key)
            if old is not None and old.shape == value.shape:
                value.copy_(old)
                report.loaded.append(key)
            elif key.startswith("classifier."):  # another number of classes: a new head, as create_model makes
                report.reinitialised.append(key)
            else:
                shape = "none" if old is None else tuple(old.shape)
                raise ValueError(f"{key}: the new network needs {tuple(value.shape)}, the pretrained one has {shape}; "
                                 "only repeats, kernel_sizes and se_ratio may grow")
    for k, aligned in enumerate(stages):
        for j, i in enumerate(aligned):
            t_prefix, dst = f"stages.{k}.{j}.", target.stages[k][j]
            if i is None:
                report.blocks[t_prefix[:-1]] = None
                _zero_branch(dst)
                report.new += [t_prefix + rel for rel in dst.state_dict()]
            else:
                report.blocks[t_prefix[:-1]] = f"stages.{k}.{i}"
                _copy_block(source.stages[k][i], dst, f"stages.{k}.{i}.", t_prefix, report)
    report.loaded.sort()
    report.new.sort()
    report.reinitialised.sort()
    report.adapted = dict(sorted(report.adapted.items()))
    before = _on_meta(replace(source.config, num_classes=target.num_classes))
    report.params_before, report.params_after = count_params(before), count_params(target)
    report.macs_before = count_macs(before, target.config.input_size)
    report.macs_after = count_macs(_on_meta(target.config), target.config.input_size)
    if target.pretrained_cfg is None and source.pretrained_cfg is not None:
        target.pretrained_cfg = adapt_pretrained_cfg(source.pretrained_cfg, num_classes=target.num_classes)
    logger.info("%s", report)
    return report


def grow_pretrained(model: MobileNet, *, num_classes: int | None = None, **options: Any) -> MobileNet:
    """``model`` rebuilt with ``options`` (``GROWABLE_OPTIONS`` only) and grown from it; ``.surgery_report`` set.

    ``num_classes`` other than the model's gives the new network a new classifier (``reinitialised``).
    """
    unknown = sorted(set(options) - set(GROWABLE_OPTIONS))
    if unknown:
        raise ValueError(f"only {', '.join(GROWABLE_OPTIONS)} can grow a pretrained network, not {', '.join(unknown)}")
    c = model.config
    config = build_config(c.name, **{**c.options.to_dict(), **options},
                          num_classes=c.num_classes if num_classes is None else num_classes,
                          in_chans=c.in_chans, drop_rate=c.drop_rate, drop_path_rate=c.drop_path_rate)
    target = MobileNet(config)
    target.surgery_report = grow(model, target)
    return target


__all__ = ["GROWABLE_OPTIONS", "SIGMOID_GATE_BIAS", "SurgeryReport", "check_rows", "grow", "grow_pretrained", "plan"]

"""Parameter and multiply-accumulate counts, computed by running the model on the meta device."""

from __future__ import annotations

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: int | tuple[int, int], in_chans: int | None = None) -> int:
    """Multiply-accumulates of one forward pass on one image (convolutions and linear layers).

    This is the "MAdds" / "FLOPs" figure the MobileNet and EfficientNet papers report. The model is traced on
    the meta device when its parameters are there, so counting even EfficientNet-B8 at 672px costs nothing.
    """
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    param = next(model.parameters())
    in_chans = in_chans or getattr(getattr(model, "config", None), "in_chans", 3)
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total += output[0].numel() * k
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, in_chans, h, w, device=param.device, dtype=param.dtype))
    finally:
        for handle in handles:
            handle.remove()
    return total

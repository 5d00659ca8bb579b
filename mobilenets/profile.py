"""Parameter and multiply-accumulate counts, computed by running the model on the meta device."""

from __future__ import annotations

import torch
from torch import nn

from .layers import DropPath, h_sigmoid, h_swish

# Layers that keep their input's shape and add no multiply-accumulates to the count. They are skipped while
# counting: on the meta device their Python shape functions cost 20x what the convolutions' do (EfficientNet-B7 at
# 600px: 25 s with them, 1.2 s without), and the count is the same.
_SHAPE_KEEPING = (nn.modules.batchnorm._BatchNorm, nn.ReLU, nn.ReLU6, nn.SiLU, nn.Sigmoid, nn.Hardswish,
                  nn.Hardsigmoid, nn.GELU, nn.Dropout, h_swish, h_sigmoid, DropPath)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


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
        if hasattr(module, "matmul_macs"):  # attention's products of activations (MobileNetV4's Mobile MQA)
            total += module.matmul_macs(inputs[0])

    counted = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) or hasattr(m, "matmul_macs")]
    handles = [m.register_forward_hook(hook) for m in counted]
    skipped = [m for m in model.modules() if isinstance(m, _SHAPE_KEEPING)]
    for m in skipped:
        m.forward = _identity
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, in_chans, h, w, device=param.device, dtype=param.dtype))
    finally:
        for handle in handles:
            handle.remove()
        for m in skipped:
            del m.forward
    return total

"""Speed switches of the guidance UNets that change no value beyond float tolerance (see docs/benchmarks.md).

* :func:`lora_in_activation_dtype` (``lora_half_precision``): PEFT computes a LoRA layer in its weights' dtype, so
  with fp16 frozen UNets (CUDA) and fp32 LoRA weights every targeted projection casts its fp16 input up to fp32, runs
  both LoRA matmuls in fp32, adds in fp32 and casts the sum back: three full-size extra kernels per projection and
  an fp32 copy of each input kept for backward. With this switch the LoRA matmuls run in the activation dtype with
  the weights cast per call (what ``torch.autocast`` does to a linear layer, the fp32 weights stay the master copy
  and receive fp32 gradients). Where activations are fp32 (CPU) nothing changes. ``torch.autocast`` around the
  whole UNet call is not used because it would also run every norm layer of the frozen UNet in fp32 (two more casts
  per norm layer and other numerics for the frozen path).
* :func:`compile_module` (``compile_unets``): ``torch.compile`` of a UNet's forward in place (``nn.Module.compile``),
  compiled lazily at its first call, so LoRA layers added later are part of it. Mode ``reduce-overhead`` captures
  CUDA graphs, which is what removes the per-kernel launch cost of a batch-1 UNet on a GPU.
* Channels-last memory format is threestudio's ``enable_channels_last_format`` (in ``base.load_unet``).
"""

from __future__ import annotations

import types
from typing import Literal, Optional

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


def _linear_in_input_dtype(self: nn.Linear, x: Tensor) -> Tensor:
    """``nn.Linear.forward`` with the weights cast to the input's dtype (a differentiable cast: grads reach them)."""
    weight = self.weight if self.weight.dtype == x.dtype else self.weight.to(x.dtype)
    bias = self.bias
    if bias is not None and bias.dtype != x.dtype:
        bias = bias.to(x.dtype)
    return F.linear(x, weight, bias)


def lora_in_activation_dtype(unet: nn.Module, enabled: bool = True) -> None:
    """Compute every PEFT LoRA layer of ``unet`` in its input's dtype (``enabled``) or as PEFT does (not ``enabled``).

    Sets PEFT's own switch against input casting (``cast_input_dtype_enabled``, what ``peft.helpers.
    disable_input_dtype_casting`` toggles) and gives each ``lora_A``/``lora_B`` linear a forward that casts its
    weights to the input's dtype. Parameters, their dtype (fp32) and ``state_dict`` keys are unchanged.
    """
    from framework.guidance.lora import tuner_layers

    for layer in tuner_layers(unet).values():
        layer.cast_input_dtype_enabled = not enabled
        for sub in (*layer.lora_A.values(), *layer.lora_B.values()):
            if enabled:
                sub.forward = types.MethodType(_linear_in_input_dtype, sub)
            else:
                sub.__dict__.pop("forward", None)


def compile_module(module: nn.Module, mode: Optional[str], backend: str = "inductor") -> None:
    """``module.compile(mode=..., backend=...)`` in place when ``mode`` is set (compiled at the first call).

    Shapes are specialised (``dynamic=False``): a guidance calls its UNets with a few fixed batch sizes, and each gets
    its own graph (with CUDA graphs, its own recording).
    """
    if mode is None:
        return
    kwargs = {"backend": backend, "dynamic": False}
    if backend == "inductor":
        kwargs["mode"] = mode
    module.compile(**kwargs)


def compiled(module: nn.Module) -> bool:
    """Whether ``module``'s forward is compiled (``nn.Module.compile`` was applied)."""
    return getattr(module, "_compiled_call_impl", None) is not None


def configure_compiler_for_guidance() -> None:
    """Allow as many compiled variants per UNet as a guidance uses (batch sizes, grad on/off, adapters on/off,
    with and without the camera embedding), so none falls back to eager after the default limit of 8."""
    import torch._dynamo

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 32)

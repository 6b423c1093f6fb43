"""The speed switches themselves: half-precision LoRA compute (on CPU with bf16 standing in for CUDA's fp16) and
torch.compile of the UNets against eager."""

import pytest
import torch

import framework.guidance  # noqa: F401  (registration)
from framework import registry
from framework.guidance.acceleration import compiled
from framework.guidance.loading import place_frozen
from tests.test_guidance_sds import cameras
from tests.test_guidance_vsd import c2w_batch, perturb

VSD = registry.find("guidance", "stable-diffusion-vsd-guidance")


def vsd(path, lora_path, **cfg):
    return VSD({"pretrained_model_name_or_path": path, "pretrained_model_name_or_path_lora": lora_path, **cfg})


def lora_run(g, dtype, seed=0):
    """lora_forward + a backward of its mean square, with the frozen weights in ``dtype``: (output, LoRA grads)."""
    place_frozen(g.frozen_modules(), torch.device("cpu"), dtype, keep=g.trainable_in_frozen())
    torch.manual_seed(seed)
    x, t, text, cam = torch.randn(2, 4, 16, 16), torch.tensor([100, 800]), torch.randn(2, 77, 32), torch.randn(2, 16)
    for p in g.parameters():
        p.grad = None
    out = g.lora_forward(x, t, text, cam, 1.0)
    out.square().mean().backward()
    return out.detach(), [p.grad.clone() for p in g.parameters()]


def test_half_precision_lora_keeps_fp32_masters_and_matches_peft(tiny_sd, tiny_sd_v):
    """bf16 frozen weights on CPU stand in for fp16 on CUDA: the switch computes the LoRA in bf16 instead of casting
    every input to fp32, with the same result as PEFT's fp32 LoRA to bf16 precision, fp32 weights and gradients."""
    torch.manual_seed(0)
    peft = vsd(tiny_sd, tiny_sd_v)
    torch.manual_seed(0)
    half = vsd(tiny_sd, tiny_sd_v, lora_half_precision=True)
    perturb(peft)
    half.load_state_dict(peft.state_dict())
    seen = {}

    def record(name):
        def hook(module, args):
            seen.setdefault(name, args[0].dtype)  # returns None: the input is not replaced
        return hook

    next(iter(half.lora.layers.values()))["lora_A"].register_forward_pre_hook(record("half"))
    next(iter(peft.lora.layers.values()))["lora_A"].register_forward_pre_hook(record("peft"))

    ref_out, ref_grads = lora_run(peft, torch.float32)  # everything fp32: the reference
    peft_out, peft_grads = lora_run(peft, torch.bfloat16)
    seen.clear()
    half_out, half_grads = lora_run(half, torch.bfloat16)
    lora_run(peft, torch.bfloat16)
    assert seen == {"half": torch.bfloat16, "peft": torch.float32}  # PEFT casts the input up; the switch does not
    assert all(p.dtype == torch.float32 for p in half.parameters())
    assert all(g.dtype == torch.float32 for g in half_grads)

    def rel(a, b):
        return ((a - b).norm() / b.norm()).item()

    # bf16 frozen weights cost both about 1e-2; the switch adds no error of another order
    assert rel(peft_out, ref_out) < 3e-2 and rel(half_out, ref_out) < 3e-2
    assert rel(half_out, peft_out) < 3e-2
    for h, p, r in zip(half_grads, peft_grads, ref_grads):
        if r.norm() > 0:
            assert rel(h, r) < 2 * rel(p, r) + 5e-2
    # fp32 activations (CPU): the switch is a no-op, bit for bit (both back in fp32, the same bf16-rounded weights)
    half_fp32, half_grads_fp32 = lora_run(half, torch.float32)
    peft_fp32, peft_grads_fp32 = lora_run(peft, torch.float32)
    assert torch.equal(half_fp32, peft_fp32)
    assert all(torch.equal(a, b) for a, b in zip(half_grads_fp32, peft_grads_fp32))


def test_half_precision_lora_state_dict_and_files_unchanged(tiny_sd, tiny_sd_v, tmp_path):
    torch.manual_seed(0)
    plain = vsd(tiny_sd, tiny_sd_v)
    torch.manual_seed(0)
    half = vsd(tiny_sd, tiny_sd_v, lora_half_precision=True)
    assert plain.state_dict().keys() == half.state_dict().keys()
    perturb(half)
    half.save_lora(tmp_path)
    plain.load_lora(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), half.state_dict().values()))


# ---------------------------------------------------------------------------------------- torch.compile
def compiled_vs_eager(tiny_sd, tiny_prompt_utils, backend, **extra):
    """One VSD step (shared UNet, camera CFG) eager and compiled from the same state: outputs and gradients."""
    results = []
    for mode in (None, "default"):
        torch.manual_seed(0)
        g = vsd(tiny_sd, tiny_sd, guidance_scale_lora=0.5, compile_unets=mode, compile_backend=backend, **extra)
        perturb(g, seed=3)
        assert compiled(g.models.unet) == (mode is not None)
        torch.manual_seed(5)
        latents = torch.randn(2, 4, 16, 16, requires_grad=True)
        kw = dict(rgb_as_latents=True, t=torch.tensor([100, 700]), noise=torch.randn(2, 4, 16, 16), c2w=c2w_batch())
        for _ in range(2):  # the second step runs the compiled graphs without compiling
            for p in [latents, *g.parameters()]:
                p.grad = None
            torch.manual_seed(7)
            out = g(latents, tiny_prompt_utils, **cameras(), **kw)
            (out["loss_vsd"] + out["loss_lora"]).backward()
        results.append((out["loss_lora"].detach(), latents.grad, [p.grad for p in g.parameters()]))
    return results


@pytest.mark.slow
def test_compiled_unets_match_eager(tiny_sd, tiny_prompt_utils):
    """torch.compile of the UNets (aot_eager: dynamo's graph capture and AOT autograd, without code generation)
    against eager, two steps of the batched shared mode: 3-5 minutes on two shared cores. The inductor backend
    (C++ on CPU) was checked the same way by hand, twice (about 20 minutes on a busy machine, 3 on a quiet one;
    docs/benchmarks.md)."""
    (l0, g0, p0), (l1, g1, p1) = compiled_vs_eager(tiny_sd, tiny_prompt_utils, "aot_eager")
    compare(l0, g0, p0, l1, g1, p1)


def compare(l0, g0, p0, l1, g1, p1):
    """The tolerance of the hand-computed gradient tests (CFG 7.5 amplifies float rounding of eps)."""
    torch.testing.assert_close(l1, l0, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(g1, g0, atol=2e-5, rtol=1e-4)
    for a, b in zip(p1, p0):
        assert ((a - b).norm() / b.norm().clamp_min(1e-12)).item() < 1e-3

"""VSD's batched shared-UNet call (framework/guidance/shared_batch.py) against the separate calls it replaces."""

import pytest
import torch
from diffusers import UNet2DConditionModel

import framework.guidance  # noqa: F401  (registration)
from framework import registry
from framework.utils.seeding import seed_all
from tests.test_guidance_sds import cameras
from tests.test_guidance_vsd import c2w_batch, perturb

VSD = registry.find("guidance", "stable-diffusion-vsd-guidance")


def pair(tiny_sd, **cfg):
    """The same shared-mode VSD twice (same LoRA and camera embedding), batched and unbatched."""
    torch.manual_seed(0)
    batched = VSD({"pretrained_model_name_or_path": tiny_sd, "pretrained_model_name_or_path_lora": tiny_sd, **cfg})
    torch.manual_seed(0)
    unbatched = VSD({"pretrained_model_name_or_path": tiny_sd, "pretrained_model_name_or_path_lora": tiny_sd,
                     "batch_shared_unet_calls": False, **cfg})
    perturb(batched)
    unbatched.load_state_dict(batched.state_dict())
    assert batched.batches_shared_calls() and not unbatched.batches_shared_calls()
    return batched, unbatched


def step(g, pu, **kw):
    seed_all(5)
    latents = torch.randn(2, 4, 16, 16, requires_grad=True)
    out = g(latents, pu, **cameras(), c2w=c2w_batch(), rgb_as_latents=True, **kw)
    (out["loss_vsd"] + out["loss_lora"]).backward()
    return out, latents.grad, [p.grad for p in g.parameters()]


@pytest.mark.parametrize("cfg,kw", [({}, {}), ({"guidance_scale_lora": 0.5}, {"lora_scale": 0.5}),
                                    ({"camera_condition_type": "spherical"}, {"lora_scale": 0.0})])
def test_batched_call_gives_the_separate_calls_results(cfg, kw, tiny_sd, tiny_prompt_utils):
    batched, unbatched = pair(tiny_sd, **cfg)
    (o1, g1, p1), (o2, g2, p2) = step(batched, tiny_prompt_utils, **kw), step(unbatched, tiny_prompt_utils, **kw)
    assert g1.abs().max() > 0
    # float tolerance relative to the gradient's scale: the UNet's kernels may sum in another order at batch 3 than at
    # batches 2 and 1 (measured: up to 1.2e-5 of the largest entry on one Xeon; within 1e-6 on the CPU the test was
    # written on); a wrong row, LoRA strength or camera would differ by the size of the entries themselves
    torch.testing.assert_close(g1, g2, atol=5e-5 * g1.abs().max().item(), rtol=1e-5)
    torch.testing.assert_close(o1["loss_lora"], o2["loss_lora"], atol=0, rtol=0)  # the training pass is unchanged
    for a, b in zip(p1, p2):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-5)


def test_pretrained_rows_are_exactly_the_pretrained_unet(tiny_sd, tiny_prompt_utils, monkeypatch):
    """The rows with LoRA strength 0 compute bit for bit what the UNet without LoRA computes on the same batch."""
    batched, _ = pair(tiny_sd, guidance_scale_lora=0.5)
    seen = {}
    unet = batched.lora_model.unet

    def record(module, args, kwargs, output):
        if "output" not in seen:  # the first call: the batched one (the second is the LoRA training pass)
            seen["inputs"] = (args, dict(kwargs))
            seen["output"] = output.sample.detach().clone()

    handle = unet.register_forward_hook(record, with_kwargs=True)
    step(batched, tiny_prompt_utils)
    handle.remove()
    (x, t), kwargs = seen["inputs"]
    assert x.shape[0] == 8  # 2 samples x (cond, uncond, LoRA with camera, LoRA without)
    plain = UNet2DConditionModel.from_pretrained(tiny_sd, subfolder="unet")
    with torch.no_grad():
        expected = plain(x, t, encoder_hidden_states=kwargs["encoder_hidden_states"]).sample
    assert torch.equal(seen["output"][:4], expected[:4])
    assert (seen["output"][4:] - expected[4:]).abs().max() > 1e-4  # the LoRA rows are not the base model


def test_one_unet_call_fewer_and_no_adapter_switch(tiny_sd, tiny_prompt_utils, monkeypatch):
    batched, unbatched = pair(tiny_sd)
    for g in (batched, unbatched):
        calls, switches = [], []
        handle = g.lora_model.unet.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
        original = g.lora.disabled
        monkeypatch.setattr(g.lora, "disabled", lambda: (switches.append(1), original())[1])
        step(g, tiny_prompt_utils)
        handle.remove()
        assert calls == ([6, 2] if g is batched else [4, 2, 2]), calls  # batch sizes of the UNet calls
        assert len(switches) == (0 if g is batched else 1)


def test_separate_mode_and_estimate_mode_do_not_batch(tiny_sd, tiny_sd_v):
    sep = VSD({"pretrained_model_name_or_path": tiny_sd, "pretrained_model_name_or_path_lora": tiny_sd_v})
    est = VSD({"pretrained_model_name_or_path": tiny_sd, "pretrained_model_name_or_path_lora": tiny_sd,
               "lora_train_on_estimate": True})
    assert not sep.batches_shared_calls() and not est.batches_shared_calls()

"""SDS guidance and the shared guidance base, checked against separate UNet/VAE calls made by hand in the test."""

import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

import framework.guidance  # noqa: F401  (registration)
from framework import registry
from framework.utils.seeding import seed_all

SDS = registry.find("guidance", "stable-diffusion-guidance")
FRONT, SIDE = 1, 0  # direction indices of the prompt processor (side, front, back, overhead)


def cameras():
    """Two cameras: a front view and a side view (azimuth 0 and 120 degrees)."""
    return dict(
        elevation=torch.tensor([10.0, 20.0]), azimuth=torch.tensor([0.0, 120.0]), camera_distances=torch.ones(2)
    )


def hand_eps(unet, sched, x_t, t, text):
    """eps of one sample at a time, converted by hand from v where the scheduler says so."""
    outs = []
    for i in range(x_t.shape[0]):
        out = unet(x_t[i : i + 1], t[i : i + 1], encoder_hidden_states=text[i : i + 1]).sample
        if sched.config.prediction_type == "v_prediction":
            ab = sched.alphas_cumprod[t[i]]
            out = ab.sqrt() * out + (1 - ab).sqrt() * x_t[i : i + 1]
        outs.append(out)
    return torch.cat(outs)


@pytest.mark.parametrize("model,weighting,clip", [("tiny_sd", "sds", None), ("tiny_sd_v", "fantasia3d", 0.02)])
def test_sds_gradient_equals_hand_computation(model, weighting, clip, request, tiny_prompt_utils):
    path = request.getfixturevalue(model)
    scale = 7.0
    g = SDS(
        {"pretrained_model_name_or_path": path, "guidance_scale": scale, "weighting_strategy": weighting,
         "grad_clip": clip}
    )
    torch.manual_seed(0)
    latents = torch.randn(2, 4, 16, 16, requires_grad=True)
    t, noise = torch.tensor([50, 800]), torch.randn(2, 4, 16, 16)
    out = g(latents, tiny_prompt_utils, **cameras(), rgb_as_latents=True, t=t, noise=noise)
    out["loss_sds"].backward()

    unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet")
    sched = DDPMScheduler.from_pretrained(path, subfolder="scheduler")
    pu = tiny_prompt_utils
    cond = pu.text_embeddings_vd[[FRONT, SIDE]]
    uncond = pu.uncond_text_embeddings_vd[[FRONT, SIDE]]
    with torch.no_grad():
        x_t = sched.add_noise(latents.detach(), noise, t)
        eps_text, eps_uncond = hand_eps(unet, sched, x_t, t, cond), hand_eps(unet, sched, x_t, t, uncond)
    eps_cfg = eps_text + scale * (eps_text - eps_uncond)  # threestudio's SDS guidance, as it writes it
    ab = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    w = 1 - ab if weighting == "sds" else ab.sqrt() * (1 - ab)
    grad = w * (eps_cfg - noise)
    if clip is not None:
        assert (grad.abs() > clip).any()  # the clip is active in this case
        grad = grad.clamp(-clip, clip)
    torch.testing.assert_close(latents.grad, grad / 2, atol=2e-5, rtol=1e-4)
    assert out["grad_norm"].item() == pytest.approx(grad.norm().item(), rel=1e-4)
    assert out["min_step"] == 20 and out["max_step"] == 980


def test_vae_encoding_uses_config_scaling_factor(tiny_sd):
    g = SDS({"pretrained_model_name_or_path": tiny_sd})
    vae = AutoencoderKL.from_pretrained(tiny_sd, subfolder="vae")
    assert vae.config.scaling_factor == 0.35  # the tiny model's deliberately non-SD value
    rgb = torch.rand(2, 32, 32, 3)
    torch.manual_seed(3)
    latents, _ = g.prepare_latents(rgb, rgb_as_latents=False)
    torch.manual_seed(3)
    with torch.no_grad():
        expected = vae.encode(rgb.permute(0, 3, 1, 2) * 2 - 1).latent_dist.sample() * 0.35
    torch.testing.assert_close(latents, expected, atol=1e-6, rtol=1e-5)


def test_decode_latents(tiny_sd):
    g = SDS({"pretrained_model_name_or_path": tiny_sd})
    assert (g.latent_channels, g.vae_scale_factor) == (4, 2)
    vae = AutoencoderKL.from_pretrained(tiny_sd, subfolder="vae")
    latents = torch.randn(2, 4, 16, 16)
    with torch.no_grad():
        expected = ((vae.decode(latents / 0.35).sample + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)
        images = g.decode_latents(latents)
    assert images.shape == (2, 32, 32, 3)
    torch.testing.assert_close(images, expected, atol=1e-6, rtol=1e-5)


def test_inputs_are_resized_to_the_working_size(tiny_sd):
    g = SDS({"pretrained_model_name_or_path": tiny_sd})
    assert g.image_size == 32  # UNet sample_size 16 x VAE downscale 2
    rgb = torch.rand(1, 64, 64, 3)
    torch.manual_seed(4)
    latents, _ = g.prepare_latents(rgb, rgb_as_latents=False)
    small = F.interpolate(rgb.permute(0, 3, 1, 2), (32, 32), mode="bilinear", align_corners=False)
    torch.manual_seed(4)
    torch.testing.assert_close(latents, g.encode_images(small))
    lat8 = torch.randn(1, 4, 8, 8)
    expected = F.interpolate(lat8, (16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(g.prepare_latents(lat8, rgb_as_latents=True)[0], expected)


def test_gradient_reaches_renders_and_is_seeded(tiny_sd, tiny_prompt_utils):
    g = SDS({"pretrained_model_name_or_path": tiny_sd})
    rgb = torch.rand(2, 32, 32, 3, requires_grad=True)
    seed_all(11)
    out1 = g(rgb, tiny_prompt_utils, **cameras())
    out1["loss_sds"].backward()
    grad1 = rgb.grad.clone()
    assert torch.isfinite(grad1).all() and grad1.abs().sum() > 0
    rgb.grad = None
    seed_all(11)
    out2 = g(rgb, tiny_prompt_utils, **cameras())
    out2["loss_sds"].backward()
    assert torch.equal(out1["loss_sds"], out2["loss_sds"]) and torch.equal(grad1, rgb.grad)
    seed_all(12)
    assert not torch.equal(g(rgb, tiny_prompt_utils, **cameras())["loss_sds"], out1["loss_sds"])


def test_timestep_range_and_annealing(tiny_sd):
    g = SDS({"pretrained_model_name_or_path": tiny_sd, "max_step_percent": [0, 0.98, 0.5, 1000],
             "grad_clip": [0, 2.0, 8.0, 1000]})
    g.update_step(0, 500)
    assert (g.min_step, g.max_step) == (20, 740)
    assert g.grad_clip_val == pytest.approx(5.0)
    t = g.sample_timesteps(20000, torch.device("cpu"))
    assert t.min().item() == 20 and t.max().item() == 740
    g.update_step(0, 5000)
    assert g.max_step == 500


def test_sqrt_anneal(tiny_sd):
    g = SDS({"pretrained_model_name_or_path": tiny_sd, "sqrt_anneal": True, "trainer_max_steps": 100})
    expected = {0: 980, 25: 500, 100: 20}  # (0.98 - 0.02) (1 - sqrt(step / 100)) + 0.02
    for step, t in expected.items():
        g.update_step(0, step)
        assert g.min_step == g.max_step == t


def test_clip_in_the_loss_and_nonfinite_values_kept(tiny_sd):
    g = SDS({"pretrained_model_name_or_path": tiny_sd, "grad_clip": 1.0})
    latents = torch.zeros(2, 1, 1, 2, requires_grad=True)
    grad = torch.tensor([0.25, 0.5, -3.0, 2.0]).view(2, 1, 1, 2)
    loss, used = g.reparameterised_loss(latents, grad)
    loss.backward()
    expected = torch.tensor([0.25, 0.5, -1.0, 1.0]).view(2, 1, 1, 2)
    assert torch.equal(used, expected)
    torch.testing.assert_close(latents.grad, expected / 2)
    for bad, check in ((float("nan"), torch.isnan), (float("inf"), torch.isinf), (-float("inf"), torch.isinf)):
        grad = torch.tensor([bad, 0.5, -3.0, 2.0]).view(2, 1, 1, 2)
        loss, used = g.reparameterised_loss(torch.zeros(2, 1, 1, 2, requires_grad=True), grad)
        assert check(loss) and check(used[0, 0, 0, 0]) and used[1, 0, 0, 0] == -1.0  # kept, not zeroed or clipped


def test_memory_options_do_not_change_the_result(tiny_sd, tiny_prompt_utils):
    kw = dict(rgb_as_latents=True, t=torch.tensor([300, 600]), noise=torch.randn(2, 4, 16, 16), **cameras())
    latents = torch.randn(2, 4, 16, 16)
    results = []
    for opts in ({}, {"enable_attention_slicing": True, "enable_channels_last_format": True}):
        g = SDS({"pretrained_model_name_or_path": tiny_sd, "guidance_scale": 7.5, **opts})
        x = latents.clone().requires_grad_(True)
        g(x, tiny_prompt_utils, **kw)["loss_sds"].backward()
        results.append(x.grad)
    assert ((results[0] - results[1]).norm() / results[0].norm()).item() < 1e-5


def test_text_to_image_call_without_cameras(tiny_sd, tiny_prompt_utils):
    """Zero angles and an identity camera: no special case needed, base prompt when view-dependence is off.
    threestudio's SDS scale 0 is the text-conditioned prediction alone."""
    g = SDS({"pretrained_model_name_or_path": tiny_sd, "view_dependent_prompting": False, "guidance_scale": 0.0})
    latents = torch.randn(1, 4, 16, 16, requires_grad=True)
    t, noise = torch.tensor([400]), torch.randn(1, 4, 16, 16)
    zeros = dict(
        elevation=torch.zeros(1), azimuth=torch.zeros(1), camera_distances=torch.zeros(1), c2w=torch.eye(4)[None]
    )
    g(latents, tiny_prompt_utils, **zeros, rgb_as_latents=True, t=t, noise=noise)["loss_sds"].backward()
    unet = UNet2DConditionModel.from_pretrained(tiny_sd, subfolder="unet")
    sched = DDPMScheduler.from_pretrained(tiny_sd, subfolder="scheduler")
    with torch.no_grad():
        x_t = sched.add_noise(latents.detach(), noise, t)
        eps = unet(x_t, t, encoder_hidden_states=tiny_prompt_utils.text_embeddings).sample
    w = 1 - sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(latents.grad, w * (eps - noise), atol=1e-5, rtol=1e-4)


def test_sds_holds_no_parameters_and_frozen_models_follow_the_module(tiny_sd):
    g = SDS({"pretrained_model_name_or_path": tiny_sd})
    assert len(g.state_dict()) == 0 and len(list(g.parameters())) == 0
    assert g.models.unet.dtype == torch.float32  # fp32 on CPU even with half_precision_weights
    g.to("meta")  # a device change reaches the models held outside the module tree
    assert g.models.unet.device.type == "meta" and g.models.vae.device.type == "meta"

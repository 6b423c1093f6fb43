"""VSD guidance, checked against separate UNet calls made by hand: a fresh UNet from the same folder, the LoRA loaded
into it with diffusers' own ``load_lora_adapter`` from the file the guidance saved, the camera embedding set by hand."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel
from diffusers.models.embeddings import TimestepEmbedding
from safetensors.torch import load_file

import framework.guidance  # noqa: F401  (registration)
from framework import registry
from framework.errors import CheckpointError, ConfigError, UserError
from framework.guidance.camera_embedding import camera_condition
from framework.guidance.loading import place_frozen
from framework.guidance.lora import LORA_FILE
from framework.guidance.vsd import CAMERA_EMBEDDING_FILE
from framework.utils.seeding import seed_all
from tests.test_guidance_sds import FRONT, SIDE, cameras, hand_eps

VSD = registry.find("guidance", "stable-diffusion-vsd-guidance")


def vsd(path, lora_path, **cfg):
    return VSD({"pretrained_model_name_or_path": path, "pretrained_model_name_or_path_lora": lora_path, **cfg})


@torch.no_grad()
def perturb(g, seed=0, lora=True, camera=True, scale=0.05):
    """Move the LoRA (B too) and camera embedding away from their initial values, as training would."""
    gen = torch.Generator().manual_seed(seed)
    params = (list(g.lora.parameters()) if lora else []) + (list(g.camera_embedding.parameters()) if camera else [])
    for p in params:
        p.add_(scale * torch.randn(p.shape, generator=gen))


def hand_lora_unet(g, lora_path, folder):
    """A fresh UNet with the guidance's LoRA (via diffusers' loader) and camera embedding (via its file)."""
    g.save_lora(folder)
    unet = UNet2DConditionModel.from_pretrained(lora_path, subfolder="unet")
    unet.load_lora_adapter(str(folder), prefix="unet", adapter_name="phi", weight_name=LORA_FILE)
    state = load_file(str(folder / CAMERA_EMBEDDING_FILE))
    emb = TimestepEmbedding(state["linear_1.weight"].shape[1], state["linear_1.weight"].shape[0])
    emb.load_state_dict(state)
    unet.class_embedding = emb
    return unet


def c2w_batch():
    return torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize(
    "lora_model,extra",
    [
        ("tiny_sd_v", {"guidance_scale_lora": 1.0, "zero_init_camera_embedding": False}),
        ("tiny_sd", {"guidance_scale_lora": 0.5, "camera_condition_type": "spherical"}),
    ],
)
def test_vsd_gradient_equals_hand_computation(lora_model, extra, request, tiny_sd, tiny_prompt_utils, tmp_path):
    lora_path = request.getfixturevalue(lora_model)
    g = vsd(tiny_sd, lora_path, guidance_scale=7.5, **extra)
    assert g.lora_model.shared == (lora_path == tiny_sd)
    perturb(g)
    torch.manual_seed(0)
    latents = torch.randn(2, 4, 16, 16, requires_grad=True)
    t, noise, c2w = torch.tensor([100, 700]), torch.randn(2, 4, 16, 16), c2w_batch()
    cams = cameras()
    out = g(latents, tiny_prompt_utils, **cams, c2w=c2w, rgb_as_latents=True, t=t, noise=noise)
    out["loss_vsd"].backward()

    pu = tiny_prompt_utils
    unet = UNet2DConditionModel.from_pretrained(tiny_sd, subfolder="unet")
    sched = DDPMScheduler.from_pretrained(tiny_sd, subfolder="scheduler")
    lora_unet = hand_lora_unet(g, lora_path, tmp_path)
    lora_sched = DDPMScheduler.from_pretrained(lora_path, subfolder="scheduler")
    if extra.get("camera_condition_type") == "spherical":
        el, az, d = cams["elevation"], cams["azimuth"], cams["camera_distances"]
        rad = [math.radians(a) for a in az.tolist()]
        cam = torch.tensor([[math.radians(el[i]), math.sin(rad[i]), math.cos(rad[i]), d[i]] for i in range(2)])
    else:
        cam = c2w.reshape(2, 16)
    with torch.no_grad():
        x_t = sched.add_noise(latents.detach(), noise, t)
        eps_text = hand_eps(unet, sched, x_t, t, pu.text_embeddings_vd[[FRONT, SIDE]])
        eps_uncond = hand_eps(unet, sched, x_t, t, pu.uncond_text_embeddings_vd[[FRONT, SIDE]])
        eps_cfg = eps_uncond + 7.5 * (eps_text - eps_uncond)
        phi = []
        for labels in (cam, torch.zeros_like(cam)):
            outs = []
            for i in range(2):
                o = lora_unet(x_t[i : i + 1], t[i : i + 1], encoder_hidden_states=pu.text_embeddings,
                              class_labels=labels[i : i + 1]).sample
                if lora_sched.config.prediction_type == "v_prediction":
                    ab = lora_sched.alphas_cumprod[t[i]]
                    o = ab.sqrt() * o + (1 - ab).sqrt() * x_t[i : i + 1]
                outs.append(o)
            phi.append(torch.cat(outs))
        s_l = extra["guidance_scale_lora"]
        eps_phi = phi[1] + s_l * (phi[0] - phi[1])
    w = 1 - sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    expected = w * (eps_cfg - eps_phi) / 2
    assert (eps_phi - eps_text).abs().max() > 1e-3  # the LoRA model is not the pretrained one here
    torch.testing.assert_close(latents.grad, expected, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("lora_model", ["tiny_sd_v", "tiny_sd"])
def test_lora_loss_equals_hand_computation(lora_model, request, tiny_sd, tiny_prompt_utils, tmp_path):
    lora_path = request.getfixturevalue(lora_model)
    g = vsd(tiny_sd, lora_path)
    perturb(g)
    torch.manual_seed(1)
    latents, noise = torch.randn(2, 4, 16, 16), torch.randn(2, 4, 16, 16)
    t, keep = torch.tensor([5, 990]), torch.tensor([True, False])
    text, cam = tiny_prompt_utils.text_embeddings.expand(2, -1, -1), c2w_batch().reshape(2, 16)
    loss = g.lora_training_loss(latents, text, cam, t, noise, keep)

    lora_unet = hand_lora_unet(g, lora_path, tmp_path)
    sched = DDPMScheduler.from_pretrained(lora_path, subfolder="scheduler")
    with torch.no_grad():
        x_t = sched.add_noise(latents, noise, t)
        target = sched.get_velocity(latents, noise, t) if sched.config.prediction_type == "v_prediction" else noise
        pred = torch.cat(
            [lora_unet(x_t[i : i + 1], t[i : i + 1], encoder_hidden_states=text[i : i + 1],
                       class_labels=cam[i : i + 1] * keep[i]).sample for i in range(2)]
        )
    assert loss.item() == pytest.approx(F.mse_loss(pred, target).item(), rel=1e-5)


def test_losses_reach_only_their_own_parameters(tiny_sd, tiny_sd_v, tiny_prompt_utils):
    g = vsd(tiny_sd, tiny_sd_v, guidance_scale_lora=0.5)
    perturb(g)
    rgb = torch.rand(2, 32, 32, 3, requires_grad=True)
    out = g(rgb, tiny_prompt_utils, **cameras(), c2w=c2w_batch())
    params = list(g.parameters())
    from_vsd = torch.autograd.grad(out["loss_vsd"], params + [rgb], allow_unused=True, retain_graph=True)
    assert all(gr is None for gr in from_vsd[:-1])
    assert from_vsd[-1] is not None and from_vsd[-1].abs().sum() > 0
    from_lora = torch.autograd.grad(out["loss_lora"], params + [rgb], allow_unused=True)
    assert from_lora[-1] is None
    assert all(gr is not None for gr in from_lora[:-1])
    lora_grads = from_lora[: len(list(g.lora.parameters()))]
    assert all(gr.abs().sum() > 0 for gr in lora_grads)  # every A and B is trained


def test_fresh_lora_is_the_base_model(tiny_sd, tiny_sd_v):
    torch.manual_seed(2)
    x, t, text = torch.randn(2, 4, 16, 16), torch.tensor([30, 600]), torch.randn(2, 77, 32)
    base = UNet2DConditionModel.from_pretrained(tiny_sd_v, subfolder="unet")
    with torch.no_grad():
        expected = base(x, t, encoder_hidden_states=text).sample
        g = vsd(tiny_sd, tiny_sd_v)  # zero-initialised camera embedding
        assert torch.equal(g.lora_forward(x, t, text, c2w_batch().reshape(2, 16), 1.0), expected)
        g = vsd(tiny_sd, tiny_sd_v, zero_init_camera_embedding=False)  # camera embedding off
        with g.lora.scaled(1.0):
            assert torch.equal(g.run_unet(g.lora_model.unet, x, t, text), expected)
        assert not torch.equal(g.lora_forward(x, t, text, c2w_batch().reshape(2, 16), 1.0), expected)


def test_lora_scale(tiny_sd, tiny_sd_v, tmp_path):
    g = vsd(tiny_sd, tiny_sd_v)
    perturb(g, camera=False)
    torch.manual_seed(3)
    x, t, text, cam = torch.randn(1, 4, 16, 16), torch.tensor([400]), torch.randn(1, 77, 32), torch.randn(1, 16)
    base = UNet2DConditionModel.from_pretrained(tiny_sd_v, subfolder="unet")
    hand = hand_lora_unet(g, tiny_sd_v, tmp_path)
    hand.class_embedding = None  # zero-initialised camera embedding: no effect
    with torch.no_grad():
        assert torch.equal(g.lora_forward(x, t, text, cam, 0.0), base(x, t, encoder_hidden_states=text).sample)
        full = g.lora_forward(x, t, text, cam, 1.0)
        assert (full - base(x, t, encoder_hidden_states=text).sample).abs().max() > 1e-4
        torch.testing.assert_close(full, hand(x, t, encoder_hidden_states=text).sample, atol=1e-5, rtol=1e-4)
        hand.set_adapters(["phi"], weights=[0.5])
        torch.testing.assert_close(
            g.lora_forward(x, t, text, cam, 0.5), hand(x, t, encoder_hidden_states=text).sample, atol=1e-5, rtol=1e-4
        )
        # the scaling is restored exactly after a scaled call
        assert torch.equal(g.lora_forward(x, t, text, cam, 1.0), full)


def test_lora_scale_after_training_scales_lora_and_camera_embedding(tiny_sd, tiny_sd_v, tiny_prompt_utils, tmp_path):
    """Trained for a few steps (LoRA and camera embedding both moved), scale 0 is still exactly the base UNet whatever
    the camera, and scale 0.5 halves both the LoRA update and the camera embedding's output."""
    g = vsd(tiny_sd, tiny_sd_v)
    opt = torch.optim.Adam(g.parameters(), lr=1e-2)
    cam_before = [p.detach().clone() for p in g.camera_embedding.parameters()]
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(5))
    for _ in range(4):
        out = g(latents, tiny_prompt_utils, **cameras(), c2w=c2w_batch(), rgb_as_latents=True)
        opt.zero_grad()
        out["loss_lora"].backward()
        opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(cam_before, g.camera_embedding.parameters()))
    torch.manual_seed(3)
    x, t, text = torch.randn(2, 4, 16, 16), torch.tensor([400, 700]), torch.randn(2, 77, 32)
    cam = c2w_batch().reshape(2, 16)
    base = UNet2DConditionModel.from_pretrained(tiny_sd_v, subfolder="unet")
    hand = hand_lora_unet(g, tiny_sd_v, tmp_path)
    with torch.no_grad():
        expected = base(x, t, encoder_hidden_states=text).sample
        assert torch.equal(g.lora_forward(x, t, text, cam, 0.0), expected)
        assert torch.equal(g.lora_forward(x, t, text, torch.zeros_like(cam), 0.0), expected)
        full = g.lora_forward(x, t, text, cam, 1.0)
        torch.testing.assert_close(full, hand(x, t, encoder_hidden_states=text, class_labels=cam).sample,
                                   atol=1e-5, rtol=1e-4)
        hand.set_adapters(["phi"], weights=[0.5])
        emb = hand.class_embedding
        hand.class_embedding = nn.Sequential(emb, Halve())
        torch.testing.assert_close(g.lora_forward(x, t, text, cam, 0.5),
                                   hand(x, t, encoder_hidden_states=text, class_labels=cam).sample,
                                   atol=1e-5, rtol=1e-4)


class Halve(nn.Module):
    def forward(self, x):
        return 0.5 * x


def test_lora_scale_zero_per_call_gives_zero_gradient(tiny_sd, tiny_prompt_utils):
    """Shared UNet, LoRA off, same text for both branches, CFG 1: eps_cfg == eps_phi up to float rounding (the two
    branches run at different batch sizes), so the update vanishes."""
    g = vsd(tiny_sd, tiny_sd, guidance_scale=1.0, view_dependent_prompting=False)
    perturb(g, camera=False)
    kw = dict(rgb_as_latents=True, t=torch.tensor([200, 900]), noise=torch.randn(2, 4, 16, 16), c2w=c2w_batch())
    latents = torch.randn(2, 4, 16, 16, requires_grad=True)
    off = g(latents, tiny_prompt_utils, **cameras(), **kw, lora_scale=0.0)["grad_norm"].item()
    on = g(latents, tiny_prompt_utils, **cameras(), **kw)["grad_norm"].item()
    assert off < 1e-4 * on


def test_shared_and_separate_modes_agree(tiny_sd, tiny_prompt_utils):
    torch.manual_seed(0)
    shared = vsd(tiny_sd, tiny_sd, guidance_scale_lora=0.5)
    torch.manual_seed(0)
    separate = vsd(tiny_sd, tiny_sd, share_unet=False, guidance_scale_lora=0.5)
    assert shared.lora_model.unet is shared.models.unet
    assert separate.lora_model.unet is not separate.models.unet
    sd_s, sd_p = shared.state_dict(), separate.state_dict()
    assert sd_s.keys() == sd_p.keys() and all(torch.equal(sd_s[k], sd_p[k]) for k in sd_s)  # same initialisation
    perturb(shared)
    separate.load_state_dict(shared.state_dict())
    results = []
    for g in (shared, separate):
        seed_all(5)
        latents = torch.randn(2, 4, 16, 16, requires_grad=True)
        out = g(latents, tiny_prompt_utils, **cameras(), c2w=c2w_batch(), rgb_as_latents=True)
        (out["loss_vsd"] + out["loss_lora"]).backward()
        results.append((out["loss_vsd"], out["loss_lora"], latents.grad, [p.grad for p in g.parameters()]))
    (v1, l1, g1, p1), (v2, l2, g2, p2) = results
    torch.testing.assert_close(v1, v2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(l1, l2, atol=1e-6, rtol=1e-5)
    # float tolerance relative to the gradient's scale: one batched UNet call sums in another order than two smaller
    # calls on some CPUs (1.3e-5 of the largest entry measured on one Xeon)
    torch.testing.assert_close(g1, g2, atol=5e-5 * g1.abs().max().item(), rtol=1e-4)
    for a, b in zip(p1, p2):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_checkpoint_and_optimizer_hold_only_lora_and_camera(tiny_sd, tiny_sd_v, tiny_prompt_utils):
    g = vsd(tiny_sd, tiny_sd_v)
    system = nn.Module()
    system.guidance = g  # as the system holds it
    keys = list(system.state_dict())
    assert keys and all(k.startswith(("guidance.lora.layers.", "guidance.camera_embedding.")) for k in keys)
    lora_in_unet = {id(p) for n, p in g.lora_model.unet.named_parameters() if p.requires_grad}
    # q, k, v, out x (A, B) x 14 attention layers: 7 transformer blocks (2 down, 1 mid, 4 up) x (self, cross)
    assert len(lora_in_unet) == 4 * 2 * 14
    own = {id(p) for p in g.parameters()}
    assert own == lora_in_unet | {id(p) for p in g.camera_embedding.parameters()}
    n_unet = sum(p.numel() for p in g.models.unet.parameters())
    assert sum(p.numel() for p in g.parameters()) < 0.1 * n_unet

    # One optimizer step on the `guidance` group changes what the UNet computes, and no frozen weight.
    opt = torch.optim.AdamW([{"params": list(g.parameters()), "lr": 1e-2, "name": "guidance"}])
    x, t, text, cam = torch.randn(1, 4, 16, 16), torch.tensor([500]), torch.randn(1, 77, 32), torch.randn(1, 16)
    frozen = {n: p.detach().clone() for n, p in g.lora_model.unet.named_parameters() if not p.requires_grad}
    with torch.no_grad():
        before = g.lora_forward(x, t, text, cam, 1.0)
    out = g(torch.rand(1, 32, 32, 3), tiny_prompt_utils, elevation=torch.zeros(1), azimuth=torch.zeros(1),
            camera_distances=torch.ones(1), c2w=torch.eye(4)[None])
    out["loss_lora"].backward()
    opt.step()
    with torch.no_grad():
        assert not torch.equal(g.lora_forward(x, t, text, cam, 1.0), before)
    assert all(torch.equal(p, frozen[n]) for n, p in g.lora_model.unet.named_parameters() if not p.requires_grad)

    # Restoring the state dict (a checkpoint) restores the computation.
    g2 = vsd(tiny_sd, tiny_sd_v)
    g2.load_state_dict(g.state_dict())
    with torch.no_grad():
        assert torch.equal(g2.lora_forward(x, t, text, cam, 1.0), g.lora_forward(x, t, text, cam, 1.0))


def test_save_and_load_lora(tiny_sd, tiny_sd_v, tmp_path):
    g = vsd(tiny_sd, tiny_sd_v, lora_alpha=8.0, camera_condition_type="mvp")
    perturb(g)
    g.save_lora(tmp_path)
    assert (tmp_path / "pytorch_lora_weights.safetensors").is_file()
    g2 = vsd(tiny_sd, tiny_sd_v, lora_alpha=8.0, camera_condition_type="mvp", lora_weights_path=str(tmp_path))
    sd1, sd2 = g.state_dict(), g2.state_dict()
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    # Read by diffusers itself: alpha 8 over rank 4 must survive (through the adapter metadata).
    torch.manual_seed(4)
    x, t, text, cam = torch.randn(1, 4, 16, 16), torch.tensor([250]), torch.randn(1, 77, 32), torch.randn(1, 16)
    hand = hand_lora_unet(g, tiny_sd_v, tmp_path / "again")
    with torch.no_grad():
        torch.testing.assert_close(
            g.lora_forward(x, t, text, cam, 1.0), hand(x, t, encoder_hidden_states=text, class_labels=cam).sample,
            atol=1e-5, rtol=1e-4,
        )
    with pytest.raises(ConfigError, match="lora_alpha"):
        vsd(tiny_sd, tiny_sd_v, camera_condition_type="mvp", lora_weights_path=str(tmp_path))
    with pytest.raises(ConfigError, match="camera_condition_type"):
        vsd(tiny_sd, tiny_sd_v, lora_alpha=8.0, lora_weights_path=str(tmp_path))
    with pytest.raises(CheckpointError, match="not found"):
        vsd(tiny_sd, tiny_sd_v, lora_weights_path=str(tmp_path / "missing"))


def test_train_on_estimate_latents(tiny_sd, tiny_prompt_utils):
    torch.manual_seed(0)
    g = vsd(tiny_sd, tiny_sd, lora_train_on_estimate=True)
    torch.manual_seed(0)
    ref = vsd(tiny_sd, tiny_sd)
    perturb(g)
    ref.load_state_dict(g.state_dict())
    t, noise, c2w = torch.tensor([100, 700]), torch.randn(2, 4, 16, 16), c2w_batch()
    latents = torch.randn(2, 4, 16, 16)
    grads = []
    for guidance in (g, ref):
        x = latents.clone().requires_grad_(True)
        out = guidance(x, tiny_prompt_utils, **cameras(), c2w=c2w, rgb_as_latents=True, t=t, noise=noise)
        out["loss_vsd"].backward()
        grads.append(x.grad)
        if guidance is g:
            text = tiny_prompt_utils.text_embeddings.expand(2, -1, -1)
            keep = torch.ones(2, dtype=torch.bool)
            expected = g.lora_training_loss(latents, text, c2w.reshape(2, 16), t, noise, keep)
            assert out["loss_lora"].item() == pytest.approx(expected.item(), rel=1e-6)
    # the same eps_phi, to float tolerance relative to the gradient's scale (the two runs batch their UNet calls
    # differently, and some CPUs sum in another order per batch size)
    torch.testing.assert_close(grads[0], grads[1], atol=5e-5 * grads[1].abs().max().item(), rtol=1e-5)

    # Camera CFG on and every camera dropped: the loss is the no-camera prediction's.
    g = vsd(tiny_sd, tiny_sd, lora_train_on_estimate=True, guidance_scale_lora=0.5, lora_camera_dropout=1.0)
    perturb(g)
    out = g(latents, tiny_prompt_utils, **cameras(), c2w=c2w, rgb_as_latents=True, t=t, noise=noise)
    text = tiny_prompt_utils.text_embeddings.expand(2, -1, -1)
    expected = g.lora_training_loss(latents, text, c2w.reshape(2, 16), t, noise, torch.zeros(2, dtype=torch.bool))
    assert out["loss_lora"].item() == pytest.approx(expected.item(), rel=1e-6)

    with pytest.raises(ConfigError, match="lora_n_timestamp_samples"):
        vsd(tiny_sd, tiny_sd, lora_train_on_estimate=True, lora_n_timestamp_samples=2)


def test_lora_training_draws(tiny_sd, tiny_prompt_utils, monkeypatch):
    """The LoRA loss gets fresh timesteps over all of [0, T), n per latent, and per-sample camera dropout."""
    g = vsd(tiny_sd, tiny_sd, min_step_percent=0.5, max_step_percent=0.5, lora_n_timestamp_samples=16)
    seen = {}
    original = g.lora_training_loss

    def spy(latents, text, camera, t, noise, keep, scale=None):
        seen.update(latents=latents, camera=camera, t=t, noise=noise, keep=keep)
        return original(latents, text, camera, t, noise, keep, scale)

    monkeypatch.setattr(g, "lora_training_loss", spy)
    seed_all(0)
    latents = torch.randn(2, 4, 16, 16)
    noise = torch.randn(2, 4, 16, 16)
    g(latents, tiny_prompt_utils, **cameras(), c2w=c2w_batch(), rgb_as_latents=True, noise=noise)
    assert seen["t"].shape == (32,) and seen["t"].min() >= 0 and seen["t"].max() < 1000
    assert (seen["t"] != 500).any()  # not the estimate's timestep
    assert not torch.equal(seen["noise"][:2], noise)  # fresh noise
    assert torch.equal(seen["latents"], latents.repeat(16, 1, 1, 1))
    keep = g._keep_camera(20000, torch.device("cpu"))
    assert 0.88 < keep.float().mean().item() < 0.92  # p = 0.1, drawn per sample
    assert vsd(tiny_sd, tiny_sd, lora_cfg_training=False)._keep_camera(100, torch.device("cpu")).all()


def test_camera_conditions():
    c2w, mvp = torch.randn(3, 4, 4), torch.randn(3, 4, 4)
    el, az, d = torch.tensor([0.0, 30.0, -10.0]), torch.tensor([0.0, 90.0, 180.0]), torch.tensor([1.0, 1.5, 2.0])
    assert torch.equal(camera_condition("extrinsics", c2w=c2w), c2w.reshape(3, 16))
    assert torch.equal(camera_condition("mvp", mvp_mtx=mvp), mvp.reshape(3, 16))
    sph = camera_condition("spherical", elevation=el, azimuth=az, camera_distances=d)
    torch.testing.assert_close(sph[1], torch.tensor([math.radians(30), 1.0, 0.0, 1.5]), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="c2w"):
        camera_condition("extrinsics")


def test_frozen_models_follow_the_module_and_lora_stays_fp32(tiny_sd, tiny_sd_v):
    g = vsd(tiny_sd, tiny_sd_v)
    place_frozen(g.frozen_modules(), torch.device("cpu"), torch.float16, keep=g.trainable_in_frozen())
    unet = g.lora_model.unet
    assert unet.conv_in.weight.dtype == torch.float16
    assert all(p.dtype == torch.float32 for p in g.parameters())
    g.to("meta")
    for m in (g.models.unet, g.models.vae, g.lora_model.unet):
        assert all(p.device.type == "meta" for p in m.parameters())


@pytest.mark.parametrize("field, value", [("lora_alpha", 8.0), ("lora_rank", 8), ("lora_target_modules", ["to_q"])])
def test_lora_weights_of_another_adapter_shape_name_the_full_key(tiny_sd, tiny_sd_v, tmp_path, field, value):
    vsd(tiny_sd, tiny_sd_v).save_lora(tmp_path)
    with pytest.raises(ConfigError) as e:
        VSD({"pretrained_model_name_or_path": tiny_sd, "pretrained_model_name_or_path_lora": tiny_sd_v, field: value,
             "lora_weights_path": str(tmp_path)}, prefix="system.guidance")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"system.guidance.{field}: is "), msg


def test_an_over_long_lora_weights_path_is_one_line(tiny_sd, tiny_sd_v):
    with pytest.raises(UserError) as e:
        VSD({"pretrained_model_name_or_path": tiny_sd, "pretrained_model_name_or_path_lora": tiny_sd_v,
             "lora_weights_path": "/tmp/" + "x" * 5000}, prefix="system.guidance")
    msg = str(e.value)
    assert "\n" not in msg and "system.guidance.lora_weights_path" in msg and "too long" in msg

"""The distillation rules on the template, each checked against its paper's formula computed by hand from separate
UNet calls (a fresh UNet and scheduler loaded with diffusers in the test, prompts encoded by hand): CSD and its
negative-prompt variant, NFSD, SDS-Bridge's two stages, ISM, SDI, HiFA's image loss (SDS and VSD) and Perp-Neg.

Hand computations follow the papers (and threestudio where it defines the meaning of a field); the guidances' own
functions are never called to make an expected value.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMInverseScheduler, DDPMScheduler, UNet2DConditionModel

import framework.guidance  # noqa: F401  (registration)
import framework.prompt_processors  # noqa: F401
from framework import registry
from framework.errors import ConfigError
from tests.test_prompt_processor import hand_embeddings

PROMPT, NEG = "a photo of a cat", "blurry"
FRONT_SIDE_CAMERAS = dict(elevation=torch.tensor([10.0, 20.0]), azimuth=torch.tensor([0.0, 120.0]),
                          camera_distances=torch.ones(2))
VIEWS = ["front view", "side view"]  # the directions of the two cameras above


def guidance(kind, path, **cfg):
    return registry.find("guidance", kind)({"pretrained_model_name_or_path": path, **cfg})


def prompts(path, cache, **cfg):
    return registry.find("prompt_processor", "stable-diffusion-prompt-processor")(
        {"pretrained_model_name_or_path": path, "prompt": PROMPT, "negative_prompt": NEG, "cache_dir": str(cache),
         **cfg})()


class Hand:
    """The tiny model's UNet, VAE and scheduler, loaded afresh, and eps of one sample at a time."""

    def __init__(self, path):
        self.path = path
        self.unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet")
        self.sched = DDPMScheduler.from_pretrained(path, subfolder="scheduler")
        self.ab = self.sched.alphas_cumprod

    @torch.no_grad()
    def eps(self, x, t, texts):
        """eps for latents x (B, ...), timesteps t (B,), one text (string) or embedding (N, C) per sample."""
        out = []
        for i in range(x.shape[0]):
            emb = hand_embeddings(self.path, [texts[i]]) if isinstance(texts[i], str) else texts[i][None]
            out.append(self.unet(x[i : i + 1], t[i : i + 1], encoder_hidden_states=emb).sample)
        return torch.cat(out)

    def a_s(self, t):
        ab = self.ab[t].view(-1, 1, 1, 1)
        return ab.sqrt(), (1 - ab).sqrt()


def view_texts(prompt):
    return [f"{prompt}, {v}" for v in VIEWS]


def run(g, pu, latents, t, noise, step=0, **kw):
    g.update_step(0, step)
    x = latents.clone().requires_grad_(True)
    out = g(x, pu, **FRONT_SIDE_CAMERAS, rgb_as_latents=True, t=t, noise=noise, **kw)
    (grad,) = torch.autograd.grad(out[f"loss_{g.loss_name}"], x)
    return out, grad * x.shape[0]  # the reparameterised loss's gradient is grad / B


@pytest.fixture(scope="module")
def draws():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(2, 4, 16, 16, generator=gen), torch.randn(2, 4, 16, 16, generator=gen)


@pytest.mark.parametrize("step,scales", [(0, (1.0, 0.0, -1.0)), (50, (1.0, -0.75, -0.25))])
def test_csd_and_its_negative_variant(tiny_sd, tiny_embedding_cache, draws, step, scales):
    """CSD: w(t)(eps_y - eps_null); negative variant at step 50 of omega_2 annealed 1 -> 0.5 over 100 steps:
    w(t)((eps_y - eps_null) - 0.75 (eps_neg - eps_null))."""
    latents, noise = draws
    t = torch.tensor([150, 600])
    g = guidance("stable-diffusion-csd-guidance", tiny_sd, uncond_scale=[0, -1.0, -0.5, 100],
                 null_scale=[0, 0.0, -0.5, 100]) if step else guidance("stable-diffusion-csd-guidance", tiny_sd)
    _, grad = run(g, prompts(tiny_sd, tiny_embedding_cache), latents, t, noise, step)
    h = Hand(tiny_sd)
    x_t = h.sched.add_noise(latents, noise, t)
    e_y, e_neg, e_null = h.eps(x_t, t, view_texts(PROMPT)), h.eps(x_t, t, [NEG] * 2), h.eps(x_t, t, ["", ""])
    omega2 = -scales[1]
    expected = (1 - h.ab[t]).view(-1, 1, 1, 1) * ((e_y - e_null) - omega2 * (e_neg - e_null))
    torch.testing.assert_close(grad, expected, atol=2e-5, rtol=1e-4)


def test_nfsd(tiny_sd, tiny_embedding_cache, draws):
    """w(t)(delta_D + s delta_C): delta_C = eps_y - eps_null; delta_D = eps_null - eps_neg for t < 200, else
    eps_null."""
    latents, noise = draws
    t = torch.tensor([120, 700])
    _, grad = run(guidance("stable-diffusion-nfsd-guidance", tiny_sd, guidance_scale=7.5),
                  prompts(tiny_sd, tiny_embedding_cache), latents, t, noise)
    h = Hand(tiny_sd)
    x_t = h.sched.add_noise(latents, noise, t)
    e_y, e_neg, e_null = h.eps(x_t, t, view_texts(PROMPT)), h.eps(x_t, t, [NEG] * 2), h.eps(x_t, t, ["", ""])
    delta_d = torch.stack([e_null[0] - e_neg[0], e_null[1]])
    expected = (1 - h.ab[t]).view(-1, 1, 1, 1) * (delta_d + 7.5 * (e_y - e_null))
    torch.testing.assert_close(grad, expected, atol=2e-5, rtol=1e-4)
    with pytest.raises(ConfigError, match="negative_prompt"):
        run(guidance("stable-diffusion-nfsd-guidance", tiny_sd),
            prompts(tiny_sd, tiny_embedding_cache, negative_prompt=""), latents, t, noise)


@pytest.mark.parametrize("stage", [1, 2])
def test_sds_bridge(tiny_sd, tiny_embedding_cache, draws, stage):
    """Stage 1: w1 w(t)(eps_neg + s (eps_tgt - eps_neg) - eps); stage 2: w2 w(t)(eps_tgt - eps_src), with the target
    '<prompt>, <tgt_modifier>, <view>' and the source '<src_modifier>, <view>' (use_modifier_only)."""
    latents, noise = draws
    t = torch.tensor([300, 800])
    g = guidance("stable-diffusion-sds-bridge-guidance", tiny_sd, guidance_scale=20.0, stage_one_weight=0.5,
                 stage_two_weight=30.0, stage_two_start_step=10)
    pu = prompts(tiny_sd, tiny_embedding_cache, src_modifier="oversaturated, smooth", tgt_modifier="detailed")
    out, grad = run(g, pu, latents, t, noise, step=0 if stage == 1 else 10)
    assert out["stage"] == stage
    h = Hand(tiny_sd)
    x_t = h.sched.add_noise(latents, noise, t)
    e_tgt = h.eps(x_t, t, view_texts(f"{PROMPT}, detailed"))
    w = (1 - h.ab[t]).view(-1, 1, 1, 1)
    if stage == 1:
        e_neg = h.eps(x_t, t, [NEG] * 2)
        expected = 0.5 * w * (e_neg + 20.0 * (e_tgt - e_neg) - noise)
    else:
        expected = 30.0 * w * (e_tgt - h.eps(x_t, t, view_texts("oversaturated, smooth")))
    assert ((grad - expected).norm() / expected.norm()).item() < 1e-4  # batched vs one-by-one UNet calls: float32


def hand_inversion_step(h, eps, x, t_from, t_to):
    """DDIM run backwards (Song et al. eq. 12): x0_hat from (x, eps) at t_from (-1: clean), re-noised to t_to."""
    ab_from = 1.0 if t_from < 0 else h.ab[t_from]
    x0 = (x - math.sqrt(1 - ab_from) * eps) / math.sqrt(ab_from)
    return math.sqrt(h.ab[t_to]) * x0 + math.sqrt(1 - h.ab[t_to]) * eps


def test_ism(tiny_sd, tiny_embedding_cache, draws):
    """LucidDreamer: x_s by DDIM inversion from x0 (noised at 0) in steps of 200 with the null prompt, x_t one more
    step from x_s; grad = sqrt((1 - ab_t) / ab_t) (eps_cfg(x_t, t, y) - eps_null(x_s, s)), CFG 7.5 (diffusers)."""
    latents, noise = draws
    t = torch.tensor([330, 650])
    pu = prompts(tiny_sd, tiny_embedding_cache, negative_prompt="")
    _, grad = run(guidance("stable-diffusion-ism-guidance", tiny_sd, delta_t=80), pu, latents, t, noise)
    h = Hand(tiny_sd)
    expected = []
    with torch.no_grad():
        for i in range(2):
            ti, si = int(t[i]), int(t[i]) - 80
            x = h.sched.add_noise(latents[i : i + 1], noise[i : i + 1], torch.tensor([0]))
            cur = 0
            while cur < si:
                nxt = min(cur + 200, si)
                x = hand_inversion_step(h, h.eps(x, torch.tensor([cur]), [""]), x, cur, nxt)
                cur = nxt
            eps_s = h.eps(x, torch.tensor([si]), [""])
            x_t = hand_inversion_step(h, eps_s, x, si, ti)
            e_y = h.eps(x_t, torch.tensor([ti]), [view_texts(PROMPT)[i]])
            e_u = h.eps(x_t, torch.tensor([ti]), [""])
            eps_cfg = e_u + 7.5 * (e_y - e_u)
            expected.append(math.sqrt((1 - h.ab[ti]) / h.ab[ti]) * (eps_cfg - eps_s))
    torch.testing.assert_close(grad, torch.cat(expected), atol=5e-5, rtol=2e-4)


def test_sdi(tiny_sd, tiny_embedding_cache, draws):
    """SDI: x0 DDIM-inverted along the 10-step grid to t + delta with inversion CFG -7.5 in threestudio's SDS form
    (eps_y - 7.5 (eps_y - eps_neg)), the noise it implies remapped to t, and threestudio's loss
    0.5 * mean((x0 - x0_hat(eps_cfg))^2) / B with eps_cfg = eps_y + s (eps_y - eps_neg)."""
    latents, noise = draws
    t = torch.tensor([420, 770])
    g = guidance("stable-diffusion-sdi-guidance", tiny_sd, guidance_scale=7.5, inversion_eta=0.0, t_anneal=False)
    pu = prompts(tiny_sd, tiny_embedding_cache)
    torch.manual_seed(7)
    _, grad = run(g, pu, latents, t, noise)
    torch.manual_seed(7)
    delta = (torch.rand(2) * 100).long()  # the same draw: the first random numbers of the call
    h = Hand(tiny_sd)
    inverse = DDIMInverseScheduler.from_pretrained(tiny_sd, subfolder="scheduler")
    inverse.set_timesteps(10)
    grid = [int(v) for v in inverse.timesteps]

    def sds_form(x, tt, i, s):
        e_y = h.eps(x, torch.tensor([tt]), [view_texts(PROMPT)[i]])
        e_n = h.eps(x, torch.tensor([tt]), [NEG])
        return e_y + s * (e_y - e_n)

    x0_hats = []
    with torch.no_grad():
        for i in range(2):
            x0 = latents[i : i + 1]
            last = min(int(t[i] + delta[i]), 999)
            path = [-1] + [v for v in grid if v < t[i]] + [last]
            x = x0
            for cur, nxt in zip(path[:-1], path[1:]):
                x = hand_inversion_step(h, sds_form(x, max(cur, 0), i, -7.5), x, cur, nxt)
            eps_inv = (x - h.ab[last].sqrt() * x0) / (1 - h.ab[last]).sqrt()
            a, s = h.ab[t[i]].sqrt(), (1 - h.ab[t[i]]).sqrt()
            x_t = a * x0 + s * eps_inv
            x0_hats.append((x_t - s * sds_form(x_t, int(t[i]), i, 7.5)) / a)
    x = latents.clone().requires_grad_(True)
    loss = 0.5 * F.mse_loss(x, torch.cat(x0_hats), reduction="mean") / 2
    (expected,) = torch.autograd.grad(loss, x)
    assert ((grad / 2 - expected).norm() / expected.norm()).item() < 1e-4


def test_inversion_step_equals_diffusers_where_both_apply(tiny_sd):
    """One timestep for the batch, a step dividing the timestep count, eps model: diffusers' DDIMInverseScheduler."""
    from framework.guidance.diffusion import NoiseSchedule
    from framework.guidance.inversion import ddim_inversion_step

    sched = DDPMScheduler.from_pretrained(tiny_sd, subfolder="scheduler")
    inverse = DDIMInverseScheduler.from_pretrained(tiny_sd, subfolder="scheduler")
    inverse.set_timesteps(10)  # steps of 100
    gen = torch.Generator().manual_seed(3)
    x, eps = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 4, 8, 8, generator=gen)
    for t_to in (300, 701):
        expected = inverse.step(eps, t_to, x).prev_sample
        got = ddim_inversion_step(NoiseSchedule(sched), eps, x, torch.full((2,), t_to - 100), torch.full((2,), t_to))
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["sds", "vsd"])
def test_hifa_image_loss(tiny_sd, tiny_embedding_cache, kind):
    """threestudio's use_img_loss: grad_img = w(t) (image_base - decode(x0_hat(eps_cfg))) alpha_t / sigma_t, image_base
    the render (SDS) or decode(x0_hat(eps_phi)) (VSD); loss 0.5 ||img - sg(img - grad_img)||^2 / B."""
    name = "stable-diffusion-guidance" if kind == "sds" else "stable-diffusion-vsd-guidance"
    g = guidance(name, tiny_sd, use_img_loss=True, guidance_scale=5.0,
                 **({"pretrained_model_name_or_path_lora": tiny_sd} if kind == "vsd" else {}))
    pu = prompts(tiny_sd, tiny_embedding_cache, negative_prompt="")
    rgb = torch.rand(2, 32, 32, 3, generator=torch.Generator().manual_seed(5), requires_grad=True)
    t, noise = torch.tensor([250, 600]), torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(6))
    torch.manual_seed(11)
    out = g(rgb, pu, **FRONT_SIDE_CAMERAS, c2w=torch.eye(4).expand(2, 4, 4), t=t, noise=noise)
    (grad,) = torch.autograd.grad(out[f"loss_{kind}_img"], rgb)
    h = Hand(tiny_sd)
    vae = AutoencoderKL.from_pretrained(tiny_sd, subfolder="vae")
    image = rgb.detach().permute(0, 3, 1, 2)
    torch.manual_seed(11)
    with torch.no_grad():
        x0 = vae.encode(image * 2 - 1).latent_dist.sample() * vae.config.scaling_factor
        x_t = h.sched.add_noise(x0, noise, t)
        e_y, e_u = h.eps(x_t, t, view_texts(PROMPT)), h.eps(x_t, t, ["", ""])
        eps_cfg = e_y + 5.0 * (e_y - e_u) if kind == "sds" else e_u + 5.0 * (e_y - e_u)
        alpha, sigma = h.a_s(t)

        def decode(eps):
            z = (x_t - sigma * eps) / alpha / vae.config.scaling_factor
            return ((vae.decode(z).sample + 1) / 2).clamp(0, 1)

        base = image if kind == "sds" else decode(h.eps(x_t, t, [PROMPT] * 2))  # eps_phi: the base UNet at init
        grad_img = (1 - h.ab[t]).view(-1, 1, 1, 1) * (base - decode(eps_cfg)) * alpha / sigma
    torch.testing.assert_close(grad, grad_img.permute(0, 2, 3, 1) / 2, atol=2e-5, rtol=2e-4)
    assert grad.abs().max() > 0


def test_image_loss_needs_renders(tiny_sd, tiny_embedding_cache, draws):
    with pytest.raises(ConfigError, match="use_img_loss"):
        run(guidance("stable-diffusion-guidance", tiny_sd, use_img_loss=True),
            prompts(tiny_sd, tiny_embedding_cache), *draws[:1], torch.tensor([1, 2]), draws[1])


def shifted_exp(a, b, c, r):
    return a * math.exp(-b * r) + c


@pytest.mark.parametrize("kind", ["sds", "vsd"])
def test_perp_neg(tiny_sd, tiny_embedding_cache, kind):
    """threestudio's Perp-Neg for three cameras (azimuth 30: front-side, 135: side-back, elevation 70: overhead):
    eps = eps_u + s (e_pos + sum_k w_k perp(e_k, e_pos)), the view prompts' embeddings interpolated by azimuth,
    s = guidance_scale as written (threestudio's SDS and unified guidance both use it so with Perp-Neg)."""
    name = "stable-diffusion-guidance" if kind == "sds" else "stable-diffusion-vsd-guidance"
    g = guidance(name, tiny_sd, guidance_scale=6.0,
                 **({"pretrained_model_name_or_path_lora": tiny_sd} if kind == "vsd" else {}))
    pu = prompts(tiny_sd, tiny_embedding_cache, negative_prompt="", use_perp_neg=True)
    cams = dict(elevation=torch.tensor([10.0, 20.0, 70.0]), azimuth=torch.tensor([30.0, -135.0, 0.0]),
                camera_distances=torch.ones(3))
    gen = torch.Generator().manual_seed(2)
    latents, noise = torch.randn(3, 4, 16, 16, generator=gen), torch.randn(3, 4, 16, 16, generator=gen)
    t = torch.tensor([200, 500, 800])

    recorded = {}
    original = type(g).update

    def update(self, step, **kw):
        recorded["eps_cfg"] = step.eps_cfg.clone()
        return original(self, step, **kw)

    g.update = update.__get__(g)
    g(latents, pu, **cams, c2w=torch.eye(4).expand(3, 4, 4), rgb_as_latents=True, t=t, noise=noise)

    emb = {v: hand_embeddings(tiny_sd, [f"{PROMPT}, {v} view"])[0] for v in ("side", "front", "back", "overhead")}
    null = hand_embeddings(tiny_sd, [""])[0]
    r0 = 1 - 30 / 90  # front-side
    r1 = 2 - 135 / 90  # side-back
    pos = [r0 * emb["front"] + (1 - r0) * emb["side"], r1 * emb["side"] + (1 - r1) * emb["back"], emb["overhead"]]
    negs = [(emb["front"], emb["side"]), (emb["side"], emb["front"]), (null, null)]
    weights = [(-shifted_exp(4, 0.5, -2.426, r0), -shifted_exp(4, 0.5, -2.426, 1 - r0)),
               (-shifted_exp(1, 0.5, -0.606, r1), -shifted_exp(1, 0.5, 0.967, r1)), (0.0, 0.0)]
    h = Hand(tiny_sd)
    x_t = h.sched.add_noise(latents, noise, t)
    e_pos, e_u = h.eps(x_t, t, pos), h.eps(x_t, t, [null] * 3)
    expected = []
    for i in range(3):
        d_pos = e_pos[i] - e_u[i]
        total = d_pos.clone()
        for k in range(2):
            e_k = h.eps(x_t[i : i + 1], t[i : i + 1], [negs[i][k]])[0] - e_u[i]
            total += weights[i][k] * (e_k - (e_k * d_pos).sum() / (d_pos * d_pos).sum() * d_pos)
        expected.append(e_u[i] + 6.0 * total)
    torch.testing.assert_close(recorded["eps_cfg"], torch.stack(expected), atol=5e-5, rtol=2e-4)


def test_perp_neg_is_refused_where_a_rule_has_none(tiny_sd, tiny_embedding_cache, draws):
    with pytest.raises(ConfigError, match="use_perp_neg"):
        run(guidance("stable-diffusion-csd-guidance", tiny_sd),
            prompts(tiny_sd, tiny_embedding_cache, use_perp_neg=True), draws[0], torch.tensor([100, 200]), draws[1])


def test_sds_bridge_recipe_reaches_its_second_stage(tiny_sd, tiny_embedding_cache, tmp_path, monkeypatch):
    """configs/sds-bridge.yaml with its stage switch moved to step 1: both stages run, as logged per step."""
    import csv
    from pathlib import Path

    import launch

    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    argv = ["--config", "sds-bridge.yaml", "--train", f"exp_root_dir={tmp_path}", "use_timestamp=false", "tag=b",
            "trainer.max_steps=2", "trainer.val_check_interval=2", "checkpoint.every_n_train_steps=2",
            "system.guidance.stage_two_start_step=1", "system.prompt_processor.prompt=a photo of a cat",
            f"system.prompt_processor.pretrained_model_name_or_path={tiny_sd}",
            f"system.prompt_processor.cache_dir={tiny_embedding_cache}",
            f"system.guidance.pretrained_model_name_or_path={tiny_sd}",
            "data.height=16", "data.width=16", "data.eval_height=16", "data.eval_width=16", "data.n_val_views=1",
            "data.n_test_views=2", "system.renderer.num_samples_per_ray=8",
            "system.geometry.pos_encoding_config.n_levels=4",
            "system.geometry.pos_encoding_config.log2_hashmap_size=10"]
    assert launch.main(argv) == 0
    (metrics,) = tmp_path.rglob("metrics.csv")
    stages = {int(r["step"]): float(r["train/stage"]) for r in csv.DictReader(metrics.open()) if r.get("train/stage")}
    assert stages == {0: 1.0, 1: 2.0}, stages

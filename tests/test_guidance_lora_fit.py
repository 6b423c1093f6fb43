"""The LoRA-fit diagnostic of VSD: values against a hand computation with diffusers' own UNet, scheduler and LoRA
loader; exactly 1 at the start and with the LoRA frozen; below 1 once the LoRA has learnt the particles; logged."""

import csv

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DConditionModel

import launch
from tests.test_guidance_sds import cameras
from tests.test_guidance_vsd import c2w_batch, hand_lora_unet, perturb, vsd

TIMESTEPS = [100, 500, 900]


def fit_of(g, latents, tiny_prompt_utils):
    text = tiny_prompt_utils.text_embeddings.expand(latents.shape[0], -1, -1)
    camera = c2w_batch().reshape(2, 16)
    from framework.guidance.lora_fit import lora_fit

    return lora_fit(g.lora_forward, g.lora_schedule, latents, text, camera, TIMESTEPS, 1.0, seed=4)


@pytest.mark.parametrize("lora_model", ["tiny_sd_v", "tiny_sd"])
def test_values_equal_hand_computation(lora_model, request, tiny_sd, tiny_prompt_utils, tmp_path):
    path = request.getfixturevalue(lora_model)
    torch.manual_seed(0)  # LoRA A and camera-embedding initialisation: the same whatever ran before
    g = vsd(tiny_sd, path, zero_init_camera_embedding=False)
    perturb(g, scale=0.2)
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    fit = fit_of(g, latents, tiny_prompt_utils)

    hand = hand_lora_unet(g, path, tmp_path)
    base = UNet2DConditionModel.from_pretrained(path, subfolder="unet")
    sched = DDPMScheduler.from_pretrained(path, subfolder="scheduler")
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(4))
    text = tiny_prompt_utils.text_embeddings.expand(2, -1, -1)
    cam = c2w_batch().reshape(2, 16)
    per_t = {"lora": [], "frozen": []}
    with torch.no_grad():
        for t in TIMESTEPS:
            tt = torch.tensor([t, t])
            x_t = sched.add_noise(latents, noise, tt)
            target = noise if sched.config.prediction_type == "epsilon" else sched.get_velocity(latents, noise, tt)
            out_lora = hand(x_t, tt, encoder_hidden_states=text, class_labels=cam).sample
            out_base = base(x_t, tt, encoder_hidden_states=text).sample
            per_t["lora"].append(((out_lora - target) ** 2).mean().item())
            per_t["frozen"].append(((out_base - target) ** 2).mean().item())
    lora, frozen = sum(per_t["lora"]) / 3, sum(per_t["frozen"]) / 3
    assert fit["lora_fit/lora"] == pytest.approx(lora, rel=1e-4)
    assert fit["lora_fit/frozen"] == pytest.approx(frozen, rel=1e-4)
    assert fit["lora_fit/ratio"] == pytest.approx(lora / frozen, rel=1e-4)
    for i, t in enumerate(TIMESTEPS):
        assert fit[f"lora_fit/ratio_t{t}"] == pytest.approx(per_t["lora"][i] / per_t["frozen"][i], rel=1e-4)
    assert abs(fit["lora_fit/ratio"] - 1.0) > 2e-3  # the perturbed LoRA differs: the check can fail


def test_a_learning_lora_falls_below_one_and_a_frozen_one_stays_at_one(tiny_sd, tiny_prompt_utils):
    """The same particles, trained 30 steps: lr 1e-2 (ratio < 1) against lr 0 (exactly 1, as at the start)."""
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    ratios = {}
    for lr in (0.0, 1e-2):
        torch.manual_seed(0)
        g = vsd(tiny_sd, tiny_sd)
        assert fit_of(g, latents, tiny_prompt_utils)["lora_fit/ratio"] == 1.0
        opt = torch.optim.Adam(g.parameters(), lr=lr)
        for _ in range(30):
            out = g(latents, tiny_prompt_utils, **cameras(), c2w=c2w_batch(), rgb_as_latents=True)
            opt.zero_grad()
            out["loss_lora"].backward()
            opt.step()
        ratios[lr] = fit_of(g, latents, tiny_prompt_utils)["lora_fit/ratio"]
    assert ratios[0.0] == 1.0
    assert ratios[1e-2] < 0.9, ratios


def test_measured_at_the_logged_steps_and_shown(tiny_sd, tiny_sd_v, tiny_embedding_cache, tmp_path, monkeypatch):
    import pytorch_lightning as pl

    calls = []
    original_log = pl.LightningModule.log

    def recording_log(self, name, value, *args, **kwargs):
        calls.append((int(self.global_step), name, kwargs.get("prog_bar", False), kwargs.get("logger", True)))
        return original_log(self, name, value, *args, **kwargs)

    monkeypatch.setattr(pl.LightningModule, "log", recording_log)
    argv = ["--config", "vsd-image.yaml", "--train", f"exp_root_dir={tmp_path}", "use_timestamp=false", "tag=fit",
            "trainer.max_steps=6", "trainer.val_check_interval=6", "trainer.log_every_n_steps=1",
            "system.guidance.lora_fit_every=3", "system.guidance.lora_fit_timesteps=[200,600]",
            f"system.prompt_processor.pretrained_model_name_or_path={tiny_sd}", "system.prompt_processor.prompt=a cat",
            f"system.prompt_processor.cache_dir={tiny_embedding_cache}",
            f"system.guidance.pretrained_model_name_or_path={tiny_sd}",
            f"system.guidance.pretrained_model_name_or_path_lora={tiny_sd_v}",
            "system.height=32", "system.width=32", "system.n_particles=2"]
    assert launch.main(argv) == 0
    (metrics,) = tmp_path.rglob("metrics.csv")
    rows = list(csv.DictReader(metrics.open()))
    measured = sorted(int(r["step"]) for r in rows if r.get("train/lora_fit/ratio"))
    assert measured == [2, 5], measured  # steps N-1 and 2N-1
    # the reader behind the 3D ambiguity study's LoRA-fit line finds them in the trial folder, as steps done
    from lab.toy.lora_fit_log import lora_fit_log

    assert [m["step"] for m in lora_fit_log(metrics.parent.parent)] == [3, 6]
    for r in rows:
        if r.get("train/lora_fit/ratio"):
            assert r["train/lora_fit/ratio_t200"] and r["train/lora_fit/ratio_t600"]
            assert float(r["train/lora_fit/lora"]) > 0 and float(r["train/lora_fit/frozen"]) > 0
    shown = [c for c in calls if c[1] == "train/lora_fit/ratio"]
    assert shown == [(2, "train/lora_fit/ratio", True, False), (5, "train/lora_fit/ratio", True, False)]
    assert not [c for c in calls if c[1].startswith("train/lora_fit/") and c[1] != "train/lora_fit/ratio"]


def test_bad_timesteps_are_one_line(tiny_sd):
    from framework.errors import ConfigError

    with pytest.raises(ConfigError, match="lora_fit_timesteps: 1000 is no timestep"):
        vsd(tiny_sd, tiny_sd, lora_fit_timesteps=[100, 1000])

"""The guidance template: the step record's separate predictions against UNet calls made by hand, the rule hooks,
and a rule without a loss name refused."""

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DConditionModel

from framework.guidance.base import StableDiffusionGuidanceBase
from framework.guidance.sds import StableDiffusionGuidance
from tests.test_guidance_sds import FRONT, SIDE, cameras, hand_eps


class Recording(StableDiffusionGuidance):
    """SDS that keeps the step record and reads the empty prompt's prediction too."""

    loss_name = "recorded"
    needs_null = True

    def update(self, step, **kwargs):
        self.step = step
        return super().update(step, **kwargs)


def test_step_record_holds_the_separate_predictions(tiny_sd, tiny_embedding_cache):
    import framework.prompt_processors  # noqa: F401
    from framework import registry

    pu = registry.find("prompt_processor", "stable-diffusion-prompt-processor")(
        {"pretrained_model_name_or_path": tiny_sd, "prompt": "a photo of a cat", "negative_prompt": "blurry",
         "cache_dir": str(tiny_embedding_cache)})()
    g = Recording({"pretrained_model_name_or_path": tiny_sd, "guidance_scale": 4.0})
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    t, noise = torch.tensor([100, 700]), torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    out = g(latents, pu, **cameras(), rgb_as_latents=True, t=t, noise=noise)
    assert set(out) >= {"loss_recorded", "grad_norm"}
    unet = UNet2DConditionModel.from_pretrained(tiny_sd, subfolder="unet")
    sched = DDPMScheduler.from_pretrained(tiny_sd, subfolder="scheduler")
    with torch.no_grad():
        x_t = sched.add_noise(latents, noise, t)
        eps_text = hand_eps(unet, sched, x_t, t, pu.text_embeddings_vd[[FRONT, SIDE]])
        eps_neg = hand_eps(unet, sched, x_t, t, pu.uncond_text_embeddings_vd[[FRONT, SIDE]])
        eps_null = hand_eps(unet, sched, x_t, t, pu.null_text_embeddings.expand(2, -1, -1))
    s = g.step
    torch.testing.assert_close(s.noisy_latents, x_t)
    for got, want in ((s.eps_text, eps_text), (s.eps_uncond, eps_neg), (s.eps_null, eps_null)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(s.eps_cfg, eps_text + 4.0 * (eps_text - eps_neg), atol=1e-4, rtol=1e-4)
    assert (s.eps_null - s.eps_uncond).abs().max() > 1e-4  # the negative prompt is not the null prompt


def test_a_rule_without_a_loss_name_is_refused(tiny_sd):
    class Nameless(StableDiffusionGuidanceBase):
        def update(self, step, **kwargs):
            return step.eps_cfg - step.noise, {}

    with pytest.raises(TypeError, match="loss_name"):
        Nameless({"pretrained_model_name_or_path": tiny_sd})

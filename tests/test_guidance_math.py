"""The diffusion conventions of the guidance, checked against diffusers' scheduler and hand-computed values."""

import math

import pytest
import torch
from diffusers import DDPMScheduler

from framework.errors import ConfigError
from framework.guidance.diffusion import NoiseSchedule, classifier_free_guidance
from lab.models.tiny_sd import SD_SCHEDULER


def sd_scheduler(prediction_type="epsilon"):
    cfg = {k: v for k, v in SD_SCHEDULER.items() if k not in ("skip_prk_steps", "set_alpha_to_one")}
    return DDPMScheduler(prediction_type=prediction_type, **cfg)


def test_cfg_convention_is_diffusers():
    eps_text = torch.tensor([3.0, -1.0])
    eps_uncond = torch.tensor([1.0, 1.0])
    # s = 1: the text prediction alone; s = 0: the unconditional one; s = 7.5 by hand.
    assert torch.equal(classifier_free_guidance(eps_text, eps_uncond, 1.0), eps_text)
    assert torch.equal(classifier_free_guidance(eps_text, eps_uncond, 0.0), eps_uncond)
    assert torch.allclose(classifier_free_guidance(eps_text, eps_uncond, 7.5), torch.tensor([16.0, -14.0]))
    # threestudio's SDS form eps_text + s' (eps_text - eps_uncond) equals s = s' + 1 here.
    s_threestudio = 100.0
    threestudio = eps_text + s_threestudio * (eps_text - eps_uncond)
    assert torch.allclose(classifier_free_guidance(eps_text, eps_uncond, s_threestudio + 1), threestudio)


def test_add_noise_matches_diffusers():
    sched = sd_scheduler()
    ns = NoiseSchedule(sched)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, 5, 5, generator=g), torch.randn(3, 4, 5, 5, generator=g)
    t = torch.tensor([0, 500, 999])
    assert torch.allclose(ns.add_noise(x0, eps, t), sched.add_noise(x0, eps, t), atol=1e-6)


def test_v_to_eps_recovers_the_noise():
    sched = sd_scheduler("v_prediction")
    ns = NoiseSchedule(sched)
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(3, 4, 6, 6, generator=g), torch.randn(3, 4, 6, 6, generator=g)
    t = torch.tensor([10, 400, 950])
    x_t = sched.add_noise(x0, eps, t)
    v = sched.get_velocity(x0, eps, t)  # a perfect v model's output
    assert torch.allclose(ns.to_eps(v, x_t, t), eps, atol=1e-5)
    assert torch.allclose(ns.training_target(x0, eps, t), v, atol=1e-6)


def test_v_to_eps_known_values():
    sched = sd_scheduler("v_prediction")
    ns = NoiseSchedule(sched)
    t = torch.tensor([300])
    ab = float(sched.alphas_cumprod[300])
    a, s = math.sqrt(ab), math.sqrt(1 - ab)
    v, x_t = torch.full((1, 1, 1, 1), 2.0), torch.full((1, 1, 1, 1), -3.0)
    assert ns.to_eps(v, x_t, t).item() == pytest.approx(a * 2.0 + s * -3.0, rel=1e-6)


def test_eps_model_passes_through():
    ns = NoiseSchedule(sd_scheduler())
    out = torch.randn(2, 4, 3, 3)
    assert torch.equal(ns.to_eps(out, torch.randn(2, 4, 3, 3), torch.tensor([1, 2])), out)
    eps = torch.randn(2, 4, 3, 3)
    assert torch.equal(ns.training_target(torch.randn(2, 4, 3, 3), eps, torch.tensor([1, 2])), eps)


@pytest.mark.parametrize(
    "strategy,expected",
    [("sds", lambda ab: 1 - ab), ("uniform", lambda ab: 1.0), ("fantasia3d", lambda ab: math.sqrt(ab) * (1 - ab))],
)
def test_weighting(strategy, expected):
    sched = sd_scheduler()
    ns = NoiseSchedule(sched)
    t = torch.tensor([20, 980])
    w = ns.weight(t, strategy, 4)
    assert w.shape == (2, 1, 1, 1)
    for i, ti in enumerate(t.tolist()):
        assert w[i].item() == pytest.approx(expected(float(sched.alphas_cumprod[ti])), rel=1e-6)


def test_unsupported_prediction_type():
    with pytest.raises(ConfigError, match="sample"):
        NoiseSchedule(sd_scheduler("sample"))

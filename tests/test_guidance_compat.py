"""threestudio's config forms of timestep annealing load and mean what they mean there."""

import framework.guidance  # noqa: F401
from framework import registry


def test_anneal_start_step_switches_the_upper_end(tiny_sd):
    g = registry.find("guidance", "stable-diffusion-vsd-guidance")(
        {"pretrained_model_name_or_path": tiny_sd, "pretrained_model_name_or_path_lora": tiny_sd,
         "min_step_percent": 0.02, "max_step_percent": 0.98, "max_step_percent_annealed": 0.5,
         "anneal_start_step": 5000}
    )
    g.update_step(0, 4999)
    assert (g.min_step, g.max_step) == (20, 980)
    g.update_step(0, 5000)
    assert (g.min_step, g.max_step) == (20, 500)


def test_the_same_as_a_list_schedule(tiny_sd):
    g = registry.find("guidance", "stable-diffusion-guidance")(
        {"pretrained_model_name_or_path": tiny_sd, "max_step_percent": [5000, 0.98, 0.5, 5001]}
    )
    g.update_step(0, 5000)
    assert g.max_step == 980
    g.update_step(0, 5001)
    assert g.max_step == 500


import pytest  # noqa: E402

from framework.errors import ConfigError  # noqa: E402


@pytest.mark.parametrize(
    "cfg, step",
    [
        ({"min_step_percent": [0, 0.02, 0.6, 8000], "max_step_percent": [5000, 0.98, 0.5, 5001]}, 8000),
        ({"min_step_percent": 0.6, "anneal_start_step": 3000, "max_step_percent_annealed": 0.5}, 3000),
        ({"min_step_percent": {"points": [[0, 0.2], [100, 0.9]], "interpolation": "step"}, "max_step_percent": 0.8},
         100),
    ],
)
def test_a_range_that_crosses_at_any_step_is_refused_when_built(tiny_sd, cfg, step):
    """Not at step N hours into a run: building the guidance names a step where the ends have crossed."""
    with pytest.raises(ConfigError) as e:
        registry.find("guidance", "stable-diffusion-guidance")({"pretrained_model_name_or_path": tiny_sd, **cfg},
                                                               prefix="system.guidance")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("system.guidance.min_step_percent:") and f"at step {step})" in msg


def test_a_range_that_only_touches_is_accepted(tiny_sd):
    g = registry.find("guidance", "stable-diffusion-guidance")(
        {"pretrained_model_name_or_path": tiny_sd, "min_step_percent": [0, 0.02, 0.5, 8000],
         "max_step_percent": [5000, 0.98, 0.5, 5001]}
    )
    for step in (0, 5001, 8000, 20000):
        g.update_step(0, step)
        assert g.min_step <= g.max_step

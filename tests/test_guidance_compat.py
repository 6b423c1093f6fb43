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

"""The 2D ambiguity study in CI (lab/toy/studies.py): "a cube" with 8 latent particles, VSD at CFG 7.5 against a
broken VSD whose LoRA never learns (learning rate 0) and against SDS at CFG 7.5.

Bounds (docs/toy.md, "Calibration", seed 0) sit between the working VSD and the broken variants: VSD's particles
take several colours and its LoRA fits them better than the frozen model (LoRA fit well below 1); with the LoRA's
learning rate at 0 the fit is exactly 1; SDS collapses onto fewer colours.
"""

import pytest

from lab.toy.studies import BROKEN_2D, RULES_2D, Setting, prior_2d, run_2d

SETTING = Setting("a cube", n_particles=8, steps=500, seed=0)


@pytest.fixture(scope="module")
def reference():
    return prior_2d(SETTING)["reference_histogram"]


@pytest.mark.slow
def test_vsd_particles_spread_like_the_prior_and_its_lora_fits_them(tmp_path_factory, reference):
    out = tmp_path_factory.mktemp("study")
    vsd = run_2d(RULES_2D["vsd"], SETTING, out, reference)
    frozen = run_2d(BROKEN_2D["vsd-lora-lr0"], SETTING, out, reference)
    assert vsd["distinct_colours"] >= 4, vsd["colours"]
    assert vsd["lora_fit"] < 0.9, vsd
    assert frozen["lora_fit"] == pytest.approx(1.0, abs=1e-4), frozen
    assert vsd["tv_from_reference"] < 0.5, vsd

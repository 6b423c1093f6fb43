"""A non-finite prediction, weight or latent in a guidance step is never erased: the loss turns NaN/Inf and the
system's non-finite guard skips and reports the step (threestudio's nan_to_num would train on with a zero update)."""

import pytest
import torch

import launch
from framework.guidance.base import StableDiffusionGuidanceBase
from framework.guidance.diffusion import NoiseSchedule
from tests.test_guidance_sds import SDS, cameras
from tests.test_guidance_vsd import VSD, c2w_batch


@pytest.mark.parametrize("where", ["prediction", "weight", "latent"])
@pytest.mark.parametrize("kind", ["sds", "vsd"])
def test_a_nonfinite_value_makes_the_loss_nonfinite(tiny_sd, tiny_prompt_utils, monkeypatch, where, kind):
    cfg = {"pretrained_model_name_or_path": tiny_sd, "grad_clip": 1.0}
    g = SDS(cfg) if kind == "sds" else VSD({**cfg, "pretrained_model_name_or_path_lora": tiny_sd})
    latents = torch.randn(2, 4, 16, 16)
    if where == "prediction":
        original = StableDiffusionGuidanceBase.pretrained_predictions

        def nan_eps(self, step):
            original(self, step)
            step.eps_cfg[1, 0, 0, 0] = float("nan")

        monkeypatch.setattr(StableDiffusionGuidanceBase, "pretrained_predictions", nan_eps)
    elif where == "weight":
        monkeypatch.setattr(NoiseSchedule, "weight",
                            lambda self, t, s, ndim: torch.full((t.shape[0], 1, 1, 1), float("inf")))
    else:
        latents[0, 1, 2, 3] = float("nan")
    latents.requires_grad_(True)
    out = g(latents, tiny_prompt_utils, **cameras(), c2w=c2w_batch(), rgb_as_latents=True)
    loss = out[f"loss_{kind}"]
    assert not torch.isfinite(loss) and not torch.isfinite(out["grad_norm"])


def test_a_nan_prediction_is_a_skipped_and_reported_step_of_a_run(tiny_sd, tiny_embedding_cache, tmp_path, monkeypatch,
                                                                  capsys):
    original = StableDiffusionGuidanceBase.pretrained_predictions

    def nan_at_step_1(self, step):
        original(self, step)
        if self.global_step == 1:
            step.eps_text = step.eps_text * float("nan")
            step.eps_cfg = step.eps_cfg * float("nan")

    monkeypatch.setattr(StableDiffusionGuidanceBase, "pretrained_predictions", nan_at_step_1)
    argv = ["--config", "sds-image.yaml", "--train", f"exp_root_dir={tmp_path}", "use_timestamp=false", "tag=nan",
            "trainer.max_steps=3", "trainer.val_check_interval=3", "trainer.enable_progress_bar=false",
            f"system.prompt_processor.pretrained_model_name_or_path={tiny_sd}", "system.prompt_processor.prompt=a cat",
            f"system.prompt_processor.cache_dir={tiny_embedding_cache}",
            f"system.guidance.pretrained_model_name_or_path={tiny_sd}",
            "system.height=32", "system.width=32", "system.n_particles=2"]
    assert launch.main(argv) == 0
    err = capsys.readouterr().err
    skipped = [line for line in err.splitlines() if line.startswith("warning: step")]
    assert len(skipped) == 1 and skipped[0].startswith("warning: step 1 skipped"), err
    assert "loss_sds is NaN" in skipped[0]

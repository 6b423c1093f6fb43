"""Every recipe in configs/ trains two steps, validates and tests on CPU with the tiny model and small sizes.

The recipes' own values are kept; only model paths and sizes are overridden, so that no recipe can rot. A recipe that
starts from an earlier stage (``geometry_convert_from: ???``) converts the checkpoint of a two-step run of that stage.
"""

from pathlib import Path

import pytest
import torch

import launch
from framework.experiment import CONFIG_DIR
from tests.fixtures.stage_runs import convert_from

RECIPES = sorted(str(p.relative_to(CONFIG_DIR)) for p in CONFIG_DIR.rglob("*.yaml"))

SMALL_3D = [
    "data.height=16", "data.width=16", "data.batch_size=1", "data.eval_height=16", "data.eval_width=16",
    "data.n_val_views=1", "data.n_test_views=2",
    "system.renderer.num_samples_per_ray=8", "system.renderer.eval_chunk_size=4096",
    "system.geometry.pos_encoding_config.n_levels=4", "system.geometry.pos_encoding_config.log2_hashmap_size=10",
]
SMALL_IMAGE = ["system.height=32", "system.width=32", "system.n_particles=2"]


SMALL_MESH = [  # the rasterizer has no samples; a coarse grid and a small texture field (its levels kept, as
    # lab.small_recipes keeps them for the stage-1 checkpoint a stage may inherit its texture from)
    "data.height=16", "data.width=16", "data.batch_size=1", "data.eval_height=16", "data.eval_width=16",
    "data.n_val_views=1", "data.n_test_views=2", "system.geometry.isosurface_resolution=32",
    "system.geometry.pos_encoding_config.log2_hashmap_size=10",
]
def overrides_for(recipe: str, tiny_sd: str, tiny_sd_v: str, cache: Path, root: Path):
    text = (CONFIG_DIR / recipe).read_text()
    common = [
        f"exp_root_dir={root}", "use_timestamp=false", "tag=smoke",
        "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.log_every_n_steps=1",
        "checkpoint.every_n_train_steps=2",
    ]
    if "prompt_processor" not in text:
        return common + ["data.height=16", "data.width=16", "data.n_test_views=2"]
    sizes = SMALL_IMAGE if "text-to-image-system" in text else SMALL_MESH if "nvdiff-rasterizer" in text else SMALL_3D
    if recipe.startswith("toy/"):  # the committed toy prior (load/toy-sd), which the recipe names itself
        return common + ["system.prompt_processor.prompt=a red cube", f"system.prompt_processor.cache_dir={cache}",
                         *sizes]
    models = [
        f"system.prompt_processor.pretrained_model_name_or_path={tiny_sd}",
        "system.prompt_processor.prompt=a photo of a cat",
        f"system.prompt_processor.cache_dir={cache}",
        f"system.guidance.pretrained_model_name_or_path={tiny_sd}",
    ]
    if "pretrained_model_name_or_path_lora" in text and "${system.guidance" not in text:
        models.append(f"system.guidance.pretrained_model_name_or_path_lora={tiny_sd_v}")
    return common + models + sizes


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_trains_validates_and_tests(
    recipe, tiny_sd, tiny_sd_v, tiny_embedding_cache, stage_checkpoint, tmp_path, monkeypatch
):
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)  # recipes name repository paths (load/toy-sd)
    argv = ["--config", recipe, "--train", *overrides_for(recipe, tiny_sd, tiny_sd_v, tiny_embedding_cache, tmp_path)]
    argv += convert_from(recipe, stage_checkpoint)
    assert launch.main(argv) == 0
    (trial,) = [p for p in tmp_path.rglob("smoke") if p.is_dir()]
    ckpt = torch.load(trial / "ckpts" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert list((trial / "save").glob("it2-val/*.png"))
    assert list((trial / "save").glob("it2-test*"))
    assert list((trial / "save").rglob("*.mp4"))

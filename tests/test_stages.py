"""ProlificDreamer's stages in prolificdreamer-system: what each renders, guides and regularises, which parameters it
trains, and the chain through launch.py with tiny models (stage 3 keeps stage 2's surface exactly)."""

import pytest
import torch

import launch
import systems  # noqa: F401
from framework import registry
from framework.builtin import import_builtin_modules
from framework.errors import ConfigError, UserError
from framework.utils.seeding import generator

import_builtin_modules()

SMALL_GRID = {"n_levels": 4, "log2_hashmap_size": 10, "backend": "torch"}


def stage_system(stage, tiny_sd, tiny_sd_v, cache, resumed=False, **extra):
    vsd = stage != "geometry"
    cfg = {
        "stage": stage,
        "geometry_type": "tetrahedra-sdf-grid",
        "geometry": {"isosurface_resolution": 16, "shape_init": "sphere", "shape_init_params": 0.5,
                     "pos_encoding_config": SMALL_GRID, "geometry_only": stage == "geometry",
                     "fix_geometry": stage == "texture"},
        "material": {"n_output_dims": 0 if stage == "geometry" else 3},
        "background_type": "solid-color-background",
        "renderer_type": "nvdiff-rasterizer",
        "prompt_processor": {"pretrained_model_name_or_path": tiny_sd, "prompt": "a photo of a cat",
                             "cache_dir": str(cache)},
        "guidance_type": "stable-diffusion-vsd-guidance" if vsd else "stable-diffusion-guidance",
        "guidance": {"pretrained_model_name_or_path": tiny_sd,
                     **({"pretrained_model_name_or_path_lora": tiny_sd_v} if vsd else {})},
        "loss": ({"lambda_vsd": 1.0, "lambda_lora": 1.0} if vsd else
                 {"lambda_sds": 1.0, "lambda_normal_consistency": 10.0, "lambda_laplacian_smoothness": 10.0}),
        "optimizer": {"name": "Adam", "args": {"lr": 0.01}},
    }
    cfg.update(extra)
    return registry.find("system", "prolificdreamer-system")(cfg, seed=0, resumed=resumed)


def a_batch(step=0):
    dm = registry.find("data", "random-camera-datamodule")({"height": 16, "width": 16, "batch_size": 1}, seed=0)
    return dm.sample_train(step, generator(0, 0, step))


def test_geometry_stage_guides_on_the_normal_map_and_trains_the_surface(tiny_sd, tiny_sd_v, tiny_embedding_cache):
    system = stage_system("geometry", tiny_sd, tiny_sd_v, tiny_embedding_cache)
    seen = {}
    forward = system.guidance.forward

    def spy(image, *args, **kwargs):
        seen["image"] = image
        return forward(image, *args, **kwargs)

    system.guidance.forward = spy
    batch = a_batch()
    losses = system.training_losses(batch)
    assert set(k for k in losses if k.startswith("loss_")) == {"loss_sds", "loss_normal_consistency",
                                                              "loss_laplacian_smoothness"}
    with torch.no_grad():
        out = system.particles[0].renderer(**batch, render_rgb=False)
    assert torch.allclose(seen["image"], out["comp_normal"])  # the normal map, not a colour
    (losses["loss_sds"] + losses["loss_normal_consistency"] + losses["loss_laplacian_smoothness"]).backward()
    assert system.geometry.sdf.grad.abs().sum() > 0 and system.geometry.deformation.grad.abs().sum() > 0
    system.eval()
    assert [p.kind for p in system.validation_panels(a_batch(1))] == ["normal", "grayscale"]


def test_texture_stage_guides_on_colour_and_keeps_the_surface(tiny_sd, tiny_sd_v, tiny_embedding_cache):
    system = stage_system("texture", tiny_sd, tiny_sd_v, tiny_embedding_cache)
    trainable = {n for n, p in system.named_parameters() if p.requires_grad}
    assert not any(n.endswith(("sdf", "deformation")) for n in trainable)
    assert any("encoding" in n for n in trainable) and any(n.startswith("guidance.") for n in trainable)
    sdf = system.geometry.sdf.clone()
    opt = system.configure_optimizers()
    losses = system.training_losses(a_batch())
    assert set(k for k in losses if k.startswith("loss_")) == {"loss_vsd", "loss_lora"}
    (losses["loss_vsd"] + losses["loss_lora"]).backward()
    assert system.geometry.feature_network.layers[0].weight.grad.abs().sum() > 0
    opt.step()
    assert torch.equal(system.geometry.sdf, sdf)
    system.eval()
    assert [p.kind for p in system.validation_panels(a_batch(1))] == ["rgb", "normal", "grayscale"]


def test_a_weight_for_another_stages_loss_stops_at_the_first_step(tiny_sd, tiny_sd_v, tiny_embedding_cache):
    system = stage_system("texture", tiny_sd, tiny_sd_v, tiny_embedding_cache,
                          loss={"lambda_vsd": 1.0, "lambda_lora": 1.0, "lambda_normal_consistency": 10.0})
    losses = system.training_losses(a_batch())
    with pytest.raises(ConfigError, match="system.loss.lambda_normal_consistency: no loss_normal_consistency"):
        system._check_losses([k[5:] for k in losses if k.startswith("loss_")])


def test_geometry_stage_without_normals_says_what_to_use(tiny_sd, tiny_sd_v, tiny_embedding_cache):
    system = registry.find("system", "prolificdreamer-system")(
        {"stage": "geometry", "geometry": {"pos_encoding_config": SMALL_GRID},
         "renderer": {"num_samples_per_ray": 8},
         "prompt_processor": {"pretrained_model_name_or_path": tiny_sd, "prompt": "a cat",
                              "cache_dir": str(tiny_embedding_cache)},
         "guidance_type": "stable-diffusion-guidance", "guidance": {"pretrained_model_name_or_path": tiny_sd},
         "loss": {"lambda_sds": 1.0}}, seed=0)
    with pytest.raises(ConfigError, match="system.stage: 'geometry' distils the rendered normal map"):
        system.training_losses(a_batch())


def test_conversion_is_skipped_when_resuming(tiny_sd, tiny_sd_v, tiny_embedding_cache, tmp_path):
    missing = str(tmp_path / "gone" / "ckpts" / "last.ckpt")
    with pytest.raises(UserError, match="system.geometry_convert_from .* does not exist"):
        stage_system("texture", tiny_sd, tiny_sd_v, tiny_embedding_cache, geometry_convert_from=missing)
    system = stage_system("texture", tiny_sd, tiny_sd_v, tiny_embedding_cache, resumed=True,
                          geometry_convert_from=missing)
    assert system.geometry.sdf.abs().sum() > 0  # built from its config (shape_init), to be replaced by the checkpoint


def tiny_args(tiny_sd, tiny_sd_v, cache, root, tag):
    return [f"system.prompt_processor.pretrained_model_name_or_path={tiny_sd}", "system.prompt_processor.prompt=a cat",
            f"system.prompt_processor.cache_dir={cache}", f"system.guidance.pretrained_model_name_or_path={tiny_sd}",
            "data.height=16", "data.width=16", "data.eval_height=16", "data.eval_width=16", "data.n_val_views=1",
            "data.n_test_views=2", "trainer.max_steps=2", "trainer.val_check_interval=2",
            "checkpoint.every_n_train_steps=2", "system.geometry.pos_encoding_config.n_levels=4",
            "system.geometry.pos_encoding_config.log2_hashmap_size=10", f"exp_root_dir={root}",
            "use_timestamp=false", f"tag={tag}"]


def test_three_stages_chain_through_launch(tiny_sd, tiny_sd_v, tiny_embedding_cache, tmp_path, capsys):
    lora = f"system.guidance.pretrained_model_name_or_path_lora={tiny_sd_v}"
    args = lambda tag: tiny_args(tiny_sd, tiny_sd_v, tiny_embedding_cache, tmp_path, tag)  # noqa: E731
    assert launch.main(["--config", "prolificdreamer.yaml", "--train", lora, "system.renderer.num_samples_per_ray=8",
                        "system.geometry.density_blob_scale=40", *args("s1")]) == 0
    s1 = tmp_path / "prolificdreamer" / "s1" / "ckpts" / "last.ckpt"
    mesh_args = ["system.geometry.isosurface_resolution=32"]
    assert launch.main(["--config", "prolificdreamer-geometry.yaml", "--train", *mesh_args, *args("s2"),
                        f"system.geometry_convert_from={tmp_path}/prolificdreamer/sLAST/ckpts/last.ckpt"]) == 0
    s2 = tmp_path / "prolificdreamer-geometry" / "s2" / "ckpts" / "last.ckpt"
    assert launch.main(["--config", "prolificdreamer-texture.yaml", "--train", lora, *mesh_args, *args("s3"),
                        f"system.geometry_convert_from={s2}"]) == 0
    s3 = tmp_path / "prolificdreamer-texture" / "s3" / "ckpts" / "last.ckpt"
    state2 = torch.load(s2, weights_only=True)["state_dict"]
    state3 = torch.load(s3, weights_only=True)["state_dict"]
    for key in ("sdf", "deformation", "isosurface_bbox"):  # stage 3 trains on stage 2's surface, unchanged
        assert torch.equal(state3[f"particles.0.geometry.{key}"], state2[f"particles.0.geometry.{key}"]), key
    assert not any(k.startswith("particles.0.geometry.encoding") for k in state2)  # stage 2: geometry only
    assert any(k.startswith("particles.0.geometry.encoding") for k in state3)
    assert list((tmp_path / "prolificdreamer-texture" / "s3" / "save").glob("*.mp4"))
    # a stage-3 run tested from its checkpoint does not need the stage-2 checkpoint any more (no conversion)
    s2.rename(s2.with_name("moved.ckpt"))
    capsys.readouterr()
    assert launch.main(["--config", "prolificdreamer-texture.yaml", "--test", lora, *mesh_args, *args("s3-test"),
                        f"system.geometry_convert_from={s2}", f"resume={s3}"]) == 0
    assert s1.exists()


@pytest.mark.parametrize("source,words", [
    ("missing", "system.geometry_convert_from '{p}' does not exist"),
    ("image", "system.geometry_convert_from: '{p}' was written by image-fitting-system, which has no 3D geometry"),
])
def test_bad_conversion_sources_are_one_line(source, words, tiny_sd, tiny_sd_v, tiny_embedding_cache, tmp_path, capsys):
    if source == "missing":
        path = tmp_path / "nowhere" / "last.ckpt"
    else:
        assert launch.main(["--config", "image-fitting.yaml", "--train", "trainer.max_steps=1", "data.height=16",
                            "data.width=16", "data.n_test_views=2", f"exp_root_dir={tmp_path}", "use_timestamp=false",
                            "tag=img"]) == 0
        (path,) = (tmp_path).rglob("last.ckpt")
    capsys.readouterr()
    code = launch.main(["--config", "prolificdreamer-geometry.yaml", "--train",
                        *tiny_args(tiny_sd, tiny_sd_v, tiny_embedding_cache, tmp_path / "out", "bad"),
                        f"system.geometry_convert_from={path}"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert words.format(p=path) in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


def test_the_orientation_loss_without_normals_is_one_line_before_training(tiny_sd, tiny_sd_v, tiny_embedding_cache,
                                                                          tmp_path, capsys):
    """lambda_orient on (from step 50) where the NeRF computes no normals: refused by launch.py before any step."""
    capsys.readouterr()
    code = launch.main(["--config", "prolificdreamer.yaml", "--train", "system.loss.lambda_orient=[50,0.0,10.0,100]",
                        f"system.guidance.pretrained_model_name_or_path_lora={tiny_sd_v}",
                        *tiny_args(tiny_sd, tiny_sd_v, tiny_embedding_cache, tmp_path / "out", "orient")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert "system.loss.lambda_orient: the orientation loss needs normals" in lines[0], lines[0]
    assert "system.geometry.normal_type" in lines[0]
    assert not list((tmp_path / "out").rglob("*.ckpt"))


def test_the_orientation_loss_on_a_surface_renderer_is_refused(tiny_sd, tiny_sd_v, tiny_embedding_cache):
    with pytest.raises(ConfigError, match=r"^config error: system\.loss\.lambda_orient: .*nvdiff-rasterizer"):
        stage_system("coarse", tiny_sd, tiny_sd_v, tiny_embedding_cache,
                     loss={"lambda_vsd": 1.0, "lambda_lora": 1.0, "lambda_orient": 1.0})

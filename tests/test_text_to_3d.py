"""Text-to-3D systems: regularisers against hand-computed values, particles, parameter groups, export."""

import math

import pytest
import torch

import launch
import systems  # noqa: F401
from framework import registry
from framework.builtin import import_builtin_modules
from framework.utils.seeding import generator
from systems import regularizers

import_builtin_modules()


def test_regularizers_against_hand_computed_values():
    opacity = torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1)
    out = {"opacity": opacity, "z_variance": torch.tensor([5.0, 2.0, 4.0]).view(1, 3, 1, 1)}
    assert regularizers.sparsity(out).item() == pytest.approx((math.sqrt(0.01) + math.sqrt(0.26) + math.sqrt(1.01)) / 3)
    o = opacity.clamp(1e-3, 1 - 1e-3)
    h = -(o * o.log() + (1 - o) * (1 - o).log())
    assert regularizers.opaque(out).item() == pytest.approx(h.mean().item(), rel=1e-5)
    assert regularizers.z_variance(out).item() == pytest.approx(4.0)  # only the ray with opacity > 0.5
    # orient: a normal facing along the ray direction (away from the camera) is penalised by weight * dot^2
    o2 = {
        "normal": torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]]),
        "t_dirs": torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]),
        "weights": torch.tensor([[0.5], [0.5]]),
        "opacity": torch.tensor([1.0]),
    }
    assert regularizers.orient(o2).item() == pytest.approx(0.5)


def small_system(tiny_sd, tiny_sd_v, cache, n_particles, geometry=None, loss=None):
    cfg = {
        "n_particles": n_particles,
        "geometry": {"pos_encoding_config": {"n_levels": 4, "log2_hashmap_size": 10}},
        "renderer": {"num_samples_per_ray": 8},
        "prompt_processor": {"pretrained_model_name_or_path": tiny_sd, "prompt": "a photo of a cat",
                             "cache_dir": str(cache)},
        "guidance": {"pretrained_model_name_or_path": tiny_sd, "pretrained_model_name_or_path_lora": tiny_sd_v},
        "loss": {"lambda_vsd": 1.0, "lambda_lora": 1.0, "lambda_sparsity": 1.0},
        "optimizer": {"name": "AdamW", "args": {"lr": 0.01, "betas": [0.9, 0.99], "eps": 1e-15},
                      "params": {"geometry.encoding": {"lr": 0.01}, "background": {"lr": 0.001},
                                 "guidance": {"lr": 0.0001}}},
    }
    cfg["geometry"].update(geometry or {})
    cfg["loss"].update(loss or {})
    return registry.find("system", "prolificdreamer-system")(cfg, seed=0)


@pytest.mark.parametrize("normal_type", ["analytic", "finite_difference"])
def test_the_orientation_loss_gets_normals_without_a_material_that_needs_them(
    tiny_sd, tiny_sd_v, tiny_embedding_cache, normal_type
):
    """lambda_orient on, even as a schedule that starts at 0, with no-material (which needs no normals): every render
    carries per-sample normals, the loss is DreamFusion's and its gradient reaches the density field."""
    system = small_system(tiny_sd, tiny_sd_v, tiny_embedding_cache, 1, geometry={"normal_type": normal_type},
                          loss={"lambda_orient": [0, 0.0, 10.0, 100]})
    dm = registry.find("data", "random-camera-datamodule")({"height": 16, "width": 16, "batch_size": 1}, seed=0)
    batch = dm.sample_train(0, generator(0, 0, 0))
    out = system.particles[0].renderer(**batch)
    normal, dirs, weights = out["normal"], out["t_dirs"], out["weights"]
    assert normal.shape == dirs.shape and torch.allclose(normal.norm(dim=-1), torch.ones(len(normal)), atol=1e-4)
    # the loss from the samples, written out: weight * max(0, n . d)^2 summed, over the rays with any opacity
    facing_away = torch.einsum("ni,ni->n", normal, dirs).clamp_min(0.0) ** 2
    expected = (weights[:, 0].detach() * facing_away).sum() / (out["opacity"] > 0).sum()
    loss = regularizers.orient(out)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5) and loss.item() > 0
    loss.backward()
    grads = [p.grad for p in system.particles[0].geometry.encoding.parameters()]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    assert "loss_orient" in system.training_losses(batch)


def test_the_orientation_loss_off_computes_no_normals(tiny_sd, tiny_sd_v, tiny_embedding_cache):
    system = small_system(tiny_sd, tiny_sd_v, tiny_embedding_cache, 1, geometry={"normal_type": "analytic"},
                          loss={"lambda_orient": 0.0})
    dm = registry.find("data", "random-camera-datamodule")({"height": 16, "width": 16, "batch_size": 1}, seed=0)
    assert "normal" not in system.particles[0].renderer(**dm.sample_train(0, generator(0, 0, 0)))


def test_particles_share_one_unet_lora_and_take_turns(tiny_sd, tiny_sd_v, tiny_embedding_cache):
    system = small_system(tiny_sd, tiny_sd_v, tiny_embedding_cache, n_particles=2)
    opt = system.configure_optimizers()
    groups = {g["name"]: g for g in opt.param_groups}
    # a path of a scene part names that module in every particle
    enc = {id(p) for p in groups["geometry.encoding"]["params"]}
    for particle in system.particles:
        assert {id(p) for p in particle.geometry.encoding.parameters()} <= enc
    lora = {id(p) for p in system.guidance.parameters()}
    assert lora and lora == {id(p) for p in groups["guidance"]["params"]}
    dm = registry.find("data", "random-camera-datamodule")({"height": 16, "width": 16, "batch_size": 1}, seed=0)

    def snapshot(i):
        return [p.detach().clone() for p in system.particles[i].geometry.parameters()]

    for step in range(2):
        before = [snapshot(0), snapshot(1)]
        lora_before = [p.detach().clone() for p in system.guidance.parameters()]
        assert system.particle_of_step(step) == step % 2
        batch = dm.sample_train(step, generator(0, 0, step))
        out = system.particles[step % 2].renderer(**batch)
        losses = system.guidance(out["comp_rgb"], system.prompt_utils, **batch)
        opt.zero_grad(set_to_none=True)
        (losses["loss_vsd"] + losses["loss_lora"]).backward()
        opt.step()
        active, idle = step % 2, 1 - step % 2
        assert any(not torch.equal(a, b) for a, b in zip(before[active], snapshot(active)))
        assert all(torch.equal(a, b) for a, b in zip(before[idle], snapshot(idle)))
        assert any(not torch.equal(a, p) for a, p in zip(lora_before, system.guidance.parameters()))


def test_frozen_weights_stay_out_of_the_system_state(tiny_sd, tiny_sd_v, tiny_embedding_cache):
    system = small_system(tiny_sd, tiny_sd_v, tiny_embedding_cache, n_particles=1)
    keys = list(system.state_dict())
    guidance_keys = [k for k in keys if k.startswith("guidance.")]
    assert guidance_keys and all("lora" in k or "camera_embedding" in k for k in guidance_keys), guidance_keys
    n_guidance = sum(system.state_dict()[k].numel() for k in guidance_keys)
    n_unet = sum(p.numel() for p in system.guidance.models.unet.parameters())
    assert n_guidance < 0.2 * n_unet


def test_export_from_a_3d_checkpoint(tiny_sd, tiny_sd_v, tiny_embedding_cache, tmp_path):
    common = [
        f"system.prompt_processor.pretrained_model_name_or_path={tiny_sd}", "system.prompt_processor.prompt=a cat",
        f"system.prompt_processor.cache_dir={tiny_embedding_cache}", f"system.guidance.pretrained_model_name_or_path={tiny_sd}",
        f"system.guidance.pretrained_model_name_or_path_lora={tiny_sd_v}", "data.height=16", "data.width=16",
        "data.eval_height=16", "data.eval_width=16", "data.n_test_views=2", "system.renderer.num_samples_per_ray=8", "system.exporter.fmt=[obj,ply]",
        "system.geometry.pos_encoding_config.n_levels=4", "system.geometry.pos_encoding_config.log2_hashmap_size=10", "system.geometry.isosurface_resolution=32",
        "system.geometry.isosurface_threshold=auto",
        f"exp_root_dir={tmp_path}", "use_timestamp=false",
    ]
    assert launch.main(["--config", "vsd.yaml", "--train", "trainer.max_steps=2", "tag=train", *common]) == 0
    ckpt = tmp_path / "prolificdreamer" / "train" / "ckpts" / "last.ckpt"
    assert launch.main(["--config", "vsd.yaml", "--export", f"resume={ckpt}", "tag=export", *common]) == 0
    files = sorted(p.name for p in (tmp_path / "prolificdreamer" / "export" / "save" / "it2-export").iterdir())
    assert any(f.endswith(".obj") for f in files) and any(f.endswith(".ply") for f in files), files


@pytest.mark.slow
def test_two_process_ddp_vsd_with_two_particles(tiny_sd, tiny_sd_v, tiny_embedding_cache, tmp_path):
    """--gpu 0,1 (CPU DDP here) with VSD and two particles: each step one particle gets gradients, the rest none."""
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    cmd = [
        sys.executable, "launch.py", "--config", "vsd.yaml", "--train", "--gpu", "0,1", "system.n_particles=2",
        "system.prompt_processor.prompt=a cat", f"system.prompt_processor.pretrained_model_name_or_path={tiny_sd}",
        f"system.prompt_processor.cache_dir={tiny_embedding_cache}", f"system.guidance.pretrained_model_name_or_path={tiny_sd}",
        f"system.guidance.pretrained_model_name_or_path_lora={tiny_sd_v}", "data.height=16", "data.width=16",
        "data.eval_height=16", "data.eval_width=16", "data.n_test_views=2", "system.renderer.num_samples_per_ray=8",
        "system.geometry.pos_encoding_config.n_levels=4", "system.geometry.pos_encoding_config.log2_hashmap_size=10",
        "trainer.max_steps=4", "trainer.val_check_interval=4", f"exp_root_dir={tmp_path}", "use_timestamp=false",
        "tag=ddp",
    ]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(tmp_path / "prolificdreamer" / "ddp" / "ckpts" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4
    assert any(k.startswith("particles.1.") for k in ckpt["state_dict"])


@pytest.mark.slow
def test_vsd_resume_is_exact(tiny_sd, tiny_sd_v, tiny_embedding_cache, tmp_path):
    """Occupancy-grid updates, camera dropout, LoRA timesteps: all drawn from the step, so resume is bit-exact."""
    common = [
        "--config", "vsd.yaml", "--train", "system.prompt_processor.prompt=a cat",
        f"system.prompt_processor.pretrained_model_name_or_path={tiny_sd}",
        f"system.prompt_processor.cache_dir={tiny_embedding_cache}", f"system.guidance.pretrained_model_name_or_path={tiny_sd}",
        f"system.guidance.pretrained_model_name_or_path_lora={tiny_sd_v}", "data.height=16", "data.width=16",
        "data.eval_height=16", "data.eval_width=16", "data.n_test_views=2", "system.renderer.num_samples_per_ray=16",
        "system.renderer.grid_update_interval=2", "system.geometry.pos_encoding_config.n_levels=4",
        "system.geometry.pos_encoding_config.log2_hashmap_size=10", "trainer.max_steps=6",
        "trainer.val_check_interval=6", "checkpoint.every_n_train_steps=3", f"exp_root_dir={tmp_path}",
        "use_timestamp=false",
    ]
    assert launch.main([*common, "tag=full"]) == 0
    mid = tmp_path / "prolificdreamer" / "full" / "ckpts" / "epoch=0-step=3.ckpt"
    assert launch.main([*common, "tag=resumed", f"resume={mid}"]) == 0
    a = torch.load(tmp_path / "prolificdreamer" / "full" / "ckpts" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "prolificdreamer" / "resumed" / "ckpts" / "last.ckpt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and any("lora" in k for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k

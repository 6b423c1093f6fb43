"""Step time and memory of ProlificDreamer's stages 2 and 3 (``configs/prolificdreamer-geometry.yaml`` and
``-texture.yaml`` as written, but for the models, and a sphere in place of a stage-1 checkpoint), for
``scripts/gpu_check.py``.

Each stage's system is built from its recipe, its DMTet grid started from ``shape_init: sphere`` (the surface a
conversion would give, without a stage-1 run), and trained ``steps`` steps the way ``BaseSystem.training_step``
does (render, guidance, regularisers, weighted sum, backward, optimizer step). Reported: milliseconds per step and
the peak GPU memory. ``dry_run`` shrinks renders, grid and texture field so that the function runs on a CPU.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch

Row = Tuple[str, str, str]

STAGES = (("geometry", "prolificdreamer-geometry.yaml"), ("texture", "prolificdreamer-texture.yaml"))
SMALL = ["data.height=16", "data.width=16", "system.geometry.isosurface_resolution=32",
         "system.geometry.pos_encoding_config.n_levels=4", "system.geometry.pos_encoding_config.log2_hashmap_size=10"]


def _to(batch: Dict[str, Any], device: torch.device) -> Dict[str, Any]:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def stage_step_rows(device: torch.device, base: str, lora: str, work: Path, steps: int, dry_run: bool) -> List[Row]:
    """``(section, check, value)`` rows: ms per training step and peak memory of stages 2 and 3."""
    import launch
    from framework import registry
    from framework.experiment import load_experiment
    from framework.utils.seeding import generator

    launch.import_modules()
    rows: List[Row] = []
    for stage, recipe in STAGES:
        overrides = [
            f"system.prompt_processor.pretrained_model_name_or_path={base}",
            "system.prompt_processor.prompt=a hamburger", f"system.prompt_processor.cache_dir={work / 'emb'}",
            f"system.guidance.pretrained_model_name_or_path={base}", "system.geometry_convert_from=null",
            "system.geometry.shape_init=sphere", "system.geometry.shape_init_params=0.5",
        ]
        if stage == "texture":
            overrides.append(f"system.guidance.pretrained_model_name_or_path_lora={lora}")
        if dry_run:
            overrides += SMALL
        exp, _, _ = load_experiment(recipe, overrides)
        datamodule = registry.find("data", exp.data_type)(exp.data, seed=0)
        system = registry.find("system", exp.system_type)(exp.system, seed=0).to(device)
        system.train()
        optimizer = system.configure_optimizers()
        optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer

        def step(i: int) -> None:
            system.update_step(0, i)
            batch = _to(datamodule.sample_train(i, generator(0, 0, i)), device)
            losses = system.training_losses(batch)
            total = sum(system.cfg.loss[f"lambda_{k[5:]}"](i) * v for k, v in losses.items() if k.startswith("loss_"))
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()

        step(0)  # warm-up: kernels, caches, the fixed mesh of stage 3
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        for i in range(1, steps + 1):
            step(i)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        ms = (time.perf_counter() - start) / steps * 1000
        size = f"{exp.data.height}x{exp.data.width}, grid {exp.system.geometry.isosurface_resolution}"
        rows.append(("stages", f"{recipe} ({size}): ms/step", f"{ms:.1f}"))
        peak = f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GB" if device.type == "cuda" else "n/a (cpu)"
        rows.append(("stages", f"{recipe}: peak memory", peak))
        system = optimizer = None  # free the models before the next stage
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows

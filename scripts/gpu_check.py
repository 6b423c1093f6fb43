"""The checks that need a GPU, as commands that print one table each (times below are estimates; not yet run).

    python scripts/gpu_check.py                          # renderer .. stages: about 8 minutes on an H200
    python scripts/gpu_check.py --sections recipes       # every recipe's peak memory: about 10 minutes
    python scripts/gpu_check.py --compile --sections compile   # torch.compile (reduce-overhead: CUDA graphs)
    python scripts/gpu_check.py --dry-run                # the same steps on CPU with the tiny model and small sizes

A command may run at most 10 minutes on a lent machine, so the recipes and compile sections are their own runs.
Sections (``SECTIONS``; each adds rows ``| section | check | value |``, printed as they come and as one table at the end;
``--json`` also writes them):

* ``renderer``: the CUDA path (nerfacc's occupancy-grid marching) against the PyTorch path on the same scenes
  (an analytic sphere with its closed-form opacity, the implicit-volume blob): differences and ms per render.
* ``rasterizer``: the mesh rasterizer, PyTorch on CUDA and nvdiffrast against the CPU (``lab/raster_checks.py``).
* ``guidance``: one training step (forward, backward, AdamW step of the scene and the LoRA) from a 64x64 render
  encoded at 512x512, SD 2.1-shaped models with random weights, fp16 frozen weights: SDS, VSD with a separate
  v-prediction ``unet_lora`` and VSD with one shared UNet, each speed switch on and off; ms per step and peak memory,
  both as ratios to SDS, against the targets (VSD <= 2.5x SDS, shared-mode memory <= 1.15x SDS).
* ``profile``: where the milliseconds of the default VSD steps go (``lab.guidance_bench.profile_breakdown``: host and
  device time per phase and component: PEFT wrappers, dtype casts, LoRA matmuls, camera embedding, adapter
  switching, optimizer step); for the shared layout also single UNet calls without instrumentation, among them the
  LoRA training pass folded into the batched call against the two calls the step makes.
* ``training``: ``configs/vsd.yaml`` at 64x64 (the full recipe otherwise) for ``--train-steps`` steps, switches off
  (the defaults) and on: steps per second in the training loop (against 3.2 measured before the switches) and peak
  memory, each run in its own process.
* ``recipes``: the peak GPU memory of every real-model recipe in configs/ (the figure each YAML header states), each
  3D recipe at each of its training resolutions (``prolificdreamer.yaml`` at 64x64 and 512x512, ...), SD 1.5-shaped
  models for SD 1.5 recipes; three training steps, a validation and a one-view test each, in its own process (about
  40 s each: run this section on its own, ``--sections recipes``, or pick files with ``--recipes``).
* ``stages``: a training step of ``prolificdreamer-geometry.yaml`` and ``prolificdreamer-texture.yaml`` as written
  (512x512, DMTet grid 128) from a sphere: ms per step and peak memory (``lab/stage_checks.py``).
* ``compile`` (with ``--compile``): the guidance step and the vsd.yaml training loop with ``compile_unets:
  reduce-overhead`` against eager, and the compile time.

Peak memory is ``torch.cuda.max_memory_allocated`` (what PyTorch allocated; the card also holds the CUDA context
and the allocator's cache: ``reserved`` is printed beside it for the recipes).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

Row = Tuple[str, str, str]
BASELINE_STEPS_PER_S = 3.2  # configs/vsd.yaml at 64x64 on an H200 before the speed switches (docs/benchmarks.md)
TARGET_STEP_RATIO = 2.5
TARGET_MEMORY_RATIO = 1.15
LEVERS_ON = {"lora_half_precision": True, "enable_channels_last_format": True}
"""The speed switches the 'on' rows turn on (compile_unets has its own section)."""


@dataclass
class Context:
    """What every section gets: the device, sizes, the model folders (built on first use) and the row sink."""

    device: torch.device
    dry_run: bool
    work: Path
    args: argparse.Namespace
    rows: List[Row] = field(default_factory=list)
    _models: Dict[str, str] = field(default_factory=dict)

    def emit(self, section: str, check: str, value: str) -> None:
        self.rows.append((section, check, value))
        print(f"| {section} | {check} | {value} |", flush=True)
        if self.args.json:
            Path(self.args.json).write_text(json.dumps(self.rows, indent=1) + "\n")

    def model(self, name: str) -> str:
        """Folder of ``sd21-base`` (eps, 512), ``sd21-v`` (v-prediction, 768) or ``sd15`` (eps, 512); tiny on CPU."""
        if name not in self._models:
            t0 = time.perf_counter()
            if self.dry_run:
                from lab.models.tiny_sd import build_tiny_sd

                kind = "v_prediction" if name == "sd21-v" else "epsilon"
                path = build_tiny_sd(self.work / name, kind, 1 if name == "sd21-v" else 0)
            else:
                from lab.models.sd21_shaped import build_sd21_shaped

                kind, size, version = {"sd21-base": ("epsilon", 64, "2.1"), "sd21-v": ("v_prediction", 96, "2.1"),
                                       "sd15": ("epsilon", 64, "1.5")}[name]
                path = build_sd21_shaped(self.work / name, kind, sample_size=size, seed=len(self._models),
                                         version=version)
            self._models[name] = str(path)
            print(f"[model {name}] built in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        return self._models[name]


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device: torch.device) -> Optional[float]:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _gb(value: Optional[float]) -> str:
    return "n/a (cpu)" if value is None else f"{value:.2f} GB"


# --------------------------------------------------------------------------------------------------- renderer
def renderer_section(ctx: Context) -> None:
    from lab.render_checks import agreement_report

    kwargs: Dict[str, Any] = {}
    if ctx.dry_run:
        kwargs = dict(resolution=16, num_samples_per_ray=32, samplers=("torch", "torch"),
                      blob_config={"pos_encoding_config": {"backend": "torch", "n_levels": 4, "log2_hashmap_size": 10}})
    for scene, metrics in agreement_report(ctx.device.type, **kwargs).items():
        for key, value in sorted(metrics.items()):
            ctx.emit("renderer", f"{scene}: {key}", f"{value:.4g}")


def rasterizer_section(ctx: Context) -> None:
    from lab.raster_checks import gpu_check_rows  # nvdiff-rasterizer's back ends compared (docs/mesh.md)

    for row in gpu_check_rows(ctx.device.type, ctx.dry_run):
        ctx.emit(*row)


def stages_section(ctx: Context) -> None:
    from lab.stage_checks import stage_step_rows  # ProlificDreamer's stages 2 and 3 (docs/mesh.md)

    steps = 1 if ctx.dry_run else 10
    for row in stage_step_rows(ctx.device, ctx.model("sd21-base"), ctx.model("sd21-v"), ctx.work, steps, ctx.dry_run):
        ctx.emit(*row)


# --------------------------------------------------------------------------------------------------- guidance
def guidance_cases(ctx: Context) -> List[Tuple[str, str, Dict[str, Any]]]:
    """(name, guidance, config) of every guidance row; the first is SDS (the ratios' denominator)."""
    base, lora = ctx.model("sd21-base"), ctx.model("sd21-v")
    vsd = "stable-diffusion-vsd-guidance"
    sep = {"pretrained_model_name_or_path": base, "pretrained_model_name_or_path_lora": lora}
    shared = {"pretrained_model_name_or_path": base, "pretrained_model_name_or_path_lora": base}
    cases = [
        ("SDS (CFG 100)", "stable-diffusion-guidance", {"pretrained_model_name_or_path": base, "guidance_scale": 100.0}),
        ("SDS, channels-last", "stable-diffusion-guidance",
         {"pretrained_model_name_or_path": base, "guidance_scale": 100.0, "enable_channels_last_format": True}),
        ("VSD separate (defaults)", vsd, sep),
        ("VSD separate, lora_half_precision", vsd, {**sep, "lora_half_precision": True}),
        ("VSD separate, channels-last", vsd, {**sep, "enable_channels_last_format": True}),
        ("VSD separate, switches on", vsd, {**sep, **LEVERS_ON}),
        ("VSD shared (defaults)", vsd, shared),
        ("VSD shared, unbatched (batch_shared_unet_calls off)", vsd, {**shared, "batch_shared_unet_calls": False}),
        ("VSD shared, lora_half_precision", vsd, {**shared, "lora_half_precision": True}),
        ("VSD shared, switches on", vsd, {**shared, **LEVERS_ON}),
        ("VSD shared, LoRA on estimate", vsd, {**shared, "lora_train_on_estimate": True}),
        # the optimizer: fused AdamW is what a config gets by default; PyTorch's own CUDA default is foreach
        ("VSD shared, AdamW foreach (fused off)", vsd, {**shared, "optimizer": {"foreach": True}}),
    ]
    return cases


def run_guidance_case(ctx: Context, kind: str, cfg: Dict[str, Any], steps: int, warmup: int) -> Tuple[float, Any]:
    """(ms per step, peak GB) of one guidance configuration; its models are freed afterwards."""
    from lab.guidance_bench import build_case, time_steps

    res = 16 if ctx.dry_run else 64
    case = build_case(kind, cfg, ctx.device, render_size=res)
    for _ in range(warmup):
        case.step()
    _peak_reset(ctx.device)
    times = time_steps(case, steps, 0)
    peak = _peak_gb(ctx.device)
    del case
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()
    return 1000 * statistics.median(times), peak


def guidance_section(ctx: Context) -> None:
    steps, warmup = (1, 1) if ctx.dry_run else (ctx.args.guidance_steps, 3)
    sds_ms = sds_peak = None
    results = {}
    for name, kind, cfg in guidance_cases(ctx):
        ms, peak = run_guidance_case(ctx, kind, cfg, steps, warmup)
        results[name] = (ms, peak)
        if sds_ms is None:
            sds_ms, sds_peak = ms, peak
        mem = _gb(peak) + (f" ({peak / sds_peak:.2f}x SDS)" if peak is not None else "")
        ctx.emit("guidance", f"{name}: ms/step (x SDS)", f"{ms:.1f} ({ms / sds_ms:.2f}x)")
        ctx.emit("guidance", f"{name}: peak memory", mem)
    for name in ("VSD separate (defaults)", "VSD shared (defaults)", "VSD separate, switches on",
                 "VSD shared, switches on"):
        ratio = results[name][0] / sds_ms
        ctx.emit("guidance", f"target: {name} <= {TARGET_STEP_RATIO}x SDS", f"{ratio:.2f}x "
                 + ("met" if ratio <= TARGET_STEP_RATIO else "missed"))
    for name in ("VSD shared (defaults)", "VSD shared, switches on"):
        peak = results[name][1]
        if peak is not None:
            ratio = peak / sds_peak
            ctx.emit("guidance", f"target: {name} memory <= {TARGET_MEMORY_RATIO}x SDS",
                     f"{ratio:.2f}x " + ("met" if ratio <= TARGET_MEMORY_RATIO else "missed"))


# ---------------------------------------------------------------------------------------------------- profile
def profile_section(ctx: Context) -> None:
    from lab.guidance_bench import COMPONENTS, PHASES, build_case, load_plain_unet, profile_breakdown, unet_call_costs

    base, lora = ctx.model("sd21-base"), ctx.model("sd21-v")
    steps = 1 if ctx.dry_run else 5
    names = {**PHASES, **COMPONENTS, "other": "other", "unet_other": "model layers"}
    for label, lora_path in (("VSD separate", lora), ("VSD shared", base)):
        cfg = {"pretrained_model_name_or_path": base, "pretrained_model_name_or_path_lora": lora_path}
        case = build_case("stable-diffusion-vsd-guidance", cfg, ctx.device, render_size=16 if ctx.dry_run else 64)
        result = profile_breakdown(case, steps, warmup=1 if ctx.dry_run else 2)
        ctx.emit("profile", f"{label}: step ms (plain / profiled)",
                 f"{result['step_ms']:.1f} / {result['profiled_step_ms']:.1f}")
        rows = sorted(result["table"].items(), key=lambda kv: -(kv[1]["device_ms"] + kv[1]["cpu_ms"]))
        for (phase, comp), v in rows:
            if v["cpu_ms"] < 0.01 * result["profiled_step_ms"] and v["device_ms"] < 0.01 * result["step_ms"]:
                continue
            ctx.emit("profile", f"{label}: {names[phase]} / {names[comp]}",
                     f"host {v['cpu_ms']:.2f} ms, device {v['device_ms']:.2f} ms")
        if label == "VSD shared":
            # single calls without instrumentation, among them the training pass folded into the batched call
            dtype = next(case.guidance.lora_model.unet.parameters()).dtype
            plain = load_plain_unet(base, ctx.device, dtype)
            for name, ms in unet_call_costs(case, plain, reps=1 if ctx.dry_run else 10):
                ctx.emit("profile", f"{label}: {name}", f"{ms:.2f} ms")
            del plain
        del case
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------- launch runs
SMALL_3D = ["data.height=16", "data.width=16", "data.eval_height=16", "data.eval_width=16",
            "system.renderer.num_samples_per_ray=16", "system.geometry.pos_encoding_config.n_levels=4",
            "system.geometry.pos_encoding_config.log2_hashmap_size=10"]
SMALL_IMAGE = ["system.height=32", "system.width=32", "system.n_particles=2"]


def run_recipe(ctx: Context, tag: str, recipe: str, overrides: List[str], steps: int) -> Dict[str, Any]:
    """Train ``recipe`` for ``steps`` (one validation at the end, a one-view test): status, steps/s, peak memory.

    On CUDA in its own process (so the peak is the run's own); in the dry run in this one.
    """
    argv = ["--config", recipe, "--train", f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}",
            f"exp_root_dir={ctx.work / 'outputs' / str(os.getpid())}", "use_timestamp=false", f"tag={tag}", *overrides]
    if ctx.device.type != "cuda":
        return recipe_worker(argv)
    cmd = [sys.executable, __file__, "--recipe-worker", json.dumps(argv)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=ctx.args.recipe_timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:150]
        return {"status": f"FAILED (exit {proc.returncode}): {tail}"}
    return json.loads(lines[-1])


def recipe_worker(argv: List[str]) -> Dict[str, Any]:
    """Run ``launch.main(argv)`` with a step timer; status, training-loop steps/s, wall seconds, peak memory."""
    import pytorch_lightning as pl

    import launch

    starts: List[float] = []

    class StepTimer(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            starts.append(time.perf_counter())

    original = pl.Trainer.__init__

    @functools.wraps(original)  # launch checks trainer keys against this signature
    def init(self, *a, callbacks=None, **k):
        original(self, *a, callbacks=[*(callbacks or []), StepTimer()], **k)

    pl.Trainer.__init__ = init
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    _peak_reset(device)
    t0 = time.perf_counter()
    try:
        code = launch.main(argv)
    finally:
        pl.Trainer.__init__ = original
    wall = time.perf_counter() - t0
    warm = min(5, max(len(starts) - 2, 0))  # steps after the first few (allocator, cudnn autotuning)
    loop = starts[warm:]
    steps_per_s = (len(loop) - 1) / (loop[-1] - loop[0]) if len(loop) > 1 else float("nan")
    out = {"status": "ok" if code == 0 else f"FAILED (exit {code})", "steps_per_s": steps_per_s, "wall_s": wall,
           "steps": len(starts)}
    if device.type == "cuda":
        out["peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
        out["reserved_gb"] = torch.cuda.max_memory_reserved() / 2**30
    return out


def model_overrides(ctx: Context, base: str, lora: Optional[str] = None) -> List[str]:
    out = [f"system.prompt_processor.pretrained_model_name_or_path={base}", "system.prompt_processor.prompt=a hamburger",
           f"system.prompt_processor.cache_dir={ctx.work / 'emb'}", f"system.guidance.pretrained_model_name_or_path={base}"]
    if lora:
        out.append(f"system.guidance.pretrained_model_name_or_path_lora={lora}")
    return out


def vsd64(ctx: Context) -> List[str]:
    """configs/vsd.yaml at 64x64 (ProlificDreamer's first stage) with the SD 2.1-shaped pair."""
    out = model_overrides(ctx, ctx.model("sd21-base"), ctx.model("sd21-v"))
    out += ["data.height=64", "data.width=64", "data.batch_size=1", "data.resolution_milestones=[]", "data.eval_height=64",
            "data.eval_width=64", "data.n_val_views=1", "data.n_test_views=1"]
    return out + (SMALL_3D if ctx.dry_run else [])


def training_section(ctx: Context) -> None:
    steps = 2 if ctx.dry_run else ctx.args.train_steps
    on = [f"system.guidance.{k}={str(v).lower()}" for k, v in LEVERS_ON.items()]
    results = {}
    for label, extra in (("switches off (defaults)", []), ("switches on", on)):
        r = run_recipe(ctx, f"train-{len(results)}", "vsd.yaml", vsd64(ctx) + extra, steps)
        results[label] = r
        ctx.emit("training", f"vsd.yaml 64x64, {label}: status", r["status"])
        if r["status"] == "ok":
            sps = r["steps_per_s"]
            ctx.emit("training", f"vsd.yaml 64x64, {label}: steps/s in the loop (x {BASELINE_STEPS_PER_S})",
                     f"{sps:.2f} ({sps / BASELINE_STEPS_PER_S:.2f}x)")
            ctx.emit("training", f"vsd.yaml 64x64, {label}: wall s (incl. loading, val, test)", f"{r['wall_s']:.1f}")
            ctx.emit("training", f"vsd.yaml 64x64, {label}: peak memory", _gb(r.get("peak_gb")))


# ----------------------------------------------------------------------------------------------- recipes
STAGE_RECIPES = {"prolificdreamer-geometry.yaml", "prolificdreamer-texture.yaml"}  # measured by the stages section


def _stages(value: Any) -> List[Any]:
    return list(value) if isinstance(value, list) else [value]


def recipe_runs(ctx: Context) -> List[Tuple[str, str, List[str]]]:
    """(label, recipe, overrides) for every real-model recipe in configs/ (not toy/, not the stage recipes): each
    3D recipe at each of its training resolutions, with SD-shaped models of its family in place of the Hub ids."""
    import yaml

    runs = []
    for path in sorted((REPO / "configs").glob("*.yaml")):
        if path.is_symlink() or path.name in STAGE_RECIPES:  # vsd.yaml is prolificdreamer.yaml
            continue
        if ctx.args.recipes and path.name not in ctx.args.recipes:
            continue
        cfg = yaml.safe_load(path.read_text())
        system = cfg.get("system") or {}
        if "prompt_processor" not in system:
            continue
        named = str(system["prompt_processor"].get("pretrained_model_name_or_path", ""))
        base = ctx.model("sd15" if "v1-5" in named else "sd21-base")
        lora_named = (system.get("guidance") or {}).get("pretrained_model_name_or_path_lora")
        lora = None
        if lora_named is not None and "${" not in str(lora_named):
            lora = base if lora_named == system["guidance"].get("pretrained_model_name_or_path") else ctx.model("sd21-v")
        overrides = model_overrides(ctx, base, lora)
        if cfg.get("system_type") == "text-to-image-system":
            runs.append((path.name, path.name, overrides + (SMALL_IMAGE if ctx.dry_run else [])))
            continue
        data = cfg.get("data") or {}
        heights, widths = _stages(data.get("height", 64)), _stages(data.get("width", 64))
        batches = _stages(data.get("batch_size", 1))
        seen = set()
        for i in range(max(len(heights), len(widths))):
            h, w = heights[min(i, len(heights) - 1)], widths[min(i, len(widths) - 1)]
            bs = batches[min(i, len(batches) - 1)]
            if (h, w, bs) in seen:
                continue
            seen.add((h, w, bs))
            stage = [f"data.height={h}", f"data.width={w}", f"data.batch_size={bs}", "data.resolution_milestones=[]",
                     "data.n_val_views=1", "data.n_test_views=1"]
            runs.append((f"{path.name} {w}x{h}", path.name, overrides + stage + (SMALL_3D if ctx.dry_run else [])))
    return runs


def recipes_section(ctx: Context) -> None:
    steps = 1 if ctx.dry_run else 3
    for i, (label, recipe, overrides) in enumerate(recipe_runs(ctx)):
        r = run_recipe(ctx, f"recipe-{i}", recipe, overrides, steps)
        if r["status"] != "ok":
            ctx.emit("recipes", f"{label}: status", r["status"])
            continue
        value = "n/a (cpu)" if "peak_gb" not in r else \
            f"{r['peak_gb']:.2f} GB allocated, {r['reserved_gb']:.2f} GB reserved"
        ctx.emit("recipes", f"{label}: peak memory", value)


# ----------------------------------------------------------------------------------------------- compile
def compile_section(ctx: Context) -> None:
    base = ctx.model("sd21-base")
    backend = "aot_eager" if ctx.dry_run else "inductor"
    shared = {"pretrained_model_name_or_path": base, "pretrained_model_name_or_path_lora": base}
    steps = 1 if ctx.dry_run else ctx.args.guidance_steps
    eager_ms, _ = run_guidance_case(ctx, "stable-diffusion-vsd-guidance", shared, steps, 1 if ctx.dry_run else 3)
    ctx.emit("compile", "VSD shared, eager: ms/step", f"{eager_ms:.1f}")
    t0 = time.perf_counter()
    cfg = {**shared, "compile_unets": "reduce-overhead", "compile_backend": backend}
    ms, peak = run_guidance_case(ctx, "stable-diffusion-vsd-guidance", cfg, steps, 3)
    ctx.emit("compile", "VSD shared, compile_unets reduce-overhead: ms/step (x eager)",
             f"{ms:.1f} ({ms / eager_ms:.2f}x)")
    ctx.emit("compile", "VSD shared, compile + 3 warm-up steps: seconds", f"{time.perf_counter() - t0:.0f}")
    ctx.emit("compile", "VSD shared, compiled: peak memory", _gb(peak))
    steps = 2 if ctx.dry_run else ctx.args.train_steps
    extra = ["system.guidance.compile_unets=reduce-overhead", f"system.guidance.compile_backend={backend}"]
    r = run_recipe(ctx, "train-compiled", "vsd.yaml", vsd64(ctx) + extra, steps)
    ctx.emit("compile", "vsd.yaml 64x64 compiled: status", r["status"])
    if r["status"] == "ok":
        ctx.emit("compile", f"vsd.yaml 64x64 compiled: steps/s in the loop (x {BASELINE_STEPS_PER_S})",
                 f"{r['steps_per_s']:.2f} ({r['steps_per_s'] / BASELINE_STEPS_PER_S:.2f}x)")


# One line per section (other checks add theirs here).
SECTIONS: List[Tuple[str, Callable[[Context], None]]] = [
    ("renderer", renderer_section),
    ("rasterizer", rasterizer_section),
    ("guidance", guidance_section),
    ("profile", profile_section),
    ("training", training_section),
    ("recipes", recipes_section),
    ("stages", stages_section),
    ("compile", compile_section),
]
DEFAULT_OFF = {"compile", "recipes"}  # sections that run only when asked for (--compile, --sections)


def print_table(rows: List[Row]) -> None:
    width = max([len(r[1]) for r in rows] + [5])
    print(f"\n| section | check{' ' * (width - 5)} | value |")
    print(f"|---|{'-' * (width + 2)}|---|")
    for section, check, value in rows:
        print(f"| {section} | {check:<{width}} | {value} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny model, small sizes (checks the script itself)")
    p.add_argument("--sections", nargs="*", choices=[s for s, _ in SECTIONS],
                   help="default: all but compile and recipes (each its own run: they take minutes)")
    p.add_argument("--skip", nargs="*", default=[], choices=[s for s, _ in SECTIONS])
    p.add_argument("--compile", action="store_true", help="also the compile section (several minutes of compiling)")
    p.add_argument("--guidance-steps", type=int, default=20)
    p.add_argument("--train-steps", type=int, default=60)
    p.add_argument("--recipe-timeout", type=int, default=300, help="seconds per launched run")
    p.add_argument("--recipes", nargs="*", default=[], help="recipes section: only these configs/ files (default all)")
    p.add_argument("--work-dir", default=None)
    p.add_argument("--json", default=None, help="also write the rows to this file (updated after every row)")
    p.add_argument("--recipe-worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.recipe_worker:
        print(json.dumps(recipe_worker(json.loads(args.recipe_worker))))
        return 0
    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device; run with --dry-run to check the script on CPU", file=sys.stderr)
        return 2
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="gpu_check_"))
    device = torch.device("cpu" if args.dry_run else "cuda")
    ctx = Context(device, args.dry_run, work, args)
    chosen = args.sections or [s for s, _ in SECTIONS if s not in DEFAULT_OFF or (s == "compile" and args.compile)]
    if args.recipes and "recipes" not in chosen:
        chosen.append("recipes")
    ctx.emit("device", "name", torch.cuda.get_device_name() if device.type == "cuda" else "cpu")
    ctx.emit("device", "torch", torch.__version__)
    for name, fn in SECTIONS:
        if name not in chosen or name in args.skip:
            continue
        start = time.perf_counter()
        try:
            fn(ctx)
        except Exception as e:  # report and go on: one failing section must not hide the others
            first = str(e).splitlines()[0][:120] if str(e) else ""
            ctx.emit(name, "FAILED", f"{type(e).__name__}: {first}")
        print(f"[{name}] {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    print_table(ctx.rows)
    return 0 if not any(r[1] == "FAILED" or r[2].startswith("FAILED") for r in ctx.rows) else 1


if __name__ == "__main__":
    sys.exit(main())

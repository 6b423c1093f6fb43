"""One guidance training step as the benchmarks and the GPU check time it, and the profile of where its time goes.

A :class:`GuidanceCase` is a guidance (SDS or VSD, any config) with a scene to train: a (1, S, S, 3) image tensor
encoded by the VAE as a render would be, optimised by AdamW together with the guidance's own parameters (VSD's LoRA
and camera embedding, the ``guidance`` group), one camera. ``step()`` is what a system's training step does with the
guidance: forward, sum of the ``loss_*`` outputs, backward, optimizer step.

:func:`profile_breakdown` runs steps under ``torch.profiler`` with labelled ranges (module hooks on the PEFT LoRA
layers and the camera embedding, wrappers around the guidance's phases) and attributes every profiled op's own time
to a phase (VAE encoding, the pretrained CFG pass, the LoRA estimate, the LoRA training forward, backward, optimizer
step, ...) and a component (the PEFT wrapper itself, its dtype casts, the LoRA matmuls, the base layers inside PEFT
layers, the camera embedding, the rest of the UNet). :func:`unet_call_costs` times the same UNet calls without any
instrumentation, one variant at a time, so that differences between rows are the costs of PEFT, the camera
embedding and adapter switching.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor
from torch.autograd.profiler import record_function

# Guidance configurations compared by the benchmarks (overrides on top of the model paths).
CONFIGS: Dict[str, Tuple[str, Dict[str, Any]]] = {
    "sds": ("stable-diffusion-guidance", {}),
    "vsd-separate": ("stable-diffusion-vsd-guidance", {"share_unet": False}),
    "vsd-shared": ("stable-diffusion-vsd-guidance", {}),
    "vsd-shared-estimate": ("stable-diffusion-vsd-guidance", {"lora_train_on_estimate": True}),
    "vsd-separate-estimate": ("stable-diffusion-vsd-guidance", {"share_unet": False, "lora_train_on_estimate": True}),
    # the speed switches, each against its default
    "vsd-shared-unbatched": ("stable-diffusion-vsd-guidance", {"batch_shared_unet_calls": False}),
    "sds-channels-last": ("stable-diffusion-guidance", {"enable_channels_last_format": True}),
    "vsd-separate-channels-last": ("stable-diffusion-vsd-guidance",
                                   {"share_unet": False, "enable_channels_last_format": True}),
    "vsd-shared-channels-last": ("stable-diffusion-vsd-guidance", {"enable_channels_last_format": True}),
    "vsd-shared-compiled": ("stable-diffusion-vsd-guidance", {"compile_unets": "default"}),
    "sds-compiled": ("stable-diffusion-guidance", {"compile_unets": "default"}),
    # ``optimizer``: arguments of the AdamW step instead of the guidance's (here PyTorch's per-tensor loop in place
    # of the fused step a config gets by default)
    "sds-loop-optimizer": ("stable-diffusion-guidance", {"optimizer": {"fused": False}}),
    "vsd-shared-loop-optimizer": ("stable-diffusion-vsd-guidance", {"optimizer": {"fused": False}}),
}
DEFAULT_CONFIGS = ["sds", "vsd-separate", "vsd-shared", "vsd-shared-unbatched", "vsd-shared-estimate",
                   "vsd-separate-estimate"]


def prepare_model(model: str, work_dir: Path) -> Path:
    """The model folder for ``model`` (``tiny``, or ``sd21``: SD 2.1's UNet and VAE configs with random weights,
    no text encoder), built under ``work_dir`` if it is not there yet."""
    import sys

    from lab.models.sd21_shaped import SD21_UNET, SD21_VAE
    from lab.models.tiny_sd import SD_SCHEDULER, build_tiny_sd

    out = Path(work_dir) / model
    if (out / "scheduler" / "scheduler_config.json").is_file():  # written last
        return out
    if model == "tiny":
        return build_tiny_sd(out)
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel

    print(f"building a random SD 2.1-shaped UNet and VAE in {out} (once; several GB)", file=sys.stderr)
    if not (out / "vae" / "config.json").is_file():
        torch.manual_seed(0)
        UNet2DConditionModel(**SD21_UNET).save_pretrained(str(out / "unet"))
        AutoencoderKL(**SD21_VAE).save_pretrained(str(out / "vae"))
    PNDMScheduler(prediction_type="epsilon", **SD_SCHEDULER).save_pretrained(str(out / "scheduler"))
    return out


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_prompt_utils(text_width: int, seed: int = 1):
    """Prompt-processor output with random embeddings of SD's text width (the guidance never runs the text encoder)."""
    from framework.prompt_processors.base import PromptProcessorOutput, view_directions

    g = torch.Generator().manual_seed(seed)
    directions = view_directions(45.0, 45.0, 60.0)
    emb = lambda n: torch.randn(n, 77, text_width, generator=g)  # noqa: E731
    return PromptProcessorOutput(emb(1), emb(1), emb(4), emb(4), directions, "p", "", ["p"] * 4)


@dataclass
class GuidanceCase:
    """A guidance, a scene image it trains and the optimizer of both; ``step()`` is one training step."""

    guidance: Any
    prompt_utils: Any
    scene: Tensor
    """(1, S, S, 3) in [0, 1], requires grad: the render."""
    optimizer: torch.optim.Optimizer
    batch: Dict[str, Tensor]
    device: torch.device
    extra: Dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of every guidance call (``t``, ``noise`` to fix the draws)."""

    def forward_loss(self) -> Tensor:
        out = self.guidance(self.scene, self.prompt_utils, **self.batch, **self.extra)
        return sum(v for k, v in out.items() if k.startswith("loss_"))

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.forward_loss()
        with record_function("backward"):
            loss.backward()
        with record_function("optimizer_step"):
            self.optimizer.step()


def build_case(
    kind: str,
    config: Dict[str, Any],
    device: torch.device,
    prompt_utils: Any = None,
    render_size: Optional[int] = None,
    seed: int = 0,
) -> GuidanceCase:
    """A :class:`GuidanceCase` for registry name ``kind`` with ``config``; the scene is ``render_size`` square
    (default: the guidance's working size, so nothing is resized). ``prompt_utils`` defaults to random embeddings.
    ``config["optimizer"]``, if present, holds AdamW arguments (e.g. ``{"fused": False}``) rather than the guidance's."""
    import framework.guidance  # noqa: F401  (registration)
    from framework import registry
    from framework.utils.seeding import seed_all
    from systems.optim import optimizer_arguments

    seed_all(seed)
    config = dict(config)
    optimizer_args = {"betas": (0.9, 0.99), "eps": 1e-15, **config.pop("optimizer", {})}
    guidance = registry.find("guidance", kind)(config).to(device)
    if prompt_utils is None:
        prompt_utils = random_prompt_utils(guidance.models.unet.config.cross_attention_dim)
    size = render_size or guidance.image_size
    scene = torch.rand(1, size, size, 3, device=device).requires_grad_(True)
    groups = [{"params": [scene], "lr": 1e-2, "name": "scene"}]
    if list(guidance.parameters()):
        groups.append({"params": list(guidance.parameters()), "lr": 1e-4, "name": "guidance"})
    # the arguments a config's optimizer gets (the fused step by default), so the benchmark times what a run does
    optimizer = torch.optim.AdamW(groups, **optimizer_arguments(torch.optim.AdamW, groups, optimizer_args))
    batch = dict(
        elevation=torch.tensor([15.0], device=device), azimuth=torch.tensor([30.0], device=device),
        camera_distances=torch.tensor([1.2], device=device), c2w=torch.eye(4, device=device)[None],
        mvp_mtx=torch.eye(4, device=device)[None],
    )
    return GuidanceCase(guidance, prompt_utils, scene, optimizer, batch, device)


def time_steps(case: GuidanceCase, steps: int, warmup: int) -> List[float]:
    """Seconds of each of ``steps`` training steps after ``warmup`` untimed ones (device synchronised)."""
    for _ in range(warmup):
        case.step()
    times = []
    for _ in range(steps):
        synchronize(case.device)
        t0 = time.perf_counter()
        case.step()
        synchronize(case.device)
        times.append(time.perf_counter() - t0)
    return times


# ------------------------------------------------------------------------------------------- the profile
PHASES = {
    "vae_encode": "VAE encode (forward)",
    "pretrained_cfg": "pretrained UNet, CFG pair",
    "lora_estimate": "LoRA UNet estimate (no grad)",
    "lora_train_forward": "LoRA UNet training forward",
    "lora_estimate_and_train": "LoRA UNet estimate + training forward",
    "batched_unet": "one batched UNet call (CFG pair + LoRA estimate)",
    "backward": "backward (scene and LoRA)",
    "optimizer_step": "optimizer step (AdamW)",
}
COMPONENTS = {
    "adapter_switch": "adapter switching, LoRA scaling",
    "camera_embedding": "camera embedding",
    "peft_layer": "PEFT wrapper (Python, add, scaling)",
    "peft_cast": "dtype casts in PEFT layers",
    "peft_lora": "LoRA matmuls (A, B)",
    "peft_base": "base projections in PEFT layers",
}
CAST_OPS = {"aten::to", "aten::_to_copy"}
GUIDANCE_METHODS = {  # method name -> phase label (only those the guidance has are wrapped)
    "encode_images": "vae_encode",
    "pretrained_predictions": "pretrained_cfg",
    "lora_eps": "lora_estimate",
    "lora_training_loss": "lora_train_forward",
    "_estimate_and_train": "lora_estimate_and_train",
}


class _Labels:
    """``record_function`` ranges opened by forward hooks and method wrappers; ``remove()`` undoes them all."""

    def __init__(self) -> None:
        self.undo: List[Callable[[], None]] = []

    def module(self, module: torch.nn.Module, label: str) -> None:
        stack: List[Any] = []

        def pre(mod, args):
            r = record_function(label)
            r.__enter__()
            stack.append(r)

        def post(mod, args, out):
            stack.pop().__exit__(None, None, None)

        handles = [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
        self.undo.append(lambda: [h.remove() for h in handles])

    def method(self, obj: Any, name: str, label: str, context: bool = False) -> None:
        if not hasattr(obj, name):
            return
        original = getattr(obj, name)
        if context:  # a context manager: label its entry and exit, not the body

            @contextlib.contextmanager
            def wrapped(*a, **k):
                cm = original(*a, **k)
                with record_function(label):
                    cm.__enter__()
                try:
                    yield
                finally:
                    with record_function(label):
                        cm.__exit__(None, None, None)
        else:

            def wrapped(*a, **k):
                with record_function(label):
                    return original(*a, **k)

        setattr(obj, name, wrapped)
        self.undo.append(lambda: delattr(obj, name) if name in vars(obj) else None)

    def remove(self) -> None:
        for fn in reversed(self.undo):
            fn()
        self.undo.clear()


def _label(case: GuidanceCase) -> _Labels:
    from peft.tuners.lora import LoraLayer

    labels = _Labels()
    g = case.guidance
    for name, phase in GUIDANCE_METHODS.items():
        labels.method(g, name, phase)
    if getattr(g, "batches_shared_calls", lambda: False)():
        labels.method(g, "predict", "batched_unet")
    if hasattr(g, "lora"):
        labels.method(g.lora, "disabled", "adapter_switch", context=True)
        labels.method(g.lora, "scaled", "adapter_switch", context=True)
        labels.module(g.camera_embedding, "camera_embedding")
    unets = [g.models.unet] + ([g.lora_model.unet] if hasattr(g, "lora_model") else [])
    seen = set()
    for unet in unets:
        if id(unet) in seen:
            continue
        seen.add(id(unet))
        for m in unet.modules():
            if isinstance(m, LoraLayer):
                labels.module(m, "peft_layer")
                labels.module(m.base_layer, "peft_base")
                for sub in list(m.lora_A.values()) + list(m.lora_B.values()):
                    labels.module(sub, "peft_lora")
    return labels


def profile_breakdown(case: GuidanceCase, steps: int, warmup: int = 1) -> Dict[str, Any]:
    """Profile ``steps`` training steps; per phase and component, milliseconds per step (host, and device on CUDA).

    Returns ``{"step_ms": wall ms per step without instrumentation, "profiled_step_ms": with it, "table":
    {(phase, component): {"cpu_ms": .., "device_ms": ..}}}``. Each profiled op's own (self) time goes to the nearest
    enclosing labelled phase and component; time outside any phase is "other", outside any component "UNet/other".
    """
    from torch.profiler import ProfilerActivity, profile

    plain = time_steps(case, steps, warmup)
    labels = _label(case)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if case.device.type == "cuda" else [])
    try:
        case.step()  # hooks warm
        with profile(activities=activities) as prof:
            synchronize(case.device)
            t0 = time.perf_counter()
            for _ in range(steps):
                with record_function("step"):
                    case.step()
            synchronize(case.device)
            profiled = (time.perf_counter() - t0) / steps
    finally:
        labels.remove()
    table: Dict[Tuple[str, str], Dict[str, float]] = defaultdict(lambda: {"cpu_ms": 0.0, "device_ms": 0.0})
    for e in prof.events():
        if e.name == "step":
            continue
        phase, comp, node, cast = "other", "", e, False
        while node is not None:
            if not comp and node.name in COMPONENTS:
                comp = node.name
            if not comp and node.name in CAST_OPS:
                cast = True
            if node.name in PHASES:
                phase = node.name
                break
            node = node.cpu_parent
        if comp == "peft_layer" and cast:
            comp = "peft_cast"
        cell = table[(phase, comp or "unet_other")]
        cell["cpu_ms"] += e.self_cpu_time_total / 1000 / steps
        cell["device_ms"] += getattr(e, "self_device_time_total", 0.0) / 1000 / steps
    return {"step_ms": 1000 * statistics.median(plain), "profiled_step_ms": 1000 * profiled, "table": dict(table)}


def format_breakdown(result: Dict[str, Any], device: bool = False) -> str:
    """The breakdown as a markdown table: rows phase / component, ms per step and share of the profiled total."""
    table = result["table"]
    total = sum(c["cpu_ms"] for c in table.values())
    names = {**PHASES, "other": "other (noise, loss, prompt, Python)", **COMPONENTS, "unet_other": "model layers"}
    lines = ["| phase | component | host ms/step | share |" + (" device ms/step |" if device else ""),
             "| --- | --- | ---: | ---: |" + (" ---: |" if device else "")]
    phases = list(PHASES) + ["other"]
    for phase in phases:
        rows = [(c, v) for (p, c), v in table.items() if p == phase]
        if not rows:
            continue
        ptotal = sum(v["cpu_ms"] for _, v in rows)
        dtotal = sum(v["device_ms"] for _, v in rows)
        lines.append(f"| **{names[phase]}** | all | **{ptotal:.1f}** | **{100 * ptotal / total:.2f}%** |"
                     + (f" {dtotal:.1f} |" if device else ""))
        for comp, v in sorted(rows, key=lambda r: -r[1]["cpu_ms"]):
            if len(rows) > 1 and v["cpu_ms"] >= 0.0005 * total:  # components of at least 0.05% of the step
                lines.append(f"| | {names[comp]} | {v['cpu_ms']:.1f} | {100 * v['cpu_ms'] / total:.2f}% |"
                             + (f" {v['device_ms']:.1f} |" if device else ""))
    lines.append(f"| total (profiled, host) | | {total:.1f} | 100% |" + (" |" if device else ""))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- uninstrumented costs
def _median_ms(fn: Callable[[], Any], reps: int, device: torch.device) -> float:
    fn()
    times = []
    for _ in range(reps):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def unet_call_costs(case: GuidanceCase, plain_unet: torch.nn.Module, reps: int) -> List[Tuple[str, float]]:
    """Milliseconds of single UNet calls at batch 1 (2 for the CFG pair) and of the step's small pieces.

    ``plain_unet`` is the same pretrained UNet without PEFT layers (loaded once more), on the case's device and dtype.
    Differences between rows are the costs of PEFT's wrappers, the LoRA update, the camera embedding and switching.
    """
    from framework.guidance.camera_embedding import camera_condition, class_embedding

    g, dev = case.guidance, case.device
    unet = g.lora_model.unet
    dtype = next(unet.parameters()).dtype
    h = g.image_size // g.vae_scale_factor
    torch.manual_seed(0)
    x = torch.randn(1, g.latent_channels, h, h, device=dev, dtype=dtype)
    t = torch.tensor([500], device=dev)
    text = case.prompt_utils.text_embeddings.to(dev, dtype)
    cam = camera_condition(g.cfg.camera_condition_type, case.batch["c2w"], case.batch["mvp_mtx"],
                           case.batch["elevation"], case.batch["azimuth"], case.batch["camera_distances"]).to(dev)

    def call(model, n=1, labels=None):
        return model(torch.cat([x] * n), torch.cat([t] * n), encoder_hidden_states=torch.cat([text] * n),
                     class_labels=labels).sample

    def lora_cam():
        with class_embedding(unet, g.camera_embedding):
            return call(unet, labels=cam)

    def lora_off():
        with g.lora.disabled():
            return call(unet)

    def switch():
        with g.lora.disabled():
            pass

    grad_out = {}

    def train_forward():
        with class_embedding(unet, g.camera_embedding):
            grad_out["y"] = call(unet, labels=cam)

    def train_backward():
        train_forward()
        grad_out["y"].float().square().mean().backward()

    def split_step():
        # the default shared step's UNet work: the batched call (CFG pair + LoRA estimate) without grad, then the
        # LoRA training pass (batch 1) with its backward
        with torch.no_grad(), class_embedding(unet, g.camera_embedding):
            call(unet, 3, labels=torch.cat([cam] * 3))
        train_backward()

    def folded_step():
        # the training pass folded into the batched call: one batch-4 call with grad, backward through its last row.
        # LoRA and camera run on every row here; a real fold would also gate them per row, so this is a lower bound
        with class_embedding(unet, g.camera_embedding):
            y = call(unet, 4, labels=torch.cat([cam] * 4))
        y[3:].float().square().mean().backward()

    rows = []
    with torch.no_grad():
        rows.append(("plain UNet (no PEFT), batch 1", _median_ms(lambda: call(plain_unet), reps, dev)))
        rows.append(("plain UNet (no PEFT), batch 2 (the CFG pair)", _median_ms(lambda: call(plain_unet, 2), reps, dev)))
        rows.append(("PEFT UNet, adapters off, batch 1", _median_ms(lora_off, reps, dev)))
        rows.append(("PEFT UNet, LoRA on, no camera, batch 1", _median_ms(lambda: call(unet), reps, dev)))
        rows.append(("PEFT UNet, LoRA on + camera embedding, batch 1", _median_ms(lora_cam, reps, dev)))
        rows.append(("adapter switch alone (disable + enable)", _median_ms(switch, reps, dev)))
        rows.append(("camera embedding alone", _median_ms(lambda: g.camera_embedding(cam), reps, dev)))
    rows.append(("LoRA + camera, batch 1, forward with grad", _median_ms(train_forward, reps, dev)))
    fb = _median_ms(train_backward, reps, dev)
    rows.append(("LoRA + camera, batch 1, its backward (forward+backward minus forward)", fb - rows[-1][1]))
    rows.append(("shared step's UNet work: batch 3 without grad + batch 1 with grad and backward",
                 _median_ms(split_step, reps, dev)))
    rows.append(("the same folded: one batch-4 call with grad, backward through one row (lower bound)",
                 _median_ms(folded_step, reps, dev)))
    case.optimizer.zero_grad(set_to_none=True)
    case.forward_loss().backward()
    rows.append(("AdamW step (scene, LoRA, camera embedding)", _median_ms(case.optimizer.step, reps, dev)))
    case.optimizer.zero_grad(set_to_none=True)
    return rows


def load_plain_unet(model_dir: str | Path, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """The UNet of ``model_dir`` as diffusers loads it (no PEFT layers), frozen, on ``device`` in ``dtype``."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(model_dir), subfolder="unet", torch_dtype=dtype)
    return unet.to(device).requires_grad_(False).eval()

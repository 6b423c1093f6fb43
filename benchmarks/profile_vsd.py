"""Where the milliseconds of one SDS / VSD training step go: a torch.profiler breakdown and uninstrumented UNet calls.

    python benchmarks/profile_vsd.py                                      # tiny model, SDS and both VSD layouts
    python benchmarks/profile_vsd.py --model sd21 --steps 2 --warmup 1    # SD 2.1-shaped UNet + VAE (minutes)
    python benchmarks/profile_vsd.py --configs vsd-shared --set lora_autocast=true

For each configuration (``lab.guidance_bench.CONFIGS``):

1. the step time without instrumentation (median of ``--steps``);
2. the breakdown (:func:`lab.guidance_bench.profile_breakdown`): every profiled op's own time attributed to the
   phase it ran in (VAE encoding, pretrained CFG pass, LoRA estimate, LoRA training forward, backward, optimizer
   step) and to the component inside it (PEFT's wrapper, its dtype casts, the LoRA matmuls, the base layers inside
   PEFT layers, the camera embedding, adapter switching, the other model layers). The hooks that label the ranges
   cost time themselves (the profiled step is slower than the plain one; both are printed);
3. for VSD, single UNet calls timed without instrumentation (:func:`lab.guidance_bench.unet_call_costs`): plain
   UNet against PEFT UNet with adapters off / on / with the camera embedding, the forward with grad and its
   backward, adapter switching, the camera embedding and the AdamW step alone; and the shared step's UNet work as
   it is done (a batch-3 call without grad, then the batch-1 training pass) against the training pass folded into
   the batched call (one batch-4 call with grad).

Models: ``tiny`` (``lab.models.tiny_sd``, 16x16 latents) and ``sd21`` (SD 2.1's UNet and VAE configs, random weights,
``--latent-size`` latents, default 16: 128x128 images). On CPU the frozen weights are fp32, so there are no dtype
casts to see; on CUDA they are fp16 and the casts and fp32 LoRA matmuls show up (``scripts/gpu_check.py`` runs this
profile there).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab.guidance_bench import (  # noqa: E402
    CONFIGS,
    build_case,
    format_breakdown,
    load_plain_unet,
    prepare_model,
    profile_breakdown,
    unet_call_costs,
)


def parse_value(text: str):
    import yaml

    return yaml.safe_load(text)


def profile_config(name: str, model: str, model_dir: Path, args) -> str:
    kind, overrides = CONFIGS[name]
    cfg = {"pretrained_model_name_or_path": str(model_dir), **overrides, **args.set}
    if kind.endswith("vsd-guidance"):
        cfg["pretrained_model_name_or_path_lora"] = str(model_dir)
    else:
        cfg = {k: v for k, v in cfg.items() if not k.startswith("lora_") and k != "share_unet"}
    if model == "sd21":
        cfg["image_size"] = args.latent_size * 8
    device = torch.device(args.device)
    case = build_case(kind, cfg, device)
    result = profile_breakdown(case, args.steps, args.warmup)
    if args.json:
        import json

        rows = [{"phase": ph, "component": c, **v} for (ph, c), v in result["table"].items()]
        record = {"model": model, "config": name, "step_ms": result["step_ms"],
                  "profiled_step_ms": result["profiled_step_ms"], "rows": rows}
        with open(args.json, "a") as f:
            f.write(json.dumps(record) + "\n")
    out = [f"### {model} / {name}" + (f" ({', '.join(f'{k}={v}' for k, v in args.set.items())})" if args.set else ""),
           "", f"step {result['step_ms']:.1f} ms without instrumentation, {result['profiled_step_ms']:.1f} ms profiled",
           "", format_breakdown(result, device=device.type == "cuda"), ""]
    if kind.endswith("vsd-guidance") and args.costs_reps:
        plain = load_plain_unet(model_dir, device, next(case.guidance.lora_model.unet.parameters()).dtype)
        rows = unet_call_costs(case, plain, args.costs_reps)
        out += ["| single call (no instrumentation) | ms |", "| --- | ---: |"]
        out += [f"| {label} | {ms:.2f} |" for label, ms in rows]
        out.append("")
        del plain
    del case
    gc.collect()
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=["tiny", "sd21"], default="tiny")
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=["sds", "vsd-separate", "vsd-shared"])
    p.add_argument("--steps", type=int, default=10, help="profiled (and plain timed) steps")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--costs-reps", type=int, default=10, help="repetitions of each single UNet call (0: skip)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--latent-size", type=int, default=16, help="latent side for sd21 (image = 8x)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="guidance config values for every VSD configuration (e.g. lora_autocast=true)")
    p.add_argument("--json", help="append each configuration's full breakdown to this file (one JSON per line)")
    p.add_argument("--work-dir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "bench_guidance"))
    args = p.parse_args(argv)
    args.set = dict((kv.split("=", 1)[0], parse_value(kv.split("=", 1)[1])) for kv in args.set)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    model_dir = prepare_model(args.model, Path(args.work_dir))
    print(f"torch {torch.__version__}, {args.threads} thread(s), device {args.device}, {args.steps} steps\n")
    for name in args.configs:
        print(profile_config(name, args.model, model_dir, args), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

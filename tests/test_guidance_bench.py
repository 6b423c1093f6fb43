"""The guidance benchmark and profile helpers (lab/guidance_bench.py) on the tiny model: they run, attribute time
to the phases a VSD step has, and leave the guidance as they found it."""

import json
import sys

import torch

from lab.guidance_bench import build_case, format_breakdown, load_plain_unet, profile_breakdown, unet_call_costs
from tests.conftest import REPO_ROOT


def case_for(tiny_sd, **cfg):
    return build_case("stable-diffusion-vsd-guidance", {"pretrained_model_name_or_path": tiny_sd,
                                                        "pretrained_model_name_or_path_lora": tiny_sd, **cfg},
                      torch.device("cpu"))


def hooks(module):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


def test_profile_attributes_every_phase_and_cleans_up(tiny_sd):
    case = case_for(tiny_sd, batch_shared_unet_calls=False)
    g = case.guidance
    before = hooks(g.lora_model.unet)
    result = profile_breakdown(case, steps=1, warmup=1)
    table = result["table"]
    phases = {p for p, _ in table}
    assert {"vae_encode", "pretrained_cfg", "lora_estimate", "lora_train_forward", "backward",
            "optimizer_step"} <= phases
    assert table[("pretrained_cfg", "adapter_switch")]["cpu_ms"] > 0  # the unbatched shared mode switches adapters
    assert table[("lora_train_forward", "peft_lora")]["cpu_ms"] > 0
    assert table[("lora_estimate", "camera_embedding")]["cpu_ms"] > 0
    assert "**LoRA UNet training forward**" in format_breakdown(result)
    assert hooks(g.lora_model.unet) == before  # every hook removed
    assert not {"pretrained_predictions", "lora_eps", "encode_images"} & set(vars(g))  # wrappers removed
    assert "disabled" not in vars(g.lora)


def test_profile_of_the_batched_call(tiny_sd):
    table = profile_breakdown(case_for(tiny_sd), steps=1, warmup=1)["table"]
    phases = {p for p, _ in table}
    assert "batched_unet" in phases and "lora_estimate" not in phases
    assert table[("batched_unet", "peft_lora")]["cpu_ms"] > 0  # the UNet call itself runs in the batched phase


def test_uninstrumented_call_costs(tiny_sd):
    case = case_for(tiny_sd)
    rows = dict(unet_call_costs(case, load_plain_unet(tiny_sd, torch.device("cpu"), torch.float32), reps=1))
    assert len(rows) == 12 and all(v == v for v in rows.values())
    assert rows["plain UNet (no PEFT), batch 1"] > 0


def test_bench_guidance_interleaved_runs(tmp_path, capsys):
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    import bench_guidance

    assert bench_guidance.main(["--interleaved", "--steps", "1", "--rounds", "1", "--warmup", "0", "--threads", "1",
                                "--configs", "sds", "vsd-shared", "--work-dir", str(tmp_path),
                                "--json", str(tmp_path / "rows.json")]) == 0
    out = capsys.readouterr().out
    assert "| tiny | sds |" in out and "| tiny | vsd-shared |" in out
    # the time from building each guidance to the end of its warm-up (compilation, with compile_unets)
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [r["config"] for r in rows] == ["sds", "vsd-shared"] and all(r["setup_s"] > 0 for r in rows)

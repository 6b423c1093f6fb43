"""A recipe shrunk to run on a CPU in seconds: model paths and sizes replaced, everything else kept.

``shrink`` works on a resolved config (a plain mapping) of any recipe: it finds the keys by what they are (every
``pretrained_model_name_or_path*`` under ``system``, the data module's sizes, the renderer's samples, the hash grid's
table), so a recipe or module added later is shrunk too. Stage structure is kept: a list of per-stage heights stays a
list of as many (small, distinct) heights, so resolution milestones still change the resolution.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, Optional

SMALL_SIDE = 16
"""Training and evaluation image side of a shrunk 3D recipe (more per stage: 16, 24, 32, ...)."""


def _stages(value: Any, first: int, step: int) -> Any:
    if isinstance(value, list):
        return [first + step * i for i in range(len(value))]
    return first


def shrink(
    container: Dict[str, Any],
    tiny_sd: str,
    tiny_sd_v: str,
    cache_dir: Path,
    root: Path,
    prompt: str = "a photo of a cat",
    repo_root: Optional[Path] = None,
) -> Dict[str, Any]:
    """A copy of the resolved ``container`` sized for a CPU test; output under ``root``, trial folder ``smoke``.

    Models that are not local folders of the repository (``load/toy-sd`` is kept) become the tiny offline models:
    ``tiny_sd`` for the pretrained model, ``tiny_sd_v`` for a VSD estimator's own
    ``pretrained_model_name_or_path_lora`` (one naming the same model as the guidance stays shared).
    """
    c = copy.deepcopy(container)
    c.update(exp_root_dir=str(root), use_timestamp=False, tag="smoke")
    data, system = c.get("data") or {}, c.get("system") or {}

    data_type = c.get("data_type", "")
    if data_type == "random-camera-datamodule":
        data["height"] = _stages(data.get("height", [64, 512]), SMALL_SIDE, 8)
        data["width"] = _stages(data.get("width", [64, 512]), SMALL_SIDE, 8)
        data["batch_size"] = _stages(data.get("batch_size", [1, 1]), 1, 0)
        data.update(eval_height=SMALL_SIDE, eval_width=SMALL_SIDE, n_val_views=1, n_test_views=2)
    elif data_type == "image-datamodule":
        data.update(height=16, width=16, n_test_views=2)
    elif "n_test_views" in data or data_type == "step-datamodule":
        data.update(n_val_views=1, n_test_views=2)

    if c.get("system_type") == "text-to-image-system":
        system.update(height=32, width=32, n_particles=2)
    renderer = system.get("renderer")
    if isinstance(renderer, dict):
        renderer.update(num_samples_per_ray=8, eval_chunk_size=4096)
    geometry = system.get("geometry")
    if isinstance(geometry, dict) and isinstance(geometry.get("pos_encoding_config"), dict):
        geometry["pos_encoding_config"]["log2_hashmap_size"] = 10

    processor = system.get("prompt_processor")
    if isinstance(processor, dict):
        processor["prompt"] = prompt
        processor["cache_dir"] = str(cache_dir)
    repo = Path(repo_root) if repo_root is not None else None
    chosen: Dict[str, str] = {}  # the same model named twice (a shared unet_lora) stays one model
    sections = [s for s in system.values() if isinstance(s, dict)]
    for lora in (False, True):
        for section in sections:
            for key, value in list(section.items()):
                if not key.startswith("pretrained_model_name_or_path") or not isinstance(value, str):
                    continue
                if key.endswith("_lora") != lora or (repo is not None and (repo / value).is_dir()):
                    continue  # the other pass, or a model committed to the repository (load/toy-sd)
                section[key] = chosen.setdefault(value, tiny_sd_v if lora else tiny_sd)
    c["data"], c["system"] = data, system
    return c


def overrides_between(before: Dict[str, Any], after: Dict[str, Any], prefix: str = "") -> list:
    """The ``key=value`` command-line overrides that turn the config ``before`` into ``after`` (changed leaves only;
    a list counts as one value). Values are written as JSON, which the launcher's YAML reader takes as written."""
    import json

    out = []
    for key, value in after.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        old = before.get(key, object()) if isinstance(before, dict) else object()
        if isinstance(value, dict) and isinstance(old, dict):
            out += overrides_between(old, value, dotted)
        elif value != old:
            out.append(f"{dotted}={json.dumps(value)}")
    return out

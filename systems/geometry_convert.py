"""Starting a stage from the geometry of an earlier run (threestudio's ``system.geometry_convert_from``).

``geometry_convert_from=<trial>/ckpts/last.ckpt`` names a checkpoint of an earlier text-to-3D run. Its geometry is
rebuilt from the trial's ``configs/parsed.yaml`` (updated with ``geometry_convert_override``, e.g. another
``isosurface_threshold``), loaded with the checkpoint's weights and step, and handed to this run's geometry type's
``create_from``: a stage-1 implicit volume becomes a ``tetrahedra-sdf-grid`` whose SDF is the volume's density level
at its isosurface threshold; a stage-2 grid becomes the stage-3 grid as it is. With
``geometry_convert_inherit_texture`` the earlier texture field (hash grid and feature network) comes along.

As in threestudio, ``LAST`` in the path stands for the newest trial folder whose name starts with what precedes it
(``outputs/toy-vsd/a_green_cone@LAST/ckpts/last.ckpt``), and nothing is converted when the run resumes from a
checkpoint or loads ``system.weights``: those weights replace the geometry anyway. With several particles, particle
``i`` starts from the earlier run's particle ``i``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Dict, List

import torch

from framework import registry
from framework.errors import ConfigError, UserError
from framework.utils.checkpoint import check_finite, load_checkpoint, load_state_into, state_dict_of

KEY = "system.geometry_convert_from"


def find_last_path(path: str) -> str:
    """``path`` with ``LAST`` replaced by the newest matching trial folder (threestudio's ``find_last_path``)."""
    if "LAST" not in path:
        return path
    head, tail = path.split("LAST", 1)
    folder, stem = os.path.split(head)
    base = Path(folder or ".")
    if not base.is_dir():
        raise UserError(f"{KEY}: '{path}': the folder {base} does not exist")
    names = sorted((p.name for p in base.iterdir() if p.name.startswith(stem)), reverse=True)
    for name in names:  # trial folders end in a timestamp: the newest sorts last
        candidate = str(base / name) + tail
        if os.path.exists(candidate):
            return candidate
    raise UserError(
        f"{KEY}: '{path}': no folder in {base} starting with '{stem}' holds '{tail.lstrip('/')}'; "
        "check the run's name and tag"
    )


def particle_states(state: Dict[str, torch.Tensor]) -> Dict[int, Dict[str, torch.Tensor]]:
    """The geometry weights of each particle of a text-to-3D checkpoint's state dict."""
    out: Dict[int, Dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        m = re.match(r"particles\.(\d+)\.geometry\.(.+)", key)
        if m:
            out.setdefault(int(m.group(1)), {})[m.group(2)] = value
    return out


def convert_geometries(cfg: Any, n_particles: int) -> List[torch.nn.Module]:
    """This run's geometries (one per particle) converted from the checkpoint ``cfg.geometry_convert_from``.

    ``cfg`` is the system's parsed config (``geometry_type``, ``geometry``, ``geometry_convert_*``).
    """
    from omegaconf import OmegaConf

    path = find_last_path(str(cfg.geometry_convert_from))
    data = load_checkpoint(path, KEY)
    trial_config = Path(path).resolve().parent.parent / "configs" / "parsed.yaml"
    if not trial_config.is_file():
        raise UserError(
            f"{KEY}: '{path}' is not inside a trial folder (no {trial_config} beside its ckpts/ folder); give "
            "<trial>/ckpts/last.ckpt of an earlier run"
        )
    try:
        previous = OmegaConf.to_container(OmegaConf.load(trial_config), resolve=True)
    except Exception as e:  # a damaged YAML file: name it
        raise UserError(f"{KEY}: cannot read {trial_config}: {str(e).splitlines()[0][:160]}") from None
    system_type = (data.get("framework") or {}).get("system_type") or previous.get("system_type")
    system = previous.get("system") or {}
    geometry_type = system.get("geometry_type")
    states = particle_states(state_dict_of(data, path, KEY))
    if not geometry_type or not states:
        raise UserError(
            f"{KEY}: '{path}' was written by {system_type or 'another program'}, which has no 3D geometry; give the "
            "checkpoint of a text-to-3D run (e.g. configs/prolificdreamer.yaml, stage coarse)"
        )
    if n_particles > len(states):
        raise ConfigError(
            f"config error: system.n_particles: {n_particles} particles, but '{path}' holds {len(states)}; "
            f"set system.n_particles to at most {len(states)}"
        )
    override = dict(cfg.geometry_convert_override or {})
    source_cfg = {**(system.get("geometry") or {}), **override}
    source_cls = registry.find("geometry", geometry_type, key=f"{KEY} (its geometry_type)")
    target_cls = registry.find("geometry", cfg.geometry_type, key="system.geometry_type")
    step = int(data.get("global_step", 0))
    epoch = int(data.get("epoch", 0))
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    geometries = []
    for i in range(n_particles):
        source = source_cls(source_cfg, prefix="system.geometry_convert_override")
        check_finite(states[i], path, KEY)
        load_state_into(source, states[i], path)
        source.update_step(epoch, step, on_load_weights=True)
        source.to(device).eval()
        geometry = target_cls.create_from(
            source,
            cfg.geometry,
            prefix="system.geometry",
            copy_net=cfg.geometry_convert_inherit_texture,
            copy_net_key="system.geometry_convert_inherit_texture",
        )
        geometries.append(geometry.cpu())
        del source
    return geometries


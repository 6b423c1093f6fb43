"""Prompt processing: text embeddings for a prompt and a negative prompt, view-dependent as threestudio does it.

A prompt processor encodes, once, the prompt, the negative prompt and one prompt per view direction
(``"<prompt>, side view"``, front, back, overhead, or the per-view prompts given in the config), caches the
embeddings on disk (safetensors, keyed by a hash of model and prompt) and frees its text encoder. Calling it returns
a :class:`PromptProcessorOutput`, which the guidance queries every step.

Stacking order, stated once for the project: :meth:`PromptProcessorOutput.get_text_embeddings` returns
``[cond; uncond]``: rows ``0..B-1`` are the prompt's embeddings and rows ``B..2B-1`` the negative prompt's
(threestudio's order; diffusers pipelines stack ``[uncond; cond]``). The guidance splits a UNet output made from it
with ``eps_text, eps_uncond = eps.chunk(2)``.

View directions (azimuth in degrees, shifted to [-180, 180); thresholds from the config; later rules win):
side by default; front if ``|azimuth| < front_threshold``; back if ``|azimuth| > 180 - back_threshold``; overhead if
``elevation > overhead_threshold``.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor

from framework.errors import ConfigError
from framework.module import BaseObject
from framework.utils.naming import text_hash

CACHE_TENSOR = "text_embedding"


def shift_azimuth_deg(azimuth: Tensor) -> Tensor:
    """Azimuth in degrees mapped to [-180, 180)."""
    return (azimuth + 180.0) % 360.0 - 180.0


@dataclass
class Direction:
    """One view direction: its name, how it rewrites the prompt, and which cameras it covers."""

    name: str
    """side, front, back, overhead (or 'all' without view-dependent prompting)."""
    prompt: Callable[[str], str]
    """Prompt of this view from the base prompt."""
    condition: Callable[[Tensor, Tensor, Tensor], Tensor]
    """(elevation, azimuth, distance) -> (B,) bool: cameras of this view."""


def view_directions(
    front_threshold: float, back_threshold: float, overhead_threshold: float, prefix_style: bool = False
) -> List[Direction]:
    """threestudio's four directions, in priority order (a later direction overrides an earlier one)."""

    def text(view: str, prefix: str) -> Callable[[str], str]:
        return (lambda s: f"{prefix} of {s}") if prefix_style else (lambda s: f"{s}, {view}")

    return [
        Direction("side", text("side view", "side view"), lambda e, a, d: torch.ones_like(e, dtype=torch.bool)),
        Direction(
            "front",
            text("front view", "front view"),
            lambda e, a, d: (shift_azimuth_deg(a) > -front_threshold) & (shift_azimuth_deg(a) < front_threshold),
        ),
        Direction(
            "back",
            text("back view", "backside view"),
            lambda e, a, d: (shift_azimuth_deg(a) > 180 - back_threshold)
            | (shift_azimuth_deg(a) < -180 + back_threshold),
        ),
        Direction("overhead", text("overhead view", "overhead view"), lambda e, a, d: e > overhead_threshold),
    ]


def single_direction() -> List[Direction]:
    """No view-dependent prompting: one direction covering every camera, prompt unchanged."""
    return [Direction("all", lambda s: s, lambda e, a, d: torch.ones_like(e, dtype=torch.bool))]


@dataclass
class PromptProcessorOutput:
    """Text embeddings of one prompt set; embeddings are (1 or V, N tokens, C) fp32."""

    text_embeddings: Tensor
    """(1, N, C) the prompt."""
    uncond_text_embeddings: Tensor
    """(1, N, C) the negative prompt."""
    text_embeddings_vd: Tensor
    """(V, N, C) the prompt of each direction."""
    uncond_text_embeddings_vd: Tensor
    """(V, N, C) the negative prompt of each direction."""
    directions: List[Direction]
    """The V view directions, in priority order."""
    prompt: str
    """The base prompt."""
    negative_prompt: str
    """The negative prompt."""
    prompts_vd: List[str]
    """The prompt of each direction."""
    _on_device: Dict[str, Dict[str, Tensor]] = field(default_factory=dict, repr=False)

    def _tensors(self, device: torch.device) -> Dict[str, Tensor]:
        key = str(device)
        if key not in self._on_device:
            names = ("text_embeddings", "uncond_text_embeddings", "text_embeddings_vd", "uncond_text_embeddings_vd")
            self._on_device[key] = {name: getattr(self, name).to(device) for name in names}
        return self._on_device[key]

    def direction_index(self, elevation: Tensor, azimuth: Tensor, camera_distances: Tensor) -> Tensor:
        """(B,) index into ``directions`` of each camera (the last direction whose condition holds)."""
        idx = torch.zeros_like(elevation, dtype=torch.long)
        for i, d in enumerate(self.directions):
            idx[d.condition(elevation, azimuth, camera_distances)] = i
        return idx

    def get_text_embeddings(
        self,
        elevation: Tensor,
        azimuth: Tensor,
        camera_distances: Tensor,
        view_dependent_prompting: bool = True,
    ) -> Tensor:
        """(2B, N, C) embeddings ``[cond; uncond]`` for cameras (B,) (degrees), on ``elevation``'s device.

        With ``view_dependent_prompting`` each camera gets its direction's prompt; otherwise the base prompt.
        """
        t = self._tensors(elevation.device)
        batch_size = elevation.shape[0]
        if view_dependent_prompting:
            idx = self.direction_index(elevation, azimuth, camera_distances)
            cond, uncond = t["text_embeddings_vd"][idx], t["uncond_text_embeddings_vd"][idx]
        else:
            cond = t["text_embeddings"].expand(batch_size, -1, -1)
            uncond = t["uncond_text_embeddings"].expand(batch_size, -1, -1)
        return torch.cat([cond, uncond], dim=0)


class PromptProcessor(BaseObject):
    """Base of the prompt processors: prompts, view directions, the embedding cache. Subclasses encode text."""

    @dataclass
    class Config:
        pretrained_model_name_or_path: str = "stabilityai/stable-diffusion-2-1-base"
        """Hub id or local diffusers folder whose tokenizer and text encoder embed the prompts."""
        prompt: str = "a hamburger"
        """The text to generate."""
        negative_prompt: str = ""
        """Text to steer away from (the unconditional branch of classifier-free guidance)."""
        prompt_front: Optional[str] = None
        """Prompt of front views; null: '<prompt>, front view'."""
        prompt_side: Optional[str] = None
        """Prompt of side views; null: '<prompt>, side view'."""
        prompt_back: Optional[str] = None
        """Prompt of back views; null: '<prompt>, back view'."""
        prompt_overhead: Optional[str] = None
        """Prompt of overhead views; null: '<prompt>, overhead view'."""
        front_threshold: float = 45.0
        """Cameras with |azimuth| below this (degrees) are front views."""
        back_threshold: float = 45.0
        """Cameras with |azimuth| above 180 minus this (degrees) are back views."""
        overhead_threshold: float = 60.0
        """Cameras with elevation above this (degrees) are overhead views."""
        view_dependent_prompting: bool = True
        """Make per-view prompts; false: every view uses the base prompt."""
        view_dependent_prompt_front: bool = False
        """Write views as a prefix ('front view of <prompt>') instead of a suffix ('<prompt>, front view')."""
        use_cache: bool = True
        """Read and write embeddings in cache_dir, so the text encoder loads only for new prompts."""
        cache_dir: str = ".cache/text_embeddings"
        """Folder of the embedding cache (one safetensors file per model and prompt)."""

    cfg: Config

    def configure(self) -> None:
        cfg = self.cfg
        if not cfg.prompt.strip():
            raise ConfigError(f"{self.key('prompt')}: the prompt is empty; set it to the text to generate")
        if cfg.view_dependent_prompting:
            self.directions = view_directions(
                cfg.front_threshold, cfg.back_threshold, cfg.overhead_threshold, cfg.view_dependent_prompt_front
            )
        else:
            self.directions = single_direction()
        self.prompt = cfg.prompt
        self.negative_prompt = cfg.negative_prompt
        self.prompts_vd = [getattr(cfg, f"prompt_{d.name}", None) or d.prompt(self.prompt) for d in self.directions]
        self.negative_prompts_vd = [self.negative_prompt for _ in self.directions]
        emb = self.embeddings([self.prompt, self.negative_prompt, *self.prompts_vd, *self.negative_prompts_vd])
        self.output = PromptProcessorOutput(
            text_embeddings=emb[self.prompt][None],
            uncond_text_embeddings=emb[self.negative_prompt][None],
            text_embeddings_vd=torch.stack([emb[p] for p in self.prompts_vd]),
            uncond_text_embeddings_vd=torch.stack([emb[p] for p in self.negative_prompts_vd]),
            directions=self.directions,
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            prompts_vd=list(self.prompts_vd),
        )
        from framework.prompt_processors.vocabulary import warn_unknown_prompts

        warn_unknown_prompts(self)  # a model folder may list the prompts it knows (known_prompts.json)

    def __call__(self) -> PromptProcessorOutput:
        return self.output

    # ------------------------------------------------------------------------------------------- the cache
    def model_id(self) -> str:
        """The model part of a cache key: the resolved folder for a local model, the Hub id otherwise."""
        path = self.cfg.pretrained_model_name_or_path
        return os.path.realpath(path) if os.path.isdir(path) else path

    def cache_path(self, prompt: str) -> Path:
        """Cache file of ``prompt`` for this model: ``<cache_dir>/<sha256 of [model, prompt]>.safetensors``.

        The name is a hash (128 bits) of an unambiguous encoding of both texts, so a prompt never chooses the path
        and two prompts (or two models) never share a file; the file's metadata repeats both and is checked on read.
        """
        key = json.dumps([self.model_id(), prompt], ensure_ascii=False)
        return Path(self.cfg.cache_dir) / f"{text_hash(key, 32)}.safetensors"

    def _read_cache(self, prompt: str) -> Optional[Tensor]:
        """The cached embedding of ``prompt``, or None: missing, made for another model or prompt, or unreadable.

        Only safetensors is read. A file that is not one (a pickle put in its place, a broken file) is reported in
        one warning line and re-encoded.
        """
        from safetensors import SafetensorError, safe_open

        path = self.cache_path(prompt)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("model") != self.model_id() or meta.get("prompt") != prompt:
                    return None
                return f.get_tensor(CACHE_TENSOR)
        except (SafetensorError, OSError) as e:
            problem = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
            print(
                f"warning: text-embedding cache file {path} is not a readable safetensors file ({problem}); "
                "it is not used and is re-encoded",
                file=sys.stderr,
            )
            return None

    def _write_cache(self, prompt: str, embedding: Tensor) -> None:
        from safetensors.torch import save_file

        path = self.cache_path(prompt)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        save_file(
            {CACHE_TENSOR: embedding.contiguous()}, str(tmp), metadata={"model": self.model_id(), "prompt": prompt}
        )
        os.replace(tmp, path)

    def embeddings(self, prompts: Sequence[str]) -> Dict[str, Tensor]:
        """(N, C) fp32 CPU embedding of each distinct prompt, from the cache or encoded (then cached)."""
        out: Dict[str, Tensor] = {}
        todo: List[str] = []
        for p in dict.fromkeys(prompts):
            cached = self._read_cache(p) if self.cfg.use_cache else None
            if cached is None:
                todo.append(p)
            else:
                out[p] = cached
        if todo:
            encoded = self.encode_prompts(todo)
            for p, e in zip(todo, encoded):
                out[p] = e
                if self.cfg.use_cache:
                    self._write_cache(p, e)
        return out

    def encode_prompts(self, prompts: List[str]) -> Tensor:
        """(P, N, C) fp32 CPU embeddings of ``prompts``; loads the text encoder and frees it before returning."""
        raise NotImplementedError

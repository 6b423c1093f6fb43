"""``GuidedSystem``: a system distilled by a diffusion guidance from a prompt (the text-to-3D and text-to-image
systems). It owns the two modules both kinds share: the prompt processor and the guidance (a child module, so that a
VSD guidance's LoRA and camera embedding form the ``guidance`` parameter group and enter checkpoints).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from systems.base import BaseSystem


class GuidedSystem(BaseSystem):
    @dataclass
    class Config(BaseSystem.Config):
        guidance_type: str = "stable-diffusion-guidance"
        """Registered guidance: stable-diffusion-guidance (SDS) or stable-diffusion-vsd-guidance (VSD)."""
        guidance: Any = field(default_factory=dict)
        """Config of the guidance."""
        prompt_processor_type: str = "stable-diffusion-prompt-processor"
        """Registered prompt processor."""
        prompt_processor: Any = field(default_factory=dict)
        """Config of the prompt processor."""

    cfg: Config

    def build_guidance(self) -> None:
        """Build the prompt processor and the guidance (call from ``configure``)."""
        c = self.cfg
        self.prompt_processor = self.build("prompt_processor", c.prompt_processor_type, c.prompt_processor)
        self.guidance = self.build("guidance", c.guidance_type, c.guidance)
        self._prompt_utils = None
        check = getattr(self.guidance, "check_prompt_width", None)
        if check is not None:  # text width against the UNet's: one line instead of a shape error in the first step
            width = int(self.prompt_utils.text_embeddings.shape[-1])
            check(width, "system.prompt_processor.pretrained_model_name_or_path")

    def progress_bar_keys(self) -> Sequence[str]:
        """The guidance's own (VSD: ``lora_fit/ratio``, measured every ``lora_fit_every`` steps)."""
        return tuple(getattr(self.guidance, "progress_bar_keys", ()))

    def sparse_keys(self) -> Sequence[str]:
        """The guidance's diagnostics measured every N steps (VSD: ``lora_fit/``)."""
        return tuple(getattr(self.guidance, "sparse_keys", ()))

    @property
    def prompt_utils(self) -> Any:
        """The prompt processor's embeddings, computed on first use (cached on disk by the processor)."""
        if self._prompt_utils is None:
            self._prompt_utils = self.prompt_processor()
        return self._prompt_utils

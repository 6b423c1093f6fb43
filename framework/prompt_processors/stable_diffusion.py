"""Stable Diffusion's text conditioning: the CLIP tokenizer and text encoder of an SD checkpoint.

Prompts are padded to the tokenizer's ``model_max_length`` (77) and truncated beyond it (one warning line names a
prompt that is cut); the embedding is the text encoder's last hidden state (N=77, C=1024 for SD 2.x), what SD's UNet
cross-attends to.
"""

from __future__ import annotations

import gc
from typing import List

import torch

from framework import registry
from framework.guidance.loading import load_component
from framework.prompt_processors.base import EncodedPrompts, PromptProcessor


@registry.register("prompt_processor", "stable-diffusion-prompt-processor")
class StableDiffusionPromptProcessor(PromptProcessor):
    """CLIP text embeddings for Stable Diffusion, view-dependent, cached on disk."""

    def encode_prompts(self, prompts: List[str]) -> EncodedPrompts:
        from transformers import CLIPTextModel, CLIPTokenizer

        path = self.cfg.pretrained_model_name_or_path
        key = self.key("pretrained_model_name_or_path")
        tokenizer = load_component(CLIPTokenizer, path, "tokenizer", key)
        text_encoder = load_component(CLIPTextModel, path, "text_encoder", key)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        text_encoder.to(device).eval().requires_grad_(False)
        try:
            tokens = tokenizer(
                prompts,
                padding="max_length",
                max_length=tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            )
            n_tokens = [len(ids) for ids in tokenizer(prompts, truncation=False, verbose=False).input_ids]
            max_tokens = int(tokenizer.model_max_length)
            with torch.no_grad():
                embeddings = text_encoder(tokens.input_ids.to(device))[0].to(torch.float32).cpu()
        finally:
            del text_encoder, tokenizer
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        return EncodedPrompts(embeddings, n_tokens, max_tokens)

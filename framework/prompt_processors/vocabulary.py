"""Prompts a model was trained on, when its folder says so: a warning for a prompt outside them.

A small model trained on a fixed set of prompts (the toy prior of ``load/toy-sd``, whose text encoder has random
weights) knows those wordings and nothing else: ``"a hamburger"`` or ``"a cube that is red"`` give it text embeddings
it never saw, and its guidance means nothing for them. Such a model folder may carry ``known_prompts.json``::

    {"description": "what the model knows, in words", "prompts": ["", "a red cube", "a red cube, front view", ...]}

and the prompt processor then says, in one warning line, when a prompt it is about to use (the prompt, the
negative prompt, a per-view prompt) is not in the list. Models without the file (real Stable Diffusion) are not
checked.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Set, Tuple

KNOWN_PROMPTS_FILE = "known_prompts.json"
"""Name of the file, at the root of a diffusers model folder, that lists the prompts the model was trained on."""


def read_known_prompts(model: str) -> Tuple[Optional[Set[str]], str]:
    """The prompts listed by ``<model>/known_prompts.json`` and its description; (None, "") when ``model`` is no
    local folder or has no such file. An unreadable file is reported in one warning line and not used."""
    path = Path(model) / KNOWN_PROMPTS_FILE
    if not os.path.isdir(model) or not path.is_file():
        return None, ""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        prompts = data["prompts"]
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise ValueError("'prompts' is not a list of strings")
        description = data.get("description", "")
        return set(prompts), description if isinstance(description, str) else ""
    except (OSError, ValueError, KeyError, TypeError) as e:
        problem = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        print(f"warning: {path} is not a readable list of known prompts ({problem}); prompts are not checked",
              file=sys.stderr)
        return None, ""


def unknown_prompts(named: Sequence[Tuple[str, str]], known: Set[str]) -> List[Tuple[str, str]]:
    """The (field, prompt) pairs of ``named`` whose prompt is not in ``known``, each prompt once."""
    seen: Set[str] = set()
    out = []
    for field, prompt in named:
        if prompt not in known and prompt not in seen:
            seen.add(prompt)
            out.append((field, prompt))
    return out


def warn_unknown_prompts(processor) -> None:
    """One warning line when a prompt of ``processor`` (a configured PromptProcessor) is not among the prompts its
    model lists as known; nothing when all are or the model lists none."""
    model = processor.cfg.pretrained_model_name_or_path
    known, description = read_known_prompts(model)
    if known is None:
        return
    named = [("prompt", processor.prompt), ("negative_prompt", processor.negative_prompt)]
    named += [(f"prompt_{d.name}" if getattr(processor.cfg, f"prompt_{d.name}", None) else "prompt", p)
              for d, p in zip(processor.directions, processor.prompts_vd)]
    unknown = unknown_prompts(named, known)
    if not unknown:
        return
    field, prompt = unknown[0]
    others = f" ({len(unknown) - 1} more of its prompts are unknown too)" if len(unknown) > 1 else ""
    knows = f" It knows: {description}." if description else ""
    print(
        f"warning: {processor.key(field)}: '{prompt}' is not among the prompts the model {model} was trained on "
        f"(its {KNOWN_PROMPTS_FILE}){others}, so its guidance for it means nothing.{knows}",
        file=sys.stderr,
    )

"""Prompt processors: text embeddings for the guidance.

Importing the package registers ``stable-diffusion-prompt-processor``.
"""

from framework.prompt_processors import stable_diffusion  # noqa: F401  (registration)

"""Diffusion guidance: score distillation with Stable Diffusion (SDS and VSD).

Importing the package registers ``stable-diffusion-guidance`` and ``stable-diffusion-vsd-guidance``.
"""

from framework.guidance import sds, vsd  # noqa: F401  (registration)

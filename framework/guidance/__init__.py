"""Diffusion guidance: score distillation with Stable Diffusion, one template (``base.py``) and one small module per
rule. Importing the package registers ``stable-diffusion-guidance`` (SDS), ``stable-diffusion-vsd-guidance`` (VSD),
``stable-diffusion-csd-guidance``, ``stable-diffusion-nfsd-guidance``, ``stable-diffusion-sds-bridge-guidance``,
``stable-diffusion-ism-guidance`` and ``stable-diffusion-sdi-guidance``.
"""

from framework.guidance import csd, ism, nfsd, sdi, sds, sds_bridge, vsd  # noqa: F401  (registration)

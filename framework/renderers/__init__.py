from framework.renderers import base, nerf_volume_renderer, nvdiff_rasterizer, sampling  # noqa: F401

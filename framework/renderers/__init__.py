from framework.renderers import nerf_volume_renderer, nvdiff_rasterizer, sampling  # noqa: F401

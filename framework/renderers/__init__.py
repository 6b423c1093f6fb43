from framework.renderers import nerf_volume_renderer, sampling  # noqa: F401

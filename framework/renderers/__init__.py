from framework.renderers import checks, nerf_volume_renderer, sampling  # noqa: F401

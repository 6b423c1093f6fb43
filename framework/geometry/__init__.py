from framework.geometry import base, implicit_volume  # noqa: F401

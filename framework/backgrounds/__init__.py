from framework.backgrounds import base, neural_environment_map, solid_color  # noqa: F401

from framework.materials import base, diffuse_with_point_light, no_material  # noqa: F401

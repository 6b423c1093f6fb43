from framework.data import base, image, random_camera, step  # noqa: F401

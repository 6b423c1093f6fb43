from framework.data import base, image, random_camera  # noqa: F401

"""Lightning systems. Importing this package registers every built-in system."""

from systems import base, image_fitting  # noqa: F401

"""Import every built-in module package so that its modules register themselves."""

import importlib

PACKAGES = (
    "framework.data",
    "framework.geometry",
    "framework.materials",
    "framework.backgrounds",
    "framework.renderers",
    "framework.prompt_processors",
    "framework.guidance",
    "framework.exporters",
)


def import_builtin_modules() -> None:
    for name in PACKAGES:
        importlib.import_module(name)

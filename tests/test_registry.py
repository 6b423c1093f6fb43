from pathlib import Path

import pytest

from framework import registry
from framework.errors import ConfigError


def test_unknown_name_lists_registered_names():
    import framework.data  # noqa: F401

    with pytest.raises(ConfigError) as e:
        registry.find("data", "imaeg-datamodule", key="data_type")
    msg = str(e.value)
    assert "\n" not in msg
    assert "data_type" in msg and "imaeg-datamodule" in msg and "image-datamodule" in msg


def test_double_registration_of_a_name_fails():
    @registry.register("exporter", "test-dummy-exporter")
    class A:
        pass

    with pytest.raises(ValueError, match="registered twice"):

        @registry.register("exporter", "test-dummy-exporter")
        class B:
            pass

    registry._REGISTRY["exporter"].pop("test-dummy-exporter")


def test_unknown_kind_is_a_programming_error():
    with pytest.raises(ValueError):
        registry.register("geometri", "x")


def test_every_registered_config_field_has_a_docstring():
    """House style: every field of every registered module's Config carries a one-line docstring."""
    import dataclasses

    import systems  # noqa: F401
    from framework.builtin import import_builtin_modules
    from framework.config import field_docs

    import_builtin_modules()
    missing = []
    for kind in registry.KINDS:
        for name in registry.names(kind):
            cfg_cls = registry.find(kind, name).Config
            docs = field_docs(cfg_cls)
            missing += [f"{kind}:{name}.{f.name}" for f in dataclasses.fields(cfg_cls) if not docs.get(f.name)]
    assert not missing, f"fields without a docstring: {missing}"


def test_layers_import_downwards_only():
    """framework/ never imports systems/ or lab/; systems/ never imports lab/ (what a training run loads stays apart
    from what only tests, scripts and benchmarks use)."""
    import ast

    root = Path(__file__).resolve().parent.parent
    forbidden = {"framework": ("systems", "lab"), "systems": ("lab",)}
    offenders = []
    for package, banned in forbidden.items():
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                offenders += [f"{path.relative_to(root)}: {n}" for n in names if n.split(".")[0] in banned]
    assert offenders == []

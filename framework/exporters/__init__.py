from framework.exporters import mesh_exporter  # noqa: F401

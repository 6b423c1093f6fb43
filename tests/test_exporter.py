"""mesh-exporter: the files it writes, read back with trimesh, against the closed-form blob and the material colours."""

import io
import math

import numpy as np
import pytest
import torch
import trimesh

import framework.exporters  # noqa: F401
import framework.geometry  # noqa: F401
import framework.materials  # noqa: F401
from framework import registry
from framework.utils.export_output import ExportOutput

THRESHOLD = 5.0
RADIUS = 0.5 * (1 - math.log(math.exp(THRESHOLD) - 1) / 10)  # softplus(10 (1 - r / 0.5)) = 5


@pytest.fixture(scope="module")
def scene():
    torch.manual_seed(0)
    geometry = registry.find("geometry", "implicit-volume")(
        {
            "isosurface_threshold": THRESHOLD,
            "isosurface_resolution": 32,
            "pos_encoding_config": {"n_levels": 4, "log2_hashmap_size": 12, "backend": "torch"},
        }
    )
    torch.nn.init.zeros_(geometry.density_network.layers[-1].weight)  # density = the blob
    with torch.no_grad():  # colours that vary over the surface
        geometry.encoding.params.uniform_(-10.0, 10.0)
    material = registry.find("material", "no-material")({})
    return geometry, material


def _load(f: ExportOutput) -> trimesh.Trimesh:
    return trimesh.load(io.BytesIO(f.data), file_type=f.filename.rsplit(".", 1)[1], process=False)


def test_obj_and_ply_hold_the_blob_sphere_with_vertex_colours(scene, tmp_path):
    geometry, material = scene
    exporter = registry.find("exporter", "mesh-exporter")({"fmt": ["obj", "ply"], "save_name": "blob"})
    files = exporter(geometry, material)
    assert [f.filename for f in files] == ["blob.obj", "blob.ply"]
    for f in files:
        f.write(tmp_path / "export" / f.filename)
        assert (tmp_path / "export" / f.filename).read_bytes() == f.data
        mesh = _load(f)
        r = np.linalg.norm(mesh.vertices, axis=1)
        assert np.abs(r - RADIUS).max() < 0.01
        assert mesh.is_watertight and mesh.volume > 0
        assert mesh.volume == pytest.approx(4 / 3 * math.pi * RADIUS**3, rel=0.02)
        # colours: the material's albedo at each vertex, computed here directly from the networks
        with torch.no_grad():
            v = torch.tensor(mesh.vertices, dtype=torch.float32)
            x = (v + 1) / 2
            albedo = torch.sigmoid(geometry.feature_network(geometry.encoding(x)))
        expected = np.round(albedo.numpy() * 255)
        colours = mesh.visual.vertex_colors[:, :3].astype(np.float64)
        assert np.abs(colours - expected).max() <= 1.0
        assert colours.std() > 5  # not a flat colour


def test_single_format_and_no_colour(scene):
    geometry, material = scene
    files = registry.find("exporter", "mesh-exporter")({"fmt": "obj", "save_texture": False})(geometry, material)
    assert [f.filename for f in files] == ["model.obj"]
    text = files[0].data.decode()
    vertex_line = next(line for line in text.splitlines() if line.startswith("v "))
    assert len(vertex_line.split()) == 4  # x y z, no colour
    mesh = registry.find("exporter", "mesh-exporter")({}).mesh(geometry, material)
    assert isinstance(mesh, trimesh.Trimesh) and len(mesh.faces) > 0

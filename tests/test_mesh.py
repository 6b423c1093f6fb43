"""Mesh: vertex normals, regularisers and UV unwrapping against closed forms and hand computations."""

import math
import sys

import numpy as np
import pytest
import torch

from framework.errors import ConfigError, UserError
from framework.geometry.base import Mesh as MeshFromBase
from framework.geometry.mesh import Mesh


def octahedron(dtype=torch.float32):
    v = torch.tensor([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=dtype)
    f = torch.tensor([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
    return Mesh(v, f)


def tetrahedron(dtype=torch.float32):
    v = torch.tensor([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=dtype)
    f = torch.tensor([[0, 1, 2], [0, 3, 1], [0, 2, 3], [1, 3, 2]])
    return Mesh(v, f)


def test_mesh_is_importable_where_it_was():
    assert MeshFromBase is Mesh


@pytest.mark.parametrize("make", [octahedron, tetrahedron])
def test_vertex_normals_of_regular_solids_point_along_the_vertices(make):
    mesh = make()
    assert (mesh.face_normals_scaled() * mesh.face_vertices().mean(1)).sum(-1).min() > 0  # outward winding
    expected = mesh.v_pos / mesh.v_pos.norm(dim=-1, keepdim=True)
    assert torch.allclose(mesh.v_nrm, expected, atol=1e-6)


def test_vertex_normals_are_weighted_by_face_area():
    # two triangles sharing the edge (0, 1): a small one in the plane z = 0 and a large one tilted up
    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0.5, -0.2, 0], [0.5, 3.0, 3.0]])
    f = torch.tensor([[0, 2, 1], [0, 1, 3]])
    mesh = Mesh(v, f)
    n_small = torch.tensor([0.0, 0.0, 1.0]) * 0.5 * 1.0 * 0.2  # unit normal times area
    tilted = torch.tensor([0.0, -3.0, 3.0]) / math.sqrt(18.0)
    n_large = tilted * 0.5 * 1.0 * math.sqrt(18.0)
    expected = (n_small + n_large) / (n_small + n_large).norm()
    assert torch.allclose(mesh.v_nrm[0], expected, atol=1e-6)
    assert torch.allclose(mesh.v_nrm[2], torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)
    assert torch.allclose(mesh.face_areas(), torch.tensor([0.1, 0.5 * math.sqrt(18.0)]), atol=1e-6)


def test_zero_area_faces_give_finite_normals_and_gradients():
    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [2, 2, 2], [3, 3, 3], [4, 4, 4]], requires_grad=True)
    f = torch.tensor([[0, 1, 2], [3, 4, 5], [0, 0, 1]])  # a proper face, a collinear one, a repeated vertex
    mesh = Mesh(v, f)
    n = mesh.v_nrm
    assert torch.isfinite(n).all()
    assert torch.allclose(n[3:], torch.tensor([0.0, 0.0, 1.0]).expand(3, 3))
    assert torch.allclose(n[0], torch.tensor([0.0, 0.0, 1.0]))
    (n * torch.randn_like(n)).sum().backward()
    assert torch.isfinite(v.grad).all()


def test_vertex_normals_are_differentiable_in_positions():
    mesh_v = octahedron(torch.float64).v_pos.clone().requires_grad_(True)
    faces = octahedron().t_pos_idx
    weights = torch.randn(6, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda v: (Mesh(v, faces).v_nrm * weights).sum(), (mesh_v,))


def test_normal_consistency_closed_forms():
    # regular tetrahedron: vertex normals are the vertex directions, pairwise cosine -1/3
    assert tetrahedron().normal_consistency().item() == pytest.approx(4.0 / 3.0, abs=1e-6)
    # octahedron: 12 edges between vertices at 90 degrees
    assert octahedron().normal_consistency().item() == pytest.approx(1.0, abs=1e-6)
    # a flat grid
    g = torch.linspace(0, 1, 4)
    x, y = torch.meshgrid(g, g, indexing="ij")
    v = torch.stack([x.flatten(), y.flatten(), torch.zeros(16)], -1)
    idx = torch.arange(16).reshape(4, 4)
    a, b, c, d = idx[:-1, :-1].flatten(), idx[1:, :-1].flatten(), idx[1:, 1:].flatten(), idx[:-1, 1:].flatten()
    flat = Mesh(v, torch.cat([torch.stack([a, b, c], -1), torch.stack([a, c, d], -1)]))
    assert flat.normal_consistency().item() == pytest.approx(0.0, abs=1e-7)
    assert flat.edges.shape[0] == 3 * 4 + 3 * 4 + 9  # rows, columns, diagonals


def test_laplacian_of_a_triangle_by_hand():
    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]], requires_grad=True)
    mesh = Mesh(v, torch.tensor([[0, 1, 2]]))
    # L v0 = 2 v0 - v1 - v2 = (-1, -1, 0); L v1 = (2, -1, 0); L v2 = (-1, 2, 0)
    expected = (math.sqrt(2) + 2 * math.sqrt(5)) / 3
    loss = mesh.laplacian()
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert v.grad is not None and v.grad.abs().sum() > 0


def test_remove_small_components_threestudio_rule_keeps_gradient():
    big = octahedron()
    small_v = big.v_pos * 0.1 + 5.0
    v = torch.cat([big.v_pos, small_v]).requires_grad_(True)
    f = torch.cat([big.t_pos_idx, big.t_pos_idx + 6])
    # drop one face of the small copy so the two pieces differ: 8 and 7 faces
    mesh = Mesh(v, f[:-1])
    assert mesh.remove_outlier(8).n_faces == 8  # int: a face count
    assert mesh.remove_outlier(0.9).n_faces == 8  # float: 0.9 x the largest piece (8) = 7.2
    assert mesh.remove_outlier(0.8).n_faces == 15
    kept = mesh.remove_outlier(8)
    kept.v_pos.sum().backward()
    assert v.grad[:6].eq(1).all() and v.grad[6:].eq(0).all()


def test_unwrap_uv_keeps_face_order_and_ranges():
    import trimesh

    sphere = trimesh.creation.icosphere(2)
    mesh = Mesh(torch.tensor(sphere.vertices, dtype=torch.float32), torch.tensor(sphere.faces))
    mesh.unwrap_uv(pack_options={"padding": 2, "resolution": 256})
    assert mesh.has_uv and mesh.t_tex_idx.shape == mesh.t_pos_idx.shape
    assert mesh.v_tex.min() >= 0 and mesh.v_tex.max() <= 1
    # each UV vertex stands for one position: the f-th UV face is the f-th face
    pairs = torch.stack([mesh.t_tex_idx.flatten(), mesh.t_pos_idx.flatten()], -1).unique(dim=0)
    assert pairs.shape[0] == mesh.v_tex.shape[0]
    # charts do not overlap: the UV areas add up to the area of their union (sampled on a fine grid)
    uv = mesh.v_tex[mesh.t_tex_idx].double()
    area = 0.5 * ((uv[:, 1] - uv[:, 0])[:, 0] * (uv[:, 2] - uv[:, 0])[:, 1]
                  - (uv[:, 1] - uv[:, 0])[:, 1] * (uv[:, 2] - uv[:, 0])[:, 0]).abs()
    assert 0.3 < area.sum() < 1.0


def test_unwrap_uv_errors_name_the_key(monkeypatch):
    mesh = octahedron()
    with pytest.raises(ConfigError, match=r"system\.exporter\.xatlas_pack_options\.paddng: unknown xatlas option"):
        mesh.unwrap_uv(pack_options={"paddng": 2}, key="system.exporter")
    with pytest.raises(ConfigError, match=r"system\.exporter\.xatlas_chart_options\.max_iterations: expected int"):
        mesh.unwrap_uv(chart_options={"max_iterations": "many"}, key="system.exporter")
    monkeypatch.setitem(sys.modules, "xatlas", None)
    with pytest.raises(UserError, match=r"system\.exporter\.save_uv: UV unwrapping needs the xatlas package"):
        mesh.unwrap_uv(key="system.exporter")


def test_to_detach_and_colours():
    mesh = octahedron()
    mesh.set_vertex_color(torch.rand(6, 3))
    with pytest.raises(ValueError):
        mesh.set_vertex_color(torch.rand(5, 3))
    moved = mesh.detach().to("cpu")
    assert torch.equal(moved.v_rgb, mesh.v_rgb) and moved.n_faces == 8
    assert np.isfinite(moved.v_nrm.numpy()).all()

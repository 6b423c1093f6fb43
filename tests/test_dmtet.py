"""tetrahedra-sdf-grid: the tetrahedral grid, marching tetrahedra against closed forms, watertightness and winding,
gradients reaching the SDF and the deformation, the geometry's modes and the conversion from an implicit volume."""

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

import framework.geometry  # noqa: F401
from framework import registry
from framework.errors import ConfigError, UserError
from framework.geometry.marching_tetrahedra import (
    TET_EDGES,
    TRIANGLE_COUNT,
    TRIANGLE_TABLE,
    cells_for_resolution,
    cube_tet_grid,
    marching_tetrahedra,
    tet_grid,
)

SMALL_GRID = {"n_levels": 4, "log2_hashmap_size": 12, "base_resolution": 8, "backend": "torch"}


def tet_volumes(vertices, tets):
    p = vertices.double()[tets.long()]
    return torch.linalg.det(torch.stack([p[:, 1] - p[:, 0], p[:, 2] - p[:, 0], p[:, 3] - p[:, 0]], dim=-1)) / 6


def mesh_measures(vertices, faces, center):
    """Area and enclosed volume (divergence theorem, positive for outward winding)."""
    tri = vertices.double()[faces] - torch.as_tensor(center, dtype=torch.float64)
    cross = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    area = 0.5 * cross.norm(dim=-1).sum().item()
    volume = (tri[:, 0] * torch.linalg.cross(tri[:, 1], tri[:, 2], dim=-1)).sum().item() / 6
    return area, volume


def assert_watertight_and_consistent(faces):
    """Every directed edge appears once and its reverse once: closed, manifold, consistently wound."""
    directed = Counter()
    for a, b, c in faces.tolist():
        for e in ((a, b), (b, c), (c, a)):
            directed[e] += 1
    assert max(directed.values()) == 1
    assert all(directed[(b, a)] == 1 for (a, b) in directed)


# ------------------------------------------------------------------ the grid
@pytest.mark.parametrize("cells", [1, 3, 8])
def test_grid_counts_orientation_and_total_volume(cells):
    vertices, tets = cube_tet_grid(cells)
    assert vertices.shape == ((cells + 1) ** 3, 3) and tets.shape == (6 * cells**3, 4)
    assert tets.dtype == torch.int32
    assert vertices.min() == 0 and vertices.max() == 1
    vol = tet_volumes(vertices, tets)
    assert (vol > 0).all()  # all positively oriented
    assert torch.allclose(vol, torch.full_like(vol, 1 / (6 * cells**3)))
    assert vol.sum().item() == pytest.approx(1.0)


def test_grid_is_conforming():
    """Each triangle of a tetrahedron is shared by exactly two tetrahedra, except the 12 n^2 on the cube's surface."""
    cells = 4
    _, tets = cube_tet_grid(cells)
    t = tets.long()
    faces = torch.cat([t[:, [0, 1, 2]], t[:, [0, 1, 3]], t[:, [0, 2, 3]], t[:, [1, 2, 3]]]).sort(dim=1).values
    _, counts = torch.unique(faces, dim=0, return_counts=True)
    assert set(counts.tolist()) == {1, 2}
    assert (counts == 1).sum().item() == 12 * cells**2


def test_threestudio_resolution_meaning():
    # threestudio's 128 grid: 277k vertices, 1.53M tetrahedra (nvdiffrec's tets files); tetrahedra 2/res wide
    assert cells_for_resolution(128) == 64 and cells_for_resolution(64) == 32 and cells_for_resolution(7) == 4
    vertices, tets = tet_grid(128)
    assert vertices.shape[0] == 274_625 and tets.shape[0] == 1_572_864 and tets.dtype == torch.int32
    assert tet_grid(128)[1] is tets  # cached


def test_triangle_table_orientation_on_random_tetrahedra():
    """For every inside/outside pattern, on random positive tetrahedra with random SDF values of that pattern, each
    triangle's normal points from the inside corners to the outside ones."""
    gen = torch.Generator().manual_seed(0)
    assert TRIANGLE_COUNT.tolist() == [0, 1, 1, 2, 1, 2, 2, 1, 1, 2, 2, 1, 2, 1, 1, 0]
    for _ in range(20):
        corners = torch.rand(4, 3, generator=gen, dtype=torch.float64)
        if tet_volumes(corners, torch.arange(4)[None])[0] < 0:
            corners[[1, 2]] = corners[[2, 1]]
        for code in range(1, 15):
            inside = torch.tensor([bool(code >> k & 1) for k in range(4)])
            sdf = torch.rand(4, generator=gen, dtype=torch.float64) + 0.05
            sdf[inside] *= -1
            verts, faces = marching_tetrahedra(corners, sdf, torch.arange(4)[None])
            assert faces.shape[0] == TRIANGLE_COUNT[code]
            towards_out = corners[~inside].mean(0) - corners[inside].mean(0)
            for f in faces:
                a, b, c = verts[f]
                assert torch.dot(torch.linalg.cross(b - a, c - a, dim=-1), towards_out) > 0
            # surface vertices are the zeros of the linear interpolation on the cut edges
            for e, (i, j) in enumerate(TET_EDGES):
                if inside[i] != inside[j]:
                    t = sdf[i] / (sdf[i] - sdf[j])
                    p = corners[i] + t * (corners[j] - corners[i])
                    assert (verts - p).norm(dim=-1).min() < 1e-12
    assert TRIANGLE_TABLE.shape == (16, 2, 3)


# ------------------------------------------------------------------ marching tetrahedra
@pytest.mark.parametrize("resolution,area_tol,volume_tol", [(32, 0.015, 0.03), (64, 0.004, 0.008)])
def test_sphere_area_and_volume_match_the_closed_form(resolution, area_tol, volume_tol):
    vertices, tets = tet_grid(resolution)
    radius = 0.3
    sdf = (vertices - 0.5).norm(dim=-1) - radius
    verts, faces = marching_tetrahedra(vertices, sdf, tets)
    area, volume = mesh_measures(verts, faces, (0.5, 0.5, 0.5))
    assert area == pytest.approx(4 * math.pi * radius**2, rel=area_tol)
    assert volume == pytest.approx(4 / 3 * math.pi * radius**3, rel=volume_tol)
    assert ((verts - 0.5).norm(dim=-1) - radius).abs().max() < 0.01
    assert_watertight_and_consistent(faces)


def test_torus_is_watertight_with_outward_winding_and_genus_one():
    vertices, tets = tet_grid(40)
    p = vertices - 0.5
    sdf = torch.stack([p[:, :2].norm(dim=-1) - 0.25, p[:, 2]], -1).norm(dim=-1) - 0.1
    verts, faces = marching_tetrahedra(vertices, sdf, tets)
    assert_watertight_and_consistent(faces)
    _, volume = mesh_measures(verts, faces, (0.5, 0.5, 0.5))
    assert volume == pytest.approx(2 * math.pi**2 * 0.25 * 0.1**2, rel=0.05)
    n_edges = faces.shape[0] * 3 // 2
    assert verts.shape[0] - n_edges + faces.shape[0] == 0  # Euler characteristic of a torus


def test_exact_zeros_make_zero_area_faces_but_the_mesh_stays_closed_and_finite():
    vertices, tets = tet_grid(16)
    sdf = vertices[:, 2] - 0.5  # the plane z = 0.5 runs through a layer of grid vertices: sdf exactly 0 there
    sdf = torch.maximum(sdf, (vertices - 0.5).abs().max(dim=-1).values - 0.4)  # closed: a half box
    assert (sdf == 0).any()
    sdf.requires_grad_(True)
    verts, faces = marching_tetrahedra(vertices, sdf, tets)
    tri = verts[faces]
    area = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1).norm(dim=-1)
    assert (area == 0).any()
    assert_watertight_and_consistent(faces)
    normals = F.normalize(torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1), dim=-1, eps=1e-12)
    normals.sum().backward()
    assert torch.isfinite(verts).all() and torch.isfinite(sdf.grad).all()


def test_no_sign_change_gives_an_empty_mesh():
    vertices, tets = tet_grid(8)
    verts, faces = marching_tetrahedra(vertices, torch.ones(vertices.shape[0]), tets)
    assert verts.shape == (0, 3) and faces.shape == (0, 3)


def test_gradients_reach_sdf_and_positions_and_match_finite_differences():
    vertices, tets = tet_grid(8)
    vertices = vertices.double()
    sdf = ((vertices - 0.5).norm(dim=-1) - 0.33).detach()
    weights = torch.randn(10_000, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def loss(s, x):
        v, _ = marching_tetrahedra(x, s, tets)
        return (v * weights[: v.shape[0]]).sum() + (v**2).sum()

    s = sdf.clone().requires_grad_(True)
    x = vertices.clone().requires_grad_(True)
    loss(s, x).backward()
    assert s.grad.abs().sum() > 0 and x.grad.abs().sum() > 0
    near = ((sdf.abs() < 0.05) & (sdf.abs() > 1e-3)).nonzero()[:, 0][:6]
    eps = 1e-6
    for i in near.tolist():
        d = torch.zeros_like(sdf)
        d[i] = eps
        numeric = (loss(sdf + d, vertices) - loss(sdf - d, vertices)) / (2 * eps)
        assert numeric.item() == pytest.approx(s.grad[i].item(), rel=1e-5, abs=1e-8)
        for k in range(3):
            dx = torch.zeros_like(vertices)
            dx[i, k] = eps
            numeric = (loss(sdf, vertices + dx) - loss(sdf, vertices - dx)) / (2 * eps)
            assert numeric.item() == pytest.approx(x.grad[i, k].item(), rel=1e-5, abs=1e-8)


# ------------------------------------------------------------------ the geometry
def dmtet(**cfg):
    cfg.setdefault("pos_encoding_config", SMALL_GRID)
    cfg.setdefault("isosurface_resolution", 32)
    torch.manual_seed(0)
    return registry.find("geometry", "tetrahedra-sdf-grid")(cfg, prefix="system.geometry")


def test_sphere_shape_init_meshes_the_sphere_and_gradients_reach_sdf_and_deformation():
    geo = dmtet(shape_init="sphere", shape_init_params=0.5, radius=1.0)
    mesh = geo.isosurface()
    r = mesh.v_pos.norm(dim=-1)
    assert (r - 0.5).abs().max() < 0.02
    _, volume = mesh_measures(mesh.v_pos.detach(), mesh.t_pos_idx, (0, 0, 0))
    assert volume == pytest.approx(4 / 3 * math.pi * 0.125, rel=0.05)  # 4 cells of radius
    assert_watertight_and_consistent(mesh.t_pos_idx)
    (mesh.v_pos**2).sum().backward()
    assert geo.sdf.grad.abs().sum() > 0 and geo.deformation.grad.abs().sum() > 0
    names = {n for n, _ in geo.named_parameters()}
    assert {"sdf", "deformation", "encoding.params"} <= names
    assert geo.sdf.shape == (17**3, 1)  # resolution 32: 16 cells per axis


def test_deformation_moves_vertices_by_at_most_half_a_cell():
    geo = dmtet(isosurface_resolution=16, shape_init="sphere", shape_init_params=0.5)
    with torch.no_grad():
        geo.deformation.fill_(100.0)
    moved = geo.grid_positions() - (-1 + 2 * geo.grid_vertices)
    assert moved.abs().max().item() == pytest.approx(2.0 * 0.5 / 8, rel=1e-4)  # box side 2, 8 cells


def test_ellipsoid_shape_init_and_non_deformable_grid():
    geo = dmtet(isosurface_deformable_grid=False, shape_init="ellipsoid", shape_init_params=[0.6, 0.4, 0.3])
    assert geo.deformation is None and "deformation" not in dict(geo.named_parameters())
    v = geo.isosurface().v_pos.detach()
    assert v[:, 0].max().item() == pytest.approx(0.6, abs=0.03)
    assert v[:, 2].max().item() == pytest.approx(0.3, abs=0.03)


def test_texture_field_geometry_only_and_normals():
    geo = dmtet(n_feature_dims=5, shape_init="sphere", shape_init_params=0.5)
    out = geo(torch.rand(7, 3) - 0.5)
    assert set(out) == {"features"} and out["features"].shape == (7, 5)
    assert geo.export(torch.rand(2, 4, 3))["features"].shape == (2, 4, 5)
    assert not geo.has_normal
    with pytest.raises(ConfigError, match="nvdiff-rasterizer"):
        geo(torch.rand(2, 3), output_normal=True)
    only = dmtet(geometry_only=True, shape_init="sphere", shape_init_params=0.5)
    assert only(torch.rand(3, 3)) == {} and only.export(torch.rand(3, 3)) == {}
    assert not hasattr(only, "encoding")


def test_fix_geometry_freezes_and_caches_until_the_state_changes():
    geo = dmtet(fix_geometry=True, shape_init="sphere", shape_init_params=0.5)
    assert "sdf" not in dict(geo.named_parameters()) and "sdf" in geo.state_dict()
    first = geo.isosurface()
    assert geo.isosurface() is first and not first.v_pos.requires_grad
    state = {k: v.clone() for k, v in geo.state_dict().items()}
    state["sdf"] = (geo.grid_positions().norm(dim=-1, keepdim=True) - 0.3)
    geo.load_state_dict(state)
    second = geo.isosurface()
    assert second is not first and second.v_pos.norm(dim=-1).max() < 0.32


def test_an_empty_grid_says_how_to_give_it_a_surface():
    with pytest.raises(UserError, match="system.geometry.sdf: .*no surface.*geometry_convert_from"):
        dmtet().isosurface()


def test_bad_shape_init_values_name_the_key():
    with pytest.raises(ConfigError, match="system.geometry.shape_init_params"):
        dmtet(shape_init="sphere", shape_init_params=-1.0)
    with pytest.raises(ConfigError, match="system.geometry.shape_init_params: ellipsoid"):
        dmtet(shape_init="ellipsoid", shape_init_params=0.5)
    with pytest.raises(ConfigError, match="system.geometry.shape_init: unknown shape 'cube'"):
        dmtet(shape_init="cube")
    with pytest.raises(ConfigError, match="system.geometry.shape_init: mesh:<file>"):
        dmtet(shape_init="mesh:load/shapes/x.obj", shape_init_params=0.5)
    with pytest.raises(ConfigError, match="system.geometry.isosurface_resolution"):
        dmtet(isosurface_resolution=1)


def test_outliers_are_removed_when_asked():
    geo = dmtet(isosurface_resolution=48, isosurface_remove_outliers=True, isosurface_outlier_n_faces_threshold=0.2)
    with torch.no_grad():
        p = geo.grid_positions()
        big = (p - torch.tensor([-0.3, 0, 0])).norm(dim=-1) - 0.4
        small = (p - torch.tensor([0.6, 0, 0])).norm(dim=-1) - 0.12
        geo.sdf.copy_(torch.minimum(big, small)[:, None])
    mesh = geo.isosurface()
    assert mesh.v_pos[:, 0].max() < 0.2


# ------------------------------------------------------------------ conversion
def blob_volume(**cfg):
    cfg.setdefault("pos_encoding_config", SMALL_GRID)
    torch.manual_seed(0)
    geo = registry.find("geometry", "implicit-volume")(cfg, prefix="system.geometry_convert_override")
    torch.nn.init.zeros_(geo.density_network.layers[-1].weight)  # density = softplus(blob): a closed form
    return geo


def test_conversion_from_an_implicit_volume_meshes_its_isosurface():
    threshold = 5.0
    radius = 0.5 * (1 - math.log(math.exp(threshold) - 1) / 10)  # softplus(10 (1 - r / 0.5)) = 5
    source = blob_volume(isosurface_threshold=threshold, isosurface_method="mc-cpu", isosurface_resolution=16)
    geo = registry.find("geometry", "tetrahedra-sdf-grid").create_from(
        source, {"isosurface_resolution": 48, "pos_encoding_config": SMALL_GRID}, copy_net=True
    )
    assert source.cfg.isosurface_method == "mt" and source.cfg.isosurface_resolution == 48
    # the grid spans the first mesh's box enlarged by 10% on each side
    half = geo.isosurface_bbox[1]
    assert torch.allclose(geo.isosurface_bbox[0], -half) and half.min().item() == pytest.approx(1.2 * radius, rel=0.03)
    assert geo.sdf.abs().max() <= 1.0
    mesh = geo.isosurface()
    assert (mesh.v_pos.norm(dim=-1) - radius).abs().max() < 0.01
    # the texture field is inherited: the same features everywhere
    p = torch.rand(50, 3) * 2 - 1
    with torch.no_grad():
        assert torch.equal(geo(p)["features"], source(p)["features"])


def test_conversion_auto_threshold_and_no_surface():
    source = blob_volume(isosurface_threshold="auto")
    geo = registry.find("geometry", "tetrahedra-sdf-grid").create_from(source, {"isosurface_resolution": 32,
                                                                              "geometry_only": True})
    assert geo.isosurface().n_faces > 0
    with pytest.raises(UserError, match="system.geometry_convert_override.isosurface_threshold: no surface"):
        registry.find("geometry", "tetrahedra-sdf-grid").create_from(
            blob_volume(isosurface_threshold=1000.0), {"isosurface_resolution": 32}
        )


def test_conversion_texture_errors_name_the_key():
    grid = registry.find("geometry", "tetrahedra-sdf-grid")
    with pytest.raises(ConfigError, match="system.geometry_convert_inherit_texture: .*geometry_only"):
        grid.create_from(blob_volume(isosurface_threshold=5.0), {"isosurface_resolution": 16, "geometry_only": True},
                         copy_net=True)
    with pytest.raises(ConfigError, match="system.geometry_convert_inherit_texture: .*does not fit"):
        grid.create_from(blob_volume(isosurface_threshold=5.0), {"isosurface_resolution": 16,
                                                                 "pos_encoding_config": {"n_levels": 3}}, copy_net=True)
    with pytest.raises(ConfigError, match="system.geometry.radius"):
        grid.create_from(blob_volume(isosurface_threshold=5.0), {"isosurface_resolution": 16, "radius": 0.5,
                                                                 "pos_encoding_config": SMALL_GRID}, copy_net=True)


def test_conversion_between_grids_copies_surface_and_optionally_texture():
    grid = registry.find("geometry", "tetrahedra-sdf-grid")
    source = dmtet(shape_init="sphere", shape_init_params=0.4)
    with torch.no_grad():
        source.deformation.normal_()
        source.isosurface_bbox.mul_(0.8)
    copy = grid.create_from(source, {"isosurface_resolution": 32, "fix_geometry": True,
                                     "pos_encoding_config": SMALL_GRID}, copy_net=True)
    assert torch.equal(copy.sdf, source.sdf) and torch.equal(copy.deformation, source.deformation)
    assert torch.equal(copy.isosurface_bbox, source.isosurface_bbox)
    assert torch.allclose(copy.isosurface().v_pos, source.isosurface().v_pos.detach())
    p = torch.rand(5, 3)
    with torch.no_grad():
        assert torch.equal(copy(p)["features"], source(p)["features"])
    fresh = grid.create_from(source, {"isosurface_resolution": 32, "pos_encoding_config": SMALL_GRID})
    with torch.no_grad():
        assert not torch.equal(fresh(p)["features"], source(p)["features"])
    with pytest.raises(ConfigError, match="system.geometry.isosurface_resolution: the converted grid has resolution"):
        grid.create_from(source, {"isosurface_resolution": 16})

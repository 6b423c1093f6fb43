"""Mesh IoU against the toy primitives: the ray-parity inside test against closed forms, and meshes of the
primitives themselves."""

import math

import pytest
import torch

from framework.geometry.marching_tetrahedra import marching_tetrahedra, tet_grid
from lab.toy.mesh_score import inside_mesh, mesh_iou, voxel_centres
from lab.toy.scenes import BOUND, SHAPES


def mesh_of(sdf, resolution=96, bound=BOUND):
    unit, tets = tet_grid(resolution)
    points = (unit * 2 - 1) * bound
    return marching_tetrahedra(points, sdf(points), tets)


def test_inside_test_matches_the_sphere_away_from_its_surface():
    v, f = mesh_of(lambda p: p.norm(dim=-1) - 0.4)
    xs, ys, zs = voxel_centres(48)
    inside = inside_mesh(v, f, xs, ys, zs)
    r = torch.stack(torch.meshgrid(xs, ys, zs, indexing="ij"), -1).norm(dim=-1)
    clear = (r - 0.4).abs() > 0.01
    assert torch.equal(inside[clear], (r < 0.4)[clear])


def test_concentric_spheres_give_the_closed_form_iou():
    v, f = mesh_of(lambda p: p.norm(dim=-1) - 0.3)
    assert mesh_iou(v, f, "sphere") == pytest.approx((0.3 / 0.42) ** 3, abs=0.01)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_meshes_of_the_primitives_score_near_one_and_beat_other_shapes(shape):
    v, f = mesh_of(SHAPES[shape])
    own = mesh_iou(v, f, shape, resolution=64)
    assert own > 0.95, own
    others = [mesh_iou(v, f, other, resolution=64) for other in SHAPES if other != shape]
    assert max(others) < own - 0.1


def test_empty_and_open_inputs():
    empty = torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.long)
    assert mesh_iou(*empty, "cube") == 0.0
    assert math.isfinite(mesh_iou(torch.rand(3, 3), torch.tensor([[0, 1, 2]]), "cube"))

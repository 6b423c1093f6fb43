"""The coordinate convention (framework.data.cameras) checked against hand-derived values."""

import math

import pytest
import torch

from framework.data import cameras


def _camera(elevation, azimuth, distance=2.0, fovy=60.0, height=5, width=5, **kwargs):
    return cameras.camera_batch(
        torch.tensor([float(elevation)]),
        torch.tensor([float(azimuth)]),
        torch.tensor([float(distance)]),
        torch.tensor([float(fovy)]),
        height,
        width,
        **kwargs,
    )


@pytest.mark.parametrize(
    "elevation, azimuth, expected",
    [(0, 0, (2, 0, 0)), (0, 90, (0, 2, 0)), (0, 180, (-2, 0, 0)), (90, 0, (0, 0, 2)), (-90, 0, (0, 0, -2))],
)
def test_spherical_positions(elevation, azimuth, expected):
    pos = cameras.spherical_to_cartesian(torch.tensor([float(elevation)]), torch.tensor([float(azimuth)]), torch.tensor([2.0]))
    assert torch.allclose(pos[0], torch.tensor(expected, dtype=torch.float32), atol=1e-6)


def test_azimuth_zero_camera_looks_at_origin_from_plus_x():
    batch = _camera(0, 0)
    c2w = batch["c2w"][0]
    assert torch.allclose(batch["camera_positions"][0], torch.tensor([2.0, 0.0, 0.0]))
    # columns: right, up, back (camera looks along -back), position
    assert torch.allclose(c2w[:3, 0], torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)
    assert torch.allclose(c2w[:3, 1], torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)
    assert torch.allclose(c2w[:3, 2], torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)
    assert torch.allclose(c2w[3], torch.tensor([0.0, 0.0, 0.0, 1.0]))
    # the center pixel of a 5x5 image looks along -x, straight at the origin
    assert torch.allclose(batch["rays_d"][0, 2, 2], torch.tensor([-1.0, 0.0, 0.0]), atol=1e-6)
    assert torch.allclose(batch["rays_o"][0, 2, 2], torch.tensor([2.0, 0.0, 0.0]))


def test_image_right_and_up():
    rays_d = _camera(0, 0)["rays_d"][0]
    # row 0 is the top of the image: its rays go up (+z); the last column is image right (+y for this camera)
    assert rays_d[0, 2, 2] > 0 and rays_d[4, 2, 2] < 0
    assert rays_d[2, 4, 1] > 0 and rays_d[2, 0, 1] < 0


def test_field_of_view():
    fovy, height = 50.0, 64
    rays_d = cameras.camera_batch(
        torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([2.0]), torch.tensor([fovy]), height, height
    )["rays_d"][0]
    # rays through the centers of rows 0 and H-1 of the middle column pair: angle 2 atan((H/2 - 0.5) / f)
    f = height / (2 * math.tan(math.radians(fovy) / 2))
    top = (rays_d[0, 31] + rays_d[0, 32]) / 2
    bottom = (rays_d[-1, 31] + rays_d[-1, 32]) / 2
    angle = torch.acos((top / top.norm()) @ (bottom / bottom.norm()))
    assert angle.item() == pytest.approx(2 * math.atan((height / 2 - 0.5) / f), abs=1e-5)


def test_rotation_is_orthonormal_and_world_to_camera_inverts_it():
    batch = cameras.camera_batch(
        torch.tensor([10.0, -5.0, 60.0]),
        torch.tensor([0.0, 123.0, -77.0]),
        torch.tensor([1.0, 1.5, 2.0]),
        torch.tensor([40.0, 50.0, 70.0]),
        4,
        6,
        centers=torch.tensor([[0.1, -0.2, 0.05], [0.0, 0.0, 0.0], [0.3, 0.1, 0.0]]),
        up=torch.tensor([[0.02, 0.0, 1.0], [0.0, 0.01, 1.0], [0.0, 0.0, 1.0]]),
    )
    c2w = batch["c2w"]
    rot = c2w[:, :3, :3]
    assert torch.allclose(rot @ rot.transpose(1, 2), torch.eye(3).expand(3, 3, 3), atol=1e-6)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(3), atol=1e-6)
    assert torch.allclose(c2w @ cameras.world_to_camera(c2w), torch.eye(4).expand(3, 4, 4), atol=1e-5)
    assert batch["rays_d"].shape == (3, 4, 6, 3)
    assert torch.allclose(batch["rays_d"].norm(dim=-1), torch.ones(3, 4, 6), atol=1e-6)


def test_unnormalised_directions_have_unit_depth_along_the_view_axis():
    batch = _camera(20, 45, rays_d_normalize=False, height=4, width=6)
    forward = -batch["c2w"][0, :3, 2]
    assert torch.allclose(batch["rays_d"][0] @ forward, torch.ones(4, 6), atol=1e-6)


def test_mvp_projects_pixel_rays_onto_their_pixels():
    height, width = 6, 8
    batch = cameras.camera_batch(
        torch.tensor([25.0]), torch.tensor([-60.0]), torch.tensor([1.7]), torch.tensor([55.0]), height, width
    )
    mvp = batch["mvp_mtx"][0]
    # a point 1.3 units along each pixel's ray
    points = batch["rays_o"][0] + 1.3 * batch["rays_d"][0]
    clip = torch.cat([points, torch.ones(height, width, 1)], dim=-1) @ mvp.T
    ndc = clip[..., :3] / clip[..., 3:]
    j = torch.arange(width, dtype=torch.float32) + 0.5
    i = torch.arange(height, dtype=torch.float32) + 0.5
    expected_x = (2 * j / width - 1).expand(height, width)
    expected_y = (2 * i / height - 1)[:, None].expand(height, width)
    assert torch.allclose(ndc[..., 0], expected_x, atol=1e-5)
    assert torch.allclose(ndc[..., 1], expected_y, atol=1e-5)
    assert ((ndc[..., 2] > -1) & (ndc[..., 2] < 1)).all()
    # the origin, which the camera looks at, lands in the image center
    origin = mvp @ torch.tensor([0.0, 0.0, 0.0, 1.0])
    assert torch.allclose(origin[:2] / origin[3], torch.zeros(2), atol=1e-6)

"""The coordinate convention of the whole project, written down and implemented in one place.

World frame (threestudio's): right-handed, **z up**. A camera at elevation ``e`` and azimuth ``a`` (degrees), at
distance ``r`` from the origin, sits at

    (r cos e cos a,  r cos e sin a,  r sin e)

so azimuth 0 is on **+x**, azimuth 90 on **+y**, elevation 90 straight above. Cameras look at a center (the origin
unless perturbed) with the world up **+z**.

Camera frame (OpenGL's): the camera looks along its **-z** axis, **+x** is image right, **+y** is image up. ``c2w`` is
the 4x4 camera-to-world matrix whose columns are (right, up, back, position); the camera at azimuth 0, elevation 0
therefore has right = +y, up = +z, and looks along -x at the origin.

Pixels: ``(row i, column j)`` of an ``H x W`` image has its center at ``(j + 0.5, i + 0.5)``; row 0 is the top. Its
camera-frame ray direction is ``((j + 0.5 - W/2) / f, -(i + 0.5 - H/2) / f, -1)`` with focal length
``f = H / (2 tan(fovy / 2))`` in pixels.

Projection: ``projection_matrix`` is OpenGL's perspective matrix with its y row negated (as threestudio does for
nvdiffrast), so that normalised device coordinates ``ndc = (clip.xy / clip.w)`` of the pixel-(i, j) ray are
``x = 2 (j + 0.5) / W - 1`` and ``y = 2 (i + 0.5) / H - 1``: both grow with the column and row indices.
``mvp = projection @ w2c``.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

WORLD_UP = (0.0, 0.0, 1.0)
"""The world's up direction (+z)."""


def spherical_to_cartesian(elevation_deg: Tensor, azimuth_deg: Tensor, distance: Tensor) -> Tensor:
    """Camera positions ``(B, 3)`` from elevation and azimuth in degrees and distances ``(B,)``.

    >>> spherical_to_cartesian(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([2.0]))
    tensor([[2., 0., 0.]])
    """
    elevation = torch.deg2rad(elevation_deg)
    azimuth = torch.deg2rad(azimuth_deg)
    return torch.stack(
        [
            distance * torch.cos(elevation) * torch.cos(azimuth),
            distance * torch.cos(elevation) * torch.sin(azimuth),
            distance * torch.sin(elevation),
        ],
        dim=-1,
    )


def look_at(camera_positions: Tensor, centers: Optional[Tensor] = None, up: Optional[Tensor] = None) -> Tensor:
    """Camera-to-world matrices ``(B, 4, 4)`` of cameras at ``camera_positions (B, 3)`` looking at ``centers``.

    ``centers`` defaults to the origin and ``up (B, 3)`` to +z; ``up`` need not be orthogonal to the view direction
    (it is re-orthogonalised), only not parallel to it.
    """
    if centers is None:
        centers = torch.zeros_like(camera_positions)
    if up is None:
        up = torch.tensor(WORLD_UP, dtype=camera_positions.dtype, device=camera_positions.device).expand_as(
            camera_positions
        )
    lookat = F.normalize(centers - camera_positions, dim=-1)
    right = F.normalize(torch.linalg.cross(lookat, up, dim=-1), dim=-1)
    true_up = F.normalize(torch.linalg.cross(right, lookat, dim=-1), dim=-1)
    c2w = torch.zeros(*camera_positions.shape[:-1], 4, 4, dtype=camera_positions.dtype, device=camera_positions.device)
    c2w[..., :3, 0] = right
    c2w[..., :3, 1] = true_up
    c2w[..., :3, 2] = -lookat
    c2w[..., :3, 3] = camera_positions
    c2w[..., 3, 3] = 1.0
    return c2w


def focal_length(height: int, fovy: Tensor) -> Tensor:
    """Focal length in pixels for a vertical field of view ``fovy`` (radians) and image ``height``."""
    return 0.5 * height / torch.tan(0.5 * fovy)


def pixel_directions(height: int, width: int, device: Optional[torch.device] = None) -> Tensor:
    """Camera-frame directions ``(H, W, 3)`` of pixel centers at unit focal length: ``(x, y, -1)`` with x right, y up.

    Divide the first two components by the focal length in pixels to get a particular camera's directions.
    """
    j = torch.arange(width, dtype=torch.float32, device=device) + 0.5
    i = torch.arange(height, dtype=torch.float32, device=device) + 0.5
    ii, jj = torch.meshgrid(i, j, indexing="ij")
    return torch.stack([jj - width / 2.0, -(ii - height / 2.0), -torch.ones_like(ii)], dim=-1)


def camera_directions(height: int, width: int, fovy: Tensor) -> Tensor:
    """Camera-frame ray directions ``(B, H, W, 3)`` (z = -1, not normalised) for vertical fields of view ``fovy (B,)``.
    """
    base = pixel_directions(height, width, device=fovy.device)
    f = focal_length(height, fovy).to(base.dtype)
    scale = torch.stack([1.0 / f, 1.0 / f, torch.ones_like(f)], dim=-1)  # (B, 3)
    return base[None] * scale[:, None, None, :]


def get_rays(directions: Tensor, c2w: Tensor, normalize: bool = True) -> Tuple[Tensor, Tensor]:
    """World-space ray origins and directions ``(B, H, W, 3)`` from camera directions ``(B, H, W, 3)`` and
    ``c2w (B, 4, 4)``.

    ``normalize`` makes the directions unit length (the renderer's depth is then a distance; threestudio's default).
    """
    rotation = c2w[:, None, None, :3, :3]
    rays_d = (rotation @ directions[..., None])[..., 0]
    rays_o = c2w[:, None, None, :3, 3].expand_as(rays_d)
    if normalize:
        rays_d = F.normalize(rays_d, dim=-1)
    return rays_o, rays_d


def projection_matrix(fovy: Tensor, aspect_wh: float, near: float, far: float) -> Tensor:
    """Perspective projections ``(B, 4, 4)`` for ``fovy (B,)`` in radians, y row negated (see the module docstring)."""
    proj = torch.zeros(fovy.shape[0], 4, 4, dtype=fovy.dtype, device=fovy.device)
    t = torch.tan(fovy / 2.0)
    proj[:, 0, 0] = 1.0 / (t * aspect_wh)
    proj[:, 1, 1] = -1.0 / t
    proj[:, 2, 2] = -(far + near) / (far - near)
    proj[:, 2, 3] = -2.0 * far * near / (far - near)
    proj[:, 3, 2] = -1.0
    return proj


def world_to_camera(c2w: Tensor) -> Tensor:
    """Inverse ``(B, 4, 4)`` of rigid camera-to-world matrices: ``R^T`` and ``-R^T t``."""
    w2c = torch.zeros_like(c2w)
    rot_t = c2w[:, :3, :3].transpose(1, 2)
    w2c[:, :3, :3] = rot_t
    w2c[:, :3, 3:] = -rot_t @ c2w[:, :3, 3:]
    w2c[:, 3, 3] = 1.0
    return w2c


def mvp_matrix(c2w: Tensor, proj: Tensor) -> Tensor:
    """Model-view-projection matrices ``proj @ w2c`` ``(B, 4, 4)`` (the model matrix is the identity)."""
    return proj @ world_to_camera(c2w)


DEFAULT_NEAR = 0.01
"""Near plane of ``mvp_mtx`` (threestudio's value; only rasterisers use it)."""
DEFAULT_FAR = 100.0
"""Far plane of ``mvp_mtx`` (threestudio's value)."""


def camera_batch(
    elevation_deg: Tensor,
    azimuth_deg: Tensor,
    camera_distances: Tensor,
    fovy_deg: Tensor,
    height: int,
    width: int,
    centers: Optional[Tensor] = None,
    up: Optional[Tensor] = None,
    camera_offsets: Optional[Tensor] = None,
    rays_d_normalize: bool = True,
) -> dict:
    """Everything a renderer and a guidance need about ``B`` cameras, as a batch dict.

    Keys: ``rays_o``, ``rays_d`` ``(B, H, W, 3)``; ``c2w``, ``mvp_mtx``, ``proj_mtx`` ``(B, 4, 4)``;
    ``camera_positions (B, 3)``; ``elevation``, ``azimuth`` (degrees, as sampled: before ``camera_offsets``),
    ``camera_distances``, ``fovy`` (radians) ``(B,)``; ``height``, ``width`` (ints).
    ``camera_offsets (B, 3)`` moves the cameras after the spherical placement (threestudio's camera perturbation).
    """
    positions = spherical_to_cartesian(elevation_deg, azimuth_deg, camera_distances)
    if camera_offsets is not None:
        positions = positions + camera_offsets
    c2w = look_at(positions, centers, up)
    fovy = torch.deg2rad(fovy_deg)
    rays_o, rays_d = get_rays(camera_directions(height, width, fovy), c2w, normalize=rays_d_normalize)
    proj = projection_matrix(fovy, width / height, DEFAULT_NEAR, DEFAULT_FAR)
    return {
        "rays_o": rays_o,
        "rays_d": rays_d,
        "c2w": c2w,
        "mvp_mtx": mvp_matrix(c2w, proj),
        "proj_mtx": proj,
        "camera_positions": positions,
        "elevation": elevation_deg,
        "azimuth": azimuth_deg,
        "camera_distances": camera_distances,
        "fovy": fovy,
        "height": height,
        "width": width,
    }


"""The PyTorch rasterizer and antialiasing against closed forms, finite differences and each other's back ends."""

import math

import pytest
import torch

from framework.data.cameras import camera_batch
from framework.renderers.antialias_torch import antialias, edge_neighbours
from framework.renderers.raster_context import TorchRasterContext, nvdiffrast_importable
from framework.renderers.rasterize_torch import interpolate, rasterize, visible_faces
from lab.raster_checks import box_mesh, ray_box, ray_sphere, sphere_mesh

QUAD = torch.tensor([[0, 1, 2], [0, 2, 3]])


def clip_of(verts, batch):
    return TorchRasterContext().vertex_transform(verts, batch["mvp_mtx"])


def pixel_ndc(h, w, dtype=torch.float64):
    y = (2 * torch.arange(h, dtype=dtype) + 1) / h - 1
    x = (2 * torch.arange(w, dtype=dtype) + 1) / w - 1
    return torch.meshgrid(y, x, indexing="ij")


def camera(res=48, elevation=25.0, azimuth=40.0, distance=2.0, fovy=45.0):
    return camera_batch(torch.tensor([elevation]), torch.tensor([azimuth]), torch.tensor([distance]),
                        torch.tensor([fovy]), res, res)


def test_clip_space_quad_coverage_depth_and_barycentrics():
    # a square |x|, |y| <= 0.55 in clip space with w = 1 and the plane z = 0.1 + 0.2 x - 0.3 y
    corners = torch.tensor([[-0.55, -0.55], [0.55, -0.55], [0.55, 0.55], [-0.55, 0.55]], dtype=torch.float64)
    z = 0.1 + 0.2 * corners[:, 0] - 0.3 * corners[:, 1]
    pos = torch.cat([corners, z[:, None], torch.ones(4, 1, dtype=torch.float64)], -1)[None]
    rast = rasterize(pos, QUAD, (20, 24))
    yy, xx = pixel_ndc(20, 24)
    inside = (xx.abs() <= 0.55) & (yy.abs() <= 0.55)
    assert torch.equal(rast[0, ..., 3] > 0, inside)
    assert torch.allclose(rast[0, ..., 2][inside], (0.1 + 0.2 * xx - 0.3 * yy)[inside], atol=1e-6)
    xy = interpolate(corners, rast, QUAD)[0]
    assert torch.allclose(xy[..., 0][inside], xx[inside], atol=1e-12)
    assert torch.allclose(xy[..., 1][inside], yy[inside], atol=1e-12)
    assert (rast[0][~inside] == 0).all() and (xy[~inside] == 0).all()
    # face ids: face 0 is the lower-right half (y <= x), the diagonal's pixels go to the lower index
    assert torch.equal(rast[0, ..., 3][inside], torch.where(yy <= xx, 1.0, 2.0).double()[inside])


def test_perspective_quad_interpolates_the_ray_plane_intersection():
    batch = camera(40, elevation=35.0, azimuth=20.0, distance=1.6)
    square = torch.tensor([[-0.6, -0.5, 0.0], [0.7, -0.5, 0.0], [0.7, 0.6, 0.0], [-0.6, 0.6, 0.0]])
    rast = rasterize(clip_of(square, batch), QUAD, (40, 40))
    o, d = batch["rays_o"][0], batch["rays_d"][0]
    t = -o[..., 2] / d[..., 2]
    hit_point = o + t[..., None] * d
    hits = (t > 0) & (hit_point[..., 0] >= -0.6) & (hit_point[..., 0] <= 0.7)
    hits &= (hit_point[..., 1] >= -0.5) & (hit_point[..., 1] <= 0.6)
    covered = rast[0, ..., 3] > 0
    assert torch.equal(covered, hits)
    got = interpolate(square, rast, QUAD)[0]
    assert (got[covered] - hit_point[covered]).abs().max() < 2e-5  # perspective-correct, not screen-linear


def test_faces_crossing_the_camera_plane_are_clipped_per_pixel():
    # a large floor z = -0.3 reaching behind the camera: only rays that go down hit it, at t = -(0.3 + o_z) / d_z
    batch = camera(32, elevation=10.0, azimuth=0.0, distance=1.0, fovy=70.0)
    floor = torch.tensor([[-50.0, -50.0, -0.3], [50.0, -50.0, -0.3], [50.0, 50.0, -0.3], [-50.0, 50.0, -0.3]])
    clip = clip_of(floor, batch)
    assert (clip[0, :, 3] <= 0).any() and (clip[0, :, 3] > 0).any()
    rast = rasterize(clip, QUAD, (32, 32))
    o, d = batch["rays_o"][0], batch["rays_d"][0]
    t = (-0.3 - o[..., 2]) / d[..., 2]
    p = o + t[..., None] * d
    hits = (t > 0) & (p[..., :2].abs() <= 50.0).all(-1)
    assert torch.equal(rast[0, ..., 3] > 0, hits)
    got = interpolate(floor, rast, QUAD)[0]
    assert (got[hits] - p[hits]).abs().max() < 1e-3


def test_nearest_face_wins_whatever_the_order():
    near = torch.tensor([[-0.5, -0.5, 0.2, 1.0], [0.5, -0.5, 0.2, 1.0], [0.0, 0.5, 0.2, 1.0]])
    far = torch.tensor([[-0.9, -0.9, 0.5, 1.0], [0.9, -0.9, 0.5, 1.0], [0.0, 0.9, 0.5, 1.0]])
    for first, second in ((near, far), (far, near)):
        pos = torch.cat([first, second])[None]
        rast = rasterize(pos, torch.tensor([[0, 1, 2], [3, 4, 5]]), (16, 16))
        z = rast[0, ..., 2][rast[0, ..., 3] > 0]
        centre = rast[0, 8, 8]
        assert centre[2].item() == pytest.approx(0.2) and z.min().item() == pytest.approx(0.2)
        assert (z.max().item() == pytest.approx(0.5))


def test_box_coverage_depth_and_normals_match_the_closed_form():
    from lab.raster_checks import MeshGeometry
    import framework.backgrounds  # noqa: F401
    import framework.materials  # noqa: F401
    from framework import registry
    from framework.renderers.nvdiff_rasterizer import NVDiffRasterizer

    half = (0.4, 0.3, 0.25)
    batch = camera(48)
    batch["light_positions"] = batch["camera_positions"]
    renderer = NVDiffRasterizer(
        {"backend": "torch"}, geometry=MeshGeometry(box_mesh(half)),
        material=registry.find("material", "no-material")({}),
        background=registry.find("background", "solid-color-background")({"color": [0.0, 0.0, 0.0]}),
    )
    with torch.no_grad():
        out = renderer(**batch)
    t, normal = ray_box(batch["rays_o"][0], batch["rays_d"][0], half)
    hits = torch.isfinite(t)
    covered = out["opacity"][0, ..., 0] > 0
    # antialiasing spreads coverage one pixel outward at most; the rasterized pixels are exactly the hits
    rast = rasterize(clip_of(box_mesh(half).v_pos, batch), box_mesh(half).t_pos_idx, (48, 48))
    assert torch.equal(rast[0, ..., 3] > 0, hits)
    assert (hits & ~covered).sum() == 0
    # away from the edges between sides (the sides have vertices of their own, so antialiasing blends across them)
    side = torch.div(rast[0, ..., 3] - 1, 2, rounding_mode="floor")
    same = torch.ones_like(hits)
    for shift in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        same &= side == torch.roll(side, shift, dims=(0, 1))
    interior = same & hits
    assert interior.sum() > 0.7 * hits.sum()
    assert (out["depth"][0, ..., 0][interior] - t[interior]).abs().max() < 1e-4
    assert (out["comp_normal"][0][interior] - (normal[interior] + 1) / 2).abs().max() < 1e-5
    assert (out["depth"][0][~covered] == 0).all() and (out["comp_rgb"][0][~covered] == 0).all()


def test_sphere_mesh_coverage_depth_and_normals_approach_the_sphere():
    radius, res = 0.5, 64
    batch = camera(res)
    mesh = sphere_mesh(radius, subdivisions=4)
    rast = rasterize(clip_of(mesh.v_pos, batch), mesh.t_pos_idx, (res, res))
    t, normal = ray_sphere(batch["rays_o"][0], batch["rays_d"][0], radius)
    covered = rast[0, ..., 3] > 0
    hits = torch.isfinite(t)
    # the inscribed icosphere differs from the sphere only in a thin band along the silhouette
    assert (covered & ~hits).sum() == 0
    assert (hits & ~covered).sum() <= 0.02 * hits.sum()
    p = interpolate(mesh.v_pos, rast, mesh.t_pos_idx)[0]
    depth = (p - batch["camera_positions"][0]).norm(dim=-1)
    # the icosphere lies between its sphere and the ball touching its faces' planes: so does each hit
    unit_normals = torch.nn.functional.normalize(mesh.face_normals_scaled(), dim=-1)
    inner = (unit_normals * mesh.face_vertices()[:, 0]).sum(-1).min().item()
    t_inner, _ = ray_sphere(batch["rays_o"][0], batch["rays_d"][0], inner)
    both = covered & torch.isfinite(t_inner)
    assert both.sum() > 0.9 * hits.sum()
    assert (depth[both] >= t[both] - 1e-5).all() and (depth[both] <= t_inner[both] + 1e-5).all()
    facing = both & (-(normal * batch["rays_d"][0]).sum(-1) > 0.3)
    n = torch.nn.functional.normalize(interpolate(mesh.v_nrm, rast, mesh.t_pos_idx)[0], dim=-1)
    cos = (n[facing] * normal[facing]).sum(-1)
    assert cos.min() > math.cos(math.radians(3.0))


def test_chunked_candidates_give_the_same_image():
    batch = camera(40)
    mesh = sphere_mesh(0.5, 3)
    clip = clip_of(mesh.v_pos, batch)
    full = visible_faces(clip[0], mesh.t_pos_idx, 40, 40)
    assert torch.equal(full, visible_faces(clip[0], mesh.t_pos_idx, 40, 40, max_candidates=37))
    assert (full >= 0).sum() > 300


def test_empty_and_offscreen_meshes():
    pos = torch.tensor([[[5.0, 5.0, 0.0, 1.0], [6.0, 5.0, 0.0, 1.0], [5.0, 6.0, 0.0, 1.0]]])
    assert (rasterize(pos, torch.tensor([[0, 1, 2]]), (8, 8)) == 0).all()
    assert (rasterize(pos, torch.zeros(0, 3, dtype=torch.long), (8, 8)) == 0).all()
    color = torch.rand(1, 8, 8, 3)
    rast = rasterize(pos, torch.zeros(0, 3, dtype=torch.long), (8, 8))
    assert torch.equal(antialias(color, rast, pos, torch.zeros(0, 3, dtype=torch.long)), color)


# ------------------------------------------------------------------------------------------------ gradients
def _perspective_triangles(dtype=torch.float64):
    torch.manual_seed(1)
    pos = torch.tensor(
        [[-0.61, -0.52, 0.1, 1.0], [0.43, -0.61, 0.2, 1.1], [0.47, 0.52, 0.3, 0.9], [-0.37, 0.47, 0.0, 1.2],
         [0.05, 0.83, 0.6, 1.05]], dtype=dtype)[None]
    tri = torch.tensor([[0, 1, 2], [0, 2, 3], [3, 2, 4]])
    return pos, tri


def test_finite_difference_gradients_of_barycentrics_and_attributes():
    pos, tri = _perspective_triangles()
    weights = torch.randn(1, 12, 12, 3, dtype=torch.float64)
    attr = torch.randn(5, 3, dtype=torch.float64)

    def render(p, a):
        rast = rasterize(p, tri, (12, 12))
        return (interpolate(a, rast, tri) * weights).sum() + (rast[..., :2] ** 2).sum()

    assert torch.autograd.gradcheck(render, (pos.clone().requires_grad_(True), attr.requires_grad_(True)),
                                    eps=1e-6, atol=1e-7, rtol=1e-6)


def test_finite_difference_gradients_through_the_camera():
    batch = camera(16)
    mesh = sphere_mesh(0.5, 1)
    mvp = batch["mvp_mtx"].double()
    weights = torch.randn(1, 16, 16, 3, dtype=torch.float64)

    def render(v):
        clip = TorchRasterContext().vertex_transform(v, mvp)
        rast = rasterize(clip, mesh.t_pos_idx, (16, 16))
        return (interpolate(v, rast, mesh.t_pos_idx) * weights).sum()

    v = mesh.v_pos.double().requires_grad_(True)
    assert torch.autograd.gradcheck(render, (v,), eps=1e-6, atol=1e-7, rtol=1e-6)


def test_finite_difference_gradients_of_antialiasing():
    pos, tri = _perspective_triangles()
    colour = torch.rand(1, 10, 10, 1, dtype=torch.float64)
    weights = torch.randn(1, 10, 10, 3, dtype=torch.float64)

    def render(p, c):
        rast = rasterize(p, tri, (10, 10))
        shaded = torch.cat([c * (rast[..., 3:] > 0), interpolate(p[0, :, :2], rast, tri)], -1)
        return (antialias(shaded, rast, p, tri) * weights).sum()

    assert torch.autograd.gradcheck(render, (pos.clone().requires_grad_(True), colour.requires_grad_(True)),
                                    eps=1e-6, atol=1e-7, rtol=1e-6)


# ------------------------------------------------------------------------------------------------ antialiasing
def test_antialiased_vertical_edges_cover_exactly_their_share_of_each_pixel():
    # a band between x = -0.33 and x = 0.41 (NDC) over the full height: each row covers (0.41 + 0.33) / 2 * W pixels
    pos = torch.tensor([[[-0.33, -2, 0, 1], [0.41, -2, 0, 1], [0.41, 2, 0, 1], [-0.33, 2, 0, 1]]], dtype=torch.float64)
    pos.requires_grad_(True)
    rast = rasterize(pos, QUAD, (10, 16))
    coverage = antialias((rast[..., 3:] > 0).double(), rast, pos, QUAD)[0, ..., 0]
    expected = torch.zeros(16, dtype=torch.float64)
    for j in range(16):  # pixel j spans ndc [2j/16 - 1, 2(j+1)/16 - 1]
        lo, hi = 2 * j / 16 - 1, 2 * (j + 1) / 16 - 1
        expected[j] = max(0.0, min(hi, 0.41) - max(lo, -0.33)) / (2 / 16)
    assert torch.allclose(coverage, expected.expand(10, 16), atol=1e-12)
    coverage.sum().backward()  # moving the right edge by dx (ndc) adds dx * W / 2 pixels per row
    assert torch.allclose(pos.grad[0, :, 0], torch.tensor([-40.0, 40.0, 40.0, -40.0], dtype=torch.float64))


def test_silhouettes_over_another_surface_are_antialiased_too():
    # the band of the previous test in front of a large quad: the band's share of each pixel is the same
    band = [[-0.33, -2, 0.1, 1], [0.41, -2, 0.1, 1], [0.41, 2, 0.1, 1], [-0.33, 2, 0.1, 1]]
    wall = [[-3, -3, 0.5, 1], [3, -3, 0.5, 1], [3, 3, 0.5, 1], [-3, 3, 0.5, 1]]
    pos = torch.tensor([wall + band], dtype=torch.float64, requires_grad=True)
    tri = torch.cat([QUAD, QUAD + 4])
    rast = rasterize(pos, tri, (6, 16))
    is_band = (rast[..., 3:] > 2).double()
    coverage = antialias(is_band, rast, pos, tri)[0, ..., 0]
    expected = torch.tensor([max(0.0, min(2 * (j + 1) / 16 - 1, 0.41) - max(2 * j / 16 - 1, -0.33)) * 8
                             for j in range(16)], dtype=torch.float64)
    assert torch.allclose(coverage, expected.expand(6, 16), atol=1e-12)
    coverage.sum().backward()
    assert torch.allclose(pos.grad[0, 4:, 0], torch.tensor([-24.0, 24.0, 24.0, -24.0], dtype=torch.float64))
    assert pos.grad[0, :4].abs().sum() == 0  # the wall's edges are off screen


def test_antialiased_area_of_a_rotated_square():
    c, s = math.cos(0.3), math.sin(0.3)
    sq = torch.tensor([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]], dtype=torch.float64)
    sq = sq @ torch.tensor([[c, s], [-s, c]], dtype=torch.float64)
    pos = torch.cat([sq, torch.zeros(4, 1), torch.ones(4, 1)], -1)[None]
    rast = rasterize(pos, QUAD, (64, 64))
    coverage = antialias((rast[..., 3:] > 0).double(), rast, pos, QUAD)
    assert coverage.sum().item() == pytest.approx(32 * 32, rel=2e-3)  # the square is 1 x 1 of the 2 x 2 NDC square
    assert ((coverage > 0) & (coverage < 1)).sum() > 100  # the edges are blended


def test_interior_edges_are_not_blended_and_silhouettes_are():
    batch = camera(48)
    mesh = sphere_mesh(0.5, 3)
    clip = clip_of(mesh.v_pos, batch)
    rast = rasterize(clip, mesh.t_pos_idx, (48, 48))
    shade = interpolate(mesh.v_nrm, rast, mesh.t_pos_idx)
    out = antialias(shade, rast, clip, mesh.t_pos_idx)
    changed = (out - shade).abs().amax(-1)[0] > 0
    mask = rast[0, ..., 3] > 0
    boundary = torch.zeros_like(mask)
    boundary[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    boundary[:, 1:] |= mask[:, :-1] != mask[:, 1:]
    boundary[:-1] |= mask[:-1] != mask[1:]
    boundary[1:] |= mask[:-1] != mask[1:]
    assert changed.any() and (changed & ~boundary).sum() == 0


def test_edge_neighbours_of_a_tetrahedron():
    tri = torch.tensor([[0, 1, 2], [0, 3, 1], [0, 2, 3], [1, 3, 2]])
    far = edge_neighbours(tri)
    # face 0's edge opposite corner 0 is (1, 2), shared with face 3 (1, 3, 2), whose far vertex is 3
    assert far[0].tolist() == [3, 3, 3] and (far >= 0).all()
    assert edge_neighbours(torch.tensor([[0, 1, 2]])).tolist() == [[-1, -1, -1]]


def test_silhouette_gradient_moves_vertices_towards_the_target_outline():
    # a mask loss asking for a larger disc pushes every silhouette vertex outward; without antialiasing, no gradient
    batch = camera(40, elevation=0.0, azimuth=0.0, distance=2.0, fovy=40.0)
    mesh = sphere_mesh(0.4, 2)
    v = mesh.v_pos.clone().requires_grad_(True)
    target = torch.isfinite(ray_sphere(batch["rays_o"][0], batch["rays_d"][0], 0.5)[0]).float()[None, ..., None]
    clip = TorchRasterContext().vertex_transform(v, batch["mvp_mtx"])
    rast = rasterize(clip, mesh.t_pos_idx, (40, 40))
    mask = (rast[..., 3:] > 0).float()
    ((antialias(mask, rast, clip, mesh.t_pos_idx) - target) ** 2).sum().backward()
    radial = (v.grad[:, 1:] * mesh.v_pos[:, 1:]).sum(-1)  # the image plane is (y, z) for a camera on +x
    moved = v.grad.norm(dim=-1) > 0
    assert moved.sum() >= 8 and (radial[moved] < 0).all()  # descent (minus the gradient) points outward
    assert not mask.requires_grad  # point-sampled coverage alone carries no gradient


# ------------------------------------------------------------------------------------------------ devices
def test_gpu_check_rows_run_on_cpu():
    from lab.raster_checks import gpu_check_rows

    rows = {check: value for _, check, value in gpu_check_rows("cpu", dry_run=True)}
    assert rows["box: torch-cpu vs torch-cpu: coverage_mismatch_fraction"] == "0"
    assert float(rows["sphere: torch-cpu vs torch-cpu: faces"]) == 1280
    assert float(rows["sphere: torch-cpu vs torch-cpu: ms_torch_cpu"]) > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensors_give_the_cpu_result():
    batch = camera(64)
    mesh = sphere_mesh(0.5, 4)
    clip = clip_of(mesh.v_pos, batch)
    cpu = rasterize(clip, mesh.t_pos_idx, (64, 64))
    gpu = rasterize(clip.cuda(), mesh.t_pos_idx.cuda(), (64, 64)).cpu()
    assert torch.equal(cpu[..., 3], gpu[..., 3])
    assert torch.allclose(cpu, gpu, atol=1e-5)


@pytest.mark.skipif(not (torch.cuda.is_available() and nvdiffrast_importable()), reason="needs CUDA and nvdiffrast")
def test_nvdiffrast_and_the_pytorch_back_end_agree():
    from lab.raster_checks import backend_report

    for name, row in backend_report("cuda", resolution=96, subdivisions=4).items():
        assert row["coverage_mismatch_fraction"] < 2e-3, name
        assert row["depth_max_abs_diff"] < 1e-3 and row["comp_normal_max_abs_diff"] < 1e-3, name
        assert row["opacity_mean_abs_diff"] < 1e-2, name

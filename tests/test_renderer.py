"""nerf-volume-renderer (PyTorch sampler) against the closed-form rendering of a uniform-density sphere."""

import math

import pytest
import torch

import framework.backgrounds  # noqa: F401
import framework.geometry  # noqa: F401
import framework.materials  # noqa: F401
import framework.renderers  # noqa: F401
from framework import registry
from framework.errors import ConfigError
from lab.render_checks import UniformSphere, orbit_rays


def make_renderer(geometry, material="no-material", bg_color=(1.0, 1.0, 1.0), **cfg):
    mat = registry.find("material", material)({})
    bg = registry.find("background", "solid-color-background")({"color": list(bg_color)})
    renderer = registry.find("renderer", "nerf-volume-renderer")(cfg, geometry=geometry, material=mat, background=bg)
    return renderer, mat, bg


@pytest.fixture(scope="module")
def rays():
    return orbit_rays(24, 24, elevation_deg=20.0, azimuth_deg=35.0, distance=1.8, fovy_deg=55.0)


def chord_step(batch, n_samples):
    """Per-ray step of the PyTorch sampler: the chord through the [-1, 1]^3 box split into n_samples intervals."""
    o, d = batch["rays_o"][0], batch["rays_d"][0]
    t1, t2 = (-1 - o) / d, (1 - o) / d
    t_min = torch.minimum(t1, t2).amax(-1).clamp(min=0)
    t_max = torch.maximum(t1, t2).amin(-1)
    return (t_max - t_min).clamp(min=0) / n_samples


@pytest.mark.parametrize("training", [False, True])
def test_sphere_opacity_depth_and_variance_match_the_closed_form(rays, training):
    sphere = UniformSphere(radius=0.5, sigma=5.0, center=(0.1, -0.05, 0.0))
    n = 256
    renderer, _, _ = make_renderer(sphere, num_samples_per_ray=n, grid_prune=False)
    renderer.train(training)
    torch.manual_seed(0)
    with torch.no_grad():
        out = renderer(rays["rays_o"], rays["rays_d"], rays["light_positions"])
    exact = sphere.closed_form(rays["rays_o"][0], rays["rays_d"][0])
    step = chord_step(rays, n)
    d_opacity = (out["opacity"][0, ..., 0] - exact["opacity"]).abs()
    # each ray's optical depth is off by at most sigma * step at each end of its chord
    assert (d_opacity <= 2 * sphere.sigma * step + 1e-5).all()
    assert d_opacity.mean() < 0.01
    assert exact["opacity"].max() > 0.95 and (exact["opacity"] == 0).any()
    d_depth = (out["depth"][0, ..., 0] - exact["depth"]).abs()
    assert d_depth.mean() < 0.01 and d_depth.max() < 0.06
    opaque = (exact["opacity"] > 0.6) & (out["opacity"][0, ..., 0] > 0.6)
    rel = (out["z_variance"][0, ..., 0] - exact["z_variance"]).abs()[opaque] / exact["z_variance"][opaque]
    assert rel.mean() < 0.05
    assert out["comp_rgb"].shape == (1, 24, 24, 3)


def test_more_samples_converge(rays):
    sphere = UniformSphere(radius=0.5, sigma=5.0)
    exact = sphere.closed_form(rays["rays_o"][0], rays["rays_d"][0])["opacity"]
    errors = []
    for n in (32, 512):
        renderer, _, _ = make_renderer(sphere, num_samples_per_ray=n, grid_prune=False)
        renderer.eval()
        with torch.no_grad():
            errors.append((renderer(rays["rays_o"], rays["rays_d"], rays["light_positions"])["opacity"][0, ..., 0] - exact).abs().mean())
    assert errors[1] < errors[0] / 4


def test_composite_colour_and_background(rays):
    sphere = UniformSphere(radius=0.5, sigma=5.0, color=(0.2, 0.4, 0.6))
    renderer, _, _ = make_renderer(sphere, bg_color=(0.0, 1.0, 0.0), num_samples_per_ray=64)
    renderer.eval()
    with torch.no_grad():
        out = renderer(rays["rays_o"], rays["rays_d"], rays["light_positions"])
        a = out["opacity"]
        expected = a * torch.tensor([0.2, 0.4, 0.6]) + (1 - a) * torch.tensor([0.0, 1.0, 0.0])
        assert torch.allclose(out["comp_rgb"], expected, atol=1e-5)
        assert torch.allclose(out["comp_rgb_fg"], a * torch.tensor([0.2, 0.4, 0.6]), atol=1e-5)
        override = renderer(rays["rays_o"], rays["rays_d"], rays["light_positions"], bg_color=torch.tensor([[1.0, 0.0, 0.0]]))
        assert torch.allclose(override["comp_rgb"], out["comp_rgb_fg"] + (1 - a) * torch.tensor([1.0, 0.0, 0.0]), atol=1e-5)


def _exact_grid(renderer, sphere):
    """Mark exactly the occupancy cells whose box meets the sphere (closest point of the cell within the radius)."""
    res = renderer.cfg.grid_resolution
    edges = torch.linspace(-1, 1, res + 1)
    lo, hi = edges[:-1], edges[1:]
    grids = torch.meshgrid(torch.arange(res), torch.arange(res), torch.arange(res), indexing="ij")
    dist2 = torch.zeros(res, res, res)
    for axis, idx in enumerate(grids):
        c = float(sphere.center[axis])
        nearest = torch.clamp(torch.full_like(lo[idx], c), lo[idx], hi[idx])
        dist2 += (nearest - c) ** 2
    renderer.estimator.binaries.copy_((dist2 < sphere.radius**2)[None])
    renderer.estimator.occs.fill_(1.0)


def test_empty_space_skipping_keeps_the_render_and_drops_samples(rays):
    sphere = UniformSphere(radius=0.4, sigma=5.0, center=(0.1, 0.0, -0.1))
    full, _, _ = make_renderer(sphere, num_samples_per_ray=128, grid_prune=False)
    pruned, _, _ = make_renderer(sphere, num_samples_per_ray=128, grid_prune=True)
    _exact_grid(pruned, sphere)
    full.train(), pruned.train()  # training mode returns the per-sample tensors (randomized=False: same points)
    full.cfg.randomized = pruned.cfg.randomized = False
    a = full(rays["rays_o"], rays["rays_d"], rays["light_positions"])
    b = pruned(rays["rays_o"], rays["rays_d"], rays["light_positions"])
    for key in ("opacity", "depth", "comp_rgb", "z_variance"):
        assert torch.allclose(a[key], b[key], atol=1e-5), key
    assert b["points"].shape[0] < a["points"].shape[0] / 5
    # every kept sample lies in an occupied cell, and all samples inside the sphere were kept
    cells = ((b["points"] + 1) / 2 * 32).long().clamp(0, 31)
    assert pruned.estimator.binaries[0, cells[:, 0], cells[:, 1], cells[:, 2]].all()
    inside_full = (a["density"] > 0).sum()
    assert (b["density"] > 0).sum() == inside_full


def test_occupancy_update_marks_the_sphere(rays):
    sphere = UniformSphere(radius=0.5, sigma=5.0)
    renderer, _, _ = make_renderer(sphere, num_samples_per_ray=128)
    assert renderer.estimator.binaries.all()  # a fresh grid is fully occupied
    renderer.train()
    torch.manual_seed(0)
    for step in range(40):
        renderer.update_step(0, step)  # updates at steps 0, 16, 32
    centers = (torch.stack(torch.meshgrid(*[torch.arange(32)] * 3, indexing="ij"), -1) + 0.5) / 32 * 2 - 1
    r = centers.norm(dim=-1)
    occupied = renderer.estimator.binaries[0]
    assert occupied[r < 0.4].all() and not occupied[r > 0.6].any()
    before = renderer.estimator.binaries.clone()
    renderer.update_step(0, 48, on_load_weights=True)  # no update when loading weights
    renderer.eval()
    renderer.update_step(0, 64)  # nor in eval mode
    assert torch.equal(before, renderer.estimator.binaries)
    state = renderer.state_dict()
    assert {"estimator.occs", "estimator.binaries", "bbox"} <= set(state)


def test_visibility_pruning_and_early_stop(rays):
    # a nearly opaque sphere: samples behind the front surface are dropped, the render is unchanged
    sphere = UniformSphere(radius=0.5, sigma=200.0)
    kwargs = dict(num_samples_per_ray=256, randomized=False)
    full, _, _ = make_renderer(sphere, grid_prune=False, **kwargs)
    pruned, _, _ = make_renderer(sphere, **kwargs)
    _exact_grid(pruned, sphere)
    full.train(), pruned.train()
    a = full(rays["rays_o"], rays["rays_d"], rays["light_positions"])
    b = pruned(rays["rays_o"], rays["rays_d"], rays["light_positions"])
    assert torch.allclose(a["opacity"], b["opacity"], atol=1e-3)
    assert torch.allclose(a["depth"], b["depth"], atol=1e-3)
    inside = (b["density"] > 0).sum()
    assert inside < (a["density"] > 0).sum() / 3
    exact = sphere.closed_form(rays["rays_o"][0], rays["rays_d"][0])
    hit = exact["opacity"] > 0.999
    t0, _ = sphere.chord(rays["rays_o"][0], rays["rays_d"][0])
    # depth of an opaque sphere is its entry distance plus 1 / sigma, up to one sample step
    assert ((b["depth"][0, ..., 0] - (t0 + 1 / sphere.sigma)).abs()[hit] < 2 * chord_step(rays, 256)[hit] + 1e-3).all()


def test_chunked_evaluation_equals_one_pass(rays):
    sphere = UniformSphere(radius=0.5, sigma=5.0)
    one, _, _ = make_renderer(sphere, num_samples_per_ray=64, eval_chunk_size=0)
    chunked, _, _ = make_renderer(sphere, num_samples_per_ray=64, eval_chunk_size=64 * 50)  # 50 rays per chunk
    one.eval(), chunked.eval()
    with torch.no_grad():
        a = one(rays["rays_o"], rays["rays_d"], rays["light_positions"])
        b = chunked(rays["rays_o"], rays["rays_d"], rays["light_positions"])
    assert set(a) == set(b)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_normals_and_comp_normal(rays):
    sphere = UniformSphere(radius=0.5, sigma=200.0)
    renderer, _, _ = make_renderer(sphere, material="diffuse-with-point-light-material", num_samples_per_ray=256)
    renderer.eval()
    with torch.no_grad():
        out = renderer(rays["rays_o"], rays["rays_d"], rays["light_positions"])
    o, d = rays["rays_o"][0], rays["rays_d"][0]
    t0, _ = sphere.chord(o, d)
    entry_normal = torch.nn.functional.normalize(o + t0[..., None] * d, dim=-1)
    hit = out["opacity"][0, ..., 0] > 0.999
    assert hit.sum() > 50
    expected = (entry_normal + 1) / 2 * out["opacity"][0]
    assert (out["comp_normal"][0][hit] - expected[hit]).abs().max() < 0.05


def test_training_outputs_and_gradients(rays):
    torch.manual_seed(0)
    geometry = registry.find("geometry", "implicit-volume")(
        {"pos_encoding_config": {"n_levels": 4, "log2_hashmap_size": 12, "backend": "torch"}, "normal_type": "analytic"}
    )
    renderer, material, background = make_renderer(
        geometry, material="diffuse-with-point-light-material", num_samples_per_ray=32, return_comp_normal=True
    )
    renderer.train()
    out = renderer(rays["rays_o"], rays["rays_d"], rays["light_positions"], shading="diffuse")
    n = out["weights"].shape[0]
    for key, shape in [("t_points", (n, 1)), ("t_intervals", (n, 1)), ("t_dirs", (n, 3)), ("points", (n, 3)), ("ray_indices", (n,)), ("density", (n, 1)), ("normal", (n, 3))]:
        assert out[key].shape == shape, key
    opacity = torch.zeros(24 * 24).index_add_(0, out["ray_indices"], out["weights"][:, 0])
    assert torch.allclose(opacity.view(1, 24, 24, 1), out["opacity"], atol=1e-6)
    assert out["comp_normal"].shape == (1, 24, 24, 3)
    # the orientation loss differentiates the analytic normals (a second derivative of the field)
    orient = (out["weights"].detach() * (out["normal"] * out["t_dirs"]).sum(-1, keepdim=True).clamp_min(0) ** 2).sum()
    loss = out["comp_rgb"].mean() + out["opacity"].mean() + out["z_variance"].mean() + orient
    loss.backward()
    assert geometry.encoding.params.grad.abs().sum() > 0
    assert geometry.feature_network.layers[0].weight.grad.abs().sum() > 0


def test_rays_missing_the_box_render_empty_and_backpropagate():
    geometry = registry.find("geometry", "implicit-volume")({"pos_encoding_config": {"n_levels": 2, "log2_hashmap_size": 8, "backend": "torch"}})
    renderer, _, _ = make_renderer(geometry, num_samples_per_ray=16)
    renderer.train()
    rays_o = torch.tensor([0.0, 0.0, 5.0]).expand(1, 2, 2, 3)
    rays_d = torch.tensor([0.0, 0.0, 1.0]).expand(1, 2, 2, 3)
    out = renderer(rays_o, rays_d, torch.zeros(1, 3))
    assert torch.equal(out["opacity"], torch.zeros(1, 2, 2, 1))
    assert torch.allclose(out["comp_rgb"], torch.ones(1, 2, 2, 3))
    out["comp_rgb"].sum().backward()  # the graph reaches the geometry even with no sample inside the box


def test_configuration_errors():
    geometry = registry.find("geometry", "implicit-volume")({"pos_encoding_config": {"n_levels": 2, "log2_hashmap_size": 8, "backend": "torch"}})
    with pytest.raises(ConfigError, match="normal_type"):
        make_renderer(geometry, material="diffuse-with-point-light-material")
    with pytest.raises(ConfigError, match="sampler"):
        renderer, _, _ = make_renderer(geometry, sampler="nerfacc")
        renderer(torch.zeros(1, 1, 1, 3), torch.ones(1, 1, 1, 3), torch.zeros(1, 3))
    with pytest.raises(ConfigError, match="num_samples"):
        make_renderer(geometry, num_samples_per_ray=0)


def test_render_step_size_is_threestudios():
    renderer, _, _ = make_renderer(UniformSphere(), radius=1.0, num_samples_per_ray=512)
    assert renderer.render_step_size == pytest.approx(1.732 * 2 / 512)
    assert renderer.resolve_sampler(torch.device("cpu")) == "torch"
    assert math.isclose(renderer.bbox[1, 0].item(), 1.0)


def test_packed_weights_match_nerfacc_batched_and_the_definition():
    from nerfacc import render_weight_from_density

    from framework.renderers.sampling import packed_weights

    torch.manual_seed(0)
    n_rays, n_samples = 5, 7
    t = torch.sort(torch.rand(n_rays, n_samples + 1) * 3, dim=1).values
    t_starts, t_ends = t[:, :-1], t[:, 1:]
    sigmas = torch.rand(n_rays, n_samples) * 4
    keep = torch.rand(n_rays, n_samples) > 0.3
    keep[2] = False  # a ray without samples
    batched, _, _ = render_weight_from_density(t_starts, t_ends, sigmas * keep)
    ray_indices = keep.nonzero()[:, 0]
    packed = packed_weights(t_starts[keep], t_ends[keep], sigmas[keep], ray_indices)
    assert torch.allclose(packed, batched[keep], atol=1e-6)
    # the definition, one sample at a time
    for k, (r, s) in enumerate(keep.nonzero().tolist()):
        tau = lambda j: float(sigmas[r, j] * (t_ends[r, j] - t_starts[r, j]))  # noqa: E731
        before = sum(tau(j) for j in range(s) if keep[r, j])
        assert packed[k].item() == pytest.approx(math.exp(-before) * (1 - math.exp(-tau(s))), abs=1e-6)


def test_nerfacc_branch_with_a_stand_in_marcher(rays, monkeypatch):
    """The CUDA branch's wiring (arguments, packed rendering, chunked shading) with a PyTorch stand-in for
    ``OccGridEstimator.sampling``: fixed steps of render_step_size from the box entry, as nerfacc marches."""
    from nerfacc.grid import _ray_aabb_intersect

    sphere = UniformSphere(radius=0.5, sigma=5.0)
    renderer, _, _ = make_renderer(sphere, num_samples_per_ray=512, eval_chunk_size=3000)
    calls = []

    def marcher(rays_o, rays_d, sigma_fn=None, near_plane=0.0, far_plane=1e10, render_step_size=1e-3,
                alpha_thre=0.0, stratified=False, cone_angle=0.0, early_stop_eps=1e-4):
        calls.append(dict(step=render_step_size, alpha=alpha_thre, stratified=stratified, eps=early_stop_eps))
        t_min, t_max, hit = _ray_aabb_intersect(rays_o, rays_d, renderer.bbox.view(1, 6))
        t_min, t_max = t_min[:, 0].clamp(min=near_plane), t_max[:, 0]
        k = torch.arange(int(2 * 1.74 / render_step_size) + 1, dtype=torch.float32)
        starts = t_min[:, None] + k * render_step_size
        keep = hit[:, :1] & (starts + render_step_size <= t_max[:, None])
        ray_indices = keep.nonzero()[:, 0]
        t_starts, t_ends = starts[keep], starts[keep] + render_step_size
        if sigma_fn is not None:
            sig = sigma_fn(t_starts, t_ends, ray_indices)
            assert sig.shape == t_starts.shape
        return ray_indices.int(), t_starts, t_ends

    monkeypatch.setattr(renderer, "resolve_sampler", lambda device: "nerfacc")
    monkeypatch.setattr(renderer.estimator, "sampling", marcher)
    renderer.eval()
    with torch.no_grad():
        out = renderer(rays["rays_o"], rays["rays_d"], rays["light_positions"])
    assert calls[-1] == dict(step=renderer.render_step_size, alpha=0.0, stratified=False, eps=1e-4)
    exact = sphere.closed_form(rays["rays_o"][0], rays["rays_d"][0])
    d_opacity = (out["opacity"][0, ..., 0] - exact["opacity"]).abs()
    assert (d_opacity <= 2 * sphere.sigma * renderer.render_step_size + 1e-5).all()
    assert (out["depth"][0, ..., 0] - exact["depth"]).abs().mean() < 0.01
    renderer.train()
    renderer.cfg.randomized = False
    train_out = renderer(rays["rays_o"], rays["rays_d"], rays["light_positions"])
    assert calls[-1]["stratified"] is False
    assert torch.allclose(train_out["opacity"], out["opacity"], atol=1e-5)  # one pass == chunked shading
    assert train_out["ray_indices"].dtype == torch.long


def test_sphere_closed_form_matches_numerical_integration():
    sphere = UniformSphere(radius=0.5, sigma=3.0, center=(0.1, 0.0, -0.05))
    rays_o = torch.tensor([[2.0, 0.0, 0.0], [2.0, 0.3, 0.2], [0.0, -2.0, 0.4], [0.1, 0.0, 0.0]], dtype=torch.float64)
    rays_d = torch.nn.functional.normalize(torch.tensor([[-1.0, 0.0, 0.0], [-1.0, -0.1, -0.1], [0.0, 1.0, -0.1], [0.0, 0.0, 1.0]], dtype=torch.float64), dim=-1)
    exact = sphere.double().closed_form(rays_o, rays_d)
    dt = 1e-5
    t = torch.arange(0, 4, dt, dtype=torch.float64) + dt / 2
    for k in range(4):
        p = rays_o[k] + t[:, None] * rays_d[k]
        sigma = sphere.sigma * ((p - sphere.center.double()).norm(dim=-1) < sphere.radius).double()
        tau = torch.cumsum(sigma * dt, 0) - sigma * dt
        w = torch.exp(-tau) * sigma * dt
        opacity = w.sum()
        depth = (w * t).sum()
        mean = depth / opacity.clamp(min=1e-12)
        variance = (w * (t - mean) ** 2).sum() / opacity.clamp(min=1e-12) if opacity > 0.5 else torch.tensor(0.0)
        assert exact["opacity"][k].item() == pytest.approx(opacity.item(), abs=1e-4)
        assert exact["depth"][k].item() == pytest.approx(depth.item(), abs=1e-4)
        assert exact["z_variance"][k].item() == pytest.approx(variance.item(), abs=1e-4)


def test_agreement_report_runs_on_the_cpu():
    from lab.render_checks import agreement_report, format_report

    small = {"pos_encoding_config": {"n_levels": 2, "log2_hashmap_size": 10, "backend": "torch"}}
    report = agreement_report("cpu", resolution=8, num_samples_per_ray=64, samplers=("torch", "torch"), blob_config=small)
    assert set(report) == {"sphere", "blob"}
    assert report["sphere"]["opacity_max_abs_diff"] == 0.0
    assert report["sphere"]["opacity_vs_exact_torch"] < 0.05
    assert "opacity_mean_abs_diff" in format_report(report)

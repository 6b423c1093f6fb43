"""The toy ground truth: shapes, camera convention, lighting, prompt wording, latent folding, the judges, the scores.

Checked against closed forms and the project's conventions, not against the code's own output.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from framework.data.cameras import camera_batch
from lab.models.toy_prior import build_vae, fold_latent_statistics
from framework.prompt_processors.base import view_directions
from lab.toy.dataset import (
    VIEW_THRESHOLDS,
    all_prompts,
    base_prompt,
    colour_prompt,
    hsv_to_rgb,
    make_offpalette_set,
    make_set,
    parse_prompt,
    random_colours,
    shape_prompt,
    view_prompts,
)
from lab.toy.evaluate import best_scale, ground_truth, scores, silhouette_iou
from lab.toy.judge import colour_of, foreground, judge_training_images, saturation, shape_of
from lab.toy.scenes import COLOURS, SHAPES, render


def cams(elevation, azimuth, distance=1.5, fovy=45.0, size=64):
    n = len(azimuth)
    return camera_batch(torch.tensor(elevation, dtype=torch.float32).expand(n).clone(),
                        torch.tensor(azimuth, dtype=torch.float32), torch.full((n,), distance),
                        torch.full((n,), fovy), size, size)


def test_sdfs_at_known_points():
    p = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert torch.allclose(SHAPES["sphere"](p), torch.tensor([-0.42, 0.58, 0.58]), atol=1e-6)
    # the rounded cube's face is at 0.32, its corner region is rounded by 0.02
    assert torch.allclose(SHAPES["cube"](torch.tensor([[0.32, 0.0, 0.0], [0.5, 0.0, 0.0]])), torch.tensor([0.0, 0.18]),
                          atol=1e-6)
    # cone: apex at z = 0.4, base radius 0.4 at z = -0.4
    cone = SHAPES["cone"](torch.tensor([[0.0, 0.0, 0.4], [0.4, 0.0, -0.4], [0.0, 0.0, -0.5], [0.0, 0.0, 0.0]]))
    assert torch.allclose(cone[:3], torch.tensor([0.0, 0.0, 0.1]), atol=1e-6)
    assert cone[3] < 0
    # torus standing in the y-z plane: the tube's centre line passes through (0, 0.3, 0)
    assert torch.allclose(SHAPES["torus"](torch.tensor([[0.0, 0.3, 0.0], [0.0, 0.0, 0.0]])),
                          torch.tensor([-0.12, 0.18]), atol=1e-6)


def test_sphere_silhouette_matches_its_projection():
    """A sphere of radius r at distance d subtends a disc of angular radius asin(r / d): its pixel area."""
    d, fovy, size = 1.5, 45.0, 128
    _, cover = render("sphere", "red", cams(15.0, [0.0], d, fovy, size), supersample=1)
    f = 0.5 * size / math.tan(math.radians(fovy) / 2)
    radius_px = f * math.tan(math.asin(0.42 / d))
    expected = math.pi * radius_px**2
    assert cover.sum().item() == pytest.approx(expected, rel=0.03)


def test_mug_handle_is_on_the_right_from_the_front_and_on_the_left_from_the_back():
    _, cover = render("mug", "red", cams(0.0, [0.0, 180.0]), supersample=1)
    cols = torch.arange(64, dtype=torch.float32)
    centre = [(c.sum(0) * cols).sum() / c.sum() for c in cover]
    assert centre[0] > 32 + 1.0  # front view (camera on +x): the handle (+y) is on the image right
    assert centre[1] < 32 - 1.0  # back view: on the left


def test_key_light_makes_front_brighter_than_back():
    rgb, cover = render("sphere", "yellow", cams(15.0, [0.0, 180.0]), supersample=1)
    fg = cover > 0.5
    front, back = rgb[0][fg[0]].mean(), rgb[1][fg[1]].mean()
    assert front > back + 0.1


def test_prompts_use_the_prompt_processor_wording():
    assert base_prompt("orange", "cube") == "an orange cube"
    assert base_prompt("red", "mug") == "a red mug"
    assert shape_prompt("cube") == "a cube" and colour_prompt("orange") == "an orange object"
    prompts = set(all_prompts())
    for d in view_directions(**VIEW_THRESHOLDS):
        assert d.prompt("a red cube") in prompts and d.prompt("a cube") in prompts
        assert d.prompt("a red object") in prompts
    assert "a red cube, front view" in prompts and "an orange torus, overhead view" in prompts
    assert "" in prompts and len(prompts) == len(all_prompts()) == 1 + (36 + 6 + 6) * 5
    assert parse_prompt("an orange cube, back view") == ("orange", "cube")
    with pytest.raises(KeyError, match="exactly one"):
        parse_prompt("a hamburger")
    with pytest.raises(KeyError, match="exactly one"):
        parse_prompt("a cube")
    assert parse_prompt("a cube, side view", partial=True) == (None, "cube")
    assert parse_prompt("a red object", partial=True) == ("red", None)
    with pytest.raises(KeyError):
        parse_prompt("a hamburger", partial=True)
    # the view suffix follows the prompt processor's thresholds: azimuth 0 front, 180 back, 90 side, elevation 70 over
    views = view_prompts("a red cube", torch.tensor([10.0, 10.0, 10.0, 70.0]), torch.tensor([0.0, 180.0, 90.0, 0.0]))
    assert views == ["a red cube, front view", "a red cube, back view", "a red cube, side view",
                     "a red cube, overhead view"]


def test_training_set_is_reproducible_and_labelled():
    a, b = make_set(2, seed=5, size=16), make_set(2, seed=5, size=16)
    assert torch.equal(a.images, b.images) and a.prompts == b.prompts
    assert len(a.prompts) == 2 * len(COLOURS) * len(SHAPES)
    for k, (prompt, (colour, shape)) in enumerate(zip(a.prompts, a.labels)):
        assert parse_prompt(prompt) == (colour, shape)
        suffix = prompt[len(base_prompt(colour, shape)):]
        assert a.prompt(k, "shape") == shape_prompt(shape) + suffix
        assert a.prompt(k, "colour") == colour_prompt(colour) + suffix
        assert a.prompt(k, "empty") == ""
    assert set(a.prompts) <= set(all_prompts())


def test_off_palette_colours_and_renders():
    # HSV by hand: pure hues at 0, 1/3, 2/3; a grey; an orange of half saturation
    hsv = torch.tensor([[0.0, 1.0, 1.0], [1 / 3, 1.0, 1.0], [2 / 3, 1.0, 0.5], [0.3, 0.0, 0.4], [1 / 12, 0.5, 1.0]])
    expected = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 0.5], [0.4, 0.4, 0.4], [1.0, 0.75, 0.5]])
    assert torch.allclose(hsv_to_rgb(hsv), expected, atol=1e-5)
    colours = random_colours(3000, torch.Generator().manual_seed(0))
    sat = saturation(colours)
    assert (sat < 1e-5).float().mean() == pytest.approx(1 / 3, abs=0.03)  # greys
    assert ((sat > 1e-5) & (sat < 0.5)).float().mean() == pytest.approx(1 / 3, abs=0.03)  # muted shades
    assert colours.min() >= 0 and colours.max() <= 1
    images = make_offpalette_set(4, seed=1, size=16, chunk=2)
    assert images.shape == (4, 3, 16, 16) and images.dtype == torch.uint8
    # a render in a per-image albedo has that albedo's chroma; the background may be any colour
    albedo = torch.tensor([[0.5, 0.5, 0.5], [0.2, 0.6, 0.3]])
    rgb, cover = render("sphere", albedo, cams(15.0, [0.0, 90.0]), supersample=1, background=(0.2, 0.2, 0.9))
    lit = rgb[cover > 0.5]
    assert (lit[: (cover[0] > 0.5).sum()].std(dim=-1) < 1e-4).all()  # the grey sphere stays grey
    assert torch.allclose(rgb[0][cover[0] == 0][0], torch.tensor([0.2, 0.2, 0.9]))


def test_fold_latent_statistics_normalises_latents_and_keeps_reconstructions():
    torch.manual_seed(0)
    vae = build_vae(0).eval()
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mean
        recon = vae.decode(z).sample
        mean, std = torch.tensor([0.5, -1.0, 2.0, 0.0]), torch.tensor([2.0, 0.5, 1.5, 3.0])
        logvar = vae.encode(x).latent_dist.logvar
        fold_latent_statistics(vae, mean, std)
        z2 = vae.encode(x).latent_dist
        assert torch.allclose(z2.mean, (z - mean.view(1, 4, 1, 1)) / std.view(1, 4, 1, 1), atol=1e-5)
        # the posterior's spread scales with the latents: var / std^2
        assert torch.allclose(z2.logvar, (logvar - 2 * torch.log(std).view(1, 4, 1, 1)).clamp(-30, 20), atol=1e-4)
        assert torch.allclose(vae.decode(z2.mean).sample, recon, atol=1e-4)
    assert vae.config.scaling_factor == 1.0


def test_judges_on_ground_truth_renders():
    """The colour judge is right on every palette render; the shape judge (a CNN, trained on seed 0) on at least 98%
    of renders it never saw (other seeds: the palette set and renders in random colours)."""
    s = make_set(2, seed=99)
    images = s.images.permute(0, 2, 3, 1).float() / 255
    assert colour_of(images) == [c for c, _ in s.labels]
    held_out, labels = judge_training_images(25, seed=4242)
    shapes = shape_of(torch.cat([images, held_out]))[0]
    truth = [sh for _, sh in s.labels] + [list(SHAPES)[i] for i in labels]
    assert sum(a == b for a, b in zip(shapes, truth)) >= 0.98 * len(truth)
    assert colour_of(torch.ones(1, 8, 8, 3)) == ["none"]
    assert not foreground(torch.ones(1, 8, 8, 3)).any()
    grey, cover = render("cube", (0.5, 0.5, 0.5), cams(15.0, [30.0]), supersample=2)
    assert colour_of(grey) == ["grey"]


def test_scores_of_ground_truth_and_of_a_wrong_shape():
    rgb, cover = render("cube", "red", cams(15.0, [0.0, 90.0, 200.0]), supersample=1)
    perfect = scores(rgb, cover, rgb, cover)
    assert perfect == {"iou": 1.0, "colour_error": 0.0}
    sphere_rgb, sphere_cover = render("sphere", "blue", cams(15.0, [0.0, 90.0, 200.0]), supersample=1)
    wrong = scores(sphere_rgb, sphere_cover, rgb, cover)
    # independent count: |A and B| / |A or B| of the two silhouettes
    a, b = sphere_cover > 0.5, cover > 0.5
    assert wrong["iou"] == pytest.approx(((a & b).sum() / (a | b).sum()).item())
    assert wrong["colour_error"] > 0.2
    nothing = scores(rgb, torch.zeros_like(cover), rgb, cover)
    assert nothing == {"iou": 0.0, "colour_error": 1.0}


def test_best_scale_finds_the_size_of_a_scaled_sphere():
    """Silhouettes of a sphere 1.15 times the toy's (radius 0.42), computed from the rays alone (a pixel is covered
    when its ray passes within the radius of the centre), are matched best by the primitive scaled by 1.15; at scale 1
    the IoU is about the ratio of the two discs' areas in the image."""
    batches = [cams(15.0, [60.0 * i, 60.0 * i + 30.0]) for i in range(6)]
    radius = 0.42 * 1.15

    def covered(b):
        d = F.normalize(b["rays_d"], dim=-1)
        return (torch.linalg.cross(b["rays_o"], d, dim=-1).norm(dim=-1) < radius).float()

    opacity = torch.cat([covered(b) for b in batches])
    scale, iou = best_scale(opacity, "sphere", batches, n_views=3)
    assert scale == pytest.approx(1.15) and iou > 0.95
    at_one = silhouette_iou(torch.cat([opacity[4 * k:4 * k + 2] for k in range(3)]),
                            torch.cat([ground_truth("sphere", "red", batches[2 * k])[1] for k in range(3)]))
    # the discs' radii in the image are proportional to tan(asin(r / d)) (test above)
    area_ratio = (math.tan(math.asin(0.42 / 1.5)) / math.tan(math.asin(radius / 1.5))) ** 2
    assert at_one == pytest.approx(area_ratio, abs=0.02)

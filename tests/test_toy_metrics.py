"""The set metrics of the ambiguity studies (lab/toy/metrics.py), against hand computations and ground truth."""

import pytest
import torch
import torch.nn.functional as F

from framework.data.cameras import camera_batch
from lab.toy.metrics import colour_histogram, edge_width, foreground_saturation, set_metrics, spread, total_variation
from lab.toy.scenes import render


def cams(azimuths, size=128):
    n = len(azimuths)
    return camera_batch(torch.full((n,), 15.0), torch.tensor(azimuths, dtype=torch.float32), torch.full((n,), 1.5),
                        torch.full((n,), 47.5), size, size)


def blur(images, sigma):
    r = torch.arange(-6, 7, dtype=torch.float32)
    k = torch.exp(-r**2 / (2 * sigma**2))
    k = (k / k.sum()).view(1, 1, 1, -1).expand(3, 1, 1, -1)
    x = F.pad(images.permute(0, 3, 1, 2), (6, 6, 6, 6), mode="replicate")
    x = F.conv2d(F.conv2d(x, k, groups=3), k.transpose(-1, -2), groups=3)
    return x.permute(0, 2, 3, 1)


def test_histogram_and_total_variation_by_hand():
    hist = colour_histogram(["red", "red", "blue", "grey"])
    assert hist["red"] == 0.5 and hist["blue"] == 0.25 and hist["grey"] == 0.25 and hist["green"] == 0.0
    assert sum(hist.values()) == pytest.approx(1.0)
    # |0.5 - 0.25| + |0.25 - 0.25| + |0.25 - 0| + |0 - 0.5| = 1.0, halved
    assert total_variation(hist, {"red": 0.25, "blue": 0.25, "green": 0.5}) == pytest.approx(0.5)
    assert total_variation(hist, hist) == 0.0


def test_saturation_and_edge_width_of_renders():
    rgb, _ = render("cube", "red", cams([20.0, 200.0]), supersample=2)  # 64x64, anti-aliased edge
    grey, _ = render("cube", (0.5, 0.5, 0.5), cams([20.0]), supersample=2)
    sat = foreground_saturation(torch.cat([rgb, grey]))
    assert sat[:2].min() > 0.8  # red (0.85, 0.1, 0.1) has saturation 0.88; shading keeps it
    assert sat[2] < 0.02
    sharp = edge_width(rgb)
    assert sharp.max() < 1.6  # about one anti-aliased pixel
    soft = edge_width(blur(rgb, 2.0))
    assert (soft > sharp + 1.0).all()  # a Gaussian blur of 2 px widens the edge by more than a pixel
    assert torch.isnan(edge_width(torch.ones(1, 16, 16, 3))).all()


def test_set_metrics_of_a_set():
    rgb = torch.cat([render("sphere", c, cams([0.0]), supersample=2)[0] for c in ("red", "red", "blue", "green")])
    m = set_metrics(rgb, reference={"red": 0.5, "blue": 0.5})
    assert m["colours"] == ["red", "red", "blue", "green"] and m["distinct_colours"] == 3
    assert m["tv_from_reference"] == pytest.approx(0.25)
    # shares 0.5, 0.25, 0.25, 0, 0, 0 against 1/6 each: (1/3 + 1/12 + 1/12 + 3/6) / 2
    assert m["tv_from_uniform"] == pytest.approx((1 / 3 + 1 / 12 + 1 / 12 + 0.5) / 2)


def test_spread_is_the_mean_pairwise_difference():
    black, white, grey = (torch.full((1, 4, 4, 3), v) for v in (0.0, 1.0, 0.5))
    assert spread(torch.cat([black, black, black])) == 0.0
    assert spread(white) == 0.0
    # pairs: black-white 1, black-grey 0.5, white-grey 0.5
    assert abs(spread(torch.cat([black, white, grey])) - 2.0 / 3.0) < 1e-6

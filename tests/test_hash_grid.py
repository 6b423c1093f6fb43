"""The PyTorch hash grid against a direct per-point evaluation written from the Instant-NGP / tiny-cuda-nn definition."""

import math

import numpy as np
import pytest
import torch

from framework.networks.hash_grid import HashGridConfig, HashGridEncoding, level_layout

PRIMES = [1, 2654435761, 805459861]


def reference_encoding(point, table, cfg, dims):
    """One point, Python integers and floats: for each level, blend the 2^D surrounding table entries."""
    features = []
    offset = 0
    for level in range(cfg.n_levels):
        scale = float(
            np.float32(np.exp2(np.float32(level) * np.log2(np.float32(cfg.per_level_scale)), dtype=np.float32))
            * np.float32(cfg.base_resolution)
            - np.float32(1.0)
        )
        resolution = math.ceil(scale) + 1
        size = min(1 << cfg.log2_hashmap_size, -(-(resolution**dims) // 8) * 8)
        pos = [min(max(float(c), 0.0), 1.0) * scale + 0.5 for c in point]
        base = [math.floor(p) for p in pos]
        frac = [p - b for p, b in zip(pos, base)]
        acc = [0.0] * cfg.n_features_per_level
        for corner in range(1 << dims):
            vertex = [base[k] + ((corner >> k) & 1) for k in range(dims)]
            weight = 1.0
            for k in range(dims):
                weight *= frac[k] if (corner >> k) & 1 else 1.0 - frac[k]
            if resolution**dims <= size:
                index = sum(vertex[k] * resolution**k for k in range(dims))
            else:
                index = 0
                for k in range(dims):
                    index ^= (vertex[k] * PRIMES[k]) % (1 << 32)
            row = offset + index % size
            for f in range(cfg.n_features_per_level):
                acc[f] += weight * float(table[row, f])
        features += acc
        offset += size
    return features


CONFIGS = [
    (3, HashGridConfig(n_levels=4, n_features_per_level=2, log2_hashmap_size=10, base_resolution=4, per_level_scale=2.0)),
    (3, HashGridConfig(n_levels=3, n_features_per_level=4, log2_hashmap_size=8, base_resolution=3, per_level_scale=1.5)),
    (2, HashGridConfig(n_levels=3, n_features_per_level=1, log2_hashmap_size=6, base_resolution=5, per_level_scale=3.0)),
]


@pytest.mark.parametrize("dims, cfg", CONFIGS)
def test_matches_per_point_reference(dims, cfg):
    torch.manual_seed(0)
    cfg.backend = "torch"
    enc = HashGridEncoding(dims, cfg)
    with torch.no_grad():
        enc.params.uniform_(-1.0, 1.0)
    layout = enc.levels
    assert any(level.dense for level in layout) and any(not level.dense for level in layout)
    points = torch.rand(25, dims)
    points[0] = 0.0
    points[1] = 1.0
    points[2, 0] = 1.2  # clamped into the cube
    table = enc.params.detach().view(-1, cfg.n_features_per_level).double()
    expected = torch.tensor([reference_encoding(p.tolist(), table, cfg, dims) for p in points], dtype=torch.float32)
    with torch.no_grad():
        got_inference = enc(points)
    got_table_grad = enc(points)  # gradients to the table only
    got_input_grad = enc(points.clone().requires_grad_(True))  # gradients to the points too
    assert got_inference.shape == (25, cfg.n_levels * cfg.n_features_per_level)
    for got in (got_inference, got_table_grad, got_input_grad):
        assert torch.allclose(got, expected, atol=1e-5)


def test_parameter_gradient_is_the_interpolation_weight():
    cfg = HashGridConfig(n_levels=2, n_features_per_level=1, log2_hashmap_size=8, base_resolution=4, per_level_scale=3.0)
    cfg.backend = "torch"
    enc = HashGridEncoding(3, cfg)
    point = torch.tensor([[0.3, 0.7, 0.45]])
    enc(point).sum().backward()
    # d(sum of outputs)/d(entry) = sum of the weights with which the entry is used; each level's weights sum to 1
    assert enc.params.grad.sum().item() == pytest.approx(2.0, abs=1e-5)
    # the reference: set one used entry to 1 and all others to 0, the output is its weight
    used = enc.params.grad.nonzero()[:, 0]
    for row in used[:4]:
        table = torch.zeros(enc.n_entries, 1, dtype=torch.float64)
        table[row] = 1.0
        ref = sum(reference_encoding(point[0].tolist(), table, cfg, 3))
        assert enc.params.grad[row].item() == pytest.approx(ref, abs=1e-5)


def test_input_gradient_matches_finite_differences():
    torch.manual_seed(1)
    cfg = HashGridConfig(n_levels=3, log2_hashmap_size=10, base_resolution=4, per_level_scale=2.0, backend="torch")
    enc = HashGridEncoding(3, cfg).double()
    with torch.no_grad():
        enc.params.uniform_(-1, 1)
    x = torch.tensor([[0.31, 0.52, 0.77]], dtype=torch.float64, requires_grad=True)
    weights = torch.randn(enc.n_output_dims, dtype=torch.float64)
    # the encoding computes in float32; compare the autograd gradient with central differences of the same function
    (enc(x).double() @ weights).sum().backward()
    h = 1e-3
    numeric = []
    for k in range(3):
        e = torch.zeros(1, 3, dtype=torch.float64)
        e[0, k] = h
        with torch.no_grad():
            numeric.append(((enc(x + e).double() - enc(x - e).double()) @ weights).item() / (2 * h))
    assert torch.allclose(x.grad[0], torch.tensor(numeric, dtype=torch.float64), rtol=1e-2, atol=1e-3)


def test_vertex_points_return_the_vertex_feature():
    cfg = HashGridConfig(n_levels=1, n_features_per_level=2, log2_hashmap_size=12, base_resolution=9, per_level_scale=2.0)
    cfg.backend = "torch"
    enc = HashGridEncoding(3, cfg)
    scale = enc.levels[0].scale  # 8: vertex (i, j, k) sits at x = (i - 0.5) / 8
    ijk = (3, 5, 2)
    point = torch.tensor([[(c - 0.5) / scale for c in ijk]])
    res = enc.levels[0].resolution
    row = ijk[0] + ijk[1] * res + ijk[2] * res * res
    with torch.no_grad():
        assert torch.allclose(enc(point)[0], enc.params.view(-1, 2)[row], atol=1e-6)


def test_threestudio_default_layout():
    levels = level_layout(3, HashGridConfig())
    assert len(levels) == 16
    assert levels[0].resolution == 16 and levels[0].dense and levels[0].size == 4096
    # per_level_scale 1.4473 from 16: the finest level has about 4096 vertices per axis
    assert abs(levels[-1].scale - 4095) < 2
    assert all(level.size == 1 << 19 for level in levels if not level.dense)
    assert [level.offset for level in levels[1:]] == list(np.cumsum([level.size for level in levels[:-1]]))


def test_state_dict_round_trip():
    cfg = HashGridConfig(n_levels=2, log2_hashmap_size=8, backend="torch")
    a, b = HashGridEncoding(3, cfg), HashGridEncoding(3, cfg)
    assert list(a.state_dict()) == ["params"]
    b.load_state_dict(a.state_dict())
    x = torch.rand(7, 3)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_progressive_band_hash_grid_switches_levels_on_over_training():
    """threestudio's ProgressiveBandHashGrid: start_level levels until start_step, one more every update_steps."""
    from framework.networks.hash_grid import HashGridConfig, HashGridEncoding

    kw = dict(n_levels=6, n_features_per_level=2, log2_hashmap_size=10, base_resolution=4, backend="torch")
    plain = HashGridEncoding(3, HashGridConfig(**kw))
    prog = HashGridEncoding(3, HashGridConfig(otype="ProgressiveBandHashGrid", start_level=2, start_step=100,
                                              update_steps=10, **kw))
    with torch.no_grad():
        prog.params.copy_(torch.randn_like(prog.params))
        plain.params.copy_(prog.params)
    x = torch.rand(64, 3)
    full = plain(x)
    for step, levels in [(0, 2), (100, 2), (109, 2), (110, 3), (125, 4), (10_000, 6)]:
        prog.update_step(0, step)
        out = prog(x)
        assert torch.equal(out[:, : 2 * levels], full[:, : 2 * levels]), step
        assert (out[:, 2 * levels :] == 0).all(), step
    # the gradient reaches only the active levels' table rows
    prog.update_step(0, 0)
    prog(x).sum().backward()
    first_two = sum(level.size for level in prog.levels[:2]) * 2
    assert prog.params.grad[:first_two].abs().sum() > 0
    assert (prog.params.grad[first_two:] == 0).all()

"""system.optimizer: the fused step used by default where PyTorch has one, checked against the closed form of a first
Adam(W)/SGD step and against PyTorch's own loop over a few steps; an implementation the config names is kept."""

import pytest
import torch
import torch.nn as nn

from systems.optim import OptimizerConfig, build_optimizer, optimizer_arguments


class Scene(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.field = nn.Parameter(torch.randn(5, 3, generator=g))
        self.lora = nn.ParameterList([nn.Parameter(torch.randn(4, 8, generator=g)) for _ in range(6)])


def _grads(module: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.grad = torch.randn(p.shape, generator=g)


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_first_step_matches_closed_form(name):
    """From zero state, m_hat = g and v_hat = g^2: p <- p (1 - lr wd [AdamW]) - lr g / (|g| + eps)."""
    lr, wd, eps = 0.05, 0.1, 1e-8
    scene = Scene()
    before = [p.detach().clone() for p in scene.parameters()]
    opt = build_optimizer(scene, OptimizerConfig(name=name, args={"lr": lr, "weight_decay": wd, "eps": eps,
                                                                   "betas": [0.9, 0.99]}))
    assert all(group["fused"] for group in opt.param_groups)
    _grads(scene, 1)
    grads = [p.grad.clone() for p in scene.parameters()]
    opt.step()
    for p, p0, g in zip(scene.parameters(), before, grads):
        if name == "AdamW":
            expected = p0 * (1 - lr * wd) - lr * g / (g.abs() + eps)
        else:  # Adam's weight decay is added to the gradient
            g = g + wd * p0
            expected = p0 - lr * g / (g.abs() + eps)
        torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-6)


def test_sgd_momentum_closed_form():
    """SGD with momentum mu over two steps: b1 = g1, b2 = mu b1 + g2, p2 = p0 - lr (b1 + b2)."""
    lr, mu = 0.1, 0.9
    scene = Scene()
    p0 = [p.detach().clone() for p in scene.parameters()]
    opt = build_optimizer(scene, OptimizerConfig(name="SGD", args={"lr": lr, "momentum": mu}))
    assert all(group["fused"] for group in opt.param_groups)
    _grads(scene, 1)
    g1 = [p.grad.clone() for p in scene.parameters()]
    opt.step()
    _grads(scene, 2)
    g2 = [p.grad.clone() for p in scene.parameters()]
    opt.step()
    for p, a, x, y in zip(scene.parameters(), p0, g1, g2):
        torch.testing.assert_close(p.detach(), a - lr * (x + (mu * x + y)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["Adam", "AdamW", "SGD"])
def test_fused_follows_pytorchs_loop_over_many_steps(name):
    args = {"lr": 0.01, "weight_decay": 0.01} if name != "SGD" else {"lr": 0.01, "momentum": 0.9, "nesterov": True}
    fused, loop = Scene(), Scene()
    opt_f = build_optimizer(fused, OptimizerConfig(name=name, args=args))
    opt_l = build_optimizer(loop, OptimizerConfig(name=name, args={**args, "fused": False}))
    assert opt_f.param_groups[0]["fused"] and not opt_l.param_groups[0]["fused"]
    for step in range(50):
        _grads(fused, step)
        _grads(loop, step)
        opt_f.step()
        opt_l.step()
    for a, b in zip(fused.parameters(), loop.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_an_implementation_the_config_names_is_kept():
    scene = Scene()
    groups = [{"params": list(scene.parameters())}]
    assert optimizer_arguments(torch.optim.AdamW, groups, {"lr": 1.0})["fused"] is True
    for chosen in ({"foreach": True}, {"fused": False}, {"differentiable": True}):
        assert optimizer_arguments(torch.optim.AdamW, groups, chosen) == chosen
    opt = build_optimizer(scene, OptimizerConfig(name="AdamW", args={"lr": 0.1, "foreach": True}))
    assert opt.param_groups[0]["foreach"] is True and not opt.param_groups[0]["fused"]
    # no fused step for these: PyTorch's own default
    assert "fused" not in optimizer_arguments(torch.optim.RMSprop, groups, {"lr": 1.0})
    ints = [{"params": [torch.zeros(3, dtype=torch.int64)]}]
    assert "fused" not in optimizer_arguments(torch.optim.AdamW, ints, {"lr": 1.0})

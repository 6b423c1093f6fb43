"""The guidance's speed switches change no value beyond float tolerance.

The independent tests (hand-computed gradients and losses, tests/test_guidance_sds.py and test_guidance_vsd.py) are
imported and run again here with every switch on: ``every_switch_on`` makes the switched-on values the Config
defaults, so each guidance those tests build has them. torch.compile is checked in tests/test_guidance_acceleration.py
(slow: compiling the tiny UNet takes minutes on two CPU cores).
"""

from dataclasses import dataclass

import pytest
import torch

import framework.guidance  # noqa: F401  (registration)
from framework import registry
from tests.test_guidance_sds import (  # noqa: F401  (rerun with every switch on)
    test_memory_options_do_not_change_the_result,
    test_sds_gradient_equals_hand_computation,
)
from tests.test_guidance_vsd import (  # noqa: F401  (rerun with every switch on)
    test_lora_loss_equals_hand_computation,
    test_shared_and_separate_modes_agree,
    test_train_on_estimate_latents,
    test_vsd_gradient_equals_hand_computation,
)

SDS = registry.find("guidance", "stable-diffusion-guidance")
VSD = registry.find("guidance", "stable-diffusion-vsd-guidance")

SWITCHES_SDS = {"enable_channels_last_format": True}
SWITCHES_VSD = {**SWITCHES_SDS, "lora_half_precision": True, "batch_shared_unet_calls": True}


def with_defaults(cls, values):
    """``cls.Config`` with other defaults (a dataclass subclass, so parsing and docs are unchanged)."""
    fields = {name: (type(value), value) for name, value in values.items()}
    namespace = {"__annotations__": {k: cls.Config.__annotations__.get(k, t) for k, (t, _) in fields.items()}}
    namespace.update({k: v for k, (_, v) in fields.items()})
    return dataclass(type("Config", (cls.Config,), namespace))


@pytest.fixture(autouse=True)
def every_switch_on(monkeypatch):
    monkeypatch.setattr(SDS, "Config", with_defaults(SDS, SWITCHES_SDS))
    monkeypatch.setattr(VSD, "Config", with_defaults(VSD, SWITCHES_VSD))


def vsd(path, lora_path, **cfg):
    return VSD({"pretrained_model_name_or_path": path, "pretrained_model_name_or_path_lora": lora_path, **cfg})


def test_the_switches_are_on(tiny_sd, tiny_sd_v):
    g = vsd(tiny_sd, tiny_sd_v)
    assert g.cfg.lora_half_precision and g.cfg.enable_channels_last_format
    assert g.lora_model.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    layer = next(iter(g.lora.layers.values()))["lora_A"]
    assert "forward" in vars(layer)  # computes in the input's dtype

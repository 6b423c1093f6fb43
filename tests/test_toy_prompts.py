"""A model folder may list the prompts it was trained on (known_prompts.json); a prompt outside them gets one
warning line naming the key, and a folder without the list (real Stable Diffusion) is not checked."""

import json
import os
from pathlib import Path

import pytest

import framework.prompt_processors  # noqa: F401  (registration)
from framework import registry
from framework.prompt_processors.vocabulary import KNOWN_PROMPTS_FILE

PP = registry.find("prompt_processor", "stable-diffusion-prompt-processor")
TOY_SD = Path(__file__).resolve().parent.parent / "load" / "toy-sd"
VIEWS = ["", ", side view", ", front view", ", back view", ", overhead view"]


@pytest.fixture
def listed_model(tiny_sd, tmp_path):
    """The tiny model's tokenizer and text encoder, with a list of two known prompts and their view prompts."""
    folder = tmp_path / "model"
    folder.mkdir()
    for part in ("tokenizer", "text_encoder"):
        os.symlink(Path(tiny_sd) / part, folder / part)
    prompts = [""] + [p + v for p in ("a red cube", "a cube") for v in VIEWS]
    (folder / KNOWN_PROMPTS_FILE).write_text(json.dumps({"description": "cubes", "prompts": prompts}))
    return folder


def warnings(capfd):
    return [line for line in capfd.readouterr().err.splitlines() if line.startswith("warning:")]


def build(model, cache, **cfg):
    return PP({"pretrained_model_name_or_path": str(model), "cache_dir": str(cache), **cfg}, prefix="system.prompt_processor")


def test_known_prompts_pass_in_silence(listed_model, tmp_path, capfd):
    build(listed_model, tmp_path / "c", prompt="a red cube")
    build(listed_model, tmp_path / "c", prompt="a cube", view_dependent_prompting=False)
    assert warnings(capfd) == []


def test_an_unknown_prompt_gets_one_line_naming_the_key(listed_model, tmp_path, capfd):
    build(listed_model, tmp_path / "c", prompt="a hamburger")
    (line,) = warnings(capfd)
    assert "system.prompt_processor.prompt" in line and "'a hamburger'" in line
    assert KNOWN_PROMPTS_FILE in line and "It knows: cubes." in line


def test_an_unknown_per_view_prompt_or_negative_prompt_is_named(listed_model, tmp_path, capfd):
    build(listed_model, tmp_path / "c", prompt="a red cube", prompt_back="the back of a red cube")
    (line,) = warnings(capfd)
    assert "system.prompt_processor.prompt_back" in line and "'the back of a red cube'" in line
    build(listed_model, tmp_path / "c", prompt="a red cube", negative_prompt="blurry")
    (line,) = warnings(capfd)
    assert "system.prompt_processor.negative_prompt" in line


def test_a_folder_without_a_list_is_not_checked_and_a_broken_list_is_reported(tiny_sd, listed_model, tmp_path,
                                                                            capfd):
    build(tiny_sd, tmp_path / "c", prompt="a hamburger")
    assert warnings(capfd) == []
    (listed_model / KNOWN_PROMPTS_FILE).write_text("{not json")
    build(listed_model, tmp_path / "c", prompt="a hamburger")
    (line,) = warnings(capfd)
    assert KNOWN_PROMPTS_FILE in line and "not checked" in line


def test_the_toy_prior_lists_what_it_was_trained_on(tmp_path, capfd):
    from lab.toy.dataset import all_prompts

    listed = json.loads((TOY_SD / KNOWN_PROMPTS_FILE).read_text())["prompts"]
    assert listed == all_prompts()
    assert {"a red cube", "a cube, front view", "an orange object, overhead view", ""} <= set(listed)
    build(TOY_SD, tmp_path / "c", prompt="a cube")
    assert warnings(capfd) == []
    build(TOY_SD, tmp_path / "c", prompt="a cube that is red")
    (line,) = warnings(capfd)
    assert "'a cube that is red'" in line and "red, green, blue" in line

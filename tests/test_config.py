"""Config parsing: every mistake fails up front with one line naming the dotted key, the file and the fix."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional

import pytest

import systems  # noqa: F401
from framework.builtin import import_builtin_modules
from framework.config import describe, field_docs, parse_structured
from framework.errors import ConfigError
from framework.experiment import find_config, load_experiment
from framework.schedule import Schedule

import_builtin_modules()

BASE = """
name: t
tag: x
data_type: image-datamodule
data: {height: 8, width: 8, batch_size: 4}
system_type: image-fitting-system
system:
  loss: {lambda_mse: 1.0}
  optimizer: {name: Adam, args: {lr: 0.01}}
trainer: {max_steps: 2}
"""


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


def error_of(tmp_path, text=BASE, overrides=()):
    with pytest.raises(ConfigError) as e:
        load_experiment(write(tmp_path, text), overrides)
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def test_valid_config_parses_to_nested_dataclasses(tmp_path):
    exp, cfg, path = load_experiment(write(tmp_path, BASE))
    assert type(exp.system).__qualname__ == "ImageFittingSystem.Config"
    assert type(exp.data).__qualname__ == "ImageDataModule.Config"
    assert exp.system.loss["lambda_mse"] == Schedule.parse(1.0)
    assert exp.data.height == 8


def test_unknown_nested_key_names_dotted_key_file_and_suggestion(tmp_path):
    msg = error_of(tmp_path, BASE.replace("grid_resolution", "x") + "\n", ["system.grid_resolutoin=4"])
    assert "system.grid_resolutoin" in msg and "did you mean 'grid_resolution'" in msg
    assert "command-line override" in msg


def test_unknown_key_in_yaml_names_the_yaml(tmp_path):
    msg = error_of(tmp_path, BASE.replace("batch_size: 4", "batch_size: 4, hieght: 3"))
    assert "data.hieght" in msg and "c.yaml" in msg and "'height'" in msg


def test_wrong_type(tmp_path):
    msg = error_of(tmp_path, BASE.replace("height: 8", "height: eight"))
    assert "data.height" in msg and "expected an integer" in msg


def test_bool_is_not_a_number(tmp_path):
    msg = error_of(tmp_path, BASE, ["system.hidden_dim=true"])
    assert "system.hidden_dim" in msg


def test_unknown_module_type_lists_registered(tmp_path):
    msg = error_of(tmp_path, BASE.replace("image-fitting-system", "image-fiting-system"))
    assert "system_type" in msg and "image-fitting-system" in msg


def test_bad_schedule_in_loss(tmp_path):
    msg = error_of(tmp_path, BASE.replace("lambda_mse: 1.0", "lambda_mse: [1, 2]"))
    assert "system.loss.lambda_mse" in msg


def test_unknown_trainer_argument(tmp_path):
    msg = error_of(tmp_path, BASE.replace("max_steps: 2", "max_step: 2"))
    assert "trainer.max_step" in msg and "max_steps" in msg


def test_launcher_owned_trainer_argument(tmp_path):
    msg = error_of(tmp_path, BASE.replace("max_steps: 2", "max_steps: 2, devices: 2"))
    assert "trainer.devices" in msg and "--gpu" in msg


def test_unknown_checkpoint_argument(tmp_path):
    msg = error_of(tmp_path, BASE + "checkpoint: {every_n_steps: 5}\n")
    assert "checkpoint.every_n_steps" in msg


def test_malformed_override(tmp_path):
    msg = error_of(tmp_path, BASE, ["system.hidden_dim"])
    assert "key=value" in msg


def test_missing_config_file_lists_available():
    with pytest.raises(ConfigError, match="image-fitting.yaml"):
        find_config("no-such-config.yaml")


def test_config_found_under_configs_dir():
    assert find_config("image-fitting.yaml").name == "image-fitting.yaml"


def test_interpolation_and_resolvers(tmp_path):
    text = BASE.replace("tag: x", 'tag: "${rmspace:a red cube,_}"').replace(
        "batch_size: 4", 'batch_size: "${mul:${data.height},2}"'
    )
    exp, _, _ = load_experiment(write(tmp_path, text))
    assert exp.tag == "a_red_cube"
    assert exp.data.batch_size == 16


def test_broken_interpolation_names_key(tmp_path):
    msg = error_of(tmp_path, BASE.replace("batch_size: 4", 'batch_size: "${data.nothing}"'))
    assert "batch_size" in msg or "nothing" in msg


def test_invalid_yaml(tmp_path):
    msg = error_of(tmp_path, "name: [unclosed\n")
    assert "not valid YAML" in msg


@dataclass
class _Inner:
    a: int = 1
    """An int."""


@dataclass
class _Outer:
    req: str
    """Required."""
    mode: Literal["x", "y"] = "x"
    """A choice."""
    opt: Optional[float] = None
    """Optional."""
    items: List[int] = field(default_factory=list)
    """A list."""
    table: Dict[str, float] = field(default_factory=dict)
    """A mapping."""
    inner: _Inner = field(default_factory=_Inner)
    """Nested."""


def test_parse_structured_types_and_errors():
    o = parse_structured(_Outer, {"req": "r", "opt": 2, "items": [1, 2], "table": {"k": 1}, "inner": {"a": 3}}, "p")
    assert o.opt == 2.0 and isinstance(o.opt, float) and o.inner.a == 3 and o.table == {"k": 1.0}
    for data, fragment in [
        ({}, "p.req: missing required value"),
        ({"req": "r", "mode": "z"}, "p.mode: expected one of 'x', 'y'"),
        ({"req": "r", "items": [1, "a"]}, "p.items[1]: expected an integer"),
        ({"req": "r", "inner": {"b": 1}}, "p.inner.b: unknown key"),
        ({"req": None}, "p.req: must not be null"),
    ]:
        with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
            parse_structured(_Outer, data, "p")


def test_field_docs_and_describe():
    assert field_docs(_Outer)["mode"] == "A choice."
    assert "A choice." in describe(_Outer)


def test_mandatory_value_left_as_question_marks(tmp_path):
    msg = error_of(tmp_path, BASE.replace("tag: x", "tag: ???"))
    assert "tag: missing required value" in msg and "tag=..." in msg

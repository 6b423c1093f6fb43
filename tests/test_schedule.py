import pytest

from framework.errors import ConfigError
from framework.schedule import Schedule


def test_constant():
    s = Schedule.parse(0.5)
    assert s(0) == 0.5 and s(10**6) == 0.5 and s.is_constant


def test_threestudio_four_element_list_is_linear_between_steps():
    s = Schedule.parse([100, 1.0, 0.0, 300])
    assert s(0) == 1.0
    assert s(100) == 1.0
    assert s(200) == pytest.approx(0.5)
    assert s(250) == pytest.approx(0.25)
    assert s(300) == 0.0 and s(5000) == 0.0


def test_threestudio_three_element_list_starts_at_zero():
    s = Schedule.parse([0.98, 0.5, 5000])
    assert s(0) == 0.98
    assert s(2500) == pytest.approx(0.74)
    assert s(5000) == 0.5


def test_step_jump_as_prolificdreamer_uses_it():
    # lambda_opaque: [10000, 0.0, 1000.0, 10001] in threestudio's prolificdreamer.yaml
    s = Schedule.parse([10000, 0.0, 1000.0, 10001])
    assert s(9999) == 0.0 and s(10000) == 0.0 and s(10001) == 1000.0


def test_typed_ramp_and_step_interpolation():
    s = Schedule.parse({"start_step": 0, "start": 2.0, "end": 4.0, "end_step": 10})
    assert s(5) == pytest.approx(3.0)
    s = Schedule.parse({"start_step": 0, "start": 2.0, "end": 4.0, "end_step": 10, "interpolation": "step"})
    assert s(9) == 2.0 and s(10) == 4.0


def test_piecewise_points():
    s = Schedule.parse({"points": [[0, 0.0], [10, 1.0], [30, 0.0]]})
    assert s(5) == pytest.approx(0.5)
    assert s(20) == pytest.approx(0.5)
    assert s(100) == 0.0


@pytest.mark.parametrize(
    "bad,fragment",
    [
        ([0.98, 0.5, 5000.5], "whole numbers"),
        ([1, 2], "start_step, start, end, end_step"),
        ({"start": 1.0}, "missing"),
        ({"points": [[10, 1.0], [0, 2.0]]}, "increase"),
        ([100, 1.0, 0.0, 50], "must not come before"),
        ("fast", "expected a number"),
        (True, "expected a number"),
    ],
)
def test_bad_schedules_fail_with_a_clear_message(bad, fragment):
    with pytest.raises(ConfigError, match=fragment):
        Schedule.parse(bad, "system.loss.lambda_x")

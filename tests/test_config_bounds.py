"""Declarative bounds on Config fields (framework/config.py): each case against a message written out by hand."""

from dataclasses import dataclass, field
from typing import Annotated, Dict, List, Optional, Tuple, Union

import pytest

from framework.config import (
    Bounds,
    BoundsError,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Probability,
    Step,
    Steps,
    describe,
    iter_fields,
    parse_structured,
    step_kind,
)
from framework.errors import ConfigError
from framework.schedule import Schedule


@dataclass
class _Inner:
    width: PositiveInt = 4
    """A width."""


@dataclass
class _Cfg:
    count: PositiveInt = 1
    """A count."""
    offset: NonNegativeInt = 0
    """An offset."""
    radius: PositiveFloat = 1.0
    """A radius."""
    noise: NonNegativeFloat = 0.0
    """A noise level."""
    prob: Probability = 0.5
    """A probability."""
    window: Annotated[float, Bounds(gt=0, le=10)] = 1.0
    """An inline range."""
    far: Annotated[float, Bounds(gt=0, allow_inf=True)] = 1e10
    """A distance that may be infinite."""
    plain: float = 0.0
    """A plain float: finite, no range."""
    maybe: Optional[PositiveInt] = None
    """Optional with a bound."""
    pair: Tuple[PositiveFloat, PositiveFloat] = (1.0, 2.0)
    """Bounded items of a tuple."""
    sizes: Union[PositiveInt, List[PositiveInt]] = 1
    """A number or a list, both bounded."""
    weight: Annotated[Schedule, Bounds(ge=0)] = 1.0
    """A non-negative schedule."""
    table: Dict[str, Probability] = field(default_factory=dict)
    """Bounded mapping values."""
    start: Step = 0
    """A step number."""
    every: Steps = 10
    """A number of steps."""
    milestones: List[Step] = field(default_factory=list)
    """Step numbers."""
    inner: _Inner = field(default_factory=_Inner)
    """A nested config."""


def message(data):
    with pytest.raises(ConfigError) as e:
        parse_structured(_Cfg, data, "system.geometry", "configs/x.yaml")
    return str(e.value)


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"count": 0}, "config error: system.geometry.count: must be >= 1, got 0; set an integer >= 1 (in configs/x.yaml)"),
        ({"offset": -1}, "config error: system.geometry.offset: must be >= 0, got -1; set an integer >= 0 (in configs/x.yaml)"),
        ({"radius": -1}, "config error: system.geometry.radius: must be > 0, got -1.0; set a number > 0 (in configs/x.yaml)"),
        ({"radius": 0.0}, "config error: system.geometry.radius: must be > 0, got 0.0; set a number > 0 (in configs/x.yaml)"),
        ({"noise": -0.5}, "config error: system.geometry.noise: must be >= 0, got -0.5; set a number >= 0 (in configs/x.yaml)"),
        ({"prob": 1.5}, "config error: system.geometry.prob: must be in [0, 1], got 1.5; set a number in [0, 1] (in configs/x.yaml)"),
        ({"window": 10.5}, "config error: system.geometry.window: must be in (0, 10], got 10.5; set a number in (0, 10] (in configs/x.yaml)"),
        ({"window": 0}, "config error: system.geometry.window: must be in (0, 10], got 0.0; set a number in (0, 10] (in configs/x.yaml)"),
        ({"plain": float("nan")}, "config error: system.geometry.plain: must be a number, got nan; set a finite number (in configs/x.yaml)"),
        ({"plain": float("inf")}, "config error: system.geometry.plain: must be a finite number, got inf; set a finite number (in configs/x.yaml)"),
        ({"radius": float("inf")}, "config error: system.geometry.radius: must be a finite number, got inf; set a finite number (in configs/x.yaml)"),
        ({"far": float("nan")}, "config error: system.geometry.far: must be a number, got nan; set a finite number (in configs/x.yaml)"),
        ({"far": -float("inf")}, "config error: system.geometry.far: must be > 0, got -inf; set a number > 0 (in configs/x.yaml)"),
        ({"maybe": 0}, "config error: system.geometry.maybe: must be >= 1, got 0; set an integer >= 1 (in configs/x.yaml)"),
        ({"pair": [1.0, -2.0]}, "config error: system.geometry.pair[1]: must be > 0, got -2.0; set a number > 0 (in configs/x.yaml)"),
        ({"sizes": 0}, "config error: system.geometry.sizes: must be >= 1, got 0; set an integer >= 1 (in configs/x.yaml)"),
        ({"sizes": [64, 0]}, "config error: system.geometry.sizes[1]: must be >= 1, got 0; set an integer >= 1 (in configs/x.yaml)"),
        ({"weight": [10, 1.0, -1.0, 20]},
         "config error: system.geometry.weight: the schedule's value at step 20 is -1.0, must be >= 0; every value of the "
         "schedule must be >= 0 (in configs/x.yaml)"),
        ({"table": {"a": 2}}, "config error: system.geometry.table.a: must be in [0, 1], got 2.0; set a number in [0, 1] (in configs/x.yaml)"),
        ({"start": -1}, "config error: system.geometry.start: must be >= 0, got -1; set an integer >= 0 (in configs/x.yaml)"),
        ({"every": 0}, "config error: system.geometry.every: must be >= 1, got 0; set an integer >= 1 (in configs/x.yaml)"),
        ({"milestones": [5, -5]}, "config error: system.geometry.milestones[1]: must be >= 0, got -5; set an integer >= 0 (in configs/x.yaml)"),
        ({"inner": {"width": 0}}, "config error: system.geometry.inner.width: must be >= 1, got 0; set an integer >= 1 (in configs/x.yaml)"),
    ],
)
def test_out_of_range_values_fail_with_one_line(data, expected):
    assert message(data) == expected


def test_type_errors_stay_type_errors():
    # A value of the wrong type is not reported as out of range.
    assert message({"sizes": "x"}) == (
        "config error: system.geometry.sizes: expected int >= 1 or list of int >= 1, got 'x' (in configs/x.yaml)"
    )
    with pytest.raises(ConfigError) as e:
        parse_structured(_Cfg, {"count": 1.5}, "p")
    assert not isinstance(e.value, BoundsError) and "expected an integer" in str(e.value)


def test_values_in_range_pass_and_inf_only_where_allowed():
    c = parse_structured(
        _Cfg,
        {"count": 3, "radius": 1e-9, "prob": 1.0, "window": 10, "far": float("inf"), "maybe": 2, "sizes": [1, 2],
         "weight": {"points": [[0, 0.0], [5, 3.0]]}, "table": {"a": 0.0}, "start": 0, "every": 1, "milestones": [0, 7]},
        "p",
    )
    assert (c.count, c.prob, c.window, c.far, c.maybe, c.sizes, c.milestones) == (3, 1.0, 10.0, float("inf"), 2, [1, 2], [0, 7])
    assert c.weight(5) == 3.0


def test_defaults_are_checked_too():
    @dataclass
    class Bad:
        n: PositiveInt = 0
        """A wrong default."""

    with pytest.raises(BoundsError, match="p.n: must be >= 1, got 0"):
        parse_structured(Bad, {}, "p")


def test_describe_shows_bounds_and_step_kinds():
    text = describe(_Cfg)
    for fragment in ["count: int >= 1 = 1", "radius: float > 0 = 1.0", "prob: float in [0, 1] = 0.5",
                     "window: float in (0, 10] = 1.0", "far: float > 0 (inf allowed) = 10000000000.0",
                     "maybe: int >= 1 or null = None", "pair: [float > 0, float > 0]",
                     "weight: Schedule >= 0", "start: int >= 0 (a step number) = 0",
                     "every: int >= 1 (a number of steps) = 10", "milestones: list of int >= 0 (a step number)"]:
        assert fragment in text, (fragment, text)


def test_step_kinds_are_found_through_the_tree():
    c = parse_structured(_Cfg, {"milestones": [3]}, "system")
    from typing import get_type_hints

    hints = get_type_hints(_Cfg, include_extras=True)
    assert step_kind(hints["start"]) == "point" and step_kind(hints["every"]) == "duration"
    assert step_kind(hints["milestones"]) == "point" and step_kind(hints["count"]) is None
    keys = {k: step_kind(tp) for k, _, tp in iter_fields(c, "system")}
    assert keys["system.start"] == "point" and keys["system.inner.width"] is None
    assert "system.inner" in keys

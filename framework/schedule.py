"""Values that change with the training step: the one place where schedules are evaluated.

A config field typed ``Schedule`` accepts:

* a number: constant;
* a typed ramp ``{start_step: 0, start: 0.98, end: 0.5, end_step: 5000}``: linear from ``start`` (at and before
  ``start_step``) to ``end`` (at and after ``end_step``); ``interpolation: step`` holds ``start`` until ``end_step``;
* a piecewise ramp ``{points: [[0, 0.98], [5000, 0.5], [10000, 0.2]]}`` (linear between points, constant outside);
* threestudio's list forms ``[start_step, start, end, end_step]`` and ``[start, end, end_step]``, steps as integers,
  and its piecewise form ``[s0, v0, v1, s1, v2, s2, ...]`` (linear through (s0, v0), (s1, v1), (s2, v2), ...).
  threestudio reads a float ``end_step`` as an epoch; this project has no epoch schedules, so a fractional step is an
  error rather than a silent change of meaning.

Example:
    >>> s = Schedule.parse([5000, 0.98, 0.5, 5001])
    >>> s(0), s(5000), s(5001)
    (0.98, 0.98, 0.5)
"""

from __future__ import annotations

import math
from typing import Any, List, Sequence, Tuple

from framework.errors import ConfigError


class Schedule:
    """A piecewise-linear function of the global step, given by sorted (step, value) points."""

    def __init__(self, points: Sequence[Tuple[int, float]], interpolation: str = "linear"):
        self.points: List[Tuple[int, float]] = [(int(s), float(v)) for s, v in points]
        self.interpolation = interpolation

    @property
    def is_constant(self) -> bool:
        return len({v for _, v in self.points}) == 1

    def __call__(self, step: int) -> float:
        pts = self.points
        if step <= pts[0][0]:
            return pts[0][1]
        for (s0, v0), (s1, v1) in zip(pts[:-1], pts[1:]):
            if step < s1:
                if self.interpolation == "step" or s1 == s0:
                    return v0
                return v0 + (v1 - v0) * (step - s0) / (s1 - s0)
        return pts[-1][1]

    def __repr__(self) -> str:
        return f"Schedule({self.points}, interpolation={self.interpolation!r})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Schedule) and (self.points, self.interpolation) == (
            other.points,
            other.interpolation,
        )

    @staticmethod
    def parse(value: Any, key: str = "value") -> "Schedule":
        """Build a schedule from any accepted form; raise ConfigError naming ``key`` otherwise."""
        if isinstance(value, Schedule):
            return value
        if _is_number(value):
            return Schedule([(0, float(value))])
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise ConfigError(f"{key}: schedule values must be finite numbers, got {value!r}")
        if isinstance(value, (list, tuple)):
            return _parse_list(list(value), key)
        if isinstance(value, dict):
            return _parse_dict(dict(value), key)
        raise ConfigError(
            f"{key}: expected a number, a [start_step, start, end, end_step] list or a "
            f"{{start_step, start, end, end_step}} mapping, got {value!r}"
        )


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def _step(v: Any, key: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or float(v) != int(v):
        raise ConfigError(
            f"{key}: schedule steps must be whole numbers, got {v!r} "
            "(threestudio's float end_step meant epochs; write the step count instead)"
        )
    return int(v)


def _value(v: Any, key: str) -> float:
    if not _is_number(v):
        raise ConfigError(f"{key}: schedule values must be finite numbers, got {v!r}")
    return float(v)


def _parse_list(value: list, key: str) -> Schedule:
    if len(value) == 3:
        value = [0] + value
    if len(value) >= 6 and len(value) % 2 == 0:  # threestudio's piecewise form: s0, v0, then (v_i, s_i) pairs
        points = [(_step(value[0], key), _value(value[1], key))]
        points += [(_step(s, key), _value(v, key)) for v, s in zip(value[2::2], value[3::2])]
        steps = [s for s, _ in points]
        if steps != sorted(steps):
            raise ConfigError(f"{key}: the steps of a piecewise schedule must increase, got {steps}")
        return Schedule(points)
    if len(value) != 4:
        raise ConfigError(
            f"{key}: a list schedule is [start_step, start, end, end_step], [start, end, end_step] or "
            f"[s0, v0, v1, s1, v2, s2, ...], got {value!r}"
        )
    s0, v0, v1, s1 = _step(value[0], key), _value(value[1], key), _value(value[2], key), _step(value[3], key)
    return _ramp(s0, v0, v1, s1, "linear", key)


def _ramp(s0: int, v0: float, v1: float, s1: int, interpolation: str, key: str) -> Schedule:
    if s1 < s0:
        raise ConfigError(f"{key}: end_step ({s1}) must not come before start_step ({s0})")
    return Schedule([(s0, v0), (s1, v1)], interpolation)


def _parse_dict(value: dict, key: str) -> Schedule:
    interpolation = value.pop("interpolation", "linear")
    if interpolation not in ("linear", "step"):
        raise ConfigError(f"{key}.interpolation: expected 'linear' or 'step', got {interpolation!r}")
    if "points" in value:
        points = value.pop("points")
        if value:
            raise ConfigError(f"{key}: unexpected keys {sorted(value)} beside 'points'")
        if not isinstance(points, (list, tuple)) or not points:
            raise ConfigError(f"{key}.points: expected a list of [step, value] pairs, got {points!r}")
        parsed = []
        for i, p in enumerate(points):
            if not isinstance(p, (list, tuple)) or len(p) != 2:
                raise ConfigError(f"{key}.points[{i}]: expected [step, value], got {p!r}")
            parsed.append((_step(p[0], f"{key}.points[{i}]"), _value(p[1], f"{key}.points[{i}]")))
        steps = [s for s, _ in parsed]
        if steps != sorted(steps):
            raise ConfigError(f"{key}.points: steps must increase, got {steps}")
        return Schedule(parsed, interpolation)
    expected = {"start_step", "start", "end", "end_step"}
    unknown = set(value) - expected
    missing = expected - set(value)
    if unknown or missing:
        raise ConfigError(
            f"{key}: a ramp needs exactly start_step, start, end, end_step"
            + (f"; unknown {sorted(unknown)}" if unknown else "")
            + (f"; missing {sorted(missing)}" if missing else "")
        )
    return _ramp(
        _step(value["start_step"], key),
        _value(value["start"], key),
        _value(value["end"], key),
        _step(value["end_step"], key),
        interpolation,
        key,
    )

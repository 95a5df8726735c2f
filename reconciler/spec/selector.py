"""Kubernetes-style label selectors: `team=storage,role!=spare,site in (nyc1,ldn1),!legacy`."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from reconciler.errors import UsageError

Matcher = Callable[[Mapping[str, str]], bool]

_SET = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s*(==|=|!=)\s*([A-Za-z0-9._-]*)\s*$")
_EXISTS = re.compile(r"^\s*(!?)\s*([A-Za-z0-9./_-]+)\s*$")


def _split(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p for p in parts if p.strip()]


def _requirement(text: str) -> Matcher:
    if match := _SET.match(text):
        key, op, values = (
            match.group(1),
            match.group(2),
            {v.strip() for v in match.group(3).split(",") if v.strip()},
        )
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if match := _EQ.match(text):
        key, op, value = match.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if match := _EXISTS.match(text):
        negate, key = match.group(1) == "!", match.group(2)
        return lambda labels: (key in labels) != negate
    raise UsageError(
        f"cannot parse label selector requirement {text.strip()!r}",
        hint="use key=value, key!=value, key in (a,b), key notin (a,b), key or !key, joined by commas",
    )


def parse_selector(selector: str) -> Matcher:
    requirements = [_requirement(part) for part in _split(selector)]
    return lambda labels: all(r(labels) for r in requirements)

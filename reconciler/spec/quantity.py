"""Kubernetes resource quantities (`500m`, `128Gi`, `2`), checked and normalised.

The canonical form follows Kubernetes: a binary-suffixed value keeps the largest
binary suffix that represents it exactly, anything else the largest decimal one.
So `1024Mi` becomes `1Gi`, `0.5` becomes `500m` and `1000m` becomes `1`.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_QUANTITY = re.compile(
    r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$"
)
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DECIMAL_BY_EXPONENT = {exponent: suffix for suffix, exponent in _DECIMAL.items()}
_BINARY_BY_POWER = {power: suffix for suffix, power in _BINARY.items()}


class QuantityError(ValueError):
    pass


def parse_quantity(text: str | int | float) -> tuple[Decimal, bool]:
    """Return the value of a quantity and whether it was written with a binary suffix."""
    if isinstance(text, bool):
        raise QuantityError("a quantity is a number with an optional suffix, not a boolean")
    raw = str(text).strip()
    match = _QUANTITY.match(raw)
    if not match:
        raise QuantityError(f"{raw!r} is not a Kubernetes quantity (examples: 500m, 4, 128Gi, 1.5T)")
    number, suffix = match.group(1), match.group(2) or ""
    try:
        value = Decimal(number)
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise QuantityError(f"{raw!r} is not a number") from exc
    if suffix in _BINARY:
        return value * (Decimal(1024) ** _BINARY[suffix]), True
    if suffix in _DECIMAL:
        return value.scaleb(_DECIMAL[suffix]), False
    return value.scaleb(int(suffix[1:])), False


def _format_decimal(value: Decimal) -> str:
    if value == 0:
        return "0"
    for exponent in sorted(_DECIMAL_BY_EXPONENT, reverse=True):
        scaled = value.scaleb(-exponent)
        if scaled == scaled.to_integral_value() and abs(scaled) >= 1:
            return f"{int(scaled)}{_DECIMAL_BY_EXPONENT[exponent]}"
    raise QuantityError(f"{value} is more precise than 1n, the smallest unit Kubernetes keeps")


def canonical_quantity(text: str | int | float) -> str:
    """Normalise a quantity to its canonical Kubernetes spelling."""
    value, binary = parse_quantity(text)
    if value < 0:
        raise QuantityError(f"{text!r} is negative; resource quantities must be zero or more")
    if binary and value == value.to_integral_value() and value >= 1024:
        integer = int(value)
        for power in sorted(_BINARY_BY_POWER, reverse=True):
            unit = 1024**power
            if integer % unit == 0:
                return f"{integer // unit}{_BINARY_BY_POWER[power]}"
    return _format_decimal(value)


def quantity_value(text: str) -> Decimal:
    """The numeric value of a quantity, for comparisons (e.g. capacity checks)."""
    return parse_quantity(text)[0]

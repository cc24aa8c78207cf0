"""Comma-separated option values (``--format onnx,aoti``, ``--tau 2,4``), parsed one way everywhere."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from sfc_deploy.errors import ConfigError

T = TypeVar("T")


def split_list(values: str | Iterable[str]) -> list[str]:
    """``"a, b"`` or ``["a,b", "c"]`` -> ``["a", "b", "c"]`` (blanks dropped, whitespace stripped)."""
    items = [values] if isinstance(values, str) else list(values)
    return [v.strip() for item in items for v in str(item).split(",") if v.strip()]


def parse_choices(values: str | Iterable[str], choices: Sequence[str], what: str, *, allow_empty: bool = False) -> list[str]:
    """Validated names in their given order, lower-cased, duplicates dropped.

    Raises:
        ConfigError: an unknown name, or none at all (unless ``allow_empty``).
    """
    out: list[str] = []
    for item in (v.lower() for v in split_list(values)):
        if item not in choices:
            raise ConfigError(f"unknown {what} {item!r}; expected any of {', '.join(choices)}")
        if item not in out:
            out.append(item)
    if not out and not allow_empty:
        raise ConfigError(f"no {what} given; expected any of {', '.join(choices)}")
    return out


def parse_values(values: str | Iterable[str], convert: Callable[[str], T], what: str, example: str) -> list[T]:
    """Each comma-separated item through ``convert``; a bad one names the option and an example."""
    out: list[T] = []
    for item in split_list(values):
        try:
            out.append(convert(item))
        except (ValueError, OverflowError, ZeroDivisionError) as exc:
            raise ConfigError(
                f"{what} must be comma-separated values such as {example}; {item!r} is not valid ({exc})"
            ) from None
    return out


def parse_ints(values: str | Iterable[str], what: str, *, minimum: int | None = None, example: str = "1,2") -> list[int]:
    """Comma-separated integers, each at least ``minimum``."""
    out = parse_values(values, int, what, example)
    if minimum is not None and any(v < minimum for v in out):
        raise ConfigError(f"{what} must be integers >= {minimum}, got {', '.join(map(str, out))}; e.g. {example}")
    return out

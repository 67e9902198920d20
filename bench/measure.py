"""Medians, ratios and interleaving: the arithmetic every section shares."""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


def rotations(items: Sequence[T], rounds: int) -> Iterable[tuple[int, list[T]]]:
    """Each round runs every side once, starting one further along: A B C, B C A, C A B..."""
    for n in range(rounds):
        shift = n % len(items) if items else 0
        yield n, list(items[shift:]) + list(items[:shift])


def median(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


@dataclass
class Samples:
    """Measurements per side, in seconds (or any unit), in run order."""

    values: dict[str, list[float | None]] = field(default_factory=dict)

    def add(self, side: str, value: float | None) -> None:
        self.values.setdefault(side, []).append(value)

    def median(self, side: str) -> float | None:
        return median(self.values.get(side, []))

    def runs(self, side: str, fmt: str = "{:.2f}") -> str:
        return " ".join("-" if v is None else fmt.format(v) for v in self.values.get(side, []))


@dataclass(frozen=True)
class Target:
    what: str
    met: bool | None  # None: not measured in this run
    detail: str


@dataclass
class Section:
    title: str
    intro: str = ""
    tables: list[tuple[list[str], list[list[str]]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    load_before: str = ""
    load_after: str = ""

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.tables.append((header, rows))


def secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"

"""docs/benchmarks.md: the machine, versions, date, and every section's tables and targets."""

from __future__ import annotations

from .measure import Section, Target


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def _mark(target: Target) -> str:
    return {True: "met", False: "**not met**", None: "not measured"}[target.met]


def render(
    title: str,
    facts: list[tuple[str, str]],
    preface: list[str],
    sections: list[Section],
    skipped: list[tuple[str, str]],
    why: dict[str, str],
) -> str:
    lines = [f"# {title}", "", *preface, "", "## Machine and versions", ""]
    lines += _table(["", ""], [[k, v] for k, v in facts])
    targets = [t for s in sections for t in s.targets]
    if targets:
        lines += ["", "## Targets", ""]
        lines += _table(["target", "result", "measured"], [[t.what, _mark(t), t.detail] for t in targets])
    missed = [t for t in targets if t.met is False]
    if missed:
        lines += ["", "## What limits the targets not met", ""]
        lines += [f"- **{t.what}** ({t.detail}). {why.get(t.what, 'See the section below.')}" for t in missed]
    for section in sections:
        lines += ["", f"## {section.title}", ""]
        if section.intro:
            lines += [section.intro, ""]
        for header, rows in section.tables:
            lines += _table(header, rows) + [""]
        lines += [f"Load average (1/5/15 min) before: {section.load_before}; after: {section.load_after}."]
        for note in section.notes:
            lines += ["", note]
    if skipped:
        lines += ["", "## Not run", ""] + [f"- {name}: {why}" for name, why in skipped]
    return "\n".join(lines) + "\n"

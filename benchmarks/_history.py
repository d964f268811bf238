"""Benchmark history: one JSON file per run, kept per machine, never overwritten.

A run of ``benchmarks/run.py --history docs/bench/history`` adds
``<YYYY-MM-DD-HHMM>-<machine slug>.json`` (both controllers in one file);
``benchmarks/report.py`` renders every file there into docs/benchmarks.md,
one section per machine, newest first.
"""

from __future__ import annotations

import json
from pathlib import Path

SCHEMA = 2


def file_name(report: dict) -> str:
    stamp = report["started"].replace(":", "").replace(" ", "-").replace("T", "-")[:15]
    return f"{stamp}-{report['machine']['slug']}.json"


def save(report: dict, folder) -> Path:
    """Write ``report`` into ``folder`` under a new name (``-2``, ``-3``... if taken)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name(report)
    n = 2
    while path.exists():
        path = folder / f"{file_name(report)[:-5]}-{n}.json"
        n += 1
    path.write_text(json.dumps(report, indent=1) + "\n")
    return path


def load(folder) -> list:
    """Every run in ``folder``, newest first; each gets ``"_file"`` (its name)."""
    runs = []
    for path in sorted(Path(folder).glob("*.json")):
        data = json.loads(path.read_text())
        data["_file"] = path.name
        runs.append(data)
    return sorted(runs, key=lambda r: r.get("started", ""), reverse=True)


def by_machine(runs: list) -> dict:
    """``{slug: [runs, newest first]}``, machines ordered by their newest run."""
    out = {}
    for r in runs:  # already newest first
        out.setdefault(r["machine"]["slug"], []).append(r)
    return out


def latest_valid(folder, slug=None):
    """The newest valid run (of machine ``slug`` if given), or None."""
    for r in load(folder):
        if r.get("validity", {}).get("valid") and (slug is None or r["machine"]["slug"] == slug):
            return r
    return None

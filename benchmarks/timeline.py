"""Where a collective's time goes, from Horovod's timeline.

    HOROVOD_TIMELINE=tl.json horovodrun --gloo -np 2 python train.py
    python benchmarks/timeline.py tl.json

Horovod's coordinator (rank 0) writes the timeline. For every collective it
records ``NEGOTIATE_<OP>`` (from the first rank asking for it to the last:
time spent **waiting for the slowest rank**) and then ``<OP>`` (the transfer,
with its ``GLOO_``/``MPI_`` part and the fusion-buffer copies). This prints,
per tensor group (the numbered parts of one grouped allreduce are merged, as
they negotiate and travel together), how often it ran and the total, median
and 90th percentile of both phases::

    group                        runs  wait total  wait median  wait p90  transfer total  median  p90
    hvdagent_local_sgd             30    4,461 ms     60.00 ms  259.71 ms       237 ms   2.65 ms  6.47 ms

A large wait and a small transfer mean the ranks arrive out of step (one
computes slower for a while), not that the network is slow. The timeline
costs time itself: compare throughput only from runs without it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from typing import Dict, List

_PART = re.compile(r"_\d+of\d+$")  # Horovod names the parts of a grouped op <name>_<i>of<n>


def load(path: str) -> list:
    """The timeline's events (Horovod leaves the JSON array unterminated while the job runs)."""
    text = open(path).read().rstrip().rstrip(",")
    return json.loads(text if text.endswith("]") else text + "]")


def group_name(tensor: str) -> str:
    """``hvdagent_local_sgd_3of8`` -> ``hvdagent_local_sgd``.

    >>> group_name("hvdagent_local_sgd_3of8"), group_name("HorovodAllreduce")
    ('hvdagent_local_sgd', 'HorovodAllreduce')
    """
    return _PART.sub("", tensor)


def phases(events: list) -> Dict[str, Dict[str, List[float]]]:
    """Per group, the durations (ms) of its waits and transfers, one per run of the collective.

    The parts of one grouped op run together, so a run's duration is the
    longest of its parts' (they overlap, they do not add up).
    """
    names = {e["pid"]: e.get("args", {}).get("name", str(e["pid"]))
             for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    open_: Dict[int, list] = defaultdict(list)
    per_part: Dict[tuple, List[float]] = defaultdict(list)
    for e in events:
        if e.get("ph") == "B":
            open_[e["pid"]].append((e["name"], e["ts"]))
        elif e.get("ph") == "E" and open_[e["pid"]]:
            name, start = open_[e["pid"]].pop()
            if open_[e["pid"]]:
                continue  # a sub-phase (the GLOO_/MPI_ part, buffer copies) of the enclosing one
            phase = "wait" if name.startswith("NEGOTIATE_") else "transfer"
            per_part[(names.get(e["pid"], str(e["pid"])), phase)].append((e["ts"] - start) / 1000.0)
    out: Dict[str, Dict[str, List[float]]] = defaultdict(lambda: {"wait": [], "transfer": []})
    merged: Dict[tuple, List[List[float]]] = defaultdict(list)
    for (tensor, phase), durations in per_part.items():
        merged[(group_name(tensor), phase)].append(durations)
    for (group, phase), parts in merged.items():
        runs = min(len(p) for p in parts)
        out[group][phase] = [max(p[i] for p in parts) for i in range(runs)]
    return dict(out)


def _stats(values: List[float]) -> tuple:
    if not values:
        return 0.0, 0.0, 0.0
    s = sorted(values)
    return sum(s), s[len(s) // 2], s[min(len(s) - 1, int(len(s) * 0.9))]


def table(groups: Dict[str, Dict[str, List[float]]]) -> str:
    rows = [f"{'group':32s} {'runs':>5s} {'wait total':>11s} {'wait median':>12s} {'wait p90':>10s} "
            f"{'transfer total':>15s} {'median':>9s} {'p90':>9s}"]
    order = sorted(groups, key=lambda g: -sum(groups[g]["wait"]) - sum(groups[g]["transfer"]))
    for g in order:
        wt, wm, w9 = _stats(groups[g]["wait"])
        tt, tm, t9 = _stats(groups[g]["transfer"])
        rows.append(f"{g[:32]:32s} {len(groups[g]['wait']):5d} {wt:8,.0f} ms {wm:9.2f} ms {w9:7.2f} ms "
                    f"{tt:12,.0f} ms {tm:6.2f} ms {t9:6.2f} ms")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("timeline", help="the file HOROVOD_TIMELINE named")
    p.add_argument("--json", action="store_true", help="print the durations as JSON instead of a table")
    args = p.parse_args(argv)
    groups = phases(load(args.timeline))
    print(json.dumps(groups) if args.json else table(groups))
    return 0


if __name__ == "__main__":
    sys.exit(main())

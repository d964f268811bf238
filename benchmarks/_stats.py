"""Medians, ratios and targets of one interleaved benchmark run (pure Python).

A run is a list of records, one per launch: ``{"config", "controller",
"repeat", "samples_per_s", "peak_rss_mb", ...}`` (no ``samples_per_s`` when
the launch failed). Configurations that need a controller are labelled
``config@controller`` (``hvdagent@mpi``); ``single`` and ``mwms`` have none.
"""

from __future__ import annotations

import statistics

CONTROLLED = ("hvdagent", "horovod", "nosync", "localsgd")  # launched by horovodrun
UNCONTROLLED = ("single", "mwms")

# Targets of issue 10 (quiet machine, one interleaved run): (ratio, comparison, bound).
TARGETS = (
    ("hvdagent / horovod (mpi)", ">=", 1.0),
    ("hvdagent / mwms (mpi)", ">=", 2.0),
    ("sync overhead (mpi)", "<=", 0.10),
    ("hvdagent / horovod (gloo)", ">=", 0.98),
    ("localsgd / nosync (gloo)", ">=", 0.95),
    ("localsgd / nosync (mpi)", ">=", 0.95),
    ("peak RSS hvdagent / horovod (gloo)", "<=", 1.10),
    ("peak RSS hvdagent / horovod (mpi)", "<=", 1.10),
)


def label(config: str, controller) -> str:
    return f"{config}@{controller}" if config in CONTROLLED and controller else config


def summarize(runs: list, key=None) -> dict:
    """Per label (or per ``key(record)``): ok/failed counts, median, min, max,
    all values, median peak RSS."""
    by = {}
    for r in runs:
        by.setdefault(key(r) if key else label(r["config"], r.get("controller")), []).append(r)
    out = {}
    for name, rs in by.items():
        ok = [r for r in rs if "samples_per_s" in r]
        s = {"config": rs[0]["config"], "controller": rs[0].get("controller"), "ok": len(ok),
             "failed": len(rs) - len(ok)}
        if ok:
            sps = [r["samples_per_s"] for r in ok]
            s.update(median=statistics.median(sps), min=min(sps), max=max(sps), all=sps,
                     peak_rss_mb=statistics.median(r["peak_rss_mb"] for r in ok))
        out[name] = s
    return out


def _pairs(controllers) -> list:
    """(ratio name, numerator label, denominator label, kind) for every ratio we report."""
    out = []
    for c in controllers:
        h, ho, ns, ls = (label(x, c) for x in ("hvdagent", "horovod", "nosync", "localsgd"))
        out += [
            (f"hvdagent / horovod ({c})", h, ho, "speed"),
            (f"hvdagent / mwms ({c})", h, "mwms", "speed"),
            (f"hvdagent / nosync ({c})", h, ns, "speed"),
            (f"localsgd / nosync ({c})", ls, ns, "speed"),
            (f"localsgd / hvdagent ({c})", ls, h, "speed"),
            (f"hvdagent / single ({c})", h, "single", "speed"),
            (f"nosync / single ({c})", ns, "single", "speed"),
            (f"peak RSS hvdagent / horovod ({c})", h, ho, "memory"),
        ]
    out.append(("mwms / single", "mwms", "single", "speed"))
    return out


def ratios(runs: list, controllers=("gloo", "mpi")) -> dict:
    """Every ratio as ``{"value", "per_repeat"}``.

    ``value`` is the ratio of the medians (of peak RSS for memory ratios);
    ``per_repeat`` is the ratio within each repeat where both sides ran, the
    pairs that drift cannot split. ``sync overhead (c)`` is
    ``1 - hvdagent / nosync``.
    """
    summary = summarize(runs)
    by_rep = {}
    for r in runs:
        if "samples_per_s" in r:
            by_rep.setdefault(r["repeat"], {})[label(r["config"], r.get("controller"))] = r
    out = {}
    for name, a, b, kind in _pairs(controllers):
        sa, sb = summary.get(a, {}), summary.get(b, {})
        if not (sa.get("ok") and sb.get("ok")):
            continue
        key = "peak_rss_mb" if kind == "memory" else "samples_per_s"
        value = (sa["peak_rss_mb"] / sb["peak_rss_mb"]) if kind == "memory" else sa["median"] / sb["median"]
        per = [rep[a][key] / rep[b][key] for _, rep in sorted(by_rep.items()) if a in rep and b in rep]
        out[name] = {"value": value, "per_repeat": per}
    for c in controllers:
        r = out.get(f"hvdagent / nosync ({c})")
        if r:
            out[f"sync overhead ({c})"] = {"value": 1 - r["value"], "per_repeat": [1 - x for x in r["per_repeat"]]}
    return out


def check_targets(rats: dict) -> dict:
    """Per target present in ``rats``: value, target, met, and in how many repeats it held."""
    out = {}
    for name, cmp, bound in TARGETS:
        if name not in rats:
            continue

        def meets(v, cmp=cmp, bound=bound):
            return v >= bound if cmp == ">=" else v <= bound

        r = rats[name]
        out[name] = {"value": r["value"], "target": f"{cmp} {bound}", "met": meets(r["value"]),
                     "held": sum(meets(v) for v in r["per_repeat"]), "repeats": len(r["per_repeat"])}
    return out


def order(slots: list, rep: int, repeats: int) -> list:
    """The launch order of repeat ``rep``: rotated so each slot moves through
    the run, reversed every other repeat so no slot always follows the same one."""
    if not slots:
        return []
    k = (rep * len(slots)) // max(repeats, 1) % len(slots)
    out = slots[k:] + slots[:k]
    return out[::-1] if rep % 2 else out

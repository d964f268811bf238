"""Render bench.json (and levers.json) as the Markdown tables of docs/benchmarks.md.

    python benchmarks/report.py bench-results/bench.json [bench-results/levers.json]
"""

from __future__ import annotations

import json
import sys


def bench_tables(report: dict) -> str:
    lines = []
    s = report.get("summary", {})
    if s:
        lines += ["| configuration | median samples/s | min - max | runs | peak RSS per rank (MB) |",
                  "|---|---:|---:|---:|---:|"]
        for name in ("single", "hvdagent", "horovod", "mwms", "nosync"):
            v = s.get(name)
            if v and v.get("ok"):
                lines.append(f"| {name} | {v['median']:,.0f} | {v['min']:,.0f} - {v['max']:,.0f} | {v['ok']} "
                             f"| {v['peak_rss_mb']:.0f} |")
        lines += ["", "| ratio | value | target |", "|---|---:|---|"]
        targets = report.get("targets", {})
        for k, v in report.get("ratios", {}).items():
            t = targets.get(k)
            verdict = f"{t['target']}: {'met' if t['met'] else '**missed**'}" if t else ""
            lines.append(f"| {k} | {v:.3f} | {verdict} |")
    ar = report.get("allreduce")
    if ar:
        lines += ["", f"Allreduce, {ar['size']} ranks, {ar.get('controller')} {ar.get('env') or ''}:", "",
                  "| bytes | latency (ms) | bus bandwidth (GB/s) | memory copy (GB/s) |", "|---:|---:|---:|---:|"]
        for r in ar["rows"]:
            lines.append(f"| {r['bytes']:,} | {r['latency_ms']:.3f} | {r['busbw_gbs']:.3f} | {r['memcpy_gbs']:.1f} |")
    return "\n".join(lines)


def lever_table(levers: dict) -> str:
    s = levers["summary"]
    lines = ["| variant | runs (samples/s) | median | x base | sync overhead |", "|---|---|---:|---:|---:|"]
    for name, v in s.items():
        if not v.get("ok"):
            continue
        runs = ", ".join(f"{x:,.0f}" for x in v["all"])
        ov = v.get("overhead")
        lines.append(f"| {name} | {runs} | {v['median']:,.0f} | {v.get('x_base') or 0:.2f} | "
                     + (f"{ov:.2f}" if ov is not None else "") + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(bench_tables(json.loads(open(sys.argv[1]).read())))
    if len(sys.argv) > 2:
        print()
        print(lever_table(json.loads(open(sys.argv[2]).read())))

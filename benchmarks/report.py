"""Render the benchmark history as the tables of docs/benchmarks.md.

    python benchmarks/report.py --write docs/benchmarks.md   # regenerate the marked sections
    python benchmarks/report.py --check docs/benchmarks.md   # exit 1 if they are out of date
    python benchmarks/report.py --run bench-results/bench.json   # one run's tables

``--write`` also redraws the plots the page shows (``docs/bench/throughput.png``:
samples/s per configuration and controller; ``docs/bench/scaling_model.png``: the
scaling model's predicted efficiency against the number of ranks).

Three sections of docs/benchmarks.md are generated, each between
``<!-- BEGIN generated: NAME -->`` and ``<!-- END generated: NAME -->``:
``model`` (the scaling model, from the newest valid run), ``history``
(every run in docs/bench/history, one section per machine, newest first,
runs taken on a busy machine marked invalid) and ``comm`` (the
communication-bound benchmark, ``benchmarks/comm.py``, from docs/bench/comm).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _history  # noqa: E402
import _stats  # noqa: E402
import scaling_model  # noqa: E402

HISTORY = HERE.parent / "docs" / "bench" / "history"
COMM_HISTORY = HERE.parent / "docs" / "bench" / "comm"
ROWS = ("single", "mwms", "hvdagent", "horovod", "nosync", "localsgd")
RATIOS = ("hvdagent / horovod", "hvdagent / mwms", "sync overhead", "localsgd / nosync", "localsgd / hvdagent",
          "hvdagent / single", "nosync / single", "peak RSS hvdagent / horovod")


def _controllers(report: dict) -> list:
    seen = []
    for s in report.get("summary", {}).values():
        c = s.get("controller")
        if c and c not in seen:
            seen.append(c)
    for c in report.get("allreduce", {}):
        if c not in seen and c in ("gloo", "mpi"):  # not the runs between hosts ("gloo, 2 hosts")
            seen.append(c)
    return sorted(seen, key=lambda c: ("gloo", "mpi").index(c) if c in ("gloo", "mpi") else 9)


def _cell(s) -> str:
    if not s:
        return "-"
    if not s.get("ok"):
        return f"failed ({s.get('failed', 0)})"
    return f"{s['median']:,.0f} ({s['min']:,.0f} - {s['max']:,.0f})"


def validity_line(report: dict) -> str:
    v = report.get("validity", {})
    load, other = v.get("load_start"), v.get("other_cores_during")
    facts = ", ".join(x for x in (f"load average {load:.2f} at the start" if load is not None else "",
                                  f"other processes {other:.2f} cores during the run" if other is not None else "") if x)
    facts = f" ({facts})" if facts else ""
    if v.get("valid"):
        return f"**Valid**: quiet machine{facts}."
    return "**INVALID, not for conclusions**: " + "; ".join(v.get("reasons") or ["no validity record"]) + f"{facts}."


def env_difference(runs: list, controller: str) -> str:
    """How hvdagent's Horovod settings after ``init`` differ from the hand-written
    baseline's on ``controller`` ("" when they match): a fair comparison needs none."""
    envs = {}
    for r in runs:
        if r.get("controller") == controller and r["config"] in ("hvdagent", "horovod") and "env" in r:
            envs.setdefault(r["config"], r["env"])
    if len(envs) < 2 or envs["hvdagent"] == envs["horovod"]:
        return ""
    keys = sorted(set(envs["hvdagent"]) | set(envs["horovod"]))
    return "; ".join(f"`{k}` hvdagent {envs['hvdagent'].get(k, 'unset')}, hand-written {envs['horovod'].get(k, 'unset')}"
                     for k in keys if envs["hvdagent"].get(k) != envs["horovod"].get(k))


def run_section(report: dict) -> str:
    """One run: settings, validity, samples/s side by side, ratios, allreduce, model check."""
    st, ctrls = report.get("settings", {}), _controllers(report)
    summary = report.get("summary", {})
    env = " ".join(f"{k}={v}" for k, v in (st.get("env") or {}).items())
    lines = [validity_line(report), "",
             "The allreduce microbenchmark only (`--allreduce-only`)." if st.get("allreduce_only") else
             f"{st.get('np', 2)} ranks x batch {st.get('batch')}, {st.get('steps')} steps x {st.get('epochs')} timed "
             f"epochs, {st.get('repeats')} interleaved repeats; medians (min - max), samples/s"
             + (f"; environment for every Horovod configuration: `{env}`" if env else "")
             + (f"; local SGD: `{st['localsgd']}`" if st.get("localsgd") else "") + "."]
    for what, why in (report.get("skipped") or {}).items():
        lines.append(f"Skipped {what}: {why}.")
    if report.get("note"):
        lines += ["", report["note"]]
    if summary:
        lines += ["", "| configuration | " + " | ".join(ctrls) + " | peak RSS per rank (MB) |",
                  "|---|" + "---:|" * len(ctrls) + "---:|"]
        for row in ROWS:
            if row in _stats.UNCONTROLLED:
                s = summary.get(row)
                if s:
                    cells = [_cell(s)] + ["same (no Horovod controller)"] * (len(ctrls) - 1)
                    lines.append(f"| {row} | " + " | ".join(cells) + f" | {s.get('peak_rss_mb', 0):.0f} |")
                continue
            ss = [summary.get(_stats.label(row, c)) for c in ctrls]
            if any(ss):
                rss = " / ".join(f"{s['peak_rss_mb']:.0f}" for s in ss if s and s.get("ok"))
                lines.append(f"| {row} | " + " | ".join(_cell(s) for s in ss) + f" | {rss} |")
        rats, targets = report.get("ratios", {}), report.get("targets", {})
        lines += ["", "| ratio (same run) | " + " | ".join(ctrls) + " |", "|---|" + "---:|" * len(ctrls)]
        for name in RATIOS:
            cells = []
            for c in ctrls:
                key = f"{name} ({c})"
                r, t = rats.get(key), targets.get(key)
                if not r:
                    cells.append("-")
                    continue
                cell = f"{r['value']:.3f}"
                if t:
                    verdict = "met" if t["met"] else "**missed**"
                    cell += f" ({t['target']}: {verdict}, held in {t['held']} of {t['repeats']} repeats)"
                cells.append(cell)
            if any(c != "-" for c in cells):
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for c in ctrls:
        diff = env_difference(report.get("runs", []), c)
        if diff:
            lines += ["", f"**Not the same environment on {c}** after initialisation: {diff}."]
    ar = report.get("allreduce") or {}
    if ar:
        cs = list(ar)
        where = "on loopback" + (" and between two network-namespace hosts (`..., 2 hosts`: veth + bridge, 1 rank each)"
                                 if any("hosts" in c for c in cs) else "")
        lines += ["", f"Allreduce (sum, float32), 2 ranks, {where}; latency ms / bus bandwidth GB/s:", "",
                  "| bytes | " + " | ".join(cs) + " | memory copy (GB/s) |", "|---:|" + "---:|" * (len(cs) + 1)]
        sizes = sorted({r["bytes"] for c in cs for r in ar[c]["rows"]})
        for n in sizes:
            cells, copy = [], ""
            for c in cs:
                r = next((r for r in ar[c]["rows"] if r["bytes"] == n), None)
                cells.append(f"{r['latency_ms']:.3f} / {r['busbw_gbs']:.3f}" if r else "-")
                copy = copy or (f"{r['memcpy_gbs']:.1f}" if r else "")
            lines.append(f"| {n:,} | " + " | ".join(cells) + f" | {copy} |")
    check = [r for r in (scaling_model.two_rank_check(report) if ar and summary else []) if r["measured"]]
    if check:
        lines += ["", "Scaling model against these 2-rank measurements (samples/s): "
                  + "; ".join(f"{r['config']}@{r['controller']} predicted {r['predicted']:,.0f}, measured "
                              + f"{r['measured']:,.0f} ({r['measured_over_predicted']:.2f}x)"
                              for r in check) + "."]
    return "\n".join(lines)


def plot_run(report: dict, path) -> None:
    """Bar chart of one run's medians (min-max bars), controllers in colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = report["summary"]
    names = [n for n in summary if summary[n].get("ok")]
    med = [summary[n]["median"] for n in names]
    err = [[m - summary[n]["min"] for n, m in zip(names, med)], [summary[n]["max"] - m for n, m in zip(names, med)]]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(names)), 4))
    ax.bar(names, med, yerr=err, capsize=4, color=["#1f77b4" if "@mpi" in n else "#ff7f0e" if "@" in n else "#999999"
                                                   for n in names])
    for i, v in enumerate(med):
        ax.text(i, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("samples/s (median, bars: min-max)")
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    valid = report["validity"]["valid"]
    ax.set_title(f"{report['machine']['cpu']}, {report['machine']['cores']} cores, {report['started']}"
                 + ("" if valid else "  [INVALID: busy machine]"), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --- plots of docs/benchmarks.md (regenerated with the tables by --write) ----------------------

PLOT_COLOURS = {"gloo": "#ff7f0e", "mpi": "#1f77b4", None: "#999999"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_throughput(runs: list, path) -> bool:
    """Samples/s of each configuration (median, min-max whiskers) and controller, from
    the newest valid full run; False (nothing written) when there is none."""
    full = [r for r in runs if r.get("validity", {}).get("valid") and (r.get("summary") or {}).get("single")]
    if not full:
        return False
    run = full[0]
    summary, ctrls = run["summary"], _controllers(run)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.8 / max(1, len(ctrls))
    for i, row in enumerate(ROWS):
        cells = [(None, summary.get(row))] if row in _stats.UNCONTROLLED else \
            [(c, summary.get(_stats.label(row, c))) for c in ctrls]
        for j, (c, s) in enumerate(cells):
            if not (s and s.get("ok")):
                continue
            x = i if c is None else i - 0.4 + width * (j + 0.5)
            ax.bar(x, s["median"], width=0.8 if c is None else width, color=PLOT_COLOURS.get(c, "#2ca02c"),
                   yerr=[[s["median"] - s["min"]], [s["max"] - s["median"]]], capsize=3,
                   label=c or "no Horovod controller")
            ax.text(x, s["max"] * 1.01, f"{s['median']:,.0f}", ha="center", va="bottom", fontsize=7)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.set_ylim(0, ax.get_ylim()[1] * 1.2)  # room for the legend above the bars
    ax.legend(unique.values(), unique.keys(), fontsize=8, loc="upper left", ncol=3)
    ax.set_xticks(range(len(ROWS)), ROWS)
    ax.set_ylabel("samples/s (median; whiskers: min - max)")
    st = run["settings"]
    ax.set_title(f"{st.get('np', 2)} ranks x batch {st.get('batch')}, {run['machine']['cpu']}, "
                 f"{run['machine']['cores']} cores ({run['started']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)
    return True


def plot_scaling_model(runs: list, path) -> bool:
    """The scaling model's predicted efficiency against the number of ranks, for the
    25M-parameter model: each link rate, every step (solid) and local SGD (dashed);
    False (nothing written) when no run gives the model its inputs."""
    base = model_base(runs)
    if base is None:
        return False
    fitted = {c: f for c, f in scaling_model.fits(base).items() if not isinstance(f, str)}
    alphas = [(scaling_model.NETWORK_ALPHA_US * 1e-6, f"alpha {scaling_model.NETWORK_ALPHA_US:g} us (assumed)")]
    measured = fitted.get("gloo", fitted.get("mpi"))
    if measured:
        alphas.append((measured[0], f"alpha {measured[0] * 1e6:.0f} us (measured on loopback)"))
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(alphas), figsize=(5 * len(alphas), 3.8), sharey=True, squeeze=False)
    compute_s = scaling_model.COMPUTE_MS_25M / 1e3
    for ax, (alpha, label) in zip(axes[0], alphas):
        rows = scaling_model.efficiency_table(scaling_model.RESNET50_PARAMS, compute_s, alpha)
        ranks = [r["p"] for r in rows]
        for colour, g in zip(("#d62728", "#2ca02c", "#1f77b4"), scaling_model.GBITS):
            for k, style in ((1, "-"), (8, "--")):
                ax.plot(ranks, [100 * r[(g, k)] for r in rows], style, color=colour, marker="o", markersize=3,
                        label=f"{g} Gb/s" + ("" if k == 1 else f", local SGD /{k}"))
        ax.set_xscale("log", base=2)
        ax.set_xticks(ranks, [str(p) for p in ranks])
        ax.set_ylim(0, 105)
        ax.set_xlabel("ranks")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("predicted scaling efficiency (%)")
    axes[0][-1].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"A model, not a measurement: {scaling_model.RESNET50_PARAMS / 1e6:.0f}M float32 parameters, "
                 f"{scaling_model.COMPUTE_MS_25M:.0f} ms compute per step (assumed)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)
    return True


def history_section(runs: list) -> str:
    if not runs:
        return "No runs recorded yet: run `make bench` on a quiet machine."
    out = []
    for slug, rs in _history.by_machine(runs).items():
        m = rs[0]["machine"]
        versions = ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items() if v)
        out += [f"### {m['cpu']}, {m['cores']} cores (`{slug}`)", "",
                f"{m.get('mem_gib', '?')} GiB; {m.get('platform', '')}; Python {m.get('python', '')}; {versions}.", ""]
        for r in rs:
            tag = "valid" if r.get("validity", {}).get("valid") else "INVALID"
            out += [f"#### {r['started']} ({tag}; [`{r['_file']}`](bench/history/{r['_file']}))", "",
                    run_section(r), ""]
    return "\n".join(out).rstrip()


def model_base(runs: list):
    """The run that gives the scaling model its inputs: the newest valid one that
    measured one process (the newest such run of any validity when none is valid)."""
    valid = [r for r in runs if r.get("validity", {}).get("valid")]
    full = [r for r in (valid or runs) if (r.get("summary") or {}).get("single")]  # a run with the compute time
    return full[0] if full else None


def model_section(runs: list) -> str:
    """The scaling model from the newest valid run that measured one process; the
    allreduce between namespace hosts comes from the newest valid run of the
    same machine that has one, when that run lacks it."""
    valid = [r for r in runs if r.get("validity", {}).get("valid")]
    base = model_base(runs)
    if base is None:
        return "No runs recorded yet."
    head = (f"**A model, not a measurement.** Inputs from the run of {base['started']} on {base['machine']['cpu']} "
            f"(`{base['_file']}`)"
            + ("" if valid else ", **which was taken on a busy machine: re-run on a quiet one**"))
    if not any("hosts" in k for k in base.get("allreduce") or {}):
        donor = next((r for r in valid if r["machine"]["slug"] == base["machine"]["slug"]
                      and any("hosts" in k for k in r.get("allreduce") or {})), None)
        if donor:
            base = dict(base, allreduce={**(base.get("allreduce") or {}),
                                         **{k: v for k, v in donor["allreduce"].items() if "hosts" in k}})
            head += f"; the allreduce between hosts from the run of {donor['started']} (`{donor['_file']}`)"
    return head + ".\n\n" + scaling_model.render(base)


def generated(history=HISTORY, comm_history=COMM_HISTORY) -> dict:
    import comm_report

    runs = _history.load(history)
    return {"model": model_section(runs), "history": history_section(runs),
            "comm": comm_report.history_section(_history.load(comm_history))}


def replace_blocks(text: str, blocks: dict) -> str:
    for name, body in blocks.items():
        pat = re.compile(rf"(<!-- BEGIN generated: {name} -->\n).*?(<!-- END generated: {name} -->)", re.S)
        if not pat.search(text):
            raise ValueError(f"no generated block {name!r} in the document (markers "
                             f"<!-- BEGIN generated: {name} --> ... <!-- END generated: {name} -->)")
        text = pat.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--write", metavar="MD", help="regenerate the marked sections of this file")
    g.add_argument("--check", metavar="MD", help="exit 1 if the marked sections of this file are out of date")
    g.add_argument("--run", metavar="JSON", help="print one run's tables")
    p.add_argument("--history", default=str(HISTORY))
    args = p.parse_args(argv)
    if args.run:
        print(run_section(json.loads(Path(args.run).read_text())))
        return 0
    blocks = generated(args.history)
    if not (args.write or args.check):
        print("\n\n".join(blocks.values()))
        return 0
    path = Path(args.write or args.check)
    old = path.read_text()
    new = replace_blocks(old, blocks)
    if args.check:
        if new != old:
            print(f"{path} is out of date with {args.history}: run benchmarks/report.py --write {path}", file=sys.stderr)
            return 1
        return 0
    path.write_text(new)
    write_plots(_history.load(args.history), path.parent / "bench")
    return 0


def write_plots(runs: list, folder) -> list:
    """The plots docs/benchmarks.md shows, regenerated with its tables; returns the files written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, plot in (("throughput.png", plot_throughput), ("scaling_model.png", plot_scaling_model)):
        if plot(runs, folder / name):
            written.append(folder / name)
    return written


if __name__ == "__main__":
    sys.exit(main())

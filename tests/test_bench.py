"""The benchmark tooling: statistics, machine checks, history, report, and a
tiny real run on both controllers.

Speed itself is checked by the benchmark (docs/benchmarks.md), never here:
these tests check that the tooling computes and records the right things.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import _history  # noqa: E402
import _machine  # noqa: E402
import _stats  # noqa: E402
import report  # noqa: E402
import run  # noqa: E402
import scaling_model  # noqa: E402

RUN = [sys.executable, str(ROOT / "benchmarks" / "run.py")]


def _runs(config, controller, values, rss=100.0):
    return [{"config": config, "controller": controller, "repeat": i, "samples_per_s": v, "peak_rss_mb": rss}
            for i, v in enumerate(values)]


def _fake_runs():
    return (_runs("hvdagent", "mpi", [90, 100, 110]) + _runs("horovod", "mpi", [100, 100, 100], rss=95.0)
            + _runs("mwms", None, [50, 60, 40]) + _runs("nosync", "mpi", [130, 135, 140])
            + _runs("localsgd", "mpi", [129, 130, 131]) + _runs("single", None, [60, 61, 62])
            + _runs("hvdagent", "gloo", [80, 80, 80]) + _runs("horovod", "gloo", [100, 70, 90])
            + [{"config": "mwms", "controller": None, "repeat": 3, "error": "boom"}])


def test_summary_keeps_controllers_apart():
    s = _stats.summarize(_fake_runs())
    assert s["hvdagent@mpi"]["median"] == 100 and s["hvdagent@mpi"]["min"] == 90
    assert s["hvdagent@gloo"]["median"] == 80 and s["hvdagent@gloo"]["controller"] == "gloo"
    assert s["mwms"]["ok"] == 3 and s["mwms"]["failed"] == 1 and s["mwms"]["controller"] is None
    assert s["horovod@mpi"]["peak_rss_mb"] == 95.0


def test_ratios_are_within_the_run_and_per_repeat():
    r = _stats.ratios(_fake_runs(), ["gloo", "mpi"])
    assert r["hvdagent / horovod (mpi)"]["value"] == pytest.approx(1.0)
    assert r["hvdagent / horovod (mpi)"]["per_repeat"] == pytest.approx([0.9, 1.0, 1.1])
    assert r["hvdagent / horovod (gloo)"]["per_repeat"] == pytest.approx([0.8, 80 / 70, 80 / 90])
    assert r["hvdagent / mwms (mpi)"]["value"] == pytest.approx(2.0)
    assert r["sync overhead (mpi)"]["value"] == pytest.approx(1 - 100 / 135)
    assert r["sync overhead (mpi)"]["per_repeat"] == pytest.approx([1 - 90 / 130, 1 - 100 / 135, 1 - 110 / 140])
    assert r["localsgd / nosync (mpi)"]["value"] == pytest.approx(130 / 135)
    assert r["peak RSS hvdagent / horovod (mpi)"]["value"] == pytest.approx(100 / 95)
    assert "localsgd / nosync (gloo)" not in r  # not run on gloo: no ratio invented
    t = _stats.check_targets(r)
    assert t["hvdagent / horovod (mpi)"]["met"] and t["hvdagent / horovod (mpi)"]["held"] == 2
    assert t["hvdagent / mwms (mpi)"]["met"] and t["hvdagent / mwms (mpi)"]["held"] == 1  # 1.8, 1.67, 2.75
    assert not t["sync overhead (mpi)"]["met"] and t["sync overhead (mpi)"]["repeats"] == 3
    assert t["localsgd / nosync (mpi)"]["met"] and not t["hvdagent / horovod (gloo)"]["met"]


def test_order_interleaves_every_slot_in_every_repeat():
    slots = list("abcdef")
    orders = [_stats.order(slots, rep, 3) for rep in range(3)]
    assert all(sorted(o) == slots for o in orders)
    assert orders[0] == slots and orders[1] == list("bafedc") and orders[2] == list("efabcd")
    assert [o[0] for o in orders] == ["a", "b", "e"]  # no slot always goes first


def test_machine_description_and_slug():
    assert _machine.slug("AMD EPYC 7B13 64-Core Processor", 2) == "amd-epyc-7b13-64-core-2c"
    assert _machine.slug("Intel(R) Xeon(R) CPU @ 2.20GHz", 4) == "intel-xeon-4c"
    m = _machine.describe()
    assert m["cores"] >= 1 and m["cpu"] and m["slug"].endswith(f"-{m['cores']}c")
    assert m["versions"]["horovod"] and m["versions"]["tensorflow"]


def test_cpu_meter_counts_other_processes():
    # A child that burns 1 s of CPU is ours; another process burning CPU is not.
    meter = _machine.CpuMeter().start()
    subprocess.run([sys.executable, "-c", "import time\nt=time.process_time()\nwhile time.process_time()-t<1: pass"],
                   check=True, timeout=60)
    r = meter.stop()
    assert r["ours_cores"] * r["wall_s"] >= 0.9
    assert r["other_cores"] is not None and r["other_cores"] >= 0
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # not waited for: other
    try:
        meter = _machine.CpuMeter().start()
        import time

        time.sleep(1.5)
        r = meter.stop()
    finally:
        busy.kill()
        busy.wait()
    assert r["other_cores"] >= 0.3, r  # the spinning process got at least a third of a core


def test_wait_until_quiet_refuses_with_a_reason():
    r = _machine.wait_until_quiet(max_load=-1.0, settle_s=0, max_other=100.0, probe_s=0.2, log=lambda *_: None)
    assert not r["quiet"] and "load average" in r["reason"] and "(> -1.0)" in r["reason"]
    r = _machine.wait_until_quiet(max_load=1e9, settle_s=0, max_other=1e9, probe_s=0.2, log=lambda *_: None)
    assert r["quiet"] and r["reason"] is None


def test_history_never_overwrites_and_groups_by_machine(tmp_path):
    a = {"started": "2026-11-30 07:00:00", "machine": {"slug": "x-2c", "cpu": "X", "cores": 2},
         "validity": {"valid": True}}
    b = dict(a, started="2026-11-30 08:00:00", validity={"valid": False})
    c = dict(a, machine={"slug": "y-4c", "cpu": "Y", "cores": 4})
    p1, p2 = _history.save(a, tmp_path), _history.save(a, tmp_path)
    assert p1.name == "2026-11-30-0700-x-2c.json" and p2.name == "2026-11-30-0700-x-2c-2.json"
    _history.save(b, tmp_path)
    _history.save(c, tmp_path)
    runs = _history.load(tmp_path)
    assert [r["started"] for r in runs][0] == "2026-11-30 08:00:00"
    groups = _history.by_machine(runs)
    assert list(groups) == ["x-2c", "y-4c"] and len(groups["x-2c"]) == 3
    assert _history.latest_valid(tmp_path, "x-2c")["started"] == "2026-11-30 07:00:00"


def test_report_marks_invalid_runs_and_replaces_only_its_blocks():
    runs = _fake_runs()
    rep = {"started": "2026-11-30 07:00:00", "machine": {"slug": "x-2c", "cpu": "X", "cores": 2},
           "settings": {"np": 2, "batch": 64, "steps": 5, "epochs": 1, "repeats": 3, "localsgd": {"sync_every": 8}},
           "summary": _stats.summarize(runs), "validity": {"valid": False, "reasons": ["started on a busy machine"]}}
    rep["ratios"] = _stats.ratios(runs, ["gloo", "mpi"])
    rep["targets"] = _stats.check_targets(rep["ratios"])
    text = report.run_section(rep)
    assert text.startswith("**INVALID") and "started on a busy machine" in text
    assert "| hvdagent | 80 (80 - 80) | 100 (90 - 110) |" in text
    assert "| hvdagent / horovod | 0.889 (>= 0.98: **missed**, held in 1 of 3 repeats) | 1.000 (>= 1.0: met" in text
    rep["runs"] = [dict(r, env={"HOROVOD_CYCLE_TIME": "0.1"} if r["config"] == "hvdagent" else {}) for r in runs]
    assert "**Not the same environment on gloo** after initialisation: `HOROVOD_CYCLE_TIME` hvdagent 0.1, " \
           "hand-written unset." in report.run_section(rep)
    doc = "intro\n<!-- BEGIN generated: history -->\nold\n<!-- END generated: history -->\nkept\n"
    assert report.replace_blocks(doc, {"history": "new"}) == doc.replace("old", "new")
    with pytest.raises(ValueError, match="no generated block 'model'"):
        report.replace_blocks(doc, {"model": "x"})


def test_docs_tables_match_the_history():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "report.py"), "--check",
                           str(ROOT / "docs" / "benchmarks.md")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    for path in (ROOT / "docs" / "bench" / "history").glob("*.json"):
        assert path.name in text


def test_plots_of_the_docs_are_drawn_from_the_history(tmp_path):
    """`report.py --write` redraws the two plots docs/benchmarks.md shows; both come from the history."""
    import matplotlib.image

    runs = _history.load(ROOT / "docs" / "bench" / "history")
    written = report.write_plots(runs, tmp_path)
    assert [p.name for p in written] == ["throughput.png", "scaling_model.png"]
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    for path in written:
        image = matplotlib.image.imread(path)
        assert image.shape[0] > 200 and image.shape[1] > 400 and image.std() > 0.05  # a drawn picture
        assert f"](bench/{path.name})" in text and (ROOT / "docs" / "bench" / path.name).is_file()
    base = report.model_base(runs)
    assert base is not None and base.get("validity", {}).get("valid") and base["summary"].get("single")
    assert report.write_plots([], tmp_path / "empty") == []  # no run: no plot, nothing invented


def test_benchmark_model_parameter_count():
    import keras

    import _workload

    assert _workload.num_params(_workload.build_model(keras)) == scaling_model.BENCH_PARAMS


def test_bad_arguments_are_rejected(capsys):
    with pytest.raises(SystemExit):
        run.parse(["--configs", "single,fast"])
    assert "unknown configuration" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run.parse(["--controllers", "gloo,nccl"])
    assert "Received: ['nccl']" in capsys.readouterr().err
    assert run.parse(["--localsgd", "sync_every=8,local_warmup_epochs=1"]).localsgd == {
        "sync_every": 8, "local_warmup_epochs": 1}


def test_refuses_to_start_on_a_busy_machine(tmp_path):
    # A bound no machine meets: the run must refuse, say why and how to override, and write nothing.
    proc = subprocess.run(RUN + ["--max-load", "-1", "--settle", "0", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "REFUSED" in proc.stderr and "--allow-busy" in proc.stderr and "load average" in proc.stderr
    assert not (tmp_path / "bench.json").exists()


@pytest.mark.timeout(1500)  # minutes on a quiet 2-core machine; about 14 min on one loaded ten times over
def test_tiny_run_on_both_controllers(tmp_path):
    """Both controllers side by side, local SGD (or a note why not), history, report."""
    out, hist = tmp_path / "bench", tmp_path / "history"
    cmd = RUN + ["--tiny", "--allow-busy", "--settle", "0", "--configs", "single,hvdagent,horovod,nosync,localsgd",
                 "--out", str(out), "--history", str(hist), "--no-plot"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1440, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    rep = json.loads((out / "bench.json").read_text())
    local_ok = "localsgd" not in rep["skipped"]
    if not local_ok:
        assert "does not accept ['sync_every']" in rep["skipped"]["localsgd"]
    for ctrl in ("gloo", "mpi"):
        for config in ("hvdagent", "horovod", "nosync") + (("localsgd",) if local_ok else ()):
            s = rep["summary"][f"{config}@{ctrl}"]
            assert s["ok"] == 1 and s["median"] > 0 and s["peak_rss_mb"] > 0, (config, ctrl, s)
        assert rep["ratios"][f"hvdagent / horovod ({ctrl})"]["value"] > 0
        assert 0 < rep["ratios"][f"hvdagent / nosync ({ctrl})"]["value"]
        assert [r["bytes"] for r in rep["allreduce"][ctrl]["rows"]] == [4096, 16384, 65536, 262144]
    mpi_runs = [r for r in rep["runs"] if r.get("controller") == "mpi"]
    assert mpi_runs and all(r["env"].get("OMPI_MCA_mpi_yield_when_idle") == "1" for r in mpi_runs)
    assert all(r["nosync_via"] for r in rep["runs"] if r["config"] == "nosync")
    v = rep["validity"]
    assert isinstance(v["valid"], bool) and (v["valid"] or v["reasons"])
    assert v["load_start"] >= 0 and rep["machine"]["cores"] >= 1
    assert all(r["other_cores"] is not None for r in rep["runs"])
    # The ranks' own CPU time is counted as the benchmark's, not as other processes'.
    assert all(r["ours_cpu_s"] >= 0.95 * r["ranks_cpu_s"] > 0 for r in rep["runs"]), \
        [(r["config"], r["controller"], r["ours_cpu_s"], r["ranks_cpu_s"]) for r in rep["runs"]]
    saved = list(hist.glob("*.json"))
    assert len(saved) == 1 and rep["machine"]["slug"] in saved[0].name
    text = report.run_section(json.loads(saved[0].read_text()))
    assert "| hvdagent |" in text
    # The model is checked against the run only when the (tiny, noisy) allreduce could be fitted.
    fitted = [r for r in scaling_model.two_rank_check(rep) if r["measured"]]
    assert ("Scaling model against these 2-rank measurements" in text) == bool(fitted)
    assert "hvdagent / horovod" in proc.stdout


def test_timeline_summary_splits_waiting_from_transfer(tmp_path):
    import timeline

    # Two parts of one grouped allreduce, run twice, and a single tensor once; as Horovod writes it (unterminated).
    events = [{"name": "process_name", "ph": "M", "pid": 1, "args": {"name": "g_1of2"}},
              {"name": "process_name", "ph": "M", "pid": 2, "args": {"name": "g_2of2"}},
              {"name": "process_name", "ph": "M", "pid": 3, "args": {"name": "HorovodAllreduce"}}]
    for pid in (1, 2):
        for t0, wait in ((0, 60_000), (500_000, 2_000 * pid)):
            events += [{"ph": "B", "name": "NEGOTIATE_ALLREDUCE", "ts": t0, "pid": pid},
                       {"ph": "X", "name": "0", "ts": t0, "pid": pid, "dur": 0},
                       {"ph": "E", "ts": t0 + wait, "pid": pid},
                       {"ph": "B", "name": "ALLREDUCE", "ts": t0 + wait, "pid": pid},
                       {"ph": "B", "name": "GLOO_ALLREDUCE", "ts": t0 + wait + 100, "pid": pid},
                       {"ph": "E", "ts": t0 + wait + 2_500, "pid": pid},
                       {"ph": "E", "ts": t0 + wait + 2_600, "pid": pid}]
    events += [{"ph": "B", "name": "NEGOTIATE_ALLREDUCE", "ts": 0, "pid": 3}, {"ph": "E", "ts": 7_000, "pid": 3},
               {"ph": "B", "name": "ALLREDUCE", "ts": 7_000, "pid": 3}, {"ph": "E", "ts": 8_000, "pid": 3}]
    path = tmp_path / "tl.json"
    path.write_text("[\n" + ",\n".join(json.dumps(e) for e in events) + ",")
    groups = timeline.phases(timeline.load(str(path)))
    assert groups == {"g": {"wait": [60.0, 4.0], "transfer": [2.6, 2.6]},
                      "HorovodAllreduce": {"wait": [7.0], "transfer": [1.0]}}
    text = timeline.table(groups)
    assert text.splitlines()[1].split()[:4] == ["g", "2", "64", "ms"]
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "timeline.py"), str(path), "--json"],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == groups


def test_levers_table_lists_every_run_in_repeat_order():
    import levers

    runs = [{"name": "base", "repeat": 1, "samples_per_s": 2000.0}, {"name": "base", "repeat": 0, "samples_per_s": 1000.0},
            {"name": "bind", "repeat": 0, "error": "boom"}]
    report = {"machine": {"cpu": "X", "cores": 2}, "started": "2026-01-01 00:00:00", "valid": False,
              "settings": {"repeats": 2, "steps": 80, "epochs": 2},
              "runs": runs, "summary": {"base": {"ok": 2, "median": 1500.0, "x_base": 1.0, "overhead": 0.25},
                                        "bind": {"ok": 0}}}
    lines = levers.markdown(report).splitlines()
    assert "**INVALID: the machine was busy**" in lines[0]
    assert lines[4] == "| base | hvdagent, gloo | 1,000, 2,000 | 1,500 | 1.00 | 0.25 |"
    assert lines[5] == "| bind | hvdagent, gloo, HVDAGENT_BIND=cores | failed | | | |"
    assert levers.describe("localsgd8-cycle5") == 'localsgd, gloo, HOROVOD_CYCLE_TIME=5, {"sync_every": 8}'


def test_comm_report_ratios_best_method_targets_and_model_check():
    import comm_report

    def phase(rate, sps, acc=None, epochs=20):
        rows = [{"bytes": b, "latency_ms": 1e3 * (2e-3 + b / 12.5e6)} for b in (4096, 65536, 1 << 20, 4 << 20)]
        return {"rate": rate, "accuracy_run": acc is not None, "params": 4_349_962, "allreduce": rows,
                "compress_s": {"powersgd1": 0.01},
                "results": {n: {"samples_per_s": v, "steps": 24, "elapsed_s": 24 * 128 / v,
                                "sent_bytes_per_step": 1.0, "replicas_identical": True,
                                "test_accuracy": (acc or {}).get(n, 0.0), "test_loss": 0.1, "epochs": []}
                            for n, v in sps.items()}}

    acc = {"fp32": 0.97, "powersgd1": 0.95, "powersgd2": 0.968, "localsgd8": 0.97, "horovod": 0.97, "nosync": 0.9}
    rep = {"settings": {"hidden": 2048, "batch": 64, "epochs": 20, "powersgd_start_epochs": 2, "shaped_epochs": 3},
           "machine": {"cpu": "X", "cores": 2}, "started": "2026-12-03 00:00:00", "validity": {"valid": True},
           "phases": {"off": phase("off", {"fp32": 1000, "powersgd1": 1300, "powersgd2": 950, "localsgd8": 1200,
                                           "horovod": 1010, "nosync": 1400}, acc),
                      "100mbit": phase("100mbit", {"fp32": 100, "powersgd1": 1200, "powersgd2": 1100,
                                                   "localsgd8": 600, "horovod": 100, "nosync": 1400})}}
    comm_report.analyse(rep)
    # powersgd1 is the fastest on 100 Mbit/s but 2 points less accurate: the best is powersgd2.
    assert comm_report.best(rep, "100mbit") == "powersgd2"
    assert rep["accuracy"]["powersgd1"]["points_vs_fp32"] == pytest.approx(-2.0)
    t = {(x["rate"], x["what"]): x for x in rep["targets"]}
    assert t[("100mbit", "best / nosync")]["value"] == pytest.approx(1100 / 1400) and not t[("100mbit", "best / nosync")]["met"]
    assert t[("100mbit", "best / fp32")]["value"] == pytest.approx(11.0) and t[("100mbit", "best / fp32")]["met"]
    assert t[("off", "fp32 / horovod")]["value"] == pytest.approx(1000 / 1010) and t[("off", "fp32 / horovod")]["met"]
    assert t[("off", "powersgd / fp32 when it does not help")]["who"] == "powersgd2"
    assert t[("off", "powersgd / fp32 when it does not help")]["value"] == pytest.approx(0.95)
    assert ("1gbit", "best / nosync") not in t  # not run: no verdict invented
    # The model: no-sync step + alpha-beta sync (+ PowerSGD's measured arithmetic), from the link's own fit.
    r = rep["phases"]["100mbit"]
    assert r["fit"]["alpha_s"] == pytest.approx(1e-3) and r["fit"]["bandwidth"] == pytest.approx(12.5e6)
    p1 = r["results"]["powersgd1"]
    assert p1["predicted_step_s"] == pytest.approx(128 / 1400 + 4e-3 + p1["model_sent_bytes"] / 12.5e6 + 0.01)
    text = comm_report.section(rep)
    assert "| PowerSGD rank 2 | 1,100 | 0.79 | 11.00 |" in text and "powersgd / fp32 when it does not help" in text
    assert "PowerSGD's arithmetic per step, measured on one rank: rank 1 10.0 ms" in text

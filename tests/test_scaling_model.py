"""The scaling model's maths (benchmarks/scaling_model.py): pure Python, no launch."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import scaling_model as sm  # noqa: E402


def test_one_rank_costs_nothing_and_has_efficiency_one():
    assert sm.ring_allreduce_s(1, 4e6, 1e-3, 1e9) == 0.0
    assert sm.efficiency(1, 0.05, 4e6, 1e-3, 1e9) == 1.0
    assert sm.efficiency(1, 0.05, 4e6, 1e-3, 1e9, sync_every=8) == 1.0


def test_hand_computed_values():
    # p=4, 1 MB, alpha 100 us, 1 GB/s: 2*3*1e-4 + 2*3/4 * 1e6/1e9 = 0.6 ms + 1.5 ms.
    assert sm.ring_allreduce_s(4, 1e6, 1e-4, 1e9) == pytest.approx(2.1e-3, rel=1e-12)
    assert sm.efficiency(4, 0.010, 1e6, 1e-4, 1e9) == pytest.approx(0.010 / 0.0121, rel=1e-12)
    # Local SGD every 8 steps: an eighth of the communication per step.
    assert sm.efficiency(4, 0.010, 1e6, 1e-4, 1e9, sync_every=8) == pytest.approx(0.010 / (0.010 + 2.1e-3 / 8))
    # 25 Gb/s is 3.125 GB/s.
    assert sm.gbit_to_bytes_per_s(25) == 3.125e9


def test_efficiency_rises_with_bandwidth_and_falls_with_ranks():
    bws = [sm.gbit_to_bytes_per_s(g) for g in (1, 10, 25, 100, 400)]
    effs = [sm.efficiency(64, 0.1, 1e8, 1e-5, bw) for bw in bws]
    assert all(a < b for a, b in zip(effs, effs[1:])), effs
    by_p = [sm.efficiency(p, 0.1, 1e8, 1e-5, 3e9) for p in sm.RANKS]
    assert all(a > b for a, b in zip(by_p, by_p[1:])), by_p
    # Local SGD never hurts and helps the more the more communication costs.
    for p in sm.RANKS:
        assert sm.efficiency(p, 0.1, 1e8, 1e-5, 3e9, sync_every=8) > sm.efficiency(p, 0.1, 1e8, 1e-5, 3e9)


def test_bandwidth_term_tends_to_twice_the_message():
    # Large p: the ring moves 2 (p-1)/p -> 2 message sizes per rank.
    t = sm.ring_allreduce_s(10**6, 1e9, 0.0, 1e9)
    assert t == pytest.approx(2.0, rel=1e-5)


def test_fit_recovers_alpha_and_bandwidth_exactly():
    alpha, bw = 250e-6, 0.4e9
    rows = [{"bytes": n, "latency_ms": 1e3 * sm.ring_allreduce_s(2, n, alpha, bw)} for n in (4096, 65536, 2**20, 2**24)]
    a, b = sm.fit(rows, p=2)
    assert a == pytest.approx(alpha, rel=1e-9) and b == pytest.approx(bw, rel=1e-9)
    # The same on 4 ranks (the fit undoes the 2(p-1)/p and 2(p-1) factors).
    rows4 = [{"bytes": n, "latency_ms": 1e3 * sm.ring_allreduce_s(4, n, alpha, bw)} for n in (4096, 2**20, 2**24)]
    a4, b4 = sm.fit(rows4, p=4)
    assert a4 == pytest.approx(alpha, rel=1e-9) and b4 == pytest.approx(bw, rel=1e-9)


def test_fit_weighs_small_messages():
    # 10% noise on the largest message must not swamp the latency of small ones.
    alpha, bw = 500e-6, 1e9
    rows = [{"bytes": n, "latency_ms": 1e3 * sm.ring_allreduce_s(2, n, alpha, bw)} for n in (4096, 16384, 65536, 2**26)]
    rows[-1]["latency_ms"] *= 1.1
    a, _ = sm.fit(rows)
    assert a == pytest.approx(alpha, rel=0.05)


def test_invalid_inputs_are_rejected():
    with pytest.raises(ValueError, match="p=0"):
        sm.ring_allreduce_s(0, 1e6, 1e-4, 1e9)
    with pytest.raises(ValueError, match="bandwidth=0"):
        sm.ring_allreduce_s(2, 1e6, 1e-4, 0)
    with pytest.raises(ValueError, match="sync_every=0"):
        sm.efficiency(2, 0.1, 1e6, 1e-4, 1e9, sync_every=0)
    with pytest.raises(ValueError, match="2 or more sizes"):
        sm.fit([{"bytes": 4096, "latency_ms": 1.0}])
    with pytest.raises(ValueError, match="does not grow"):
        sm.fit([{"bytes": 4096, "latency_ms": 2.0}, {"bytes": 2**20, "latency_ms": 1.0}])


def test_table_and_markdown():
    rows = sm.efficiency_table(sm.RESNET50_PARAMS, 0.25, 10e-6)
    assert [r["p"] for r in rows] == [2, 4, 8, 16, 32, 64, 128, 256, 512]
    r512 = rows[-1]
    expected = 0.25 / (0.25 + sm.ring_allreduce_s(512, 4 * sm.RESNET50_PARAMS, 10e-6, sm.gbit_to_bytes_per_s(25)))
    assert r512[(25, 1)] == pytest.approx(expected)
    assert r512[(10, 1)] < r512[(25, 1)] < r512[(100, 1)]
    assert r512[(25, 8)] > r512[(25, 1)]
    md = sm.markdown_table(rows)
    lines = md.splitlines()
    assert len(lines) == 2 + 9 and lines[0].count("|") == 8
    assert lines[-1].startswith("| 512 | ") and f"{100 * expected:.0f}%" in lines[-1]


def _report(nosync=2000.0, hvd=1500.0, local=1900.0):
    alpha, bw = 300e-6, 0.5e9
    rows = [{"bytes": n, "latency_ms": 1e3 * sm.ring_allreduce_s(2, n, alpha, bw), "busbw_gbs": 0, "memcpy_gbs": 1}
            for n in (4096, 2**20, 2**24)]
    s = lambda v: {"ok": 1, "median": v, "min": v, "max": v}  # noqa: E731
    return {"settings": {"batch": 64, "np": 2, "localsgd": {"sync_every": 8}},
            "summary": {"single": s(1200.0), "nosync@gloo": s(nosync), "hvdagent@gloo": s(hvd), "localsgd@gloo": s(local)},
            "allreduce": {"gloo": {"size": 2, "rows": rows}}}, alpha, bw


def test_two_rank_check_predicts_from_the_same_run():
    report, alpha, bw = _report()
    check = {r["config"]: r for r in sm.two_rank_check(report)}
    step = 128 / 2000.0
    comm = sm.ring_allreduce_s(2, 4 * sm.BENCH_PARAMS, alpha, bw)
    assert check["hvdagent"]["predicted"] == pytest.approx(128 / (step + comm))
    assert check["localsgd"]["predicted"] == pytest.approx(128 / (step + comm / 8))
    assert check["hvdagent"]["measured_over_predicted"] == pytest.approx(1500.0 / (128 / (step + comm)))
    assert sm.compute_s_per_step(report) == pytest.approx(64 / 1200.0)
    text = sm.render(report)
    assert "assumed" in text and "90% scaling efficiency at 512 GPUs" in text
    assert text.count("| 512 |") == 4  # two models x two latencies


def test_the_figures_quoted_in_the_docs():
    # docs/benchmarks.md quotes these (25M parameters, 250 ms per step, 10 us, 512 ranks).
    def pct(gbits, every=1):
        e = sm.efficiency(512, sm.COMPUTE_MS_25M / 1e3, 4 * sm.RESNET50_PARAMS, sm.NETWORK_ALPHA_US * 1e-6,
                          sm.gbit_to_bytes_per_s(gbits), every)
        return round(100 * e)

    assert (pct(25), pct(100), pct(25, 8)) == (77, 91, 96)
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    assert "77% scaling efficiency at 512 ranks on 25 Gb/s" in text and "91% on 100 Gb/s" in text
    assert "lifts 25 Gb/s to 96%" in text


def test_a_noisy_microbenchmark_gives_no_fit_but_no_crash():
    report, _, _ = _report()
    report["allreduce"]["mpi"] = {"size": 2, "rows": [{"bytes": 4096, "latency_ms": 12.0},
                                                      {"bytes": 262144, "latency_ms": 2.0}]}
    report["summary"]["nosync@mpi"] = report["summary"]["nosync@gloo"]
    f = sm.fits(report)
    assert isinstance(f["gloo"], tuple) and f["mpi"].startswith("latency does not grow")
    assert [r["controller"] for r in sm.two_rank_check(report)] == ["gloo", "gloo"]
    assert "- no fit of the mpi allreduce: latency does not grow with message size" in sm.render(report)


def test_the_published_model_uses_the_allreduce_measured_between_namespace_hosts():
    """docs/benchmarks.md's model section, from the committed history: the
    compute time from a run that measured one process, the latency between
    two namespace hosts from the run that measured it (kept per machine)."""
    import _history
    import report

    runs = _history.load(ROOT / "docs" / "bench" / "history")
    text = report.model_section(runs)
    between = [r for r in runs if r.get("validity", {}).get("valid") and "gloo, 2 hosts" in (r.get("allreduce") or {})]
    assert between, "the history holds a valid run with the allreduce between two hosts"
    alpha, _ = sm.fit(between[0]["allreduce"]["gloo, 2 hosts"]["rows"], 2)
    assert f"fit of the gloo allreduce between two network-namespace hosts (veth + bridge): alpha = {alpha * 1e6:.0f} us" in text
    assert f"alpha = {alpha * 1e6:.0f} us per ring step (measured here between two network-namespace hosts" in text
    assert "compute per step, benchmark model (one process, batch 64):" in text

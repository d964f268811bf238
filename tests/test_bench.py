"""The benchmark command runs on a tiny configuration and writes its outputs.

Speed itself is checked by the benchmark (docs/benchmarks.md), never here.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import run  # noqa: E402  (benchmarks/run.py)


def _runs(name, values, rss=100.0):
    return [{"name": name, "samples_per_s": v, "peak_rss_mb": rss} for v in values]


def test_summary_ratios_and_targets():
    runs = (_runs("hvdagent", [90, 100, 110]) + _runs("horovod", [100, 100, 100], rss=95.0)
            + _runs("mwms", [50, 60, 70]) + _runs("nosync", [130, 135, 140]) + _runs("single", [60])
            + [{"name": "mwms", "error": "boom"}])
    summary = run.summarize(runs)
    assert summary["hvdagent"]["median"] == 100 and summary["hvdagent"]["min"] == 90
    assert summary["mwms"]["ok"] == 3 and summary["mwms"]["failed"] == 1
    r = run.ratios(summary)
    assert r["hvdagent / horovod"] == pytest.approx(1.0)
    assert r["hvdagent / mwms"] == pytest.approx(100 / 60)
    assert r["sync overhead"] == pytest.approx(1 - 100 / 135)
    assert r["peak RSS hvdagent / horovod"] == pytest.approx(100 / 95)
    t = run.check_targets(r)
    assert t["hvdagent / horovod"]["met"] and t["hvdagent / mwms"]["met"]
    assert not t["sync overhead"]["met"] and t["peak RSS hvdagent / horovod"]["met"]


def test_unknown_config_is_rejected(capsys):
    with pytest.raises(SystemExit):
        run.parse(["--configs", "single,fast"])
    assert "unknown configuration" in capsys.readouterr().err


@pytest.mark.timeout(170)
def test_benchmark_command_tiny(tmp_path):
    out = tmp_path / "bench"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--tiny", "--configs", "single,hvdagent",
           "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=160, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "bench.json").read_text())
    for name in ("single", "hvdagent"):
        s = report["summary"][name]
        assert s["ok"] == 1 and s["median"] > 0 and s["peak_rss_mb"] > 0
    hvd_run = next(r for r in report["runs"] if r["name"] == "hvdagent")
    assert len(hvd_run["peak_rss_mb_per_rank"]) == 2
    assert report["ratios"]["hvdagent / single"] > 0
    assert [row["bytes"] for row in report["allreduce"]["rows"]] == [4096, 16384, 65536, 262144]
    assert all(row["latency_ms"] > 0 and row["memcpy_gbs"] > 0 for row in report["allreduce"]["rows"])
    for png in ("bench.png", "allreduce.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "samples/s" in proc.stdout and "hvdagent / single" in proc.stdout

"""The communication-bound benchmark's quick variant, for real: two namespace hosts
of ci/hosts.sh, their link shaped to 100 Mbit/s, every configuration once.

A functional check of the tooling (speed is the benchmark's business, on a
quiet machine): the bytes each interface sent are measured and must match
what each method puts on the wire, the replicas stay identical, the report,
the model check and the plots come out. Needs root (network namespaces).
"""

import json
import subprocess
import sys

import pytest

from conftest import ROOT
from test_multihost import _why_not

pytestmark = [pytest.mark.multihost, pytest.mark.timeout(1200)]


def test_quick_variant_measures_every_configuration_on_a_shaped_link(tmp_path):
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "comm.py"), "--quick", "--out", str(tmp_path),
                           "--plots", str(tmp_path)], capture_output=True, text=True, timeout=1140, cwd=str(ROOT),
                          env={**__import__("os").environ, "HVDAGENT_HOSTS_WAIT": "900"})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    rep = json.loads((tmp_path / "comm.json").read_text())
    assert not rep["validity"]["valid"] and "--quick" in " ".join(rep["validity"]["reasons"])  # never a result
    (phase,) = rep["phases"].values()
    assert phase["rate"] == "100mbit" and phase["hosts"] == ["hvdhost1", "hvdhost2"] and phase["iface_found"]
    res = phase["results"]
    assert list(res) == ["fp32", "fp16", "bf16", "localsgd4", "localsgd8", "powersgd1", "powersgd2", "powersgd4",
                         "horovod", "nosync"]
    payload = 4 * phase["params"]  # float32 gradients: a 2-rank ring sends each rank's whole payload once
    for name, r in res.items():
        assert r["samples_per_s"] > 0 and r["steps"] > 0, name
        if name != "nosync":
            assert r["replicas_identical"], name
        # Measured on the interface: the payload plus TCP/IP headers and Horovod's own messages (local SGD also
        # averages at every epoch's end, which the per-step model leaves out).
        slack = 2.0 if name.startswith("localsgd") else 1.3
        assert r["model_sent_bytes"] <= r["sent_bytes_per_step"] <= slack * r["model_sent_bytes"] + 20_000, (name, r)
    assert 0.95 * payload <= res["fp32"]["sent_bytes_per_step"] <= 1.2 * payload
    assert res["fp16"]["sent_bytes_per_step"] < 0.6 * res["fp32"]["sent_bytes_per_step"]
    assert res["powersgd1"]["sent_bytes_per_step"] < 0.15 * res["fp32"]["sent_bytes_per_step"]
    assert res["nosync"]["sent_bytes_per_step"] < 0.05 * payload  # ssh keep-alives only
    assert "alpha_s" in phase["fit"] and phase["compress_s"]["powersgd1"] > 0
    assert all(r.get("predicted_step_s", 0) > 0 for r in res.values())
    assert {t["what"] for t in rep["targets"]} == {"best / nosync", "best / fp32"}
    text = proc.stdout
    assert "| every-step float32 |" in text and "Targets of issue 21" in text and "**INVALID" in text
    assert (tmp_path / "comm-throughput.png").stat().st_size > 10_000 and (tmp_path / "comm-loss.png").exists()

"""The cost model of gradient sync and ``python -m hvdagent advise``, in one process.

The measured path (the link between two ranks, the profiler's compute time) is
checked in the 2-rank launch of tests/test_profiler.py; here the maths and
the command line, with a link given instead of measured.
"""

import math
import subprocess
import sys
import textwrap

import pytest

from hvdagent._sync import advisor, cost_model

SHAPES = [(64, 2048), (2048,), (2048, 2048), (2048,), (2048, 10), (10,)]  # the benchmark's model
PARAMS = 4_349_962


def test_alpha_beta_maths():
    assert cost_model.ring_allreduce_s(2, 1e6, 1e-3, 1e8) == pytest.approx(2e-3 + 1e6 / 1e8)
    assert cost_model.ring_allreduce_s(4, 1e6, 1e-3, 1e8) == pytest.approx(6e-3 + 1.5e6 / 1e8)
    assert cost_model.allgather_s(2, 1e6, 1e-3, 1e8) == pytest.approx(1e-3 + 1e6 / 1e8)
    rows = [{"bytes": b, "latency_ms": 1e3 * cost_model.ring_allreduce_s(2, b, 250e-6, 1.25e8)}
            for b in (4096, 65536, 1 << 20, 16 << 20)]
    assert cost_model.fit(rows, 2) == pytest.approx((250e-6, 1.25e8))  # exact rows fit exactly
    with pytest.raises(ValueError, match="need 2 or more sizes"):
        cost_model.fit(rows[:1], 2)
    with pytest.raises(ValueError, match="unknown method"):
        cost_model.sync_seconds("topk", SHAPES, 2, 1e-3, 1e8)


def test_what_each_method_sends_and_costs():
    assert sum(math.prod(s) for s in SHAPES) == PARAMS
    a, bw = 1e-3, 12.5e6  # 100 Mbit/s
    t = {m: cost_model.sync_seconds(m, SHAPES, 2, a, bw) for m in cost_model.methods() + ["nosync", "horovod"]}
    assert t["fp32"] == pytest.approx(2 * a + 4 * PARAMS / bw) and t["horovod"] == t["fp32"]
    assert t["fp16"] == pytest.approx(2 * a + 2 * PARAMS / bw) and t["bf16"] == pytest.approx(a + 2 * PARAMS / bw)
    assert t["localsgd8"] == pytest.approx(t["fp32"] / 8) and t["nosync"] == 0
    first, second = 1 + 64 * 2 + 2048 + 2048 * 2 + 2048 + 2048 * 2 + 10, 2048 * 2 + 2048 * 2 + 10 * 2
    assert t["powersgd2"] == pytest.approx(4 * a + 4 * (first + second) / bw)
    assert cost_model.sent_bytes("powersgd2", SHAPES, 2) == 4 * (first + second)
    assert cost_model.sent_bytes("fp32", SHAPES, 2) == 4 * PARAMS and cost_model.sent_bytes("fp32", SHAPES, 1) == 0
    assert cost_model.sync_seconds("powersgd2", SHAPES, 2, a, bw, compress_s=0.01) == pytest.approx(t["powersgd2"] + 0.01)
    rows = cost_model.predict(SHAPES, 0.08, 2, a, bw)
    assert [r["method"] for r in rows][:3] == ["powersgd1", "powersgd2", "powersgd4"]  # fewest bytes first here
    assert rows[0]["vs_nosync"] == pytest.approx(0.08 / (0.08 + t["powersgd1"]))


def test_advice_says_which_method_wins_and_when_to_keep_the_default():
    slow = advisor.advise(SHAPES, 0.08, {"p": 2, "alpha_s": 1e-3, "bandwidth": 12.5e6},
                          compress_s={"powersgd1": 0.012, "powersgd2": 0.013, "powersgd4": 0.015})
    assert slow["best"] == "powersgd1" and slow["verdict"].startswith("powersgd1 is predicted")
    fp32 = next(r for r in slow["rows"] if r["method"] == "fp32")
    assert slow["rows"][0]["vs_fp32"] == pytest.approx(fp32["step_s"] / slow["rows"][0]["step_s"])
    assert slow["rows"][0]["vs_fp32"] > 5
    fast = advisor.advise(SHAPES, 0.08, {"p": 2, "alpha_s": 10e-6, "bandwidth": 100e9 / 8},
                          compress_s={"powersgd1": 0.012, "powersgd2": 0.013, "powersgd4": 0.015})
    assert fast["verdict"].startswith("Keep the default (every-step float32)") and "Agarwal" in fast["verdict"]
    text = advisor.render(fast)
    assert "alpha 10 us" in text and "100.000 Gbit/s" in text and "given, not measured" in text
    assert text.splitlines()[4].split()[0] == fast["rows"][0]["method"]


def test_a_bandwidth_too_high_to_resolve_is_said_not_an_error():
    # What a profiled fit gets when the latency did not grow with the message size (loopback, tiny gradients).
    rows = [{"bytes": 4096, "latency_ms": 3.4}, {"bytes": 16384, "latency_ms": 2.4}, {"bytes": 65536, "latency_ms": 2.3}]
    with pytest.raises(ValueError, match="does not grow"):
        cost_model.fit(rows, 2)
    link = {"p": 2, "alpha_s": 2.3e-3 / 2, "bandwidth": math.inf, "rows": rows, "measured": True}
    advice = advisor.advise(SHAPES, 0.08, link, compress_s={"powersgd1": 0.012, "powersgd2": 0.013, "powersgd4": 0.015})
    assert advice["verdict"].startswith("Keep the default (every-step float32)")
    assert all(math.isfinite(r["step_s"]) and r["sent_bytes"] >= 0 for r in advice["rows"])
    text = advisor.render(advice)
    assert "bandwidth not resolved (the latency did not grow with messages up to 64 KB" in text and "inf" not in text


def test_measured_inputs_on_this_rank():
    import keras

    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(256), keras.layers.Dense(10)])
    before = [w.copy() for w in model.get_weights()]
    assert advisor.gradient_shapes(model) == [(64, 256), (256,), (256, 10), (10,)]
    assert 0 < advisor.measure_step(model, batch_size=32, steps=3) < 5
    assert all((a == b).all() for a, b in zip(model.get_weights(), before))  # timing leaves the model as it was
    work = advisor.measure_compression([(64, 256), (256,)], ranks=(1, 64), repeats=2)
    assert work["powersgd1"] > 0 and work["powersgd64"] == 0.0  # rank 64 would not shrink a 64x256 matrix
    with pytest.raises(ValueError, match="run under the launcher that starts your training"):
        advisor.measure_link()


def test_command_line_with_a_given_link(tmp_path):
    (tmp_path / "mymodel.py").write_text(textwrap.dedent("""
        import keras
        def build():
            return keras.Sequential([keras.Input((64,)), keras.layers.Dense(512), keras.layers.Dense(512),
                                     keras.layers.Dense(10)])
    """))
    cmd = [sys.executable, "-m", "hvdagent", "advise", "--model", "mymodel:build", "--step-ms", "20"]
    env = {"PYTHONPATH": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"}
    slow = subprocess.run(cmd + ["--alpha-us", "500", "--gbits", "0.1"], capture_output=True, text=True,
                          timeout=300, env=env)
    assert slow.returncode == 0, slow.stderr[-3000:]
    assert "Link (given, not measured, 2 ranks): alpha 500 us per ring step, bandwidth 0.100 Gbit/s" in slow.stdout
    assert "compute 20.0 ms per step" in slow.stdout and "is predicted" in slow.stdout
    # Wrong use, in this process (no launcher: one rank, no link to measure).
    from hvdagent.__main__ import main

    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(SystemExit, match="advise: measuring the link needs the job's ranks: run under the launcher"):
            main(["advise", "--model", "mymodel:build", "--step-ms", "20"])
        with pytest.raises(SystemExit, match="give both --alpha-us and --gbits"):
            main(["advise", "--model", "mymodel:build", "--step-ms", "20", "--gbits", "1"])
        with pytest.raises(SystemExit, match="give --batch-size .* or --step-ms"):
            main(["advise", "--model", "mymodel:build"])
    finally:
        sys.path.remove(str(tmp_path))

"""One process needs no Horovod: `import horovod` is made impossible and the
agent's fit / evaluate / predict / save still equal plain Keras; a launched rank
without Horovod gets an error that says how to get it."""

import subprocess
import sys
import textwrap

import pytest

BLOCK = textwrap.dedent("""
    import sys

    class NoHorovod:
        def find_spec(self, name, path=None, target=None):
            if name == "horovod" or name.startswith("horovod."):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
            return None

    sys.meta_path.insert(0, NoHorovod())
""")

SINGLE = BLOCK + textwrap.dedent("""
    import os, numpy as np, keras
    import hvdagent

    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 5)).astype("float32")
    y = (x @ rng.normal(size=(5, 3))).argmax(axis=1)

    def model():
        keras.utils.set_random_seed(3)
        return keras.Sequential([keras.Input((5,)), keras.layers.Dense(16, activation="relu"),
                                 keras.layers.Dense(3, activation="softmax")])

    a, b = model(), model()
    agent = hvdagent.DistributedAgent(a)
    agent.compile(keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    b.compile(keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    ha = agent.fit(x, y, batch_size=16, epochs=3, shuffle=False, validation_data=(x[:32], y[:32]), verbose=0)
    hb = b.fit(x, y, batch_size=16, epochs=3, shuffle=False, validation_data=(x[:32], y[:32]), verbose=0)
    assert all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights())), "weights differ"
    assert ha.history == hb.history, (ha.history, hb.history)
    assert agent.evaluate(x, y, verbose=0) == b.evaluate(x, y, verbose=0)
    assert np.array_equal(agent.predict(x, verbose=0), b.predict(x, verbose=0))
    path = os.path.join(sys.argv[1], "m.keras")
    agent.save(path)
    loaded = keras.models.load_model(path)
    assert np.array_equal(loaded.predict(x, verbose=0), b.predict(x, verbose=0))
    assert type(loaded.optimizer).__name__ == "Adam"
    assert not any(m == "horovod" or m.startswith("horovod.") for m in sys.modules), "horovod was imported"
    print("SINGLE-OK", hvdagent.size(), hvdagent.rank())
""")

LAUNCHED = BLOCK + textwrap.dedent("""
    import hvdagent
    try:
        hvdagent.init()
    except hvdagent.HorovodUnavailableError as err:
        print("ERROR:", err)
    else:
        raise SystemExit("init() did not fail")
""")


def _run(code, *args, env=None):
    import os

    full = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", OMP_NUM_THREADS="1")
    for k in ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"):
        full.pop(k, None)
    full.update(env or {})
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=240, env=full)


@pytest.mark.timeout(300)
def test_one_process_trains_evaluates_predicts_and_saves_without_horovod(tmp_path):
    proc = _run(SINGLE, str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "SINGLE-OK 1 0" in proc.stdout


@pytest.mark.timeout(120)
def test_a_launched_rank_without_horovod_is_told_how_to_get_it():
    proc = _run(LAUNCHED, env={"HOROVOD_RANK": "0", "HOROVOD_SIZE": "2"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Horovod is not installed in this environment" in proc.stdout
    assert "bash ci/setup.sh" in proc.stdout and "plain `python`" in proc.stdout

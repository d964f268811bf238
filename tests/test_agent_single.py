"""DistributedAgent, DistributedOptimizer and shard_dataset in one process."""

import numpy as np
import pytest

import keras
import tensorflow as tf

import hvdagent


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])


def _data(n=64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype("float32")
    return x, (x[:, :2] * 2.0).astype("float32")


def test_agent_fit_on_one_process_equals_plain_keras():
    x, y = _data()
    a, b = _model(1), _model(1)
    agent = hvdagent.DistributedAgent(a, scale_lr=False)
    agent.compile(keras.optimizers.SGD(0.05), loss="mse", metrics=["mae"])
    b.compile(keras.optimizers.SGD(0.05), loss="mse", metrics=["mae"])
    ha = agent.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    hb = b.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, atol=1e-6)
    assert ha.history["loss"] == pytest.approx(hb.history["loss"], abs=1e-6)
    res = agent.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    expected = b.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    assert res == pytest.approx(expected, abs=1e-6) and set(res) == {"loss", "mae"}
    np.testing.assert_allclose(agent.predict(x, verbose=0), b.predict(x, verbose=0), atol=1e-5)


def test_already_compiled_model_keeps_loss_metrics_and_gets_a_distributed_optimizer():
    x, y = _data()
    model, plain = _model(), _model()
    model.compile(keras.optimizers.Adam(1e-3), loss="mse", metrics=["mae"])
    plain.compile(keras.optimizers.Adam(1e-3), loss="mse", metrics=["mae"])
    agent = hvdagent.DistributedAgent(model)
    assert hvdagent._sync.parts.is_distributed(model.optimizer)
    assert model.optimizer.inner_optimizer.__class__.__name__ == "Adam"
    history = agent.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    expected = plain.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    assert set(history.history) == {"loss", "mae"}
    for key in ("loss", "mae"):
        assert history.history[key] == pytest.approx(expected.history[key], abs=1e-6)


def test_bad_inputs_are_named_with_the_received_value():
    with pytest.raises(TypeError, match="model must be a keras.Model.*Received: model='not a model'"):
        hvdagent.DistributedAgent("not a model")
    agent = hvdagent.DistributedAgent(_model())
    x, y = _data()
    with pytest.raises(RuntimeError, match=r"call agent.compile\(optimizer, loss, ...\) before agent.fit"):
        agent.fit(x, y)
    agent.compile("sgd", loss="mse")
    # One rule: a wrong type is a TypeError, a value out of range a ValueError; bools are not numbers.
    for bad, error in ((0, ValueError), (-4, ValueError), (2.5, TypeError), (True, TypeError)):
        with pytest.raises(error, match=rf"batch_size must be an integer >= 1 \(the per-rank batch size\)\. Received: batch_size={bad!r}"):
            agent.fit(x, y, batch_size=bad)
    with pytest.raises(ValueError, match="epochs must be an integer >= 0"):
        agent.fit(x, y, epochs=-1)
    with pytest.raises(ValueError, match=r"validation_split must be a number in \[0, 1\). Received: validation_split=1.5"):
        agent.fit(x, y, validation_split=1.5)
    with pytest.raises(ValueError, match="warmup_epochs ramps the learning rate.*Received: scale_lr=False, warmup_epochs=2"):
        hvdagent.DistributedAgent(_model(), scale_lr=False, warmup_epochs=2)
    with pytest.raises(TypeError, match="scale_lr must be True or False. Received: scale_lr=1"):
        hvdagent.DistributedAgent(_model(), scale_lr=1)
    with pytest.raises(ValueError, match="warmup_epochs must be a number >= 0. Received: warmup_epochs=-2"):
        hvdagent.DistributedAgent(_model(), warmup_epochs=-2)
    with pytest.raises(ValueError, match=r"op must be one of \('average', 'sum', 'adasum'\). Received: op='mean'"):
        hvdagent.DistributedAgent(_model(), op="mean")
    with pytest.raises(ValueError, match="compression must be one of"):
        hvdagent.DistributedAgent(_model(), compression="int8")


def test_wrapping_twice_is_an_error():
    opt = hvdagent.DistributedOptimizer(keras.optimizers.SGD(0.1))
    with pytest.raises(ValueError, match="already an hvdagent.DistributedOptimizer"):
        hvdagent.DistributedOptimizer(opt)
    agent = hvdagent.DistributedAgent(_model())
    with pytest.raises(ValueError, match="already an hvdagent.DistributedOptimizer"):
        agent.compile(opt, loss="mse")
    with pytest.raises(TypeError, match="Received: optimizer='sgd'"):
        hvdagent.DistributedOptimizer("sgd")


def test_distributed_optimizer_delegates_state_to_the_inner_optimizer():
    inner = keras.optimizers.SGD(0.1, momentum=0.9)
    opt = hvdagent.DistributedOptimizer(inner, backward_passes_per_step=1)
    var = keras.Variable(np.ones(3, "float32"))
    opt.apply([tf.constant([1.0, 2.0, 3.0])], [var])
    np.testing.assert_allclose(var.numpy(), [0.9, 0.8, 0.7], rtol=1e-6)
    assert int(opt.iterations.numpy()) == 1 == int(inner.iterations.numpy())
    opt.learning_rate = 0.5
    assert float(inner.learning_rate.numpy()) == 0.5
    config = opt.get_config()
    clone = type(opt).from_config(config)
    assert clone.inner_optimizer.get_config()["momentum"] == 0.9


def test_gradient_accumulation_applies_every_n_passes_with_the_mean_gradient():
    opt = hvdagent.DistributedOptimizer(keras.optimizers.SGD(1.0), backward_passes_per_step=2,
                                       average_aggregated_gradients=True)
    var = keras.Variable(np.zeros(2, "float32"))
    opt.apply([tf.constant([2.0, 4.0])], [var])
    np.testing.assert_allclose(var.numpy(), [0.0, 0.0])  # accumulated, not applied
    opt.apply([tf.constant([4.0, 0.0])], [var])
    np.testing.assert_allclose(var.numpy(), [-3.0, -2.0])  # mean of the two
    assert int(opt.iterations.numpy()) == 1


def test_shard_dataset_on_one_process_batches_everything():
    ds = hvdagent.shard_dataset(tf.data.Dataset.range(10), batch_size=4, shuffle=False)
    assert [b.numpy().tolist() for b in ds] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    shuffled = hvdagent.shard_dataset(tf.data.Dataset.range(10), batch_size=4, shuffle=True, seed=1)
    assert sorted(np.concatenate([b.numpy() for b in shuffled]).tolist()) == list(range(10))
    with pytest.raises(TypeError, match="dataset must be a tf.data.Dataset"):
        hvdagent.shard_dataset(np.arange(4), batch_size=2)
    with pytest.raises(ValueError, match="Received: batch_size=0"):
        hvdagent.shard_dataset(tf.data.Dataset.range(4), batch_size=0)


def test_array_shuffle_depends_only_on_seed_and_epoch_and_never_calls_python():
    from hvdagent._data import arrays

    x = np.arange(10.0)

    def epochs(ds, k):
        return [np.concatenate([b[0].numpy() for b in ds]).tolist() for _ in range(k)]

    first = epochs(arrays.array_dataset((x,), 4, shuffle=True, seed=3), 3)
    assert all(sorted(order) == x.tolist() for order in first)  # every sample once per epoch
    assert len({tuple(order) for order in first}) == 3  # a new order every epoch
    assert epochs(arrays.array_dataset((x,), 4, shuffle=True, seed=3), 3) == first  # reproducible
    assert epochs(arrays.array_dataset((x,), 4, shuffle=True, seed=3, first_epoch=1), 2) == first[1:]  # resumable
    assert epochs(arrays.array_dataset((x,), 4, shuffle=True, seed=4), 1) != first[:1]
    # A Python callback in the input pipeline (from_generator, py_function) halved the step rate.
    graph = arrays.array_dataset((x,), 4, shuffle=True)._as_serialized_graph().numpy()
    assert b"PyFunc" not in graph and b"Generator" not in graph


def test_seed_alignment_covers_numpy_and_is_validated():
    """What import hvdagent does under a launcher (here called by hand): TensorFlow's and NumPy's global seeds."""
    from hvdagent._data.shard import align_random_seeds
    from hvdagent._data.order import arrays_fingerprint, check_same, fingerprint

    align_random_seeds({"HVDAGENT_SEED": "7"})
    drawn = (np.random.randint(1e6), float(tf.random.uniform([])))
    np.random.seed(7)
    tf.random.set_seed(7)
    assert drawn == (np.random.randint(1e6), float(tf.random.uniform([])))  # what the dataset helpers draw
    state = np.random.get_state()[1].copy()
    align_random_seeds({"HVDAGENT_SEED": "off"})
    assert (np.random.get_state()[1] == state).all()  # left alone
    for bad in ("-1", "seven", str(2**32)):
        with pytest.raises(ValueError, match=f"HVDAGENT_SEED must be an integer in \\[0, 2\\*\\*32\\) or 'off'. Received: HVDAGENT_SEED='{bad}'"):
            align_random_seeds({"HVDAGENT_SEED": bad})
    # the fingerprints: targets and non-floating inputs decide (augmented pixels do not); arrays: every array
    texts = np.array([b"a b", b"c"], dtype=object)
    assert fingerprint((np.ones((2, 3)), np.array([0, 1]))) == fingerprint((np.zeros((2, 3)), np.array([0, 1])))
    assert fingerprint((np.ones((2, 3)), np.array([0, 1]))) != fingerprint((np.ones((2, 3)), np.array([1, 0])))
    assert fingerprint({"t": texts, "v": np.ones(2)}) != fingerprint({"t": texts[::-1], "v": np.ones(2)})
    assert fingerprint(np.ones((2, 3))) != fingerprint(np.zeros((2, 3)))  # nothing but floats: they count
    x, y = _data(200)
    assert arrays_fingerprint((x, y)) == arrays_fingerprint((x.copy(), y))
    assert arrays_fingerprint((x + 1, y)) != arrays_fingerprint((x, y)) != arrays_fingerprint((x[:199], y[:199]))
    with pytest.raises(ValueError, match="x differs across ranks: its first batch on rank\\(s\\) \\[2\\]"):
        check_same(["a", "a", "b"], "x", "dataset")


def test_save_writes_a_plain_keras_file_with_the_inner_optimizer(tmp_path):
    x, y = _data()
    agent = hvdagent.DistributedAgent(_model())
    agent.compile(keras.optimizers.Adam(1e-3), loss="mse")
    agent.fit(x, y, batch_size=16, epochs=1, verbose=0)
    path = tmp_path / "m.keras"
    agent.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.optimizer.__class__.__name__ == "Adam"
    np.testing.assert_allclose(loaded.predict(x, verbose=0), agent.predict(x, verbose=0), atol=0)
    with pytest.raises(ValueError, match="must end in .keras"):
        agent.save(tmp_path / "m.h5")
    resumed = hvdagent.DistributedAgent.load(path)
    resumed.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert int(resumed.model.optimizer.iterations.numpy()) == 2 * 4


def test_checkpoint_dir_resumes_in_one_process_and_rejects_bad_input(tmp_path):
    x, y = _data()
    agent = hvdagent.DistributedAgent(_model(3))
    agent.compile(keras.optimizers.Adam(1e-2), loss="mse")
    ckpt = tmp_path / "ckpt"
    h1 = agent.fit(x, y, batch_size=16, epochs=2, checkpoint_dir=ckpt, verbose=0)
    assert len(h1.history["loss"]) == 2
    assert sorted(p.name for p in ckpt.iterdir()) == ["ckpt-000002.npz", "latest.json"]  # no temporary files left
    again = hvdagent.DistributedAgent(_model(4))  # other initial weights: the checkpoint wins
    again.compile(keras.optimizers.Adam(1e-2), loss="mse")
    h2 = again.fit(x, y, batch_size=16, epochs=3, checkpoint_dir=ckpt, verbose=0)
    assert len(h2.history["loss"]) == 1  # only epoch 2 runs: completed epochs are not repeated
    assert int(again.model.optimizer.iterations.numpy()) == 3 * 4

    file_not_dir = tmp_path / "file"
    file_not_dir.write_text("x")
    with pytest.raises(ValueError, match="checkpoint_dir is not writable by rank 0.*Received: checkpoint_dir="):
        again.fit(x, y, batch_size=16, epochs=1, checkpoint_dir=file_not_dir / "sub", verbose=0)
    with pytest.raises(TypeError, match="checkpoint_dir must be a path"):
        again.fit(x, y, batch_size=16, epochs=1, checkpoint_dir=3, verbose=0)

    keras.utils.set_random_seed(0)
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(9, activation="relu"), keras.layers.Dense(2)])
    other_agent = hvdagent.DistributedAgent(other)
    other_agent.compile(keras.optimizers.Adam(1e-2), loss="mse")
    with pytest.raises(ValueError, match=r"does not fit this model: variable 'sequential_\d+/dense_\d+/kernel' has shape \[4, 9\]"):
        other_agent.fit(x, y, batch_size=16, epochs=5, checkpoint_dir=ckpt, verbose=0)


def test_stall_timeout_is_validated():
    with pytest.raises(ValueError, match=r"stall_timeout must be a number > 0 \(seconds\), or None to disable\. Received: stall_timeout=0"):
        hvdagent.DistributedAgent(_model(), stall_timeout=0)
    assert hvdagent.DistributedAgent(_model(), stall_timeout=None).stall_timeout is None


def test_fit_profile_adds_compute_and_sync_times_to_the_logs():
    x, y = _data()
    agent = hvdagent.DistributedAgent(_model())
    agent.compile(keras.optimizers.SGD(0.01), loss="mse")
    history = agent.fit(x, y, batch_size=16, epochs=2, verbose=0, profile=True)
    for key in ("compute_time", "sync_time", "sync_fraction"):
        assert len(history.history[key]) == 2
    assert history.history["sync_time"] == [0.0, 0.0]  # one process: nothing to reduce
    assert all(t > 0 for t in history.history["compute_time"])


class _TwoOptimizers(keras.Model):
    """A custom compile keeping two optimizers (one in a list), no call()."""

    def __init__(self, built=True):
        super().__init__()
        self.first = keras.Sequential(([keras.Input((4,))] if built else []) + [keras.layers.Dense(3)])
        self.second = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        self.tracker = keras.metrics.Mean(name="loss")

    def compile(self, first_optimizer, second_optimizer, loss_fn):
        super().compile()
        self.first_optimizer = first_optimizer
        self.more = [second_optimizer]
        self.loss_fn = loss_fn

    def train_step(self, data):
        x, y = data
        with tf.GradientTape(persistent=True) as tape:
            loss = self.loss_fn(y, self.second(self.first(x)))
        self.first_optimizer.apply(tape.gradient(loss, self.first.trainable_weights), self.first.trainable_weights)
        self.more[0].apply(tape.gradient(loss, self.second.trainable_weights), self.second.trainable_weights)
        self.tracker.update_state(loss)
        return {"loss": self.tracker.result()}


def _two(seed=2, **kwargs):
    keras.utils.set_random_seed(seed)
    return _TwoOptimizers(**kwargs)


def _two_args():
    return dict(first_optimizer=keras.optimizers.SGD(0.1), second_optimizer=keras.optimizers.Adam(1e-2),
                loss_fn=keras.losses.MeanSquaredError())


def test_a_custom_compile_passes_through_and_every_optimizer_the_model_holds_is_distributed(tmp_path):
    from hvdagent._sync.parts import is_distributed

    x, y = _data()
    a, b = _two(), _two()
    agent = hvdagent.DistributedAgent(a, scale_lr=False)
    agent.compile(**_two_args())
    b.compile(**_two_args())
    assert [is_distributed(o) for o in (a.optimizer, a.first_optimizer, a.more[0])] == [True, True, True]
    ha = agent.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    hb = b.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, atol=1e-6)
    assert ha.history["loss"] == pytest.approx(hb.history["loss"], abs=1e-6)
    # Its state would be lost at a resume: refused, naming the optimizers.
    with pytest.raises(ValueError, match=r"several \(model.optimizer, model.first_optimizer, model.more\[0\]\)"):
        agent.fit(x, y, batch_size=8, checkpoint_dir=tmp_path / "ckpt", verbose=0)
    # One the user made distributed already is refused where it is held.
    c = _two()
    c.compile(hvdagent.DistributedOptimizer(keras.optimizers.SGD()), keras.optimizers.SGD(), "mse")
    with pytest.raises(ValueError, match=r"model.first_optimizer is already an hvdagent.DistributedOptimizer"):
        hvdagent.DistributedAgent(c)


def test_a_model_without_call_trains_when_its_layers_are_built():
    x, y = _data()
    model = _two(built=False)
    agent = hvdagent.DistributedAgent(model)
    agent.compile(**_two_args())
    with pytest.raises(ValueError, match=r"_TwoOptimizers has no call\(\).*Received: unbuilt layers \['sequential"):
        agent.fit(x, y, batch_size=8, verbose=0)
    model.first.build((None, 4))
    assert len(agent.fit(x, y, batch_size=8, verbose=0).history["loss"]) == 1


def test_replica_check_options_are_validated():
    with pytest.raises(ValueError, match=r"check_replicas must be one of \(None, 'end', 'epoch'\)\. "
                                         r"Received: check_replicas='always'"):
        hvdagent.DistributedAgent(_model(), check_replicas="always")
    with pytest.raises(ValueError, match="Received: replica_tolerance=-1"):
        hvdagent.DistributedAgent(_model(), replica_tolerance=-1)
    with pytest.raises(TypeError, match="Received: replica_tolerance='small'"):
        hvdagent.DistributedAgent(_model(), replica_tolerance="small")
    agent = hvdagent.DistributedAgent(_model(), check_replicas="epoch", replica_tolerance=0)
    agent.compile("sgd", "mse")
    x, y = _data()
    assert len(agent.fit(x, y, epochs=2, verbose=0).history["loss"]) == 2  # one process: nothing to compare


def test_xla_compiles_keras_own_step_and_refuses_a_custom_one():
    x, y = _data()
    a, b = _model(1), _model(1)
    for m in (a, b):
        m.compile(keras.optimizers.Adam(1e-2), loss="mse", jit_compile=True)
    hvdagent.DistributedAgent(a, scale_lr=False).fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    b.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, atol=1e-5)
    assert a.jit_compile is True  # as the user set it, after fit
    c = _two()
    c.compile(**_two_args())
    c.jit_compile = True
    with pytest.raises(ValueError, match=r"jit_compile is on for _TwoOptimizers, whose train_step is its own.*"
                                         r"Received: jit_compile=True"):
        hvdagent.DistributedAgent(c).fit(x, y, batch_size=8, verbose=0)


def test_a_step_applying_an_optimizer_the_model_does_not_hold_is_refused_when_traced():
    hidden = keras.optimizers.SGD(0.1)

    class Hidden(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

        def train_step(self, data):
            x, y = data
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(self(x) - y))
            hidden.apply(tape.gradient(loss, self.trainable_variables), self.trainable_variables)
            return {"loss": loss}

    before = dict(vars(keras.optimizers.Optimizer))
    agent = hvdagent.DistributedAgent(Hidden())
    agent.compile("sgd", "mse")
    x, y = _data()
    with pytest.raises(ValueError, match=r"Hidden's train_step applies gradients with optimizer 'sgd(_\d+)?' \(SGD\), "
                                         r"which is not distributed.*found: model.optimizer"):
        agent.fit(x, y, batch_size=8, verbose=0)
    assert dict(vars(keras.optimizers.Optimizer)) == before  # the check is installed only while the agent runs
    hidden.apply([tf.zeros((4, 2)), tf.zeros((2,))], agent.model.trainable_variables)  # plain Keras: untouched

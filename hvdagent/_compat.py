"""Keras 2 (tf_keras) vs Keras 3: every difference between the two, and every
reach into Keras' private attributes, lives here.

The generation is read off the objects themselves (a model or an optimizer),
never off a global flag, so a process may hold models of both kinds.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from typing import Any, Optional

KERAS3 = 3
KERAS2 = 2


def _keras3():
    import keras

    if not str(getattr(keras, "__version__", "0")).startswith("3"):
        return None
    return keras


def _tf_keras():
    try:
        return importlib.import_module("tf_keras")
    except ImportError:
        return None


def generation(obj: Any) -> Optional[int]:
    """Return 3 for a Keras 3 object, 2 for a tf_keras one, None otherwise.

    ``obj`` may be a model, an optimizer, a callback or a metric.
    """
    module = type(obj).__module__ or ""
    for base in type(obj).__mro__:
        module = base.__module__ or ""
        if module.startswith("keras.") or module == "keras":
            return KERAS3 if _keras3() is not None else None
        if module.startswith("tf_keras") or module.startswith("tensorflow.python.keras"):
            return KERAS2
    return None


def is_model(obj: Any) -> bool:
    gen = generation(obj)
    if gen == KERAS3:
        return isinstance(obj, _keras3().Model)
    if gen == KERAS2:
        return isinstance(obj, _tf_keras().Model)
    return False


def is_layer(obj: Any) -> bool:
    """A Keras 3 or tf_keras layer (a model is one too)."""
    gen = generation(obj)
    if gen == KERAS3:
        return isinstance(obj, _keras3().layers.Layer)
    if gen == KERAS2:
        return isinstance(obj, _tf_keras().layers.Layer)
    return False


def is_optimizer(obj: Any) -> bool:
    gen = generation(obj)
    if gen == KERAS3:
        return isinstance(obj, _keras3().optimizers.Optimizer)
    if gen == KERAS2:
        return isinstance(obj, _tf_keras().optimizers.Optimizer)
    return False


def keras_module(gen: int):
    """The ``keras`` (3) or ``tf_keras`` module for a generation."""
    return _keras3() if gen == KERAS3 else _tf_keras()


def callback_base(gen: int):
    return keras_module(gen).callbacks.Callback


# --- learning rate -------------------------------------------------------------


def lr_schedule_class(gen: int):
    return keras_module(gen).optimizers.schedules.LearningRateSchedule


def raw_learning_rate(optimizer) -> Any:
    """The optimizer's learning rate as stored: a variable or a schedule."""
    return optimizer._learning_rate


def set_raw_learning_rate(optimizer, value) -> None:
    """Store a schedule (or variable) as the optimizer's learning rate."""
    optimizer._learning_rate = value


def has_schedule(optimizer) -> bool:
    return isinstance(raw_learning_rate(optimizer), lr_schedule_class(generation(optimizer)))


def get_lr(optimizer) -> float:
    """The current learning rate of a float-LR optimizer, as a Python float."""
    return float(raw_learning_rate(optimizer).numpy())


def set_lr(optimizer, value: float) -> None:
    raw_learning_rate(optimizer).assign(value)


# --- model plumbing --------------------------------------------------------------


def build_optimizer(model) -> None:
    """Create the optimizer's slot variables now, if they do not exist yet.

    tf_keras builds lazily on the first apply; Keras 3 at the start of ``fit``
    only when the model itself is not built yet.
    """
    opt = model.optimizer
    if opt is not None and not getattr(opt, "built", False):
        opt.build(model.trainable_variables)


def apply_gradients(optimizer, grads, variables) -> None:
    optimizer.apply_gradients(list(zip(grads, variables)))


def metric_variables(model) -> list:
    """Every state variable of the model's compiled metrics, in a fixed order."""
    out = []
    for metric in model.metrics:
        out.extend(metric.variables)
    return out


def callback_overrides(callback, hook: str) -> bool:
    """True if ``callback``'s class overrides the base ``Callback.hook``."""
    base = callback_base(generation(callback) or KERAS3)
    return getattr(type(callback), hook, None) is not getattr(base, hook, None)


def replace_compiled_optimizer(model, old, new) -> None:
    """Where Keras 3 remembers ``compile(optimizer=old)`` (to save it), put ``new``.

    So a model compiled with a distributed optimizer is saved with the plain
    inner one (tf_keras keeps no such record: its optimizer keeps its class).
    """
    config = getattr(getattr(model, "_compile_config", None), "config", None)
    if isinstance(config, dict) and config.get("optimizer") is old:
        config["optimizer"] = new


def base_optimizer(optimizer):
    """The innermost optimizer (through hvdagent's wrapper and Keras' LossScaleOptimizer)."""
    while getattr(optimizer, "inner_optimizer", None) is not None:
        optimizer = optimizer.inner_optimizer
    return optimizer


def iterations(optimizer):
    """The optimizer's update counter (a variable)."""
    return optimizer.iterations


def has_call(model) -> bool:
    """False for a model that defines no ``call()`` (keras-io's GAN and VAE: only a ``train_step``)."""
    base = keras_module(generation(model)).Model
    return getattr(type(model), "call", None) is not getattr(base, "call", None)


def has_default_train_step(model) -> bool:
    """True when ``model``'s class keeps Keras' own ``train_step``."""
    base = keras_module(generation(model)).Model
    return getattr(type(model), "train_step", None) is getattr(base, "train_step", None)


def build_from_spec(model, element_spec) -> None:
    """Build an unbuilt model (and its optimizer, loss and metrics) from the data's spec.

    Keras 3 builds lazily at the first traced step when no distribution
    strategy is set; the agent needs the variables before that, to broadcast
    them. tf_keras models are built by calling them on zeros of the input spec.
    A model without ``call()`` cannot be called: its layers must be built
    already (keras-io's GAN and VAE build theirs from ``keras.Input``s), and
    its optimizers build at their first update, as in plain Keras.

    Raises:
        ValueError: a model without ``call()`` has layers that are not built.
    """
    import tensorflow as tf

    if not has_call(model):
        unbuilt = [layer.name for layer in model._flatten_layers(include_self=False) if not layer.built]
        if unbuilt:
            raise ValueError(
                f"{type(model).__name__} has no call(), so its layers cannot be built from the data, and these "
                "are not built yet; every rank must hold the same weights before the first step (the agent "
                "broadcasts rank 0's). Build them first: give each sub-model a keras.Input, or call "
                f"layer.build(input_shape). Received: unbuilt layers {unbuilt}"
            )
        return
    if generation(model) == KERAS3:
        if not model.built or (model.optimizer is not None and not model.optimizer.built):
            model._symbolic_build(data_batch=element_spec)
        return
    x, y = (element_spec[0], element_spec[1]) if isinstance(element_spec, tuple) and len(element_spec) > 1 else (
        element_spec[0] if isinstance(element_spec, tuple) else element_spec, None)

    def zeros(spec):
        return tf.nest.map_structure(lambda s: tf.zeros([1] + [d or 1 for d in s.shape[1:]], s.dtype), spec)

    if not model.built:
        model(zeros(x), training=False)
    # tf_keras creates its compiled loss and metrics at the first traced step; the agent's
    # step must see their state before then (an empty batch takes it back).
    loss, metrics = getattr(model, "compiled_loss", None), getattr(model, "compiled_metrics", None)
    if y is not None and ((loss is not None and not loss.built) or (metrics is not None and not metrics.built)):
        y_pred = model(zeros(x), training=False)
        if loss is not None and not loss.built:
            loss.build(y_pred)
        if metrics is not None and not metrics.built:
            metrics.build(y_pred, zeros(y))


# --- the training step: XLA, Keras' own step, epoch-end logs -------------------------


def jit_compile(model) -> bool:
    """Whether Keras compiles ``model``'s steps with XLA (``compile(jit_compile=...)``, resolved)."""
    if generation(model) == KERAS3:
        return bool(model.jit_compile)
    return bool(getattr(model, "_jit_compile", False))


@contextlib.contextmanager
def jit_off(model):
    """Within the block Keras builds ``model``'s step functions without XLA (the setting is restored)."""
    saved = model._jit_compile
    model._jit_compile = False
    try:
        yield
    finally:
        model._jit_compile = saved


def default_step_gradients(model, data):
    """Keras' own training step up to the update: ``(gradients, logs)``.

    The forward pass, the loss (tracked as Keras tracks it), the gradients of
    the (loss-scaled) loss and the metrics; the caller applies the gradients.
    """
    import tensorflow as tf

    x, y, sample_weight = keras_module(generation(model)).utils.unpack_x_y_sample_weight(data)
    with tf.GradientTape() as tape:
        y_pred = model(x, training=True)
        if generation(model) == KERAS3:
            loss = model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
            model._loss_tracker.update_state(loss, sample_weight=tf.shape(tf.nest.flatten(x)[0])[0])
            if model.optimizer is not None:
                loss = model.optimizer.scale_loss(loss)
        else:
            loss = model.compute_loss(x, y, y_pred, sample_weight)
    grads = tape.gradient(loss, model.trainable_variables)
    return grads, model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def epoch_logs_method(model) -> str:
    """Keras' method that turns the last step's logs into the epoch's (the metrics' results when the
    names match)."""
    return "_get_metrics_result_or_logs" if generation(model) == KERAS3 else "_validate_and_get_metrics_result"


def optimizer_apply_methods(gen: int) -> list:
    """``(class, method)`` pairs through which every optimizer of a generation updates variables."""
    if gen == KERAS3:
        return [(_keras3().optimizers.Optimizer, "apply")]
    tk = _tf_keras()
    return [(tk.optimizers.Optimizer, "apply_gradients"), (tk.optimizers.legacy.Optimizer, "apply_gradients")]


def synchronized_batchnorm_layers(model) -> list:
    """The model's ``BatchNormalization(synchronized=True)`` layers (Keras 3; tf_keras: none)."""
    if generation(model) != KERAS3:
        return []
    bn = _keras3().layers.BatchNormalization
    return [layer for layer in model._flatten_layers() if isinstance(layer, bn) and getattr(layer, "synchronized", False)]


def is_compiled(model) -> bool:
    """True once ``model.compile`` ran (Keras 3: ``compiled``; tf_keras: ``_is_compiled``)."""
    return bool(getattr(model, "compiled", getattr(model, "_is_compiled", False)))


def compile_identity(model) -> int:
    """Changes whenever the model is compiled again (traced steps cached for one compile are stale then)."""
    return id(getattr(model, "_compile_config", None) or getattr(model, "compiled_loss", None))


def batchnorm_reduction_axes(layer) -> list:
    """The axes a BatchNormalization layer computes its moments over."""
    return list(layer._reduction_axes)


def replace_batchnorm_moments(layer, moments) -> None:
    """Make a Keras 3 BatchNormalization layer compute its batch moments with ``moments(inputs, mask)``
    (None: its own again). Keras has no public hook for it; the agent does it only while it trains."""
    if moments is None:
        if "_moments" in layer.__dict__:
            object.__delattr__(layer, "_moments")
    else:
        object.__setattr__(layer, "_moments", moments)


def optimizer_trainable_variables(optimizer) -> list:
    """The variables a Keras 3 optimizer was built for (what ``apply`` updates when given none)."""
    return list(optimizer._trainable_variables)


def momentum_slots(optimizer) -> list:
    """The velocity variables of an optimizer with momentum (Keras 3 and tf_keras SGD/RMSprop)."""
    for attr in ("momentums", "_momentums"):
        slots = getattr(optimizer, attr, None)
        if isinstance(slots, (list, tuple)) and slots:
            return list(slots)
    return []


def active_generation() -> int:
    """The Keras that ``tf.keras`` means in this process (TF_USE_LEGACY_KERAS=1: Keras 2)."""
    import os

    return KERAS2 if os.environ.get("TF_USE_LEGACY_KERAS") == "1" else KERAS3


def check_save_path(filepath: str, gen: int) -> None:
    """Keras 3 saves whole models only as ``.keras`` files."""
    if gen == KERAS3 and not str(filepath).endswith(".keras"):
        raise ValueError(f"filepath must end in .keras (the Keras 3 format). Received: filepath={filepath!r}")


def load_model(path: str, gen: int = KERAS3):
    return keras_module(gen).models.load_model(path)


def writer_callback_classes(gen: int) -> tuple:
    """Callbacks that write files: kept on rank 0 only."""
    cb = keras_module(gen).callbacks
    names = ("ModelCheckpoint", "TensorBoard", "CSVLogger")
    return tuple(getattr(cb, n) for n in names if hasattr(cb, n))


def backup_callback_class(gen: int):
    return getattr(keras_module(gen).callbacks, "BackupAndRestore", None)


_HOOKS = (
    "on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
    "on_train_batch_begin", "on_train_batch_end", "on_test_begin", "on_test_end",
    "on_test_batch_begin", "on_test_batch_end", "on_predict_begin", "on_predict_end",
    "on_predict_batch_begin", "on_predict_batch_end",
)


@functools.lru_cache(maxsize=None)
def _tf_keras_forwarder():
    tf_keras = _tf_keras()

    class Forward(tf_keras.callbacks.Callback):
        """Runs a Keras 3-style hvdagent callback inside tf_keras' ``fit``."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def set_model(self, model):
            super().set_model(model)
            self.inner._model = model

        def set_params(self, params):
            super().set_params(params)
            self.inner.set_params(params)

        def _implements_train_batch_hooks(self):
            return callback_overrides(self.inner, "on_train_batch_end") or callback_overrides(
                self.inner, "on_train_batch_begin"
            )

    for hook in _HOOKS:
        setattr(Forward, hook, (lambda name: lambda self, *a, **k: getattr(self.inner, name)(*a, **k))(hook))
    return Forward


def for_model(callback, model):
    """``callback`` in the form ``model.fit`` of the model's generation accepts.

    hvdagent's callbacks are Keras 3 callbacks: under tf_keras they get a
    forwarder; the user's own callbacks pass as they are.
    """
    if isinstance(callback, _keras3().callbacks.Callback):
        return callback_for_model(callback, model)
    return callback


def callback_for_model(callback, model):
    """hvdagent's callbacks are Keras 3 callbacks; a tf_keras ``fit`` gets a forwarder."""
    if generation(model) == KERAS2:
        return _tf_keras_forwarder()(callback)
    return callback

"""Stage 3 — runtime: configure TensorFlow once, before it touches a GPU, and pick how the model runs.

:func:`configure_runtime` sets GPU memory growth or a memory limit, the visible GPUs, the
thread pools and the Keras mixed precision policy, and says what it did in a
:class:`RuntimeInfo`. TensorFlow only accepts these settings before its runtime starts (the
first op or model), so a late call that would change something raises
:class:`~tfbert.errors.RuntimeSetupError`; a repeated call asking for what is already in force
does nothing.

:func:`compile_forward` wraps a model's forward pass as eager, graph (``tf.function``), XLA, or
whichever of the three measures fastest (``auto``).

Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import numbers
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tfbert.errors import BadInputError, RuntimeSetupError
from tfbert.report import INFO, WARN, Finding
from tfbert.tf import import_tensorflow

log = logging.getLogger("tfbert")

POLICIES = ("mixed_float16", "mixed_bfloat16", "float32")
MODES = ("eager", "graph", "xla", "auto")
CANDIDATES = ("eager", "graph", "xla")
DEFAULT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
CONFIGURE_EARLY = "call tfbert.configure_runtime() before any TensorFlow op or model is created"


@dataclasses.dataclass
class RuntimeInfo:
    """What the runtime looks like after :func:`configure_runtime`, for doctor and benchmark reports.

    Args:
        devices: every physical device TensorFlow sees (``["CPU:0", "GPU:0"]``).
        gpu_count: how many physical GPUs there are.
        visible_gpus: the GPUs TensorFlow will use.
        memory: GPU memory mode of the visible GPUs: ``growth``, ``limit <n> MiB``,
            ``preallocate`` (TensorFlow's default) or ``no GPU``.
        policy: the Keras (tf-keras) global mixed precision policy in force.
        intra_op_threads, inter_op_threads: TensorFlow's thread pool sizes (0: TensorFlow picks).
        applied: the settings this call changed; empty when everything was already as asked.
        findings: warnings and notes (e.g. mixed_float16 on a machine without a GPU).
    """

    devices: list[str]
    gpu_count: int
    visible_gpus: list[str]
    memory: str
    policy: str
    intra_op_threads: int
    inter_op_threads: int
    applied: list[str] = dataclasses.field(default_factory=list)
    findings: list[Finding] = dataclasses.field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The fields as plain values, for a :class:`~tfbert.report.Report`'s summary."""
        return {"devices": ", ".join(self.devices), "gpus": self.gpu_count,
                "visible_gpus": ", ".join(self.visible_gpus) or "none", "gpu_memory": self.memory,
                "policy": self.policy, "intra_op_threads": self.intra_op_threads,
                "inter_op_threads": self.inter_op_threads, "applied": "; ".join(self.applied) or "nothing"}


def configure_runtime(*, memory_growth: bool = True, memory_limit_mb: int | None = None,
                      mixed_precision: str | None = None, intra_op_threads: int | None = None,
                      inter_op_threads: int | None = None, visible_gpus: Sequence[int] | None = None,
                      tf_config: Any = None) -> RuntimeInfo:
    """Configure TensorFlow's devices, threads and precision; call it once, before any model exists.

    A memory limit and memory growth are exclusive in TensorFlow (a GPU with a logical device
    configuration cannot take the growth flag), so when ``memory_limit_mb`` is given the limit
    wins and ``memory_growth`` is ignored — also for GPUs limited by an earlier call.

    Calling again with settings already in force changes nothing and never fails, even after
    TensorFlow has started; asking for a different setting after the start raises
    :class:`RuntimeSetupError`, because TensorFlow can no longer apply it.

    Args:
        memory_growth: let each visible GPU's memory grow as needed instead of TensorFlow taking
            nearly all of it at start.
        memory_limit_mb: cap each visible GPU at this many MiB (a logical device configuration).
        mixed_precision: ``None`` (leave the policy as it is), ``"mixed_float16"``,
            ``"mixed_bfloat16"`` or ``"float32"``; set with ``tf_keras.mixed_precision``, the Keras
            the Hugging Face TF classes use. mixed_float16 without a GPU is slow; it is still set
            as asked, with a warning.
        intra_op_threads: threads one op may use (0: TensorFlow picks).
        inter_op_threads: ops that may run at once (0: TensorFlow picks).
        visible_gpus: indices of the GPUs TensorFlow may use (``[]`` hides all); None keeps all.
        tf_config: stands in for ``tensorflow.config`` (tests pass a fake with fake GPUs). It
            needs ``list_physical_devices``, ``get/set_visible_devices``,
            ``experimental.get/set_memory_growth``, ``get/set_logical_device_configuration``,
            ``LogicalDeviceConfiguration`` and ``threading.get/set_{intra,inter}_op_parallelism_threads``.

    Returns:
        A :class:`RuntimeInfo` describing the devices, policy and threads now in force.

    Raises:
        BadInputError: an argument has a wrong type or value.
        RuntimeSetupError: TensorFlow has started and a setting would have to change.

    Example:
        >>> import tfbert
        >>> info = tfbert.configure_runtime(intra_op_threads=2, inter_op_threads=1)
        >>> info.intra_op_threads, info.inter_op_threads
        (2, 1)
    """
    _check_flag("memory_growth", memory_growth)
    _check_count("memory_limit_mb", memory_limit_mb, 1, "pass a limit in MiB such as 4096, or None for no limit")
    _check_count("intra_op_threads", intra_op_threads, 0, "pass a thread count, 0 to let TensorFlow pick")
    _check_count("inter_op_threads", inter_op_threads, 0, "pass a thread count, 0 to let TensorFlow pick")
    if mixed_precision is not None and mixed_precision not in POLICIES:
        raise BadInputError("unknown mixed precision policy", where="mixed_precision",
                            expected=f"None or one of {', '.join(POLICIES)}", actual=repr(mixed_precision),
                            fix='use mixed_precision="mixed_float16" on GPUs, or None to keep float32')
    if tf_config is None:
        tf_config = import_tensorflow().config

    physical = tf_config.list_physical_devices()
    gpus = [d for d in physical if d.device_type == "GPU"]
    applied: list[str] = []
    findings: list[Finding] = []

    if visible_gpus is not None:
        wanted = [gpus[i] for i in _check_gpu_indices(visible_gpus, len(gpus))]
        current = tf_config.get_visible_devices("GPU")
        if current != wanted:
            _apply(lambda: tf_config.set_visible_devices(wanted, "GPU"), "visible_gpus",
                   _names(wanted), _names(current))
            applied.append(f"visible GPUs: {', '.join(_names(wanted)) or 'none'}")
    visible = tf_config.get_visible_devices("GPU")

    for gpu in visible:
        limit = tf_config.get_logical_device_configuration(gpu)
        if memory_limit_mb is not None:
            wanted_limit = [tf_config.LogicalDeviceConfiguration(memory_limit=memory_limit_mb)]
            if limit != wanted_limit:
                _apply(lambda g=gpu, w=wanted_limit: tf_config.set_logical_device_configuration(g, w),
                       "memory_limit_mb", memory_limit_mb, _limit_text(limit))
                applied.append(f"{_name(gpu)}: memory limit {memory_limit_mb} MiB")
        elif limit:
            findings.append(Finding("runtime", INFO, f"{_name(gpu)} keeps its memory limit of "
                                    f"{limit[0].memory_limit} MiB from an earlier call; memory_growth ignored"))
        elif bool(tf_config.experimental.get_memory_growth(gpu)) != memory_growth:
            _apply(lambda g=gpu: tf_config.experimental.set_memory_growth(g, memory_growth),
                   "memory_growth", memory_growth, not memory_growth)
            applied.append(f"{_name(gpu)}: memory growth {'on' if memory_growth else 'off'}")
    if memory_limit_mb is not None and not visible:
        findings.append(Finding("runtime", INFO, "memory_limit_mb ignored: no GPU is visible"))

    threading = tf_config.threading
    for argument, value, get, set_ in (
            ("intra_op_threads", intra_op_threads, threading.get_intra_op_parallelism_threads,
             threading.set_intra_op_parallelism_threads),
            ("inter_op_threads", inter_op_threads, threading.get_inter_op_parallelism_threads,
             threading.set_inter_op_parallelism_threads)):
        current = get()
        # TensorFlow's setters refuse any call after start-up, even one that changes nothing.
        if value is not None and value != current:
            _apply(lambda s=set_, v=value: s(v), argument, value, current)
            applied.append(f"{argument}: {value}")

    keras_precision = _keras_mixed_precision()
    if mixed_precision is not None:
        if mixed_precision == "mixed_float16" and not visible:
            finding = Finding("runtime", WARN, "mixed_float16 without a GPU runs slower than float32 "
                              "(CPUs have no fast float16 math)",
                              fix="leave mixed_precision=None on CPU, or run on a GPU")
            findings.append(finding)
            log.warning("%s (fix: %s)", finding.message, finding.fix)
        if keras_precision.global_policy().name != mixed_precision:
            keras_precision.set_global_policy(mixed_precision)
            applied.append(f"mixed precision policy: {mixed_precision}")
    for line in applied:
        log.info("runtime: %s", line)

    return RuntimeInfo(
        devices=_names(physical), gpu_count=len(gpus), visible_gpus=_names(visible),
        memory=_memory_mode(tf_config, visible), policy=keras_precision.global_policy().name,
        intra_op_threads=threading.get_intra_op_parallelism_threads(),
        inter_op_threads=threading.get_inter_op_parallelism_threads(),
        applied=applied, findings=findings)


def _keras_mixed_precision():
    import_tensorflow()  # selects Keras 2 before tf_keras is imported
    import tf_keras

    return tf_keras.mixed_precision


def _apply(setter: Callable[[], None], argument: str, wanted: object, current: object) -> None:
    """Run one TensorFlow setter, turning its "already initialized" refusal into a RuntimeSetupError."""
    try:
        setter()
    except RuntimeError as err:
        # TensorFlow's wording: "... cannot be modified after (being) initialized/initialization."
        if "cannot be modified" not in str(err):
            raise
        raise RuntimeSetupError("TensorFlow has already started, so this can no longer change",
                                where=argument, expected=wanted, actual=current, fix=CONFIGURE_EARLY) from err


def _check_flag(argument: str, value: object) -> None:
    if not isinstance(value, bool):
        raise BadInputError("must be True or False", where=argument, expected="a bool", actual=repr(value),
                            fix=f"pass {argument}=True or {argument}=False")


def _check_count(argument: str, value: object, minimum: int, fix: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise BadInputError(f"must be a whole number of at least {minimum}", where=argument,
                            expected=f"an int >= {minimum} or None",
                            actual=repr(value), fix=fix)


def _check_gpu_indices(indices: Sequence[int], gpu_count: int) -> list[int]:
    expected = f"distinct indices in 0..{gpu_count - 1}" if gpu_count else "[] (this machine has no GPU)"
    if isinstance(indices, (str, bytes)) or not isinstance(indices, Sequence):
        raise BadInputError("must be a list of GPU indices", where="visible_gpus", expected=expected,
                            actual=repr(indices), fix="pass e.g. visible_gpus=[0], or None to use every GPU")
    bad = [i for i in indices if isinstance(i, bool) or not isinstance(i, numbers.Integral)
           or not 0 <= i < gpu_count]
    if bad or len(set(indices)) != len(indices):
        raise BadInputError("names GPUs that do not exist or repeats one", where="visible_gpus",
                            expected=expected, actual=list(indices),
                            fix="list GPU indices from tf.config.list_physical_devices('GPU'), each once")
    return [int(i) for i in indices]


def _name(device) -> str:
    return device.name.replace("/physical_device:", "")


def _names(devices) -> list[str]:
    return [_name(d) for d in devices]


def _limit_text(limit) -> str:
    return f"{limit[0].memory_limit} MiB" if limit else "no limit"


def _memory_mode(tf_config, visible) -> str:
    if not visible:
        return "no GPU"
    limit = tf_config.get_logical_device_configuration(visible[0])
    if limit:
        return f"limit {limit[0].memory_limit} MiB"
    return "growth" if tf_config.experimental.get_memory_growth(visible[0]) else "preallocate"


@dataclasses.dataclass
class CompiledForward:
    """A model's forward pass as :func:`compile_forward` built it; call it like a function.

    Args:
        mode: what runs: ``eager``, ``graph`` or ``xla`` (for ``auto``, the one that won).
        requested_mode: the mode asked for (``auto`` or the same as ``mode``).
        signature_inputs: the input names the call takes, all required.
        function: the ``tf.function`` behind graph and xla (None for eager); its
            ``experimental_get_tracing_count()`` shows retracing.
        timings_ms: for ``auto``, best time of one call per candidate mode, in milliseconds.
        notes: for ``auto``, candidates that could not run and why.
    """

    mode: str
    requested_mode: str
    signature_inputs: tuple[str, ...]
    function: Any
    run: Callable[[dict], dict] = dataclasses.field(repr=False)
    timings_ms: dict[str, float] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)

    def __call__(self, inputs: Mapping[str, Any] | None = None, /, **kwargs: Any) -> dict:
        """Run the model on integer ``[batch, seq]`` arrays given as a dict and/or keywords.

        Returns:
            A plain dict: output field name (``last_hidden_state``, ``pooler_output``, ``logits``,
            ...) → ``tf.Tensor``, the same keys in every mode; fields that are None are left out.
        """
        return self.run(_as_int32({**(inputs or {}), **kwargs}, self.signature_inputs))


def compile_forward(model, mode: str = "graph", *, signature_inputs: Sequence[str] = DEFAULT_INPUTS,
                    sample: Mapping[str, Any] | None = None, runs: int = 3) -> CompiledForward:
    """Wrap ``model``'s inference forward pass (``training=False``) in an execution mode.

    Modes:
        eager: call the Keras model op by op (slowest, easiest to debug).
        graph: a ``tf.function`` with a fixed signature of int32 ``[None, None]`` tensors, so
            any batch size and sequence length reuse one trace.
        xla: the same with ``jit_compile=True``. XLA compiles once per distinct input shape,
            so callers should bucket sequence lengths (pad to a multiple of 16 or 32) and keep
            batch sizes few; otherwise compilation dominates.
        auto: time eager, graph and xla on ``sample`` (a warm-up call, then the best of
            ``runs`` calls each) and keep the fastest; graph or xla failing (say, on an op XLA
            cannot compile) is skipped with a note. The measurement covers one shape only, which
            flatters XLA when real inputs vary in shape.

    Args:
        model: a Hugging Face TF model (or any callable taking the input names as keywords plus
            ``training``, returning a mapping such as a ModelOutput).
        mode: ``eager``, ``graph``, ``xla`` or ``auto``.
        signature_inputs: the input names the compiled call takes; each must be an argument of
            ``model.call``.
        sample: for ``auto``, a representative batch (name → int array); by default 8 × 32 random
            token ids (capped at the model's ``max_position_embeddings``).
        runs: for ``auto``, timed calls per candidate.

    Returns:
        A :class:`CompiledForward`; calling it returns a dict of output name → ``tf.Tensor``.

    Raises:
        BadInputError: unknown mode, bad input names, or a bad ``sample`` or ``runs``.

    Example:
        >>> from tfbert.model import load
        >>> forward = compile_forward(load(), "graph")  # the embedded MiniLM
        >>> out = forward(input_ids=[[101, 7592, 102]], attention_mask=[[1, 1, 1]], token_type_ids=[[0, 0, 0]])
        >>> sorted(out), out["last_hidden_state"].shape
        (['last_hidden_state', 'pooler_output'], TensorShape([1, 3, 384]))
    """
    if mode not in MODES:
        raise BadInputError("unknown execution mode", where="mode", expected=" | ".join(MODES),
                            actual=repr(mode), fix='pass mode="graph" (the default) or mode="auto" to measure')
    names = _check_signature_inputs(model, signature_inputs)
    if mode != "auto":
        return _build(model, mode, names)
    _check_count("runs", runs, 1, "pass runs=3 or more")
    batch = _as_int32(sample if sample is not None else _dummy_batch(model, names), names)
    timings, notes, built = {}, [], {}
    tf = import_tensorflow()
    for candidate in CANDIDATES:
        forward = _build(model, candidate, names)
        try:
            _wait(forward.run(batch))  # warm-up: tracing and XLA compilation are not timed
        except tf.errors.OpError as err:
            if candidate == "eager":  # the model itself fails on the sample: no mode can help
                raise
            notes.append(f"{candidate} skipped: {err.message.strip().splitlines()[0]}")
            continue
        best = math.inf
        for _ in range(runs):
            start = time.perf_counter()
            _wait(forward.run(batch))
            best = min(best, time.perf_counter() - start)
        timings[candidate] = best * 1000
        built[candidate] = forward
    winner = min(timings, key=timings.get)
    log.info("compile_forward auto: %s won (%s)", winner,
             ", ".join(f"{m} {t:.2f} ms" for m, t in timings.items()))
    return dataclasses.replace(built[winner], requested_mode="auto", timings_ms=timings, notes=notes)


def _build(model, mode: str, names: tuple[str, ...]) -> CompiledForward:
    tf = import_tensorflow()

    def forward(inputs: dict) -> dict:
        out = model(**inputs, training=False)
        if not isinstance(out, Mapping):
            raise BadInputError("the model must return a mapping of outputs", where="model",
                                expected="a dict or ModelOutput", actual=type(out).__name__,
                                fix="build the model with return_dict=True (the Hugging Face default)")
        # Plain dicts trace, nest and compare the same way in every mode.
        return {key: value for key, value in out.items() if value is not None}

    if mode == "eager":
        return CompiledForward("eager", "eager", names, None, forward)
    spec = {name: tf.TensorSpec([None, None], tf.int32, name=name) for name in names}
    function = tf.function(forward, input_signature=[spec], jit_compile=mode == "xla")
    return CompiledForward(mode, mode, names, function, function)


def _check_signature_inputs(model, signature_inputs: Sequence[str]) -> tuple[str, ...]:
    names = (signature_inputs,) if isinstance(signature_inputs, str) else tuple(signature_inputs)
    try:
        parameters = inspect.signature(getattr(model, "call", model)).parameters
    except (TypeError, ValueError):  # a builtin or C callable: nothing to check against
        parameters = None
    takes_any = parameters is None or any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    unknown = [n for n in names if not isinstance(n, str) or not (takes_any or n in parameters)]
    if not names or "input_ids" not in names or unknown or len(set(names)) != len(names):
        raise BadInputError("are not input names the model takes", where="signature_inputs",
                            expected="distinct argument names of model.call, including input_ids",
                            actual=list(names), fix=f"pass e.g. signature_inputs={DEFAULT_INPUTS}")
    return names


def _as_int32(inputs: Mapping[str, Any], names: tuple[str, ...]) -> dict:
    """The call's inputs as int32 tensors, after checking names, dtypes and ranks."""
    tf = import_tensorflow()
    missing = [n for n in names if n not in inputs]
    extra = [n for n in inputs if n not in names]
    if missing or extra:
        raise BadInputError("the inputs do not match the compiled signature", where="inputs",
                            expected=list(names), actual=list(inputs),
                            fix="pass exactly these names, or compile with the signature_inputs you use")
    tensors = {}
    for name in names:
        value = inputs[name]
        if tf.is_tensor(value):
            integer, rank = value.dtype.is_integer, value.shape.rank
        else:
            value = np.asarray(value)
            integer, rank = value.dtype.kind in "iu", value.ndim
        if not integer or rank != 2:
            raise BadInputError("must be a 2-D integer array [batch, seq]", where=f"inputs: {name}",
                                expected="int32 [batch, seq]", actual=f"{value.dtype} with rank {rank}",
                                fix="pass token ids from the tokenizer, batched")
        tensors[name] = tf.cast(value, tf.int32)
    return tensors


def _dummy_batch(model, names: tuple[str, ...], batch: int = 8, seq: int = 32) -> dict[str, np.ndarray]:
    config = getattr(model, "config", None)
    seq = min(seq, getattr(config, "max_position_embeddings", seq))
    ids = np.random.default_rng(0).integers(0, getattr(config, "vocab_size", 1), (batch, seq))
    fill = {"input_ids": ids, "attention_mask": np.ones((batch, seq)),
            "position_ids": np.broadcast_to(np.arange(seq), (batch, seq))}
    return {name: fill.get(name, np.zeros((batch, seq))).astype(np.int32) for name in names}


def _wait(outputs: dict) -> None:
    # Reading the values blocks until a GPU has finished, so timings cover the whole call.
    for value in outputs.values():
        value.numpy()

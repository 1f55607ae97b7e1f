"""tfbert.runtime: configuring TensorFlow before it starts, and the eager / graph / XLA forward passes."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tfbert.errors import BadInputError, RuntimeSetupError
from tfbert.report import WARN
from tfbert.runtime import CONFIGURE_EARLY, compile_forward, configure_runtime
from tfbert.tf import import_tensorflow

tf = import_tensorflow()
import tf_keras  # noqa: E402 - after import_tensorflow, which selects Keras 2

TINY = {"vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 37, "max_position_embeddings": 64, "type_vocab_size": 2}


class FakeTfConfig:
    """The slice of ``tf.config`` configure_runtime uses, with fake GPUs.

    It follows TensorFlow's own rules (eager/context.py): a setter that would change nothing
    returns quietly; once ``initialized`` (TensorFlow has run an op) a change raises
    TensorFlow's RuntimeError text, and a GPU with a memory limit refuses the growth flag.
    """

    LogicalDeviceConfiguration = tf.config.LogicalDeviceConfiguration

    def __init__(self, gpus: int = 2):
        self.physical = [tf.config.PhysicalDevice("/physical_device:CPU:0", "CPU")] + [
            tf.config.PhysicalDevice(f"/physical_device:GPU:{i}", "GPU") for i in range(gpus)]
        self.visible = list(self.physical)
        self.growth = {d: None for d in self.physical if d.device_type == "GPU"}
        self.limits = {}
        self.threads = {"intra": 0, "inter": 0}
        self.initialized = False
        self.calls = []
        self.experimental = self
        self.threading = self

    def _change(self, message, call):
        if self.initialized:
            raise RuntimeError(message)
        self.calls.append(call)

    def list_physical_devices(self, device_type=None):
        return [d for d in self.physical if device_type in (None, d.device_type)]

    def get_visible_devices(self, device_type=None):
        return [d for d in self.visible if device_type in (None, d.device_type)]

    def set_visible_devices(self, devices, device_type=None):
        wanted = [d for d in self.visible if d.device_type != device_type] + list(devices)
        if wanted != self.visible:
            self._change("Visible devices cannot be modified after being initialized", ("visible", devices))
            self.visible = wanted

    def get_memory_growth(self, device):
        return self.growth[device]

    def set_memory_growth(self, device, enable):
        if device in self.limits:
            raise ValueError("Cannot set memory growth on device when virtual devices configured")
        if self.growth[device] != enable:
            self._change("Physical devices cannot be modified after being initialized", ("growth", device, enable))
            self.growth[device] = enable

    def get_logical_device_configuration(self, device):
        return self.limits.get(device)

    def set_logical_device_configuration(self, device, configs):
        if self.limits.get(device) != configs:
            self._change("Virtual devices cannot be modified after being initialized", ("limit", device, configs))
            self.limits[device] = configs

    def get_intra_op_parallelism_threads(self):
        return self.threads["intra"]

    def set_intra_op_parallelism_threads(self, n):
        self._change("Intra op parallelism cannot be modified after initialization.", ("intra", n))
        self.threads["intra"] = n

    def get_inter_op_parallelism_threads(self):
        return self.threads["inter"]

    def set_inter_op_parallelism_threads(self, n):
        self._change("Inter op parallelism cannot be modified after initialization.", ("inter", n))
        self.threads["inter"] = n


@pytest.fixture(autouse=True)
def restore_policy():
    """Every test leaves the process-wide Keras policy as it found it."""
    policy = tf_keras.mixed_precision.global_policy()
    yield
    tf_keras.mixed_precision.set_global_policy(policy)


@pytest.fixture(scope="module")
def tiny_model():
    from tfbert.model import build_model

    tf.random.set_seed(0)
    return build_model(TINY, "embed")


def batch(b, s, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.ones((b, s), np.int32)
    mask[0, s // 2:] = 0  # one padded row, so the mask matters
    return {"input_ids": rng.integers(0, TINY["vocab_size"], (b, s), dtype=np.int32), "attention_mask": mask,
            "token_type_ids": rng.integers(0, 2, (b, s), dtype=np.int32)}


# --- GPU memory, visibility and errors, on fake GPUs ---------------------------------------

def test_memory_growth_is_on_for_every_gpu_by_default():
    fake = FakeTfConfig(gpus=2)
    info = configure_runtime(tf_config=fake)
    assert all(fake.growth[g] is True for g in fake.growth)
    assert (info.gpu_count, info.visible_gpus, info.memory) == (2, ["GPU:0", "GPU:1"], "growth")
    assert info.devices == ["CPU:0", "GPU:0", "GPU:1"]
    assert len(info.applied) == 2 and not info.findings


def test_memory_limit_is_applied_instead_of_growth():
    fake = FakeTfConfig(gpus=2)
    info = configure_runtime(memory_limit_mb=2048, tf_config=fake)
    assert not any(call[0] == "growth" for call in fake.calls)
    assert [fake.limits[g][0].memory_limit for g in fake.growth] == [2048, 2048]
    assert info.memory == "limit 2048 MiB"
    # A later call without a limit keeps it rather than failing on TensorFlow's growth ValueError.
    again = configure_runtime(tf_config=fake)
    assert again.memory == "limit 2048 MiB" and "keeps its memory limit" in again.findings[0].message


def test_visible_gpus_hides_the_others_and_only_they_get_growth():
    fake = FakeTfConfig(gpus=2)
    info = configure_runtime(visible_gpus=[1], tf_config=fake)
    assert info.visible_gpus == ["GPU:1"] and info.gpu_count == 2
    assert [g.name for g, on in fake.growth.items() if on] == ["/physical_device:GPU:1"]


@pytest.mark.parametrize(("first", "second"), [
    ({}, {"memory_growth": False}),
    ({}, {"memory_limit_mb": 1024}),
    ({"memory_limit_mb": 1024}, {"memory_limit_mb": 512}),
    ({}, {"visible_gpus": [0]}),
    ({}, {"intra_op_threads": 4}),
])
def test_changing_a_setting_after_start_names_it_and_the_fix(first, second):
    fake = FakeTfConfig(gpus=2)
    configure_runtime(tf_config=fake, **first)
    fake.initialized = True
    with pytest.raises(RuntimeSetupError) as caught:
        configure_runtime(tf_config=fake, **second)
    message = str(caught.value)
    assert "\n" not in message and CONFIGURE_EARLY in message
    assert message.startswith(next(iter(second)))


def test_second_identical_call_after_start_changes_nothing():
    settings = {"memory_limit_mb": 1024, "visible_gpus": [0, 1], "intra_op_threads": 2, "inter_op_threads": 1}
    fake = FakeTfConfig(gpus=2)
    first = configure_runtime(tf_config=fake, **settings)
    fake.initialized = True
    calls = len(fake.calls)
    second = configure_runtime(tf_config=fake, **settings)
    assert len(fake.calls) == calls and second.applied == []
    assert (second.memory, second.intra_op_threads, second.inter_op_threads) == (first.memory, 2, 1)


def test_no_gpu_machine_needs_no_gpu_settings():
    info = configure_runtime(memory_limit_mb=512, tf_config=FakeTfConfig(gpus=0))
    assert (info.gpu_count, info.visible_gpus, info.memory) == (0, [], "no GPU")
    assert "no GPU is visible" in info.findings[0].message


@pytest.mark.parametrize(("argument", "value"), [
    ("memory_limit_mb", -1), ("memory_limit_mb", 0), ("memory_limit_mb", "4GB"),
    ("intra_op_threads", -2), ("inter_op_threads", 1.5), ("memory_growth", "yes"),
    ("mixed_precision", "fp16"), ("visible_gpus", [2]), ("visible_gpus", [0, 0]), ("visible_gpus", 0),
])
def test_bad_values_name_the_argument(argument, value):
    fake = FakeTfConfig(gpus=2)
    with pytest.raises(BadInputError) as caught:
        configure_runtime(tf_config=fake, **{argument: value})
    assert str(caught.value).startswith(f"{argument}: ") and "fix: " in str(caught.value)
    assert fake.calls == []


# --- mixed precision ----------------------------------------------------------------------

def test_mixed_precision_policy_is_set_globally_for_keras():
    info = configure_runtime(mixed_precision="mixed_float16", tf_config=FakeTfConfig(gpus=1))
    assert tf_keras.mixed_precision.global_policy().name == "mixed_float16" == info.policy
    assert not info.findings
    layer = tf_keras.layers.Dense(2)
    assert layer.compute_dtype == "float16" and layer.dtype == "float32"


def test_mixed_float16_without_gpu_is_set_as_asked_with_a_warning():
    info = configure_runtime(mixed_precision="mixed_float16", tf_config=FakeTfConfig(gpus=0))
    assert info.policy == "mixed_float16"
    assert [f.status for f in info.findings] == [WARN] and "slower" in info.findings[0].message


def test_no_mixed_precision_argument_leaves_the_policy_alone():
    tf_keras.mixed_precision.set_global_policy("mixed_bfloat16")
    info = configure_runtime(tf_config=FakeTfConfig(gpus=0))
    assert info.policy == "mixed_bfloat16" and not any("policy" in a for a in info.applied)


# --- the real TensorFlow, in a fresh process (it can be configured only once) ---------------

def test_threads_are_set_in_real_tensorflow_and_a_late_change_is_refused():
    script = textwrap.dedent("""
        import json, sys
        import tfbert.runtime
        tf_imported_early = "tensorflow" in sys.modules
        from tfbert.errors import RuntimeSetupError
        from tfbert.runtime import configure_runtime
        info = configure_runtime(intra_op_threads=1, inter_op_threads=2)
        import tensorflow as tf
        tf.constant([1.0]) + 1  # starts the runtime
        again = configure_runtime(intra_op_threads=1, inter_op_threads=2)
        try:
            configure_runtime(intra_op_threads=2)
            late = None
        except RuntimeSetupError as err:
            late = str(err)
        print(json.dumps({"early": tf_imported_early, "info": [info.intra_op_threads, info.inter_op_threads],
                          "tf": [tf.config.threading.get_intra_op_parallelism_threads(),
                                 tf.config.threading.get_inter_op_parallelism_threads()],
                          "again": again.applied, "late": late}))
    """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=root, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["early"] is False, "importing tfbert.runtime must not import TensorFlow"
    assert result["tf"] == result["info"] == [1, 2]
    assert result["again"] == []
    assert result["late"].startswith("intra_op_threads: ") and CONFIGURE_EARLY in result["late"]


# --- execution modes ----------------------------------------------------------------------

def reference(model, inputs):
    """The eager Keras model itself, the golden values every mode must match."""
    out = model(**{k: tf.constant(v) for k, v in inputs.items()}, training=False)
    return {"last_hidden_state": out.last_hidden_state.numpy(), "pooler_output": out.pooler_output.numpy()}


@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
def test_every_mode_matches_the_keras_model(tiny_model, mode):
    forward = compile_forward(tiny_model, mode)
    inputs = batch(3, 12)
    expected = reference(tiny_model, inputs)
    out = forward(inputs)
    assert forward.mode == mode and set(out) == set(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(out[key].numpy(), value, atol=1e-5)
    # Keywords work as well as a dict.
    np.testing.assert_allclose(forward(**inputs)["pooler_output"].numpy(), expected["pooler_output"], atol=1e-5)


def test_graph_mode_does_not_retrace_for_new_shapes(tiny_model):
    forward = compile_forward(tiny_model, "graph")
    for b, s in [(2, 8), (5, 17), (1, 40)]:
        inputs = batch(b, s, seed=b)
        out = forward(inputs)
        assert out["last_hidden_state"].shape == (b, s, TINY["hidden_size"])
        np.testing.assert_allclose(out["last_hidden_state"].numpy(),
                                   reference(tiny_model, inputs)["last_hidden_state"], atol=1e-5)
    assert forward.function.experimental_get_tracing_count() == 1


def test_inputs_of_other_integer_types_are_accepted(tiny_model):
    inputs = batch(2, 6)
    wide = {k: v.astype(np.int64) for k, v in inputs.items()}
    out = compile_forward(tiny_model, "graph")(wide)
    np.testing.assert_allclose(out["pooler_output"].numpy(), reference(tiny_model, inputs)["pooler_output"],
                               atol=1e-5)


def test_auto_picks_the_fastest_measured_mode(tiny_model):
    forward = compile_forward(tiny_model, "auto", runs=2)
    assert forward.requested_mode == "auto" and forward.mode in ("eager", "graph", "xla")
    assert set(forward.timings_ms) == {"eager", "graph", "xla"} and all(t > 0 for t in forward.timings_ms.values())
    assert forward.timings_ms[forward.mode] == min(forward.timings_ms.values())
    inputs = batch(2, 9)
    np.testing.assert_allclose(forward(inputs)["last_hidden_state"].numpy(),
                               reference(tiny_model, inputs)["last_hidden_state"], atol=1e-5)


def test_auto_skips_a_mode_the_model_cannot_run_in():
    class PythonOpModel:
        """A model with a Python op, which XLA cannot compile."""

        def __call__(self, input_ids, training=False):
            doubled = tf.py_function(lambda x: x * 2, [input_ids], tf.int32)
            return {"doubled": doubled}

    sample = {"input_ids": np.arange(6, dtype=np.int32).reshape(2, 3)}
    forward = compile_forward(PythonOpModel(), "auto", signature_inputs=("input_ids",), sample=sample, runs=1)
    assert set(forward.timings_ms) == {"eager", "graph"} and forward.mode in ("eager", "graph")
    assert forward.notes and forward.notes[0].startswith("xla skipped")
    np.testing.assert_array_equal(forward(sample)["doubled"].numpy(), sample["input_ids"] * 2)


@pytest.mark.parametrize(("kwargs", "where"), [
    ({"mode": "jit"}, "mode: "),
    ({"mode": "auto", "runs": 0}, "runs: "),
    ({"signature_inputs": ("input_ids", "segment_ids")}, "signature_inputs: "),
    ({"signature_inputs": ("attention_mask",)}, "signature_inputs: "),
])
def test_bad_compile_arguments_are_typed_errors(tiny_model, kwargs, where):
    with pytest.raises(BadInputError) as caught:
        compile_forward(tiny_model, **kwargs)
    assert str(caught.value).startswith(where) and "fix: " in str(caught.value)


@pytest.mark.parametrize(("change", "where"), [
    (lambda x: {k: v for k, v in x.items() if k != "attention_mask"}, "inputs: "),
    (lambda x: {**x, "position_ids": x["input_ids"]}, "inputs: "),
    (lambda x: {**x, "input_ids": x["input_ids"].astype(np.float32)}, "inputs: input_ids: "),
    (lambda x: {**x, "token_type_ids": x["token_type_ids"][0]}, "inputs: token_type_ids: "),
])
def test_bad_call_inputs_are_typed_errors(tiny_model, change, where):
    forward = compile_forward(tiny_model, "eager")
    with pytest.raises(BadInputError) as caught:
        forward(change(batch(2, 4)))
    assert str(caught.value).startswith(where)

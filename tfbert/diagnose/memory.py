"""Memory pre-flight: what a model, batch and sequence length need, against what the machine has.

The estimate is deliberately simple and slightly pessimistic; its job is to refuse a run
that would be killed by the OS (which gives no error at all) and to suggest one that fits.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess

from tfbert.checkpoint.names import expected_tensors
from tfbert.diagnose.config_checks import _error
from tfbert.errors import InsufficientMemoryError
from tfbert.report import OK, Finding

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "mixed_float16": 2, "mixed_bfloat16": 2, "int8": 1}
# Resident memory of TensorFlow itself once imported (measured: ~650 MB on CPU).
TF_BASELINE_BYTES = 700 * 2**20
# Keep this share of available memory free for the OS and the rest of the process.
HEADROOM = 0.85
MiB = 2**20
# Training adds the traced forward+backward graphs and the input pipeline's buffers; measured
# ~110-130 MiB above the textbook count on MiniLM with a frozen encoder (scripts/bench_finetune.py).
TRAINING_OVERHEAD_BYTES = 128 * MiB
# Activations kept for the backward pass, measured against the count below: ~1.4x (dropout masks,
# GELU internals, allocator slack); mixed precision keeps LayerNorm and softmax in float32.
SAVED_ACTIVATION_FACTOR = 1.5
MIXED_SAVED_BYTES = 2.5


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes needed for one run; ``total`` includes TensorFlow's own baseline."""

    parameter_bytes: int
    training_state_bytes: int  # gradients, optimizer moments, traced training graphs
    activation_bytes: int
    baseline_bytes: int = TF_BASELINE_BYTES

    @property
    def total(self) -> int:
        return self.parameter_bytes + self.training_state_bytes + self.activation_bytes + self.baseline_bytes


def estimate_memory(config: dict, task: str = "embed", *, batch_size: int = 32, seq_length: int = 128,
                    dtype: str = "float32", training: bool = False,
                    trainable_layers: int | None = None) -> MemoryEstimate:
    """Estimate the memory of inference (peak of one layer) or training (all layers' activations).

    ``trainable_layers`` (training only) is how many of the top encoder layers get gradients;
    frozen layers keep no activations for the backward pass and no optimizer state.

    Example:
        >>> cfg = {"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6,
        ...        "num_attention_heads": 12, "intermediate_size": 1536,
        ...        "max_position_embeddings": 512, "type_vocab_size": 2}
        >>> round(estimate_memory(cfg).parameter_bytes / 2**20)
        86
    """
    act_bytes = DTYPE_BYTES[dtype]
    # Mixed precision keeps float32 master weights.
    param_bytes_each = 4 if dtype.startswith("mixed") else act_bytes
    n_params = sum(_prod(s) for s in expected_tensors(config, task).values())
    h, i, heads = config["hidden_size"], config["intermediate_size"], config["num_attention_heads"]
    layers, vocab = config["num_hidden_layers"], config["vocab_size"]
    b, s = batch_size, seq_length
    # Live tensors inside one layer: input, q, k, v, context, output, two attention maps, FFN.
    per_layer = b * s * (6 * h + 2 * i) + 2 * b * heads * s * s
    if task == "fill_mask":
        per_layer = max(per_layer, 2 * b * s * vocab)  # logits and their softmax
    if not training:
        return MemoryEstimate(n_params * param_bytes_each, 0, per_layer * act_bytes)
    trainable = layers if trainable_layers is None else max(0, min(layers, trainable_layers))
    # Saved for backward, per trainable layer: ~10 hidden-sized maps, 3 FFN maps, 3 attention maps.
    saved = SAVED_ACTIVATION_FACTOR * (trainable * (b * s * (10 * h + 3 * i) + 3 * b * heads * s * s) + per_layer)
    saved_bytes = MIXED_SAVED_BYTES if dtype.startswith("mixed") else act_bytes
    if trainable_layers is None:
        trainable_params = n_params
    else:  # the top layers, the pooler and the head train; the embeddings are frozen
        shapes = expected_tensors(config, task)
        in_layer = lambda name, n: name.startswith(f"bert.encoder.layer.{n}.")  # noqa: E731
        top = range(layers - trainable, layers)
        trainable_params = sum(_prod(s) for name, s in shapes.items()
                               if any(in_layer(name, n) for n in top)
                               or not name.startswith(("bert.encoder.", "bert.embeddings.")))
    # gradient + two Adam moments, float32
    state = trainable_params * 3 * 4 + TRAINING_OVERHEAD_BYTES
    return MemoryEstimate(n_params * param_bytes_each, state, int(saved * saved_bytes))


def _prod(shape) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


def available_host_memory() -> int:
    """Bytes this process can still allocate: MemAvailable, capped by a cgroup limit if any."""
    available = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except OSError:
        pass
    if available is None:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file) as f:
                limit = f.read().strip()
            with open(usage_file) as f:
                usage = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:
            available = min(available, int(limit) - usage)
    return available


def available_gpu_memory() -> int | None:
    """Free bytes on the first GPU per nvidia-smi, or None when there is no NVIDIA GPU."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        return int(out.split()[0]) * MiB
    except (subprocess.SubprocessError, ValueError, IndexError, OSError):
        return None


def check_memory(config: dict, task: str, *, batch_size: int, seq_length: int, dtype: str = "float32",
                 training: bool = False, trainable_layers: int | None = None,
                 host_bytes: int | None = None, gpu_bytes: int | None = None,
                 tf_loaded: bool = False) -> list[Finding]:
    """Refuse (an error finding) when the run cannot fit; otherwise report the estimate.

    ``host_bytes``/``gpu_bytes`` default to what this machine has free now. On a GPU the model
    and activations must fit in GPU memory; on a CPU in host memory.
    """
    kwargs = dict(batch_size=batch_size, seq_length=seq_length, dtype=dtype, training=training,
                  trainable_layers=trainable_layers)
    est = estimate_memory(config, task, **kwargs)
    baseline = 0 if tf_loaded else est.baseline_bytes
    gpu = available_gpu_memory() if gpu_bytes is None else gpu_bytes
    if gpu:
        budget, device, need = gpu, "GPU", est.total - est.baseline_bytes
    else:
        budget = available_host_memory() if host_bytes is None else host_bytes
        device, need = "host RAM", est.total - est.baseline_bytes + baseline
    budget = int(budget * HEADROOM)
    what = f"{'training' if training else 'inference'} at batch {batch_size} x {seq_length} tokens in {dtype}"
    if need <= budget:
        return [Finding("memory", OK, f"{what} needs ~{need / MiB:,.0f} MiB of {device} "
                        f"(weights {est.parameter_bytes / MiB:,.0f} MiB, activations "
                        f"{est.activation_bytes / MiB:,.0f} MiB); {budget / MiB:,.0f} MiB usable")]
    suggestions = []
    fixed = need - est.activation_bytes
    if fixed < budget and est.activation_bytes:
        fits = int(batch_size * (budget - fixed) / est.activation_bytes)
        if fits >= 1:
            suggestions.append(f"batch size {fits}")
    for smaller in ("float16", "int8"):
        if DTYPE_BYTES[smaller] < DTYPE_BYTES[dtype] and not training:
            small = estimate_memory(config, task, **{**kwargs, "dtype": smaller})
            if small.total - small.baseline_bytes + (baseline if device == "host RAM" else 0) <= budget:
                flag = "fp16" if smaller == "float16" else "int8"
                suggestions.append(f"{smaller} (export --quantization={flag})")
    if seq_length > 128:
        suggestions.append("a shorter sequence length")
    err = InsufficientMemoryError(
        f"{what} would not fit in {device} (the OS would kill the process)", where=device,
        expected=f"<= {budget / MiB:,.0f} MiB usable", actual=f"~{need / MiB:,.0f} MiB needed",
        fix="use " + (" or ".join(suggestions) if suggestions else "a machine with more memory"))
    return [_error("memory", err)]

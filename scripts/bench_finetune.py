"""Benchmark fine-tuning steps: peak memory and examples/s with and without freezing and mixed precision.

Each configuration runs in a fresh process: load the checkpoint as a classifier, apply the
freezing, compile with tfbert's AdamW, run warm-up steps (tracing), then time ``--steps``
training steps on one fixed batch of ``--batch_size`` x ``--seq_length`` tokens (random ids
from the vocabulary; speed does not depend on the words). Peak RSS is read from /proc
(VmHWM): ``peak_rss_mib`` is the whole process, ``training_extra_mib`` the peak above the RSS
once the model was loaded (the high-water mark is reset there with /proc/self/clear_refs), so
it is what the optimizer state, gradients and activations cost. The configurations are run
``--repeat`` times in alternating order and the median is kept; ratios are against the first
configuration (full fine-tuning in float32), which is what to compare on a shared machine.

Usage: python scripts/bench_finetune.py [--model=PATH] [--batch_size=16] [--seq_length=128] [--steps=8]
       [--repeat=2] [--output=benchmarks/results/finetune.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

from tfbert.report import write_json

CHILD = r"""
import json, os, sys, time
os.environ["TF_USE_LEGACY_KERAS"] = "1"; os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
def status(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key + ":"))
model_path, freeze, policy = sys.argv[1] or None, sys.argv[2], sys.argv[3]
batch, seq, steps = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
import numpy as np
from tfbert.checkpoint import find_checkpoint
from tfbert.diagnose.config_checks import read_config
from tfbert.diagnose.memory import estimate_memory
from tfbert.finetune.run import _trainable_layers
from tfbert.finetune.train import apply_freeze, classifier, make_optimizer, parameter_counts, parse_freeze
from tfbert.model import load
from tfbert.runtime import configure_runtime
import tf_keras
configure_runtime(mixed_precision=policy)
tf_keras.utils.set_random_seed(0)
files = find_checkpoint(model_path)
config = read_config(files)
plan = parse_freeze(freeze, config["num_hidden_layers"])
bert = load(files.root, "classify", batch_size=batch, seq_length=seq, labels=["negative", "positive"])
apply_freeze(bert, plan)
model = classifier(bert)
trainable, total = parameter_counts(bert)
model.compile(optimizer=make_optimizer(5e-5, 1000),
              loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
rng = np.random.default_rng(0)
ids = rng.integers(1000, config["vocab_size"], size=(batch, seq)).astype(np.int32)
ids[:, 0], ids[:, -1] = 101, 102
x = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
y = rng.integers(0, 2, size=(batch,)).astype(np.int32)
rss_loaded = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
for _ in range(2):
    model.train_on_batch(x, y)
start = time.perf_counter()
for _ in range(steps):
    loss = model.train_on_batch(x, y)
seconds = time.perf_counter() - start
estimate = estimate_memory(dict(config, num_labels=2), "classify", batch_size=batch, seq_length=seq,
                           dtype=policy, training=True,
                           trainable_layers=_trainable_layers(plan, config["num_hidden_layers"]))
print(json.dumps({"examples_per_second": batch * steps / seconds, "step_seconds": seconds / steps,
                  "peak_rss_mib": status("VmHWM") / 2**20, "loaded_rss_mib": rss_loaded / 2**20,
                  "training_extra_mib": (status("VmHWM") - rss_loaded) / 2**20,
                  "estimated_training_mib": (estimate.training_state_bytes + estimate.activation_bytes) / 2**20,
                  "trainable_params": trainable, "total_params": total, "final_loss": float(loss)}))
"""

CONFIGS = [
    ("full", "", "float32"),
    ("full", "", "mixed_bfloat16"),
    ("embeddings,encoder:0-3", "embeddings,encoder:0-3", "float32"),
    ("embeddings,encoder:0-3", "embeddings,encoder:0-3", "mixed_bfloat16"),
    ("frozen encoder", "embeddings,encoder", "float32"),
    ("frozen encoder", "embeddings,encoder", "mixed_bfloat16"),
]


def measure(model: str | None, freeze: str, policy: str, batch: int, seq: int, steps: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, model or "", freeze, policy, str(batch), str(seq), str(steps)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"bench_finetune: {freeze or 'full'} / {policy} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the embedded all-MiniLM-L6-v2)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--seq_length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--output", default="benchmarks/results/finetune.json")
    args = parser.parse_args()

    runs: dict[int, list[dict]] = {i: [] for i in range(len(CONFIGS))}
    for r in range(args.repeat):
        order = range(len(CONFIGS)) if r % 2 == 0 else reversed(range(len(CONFIGS)))
        for i in order:
            name, freeze, policy = CONFIGS[i]
            result = measure(args.model, freeze, policy, args.batch_size, args.seq_length, args.steps)
            print(f"[{r + 1}/{args.repeat}] {name:24s} {policy:15s} {result['examples_per_second']:7.1f} ex/s  "
                  f"peak {result['peak_rss_mib']:7.0f} MiB  training extra {result['training_extra_mib']:6.0f} MiB",
                  file=sys.stderr, flush=True)
            runs[i].append(result)
    rows = []
    for i, (name, freeze, policy) in enumerate(CONFIGS):
        median = {k: statistics.median(r[k] for r in runs[i]) for k in runs[i][0]}
        rows.append({"freeze": name, "freeze_flag": freeze, "precision": policy, **median})
    base = rows[0]
    for row in rows:
        row["speed_vs_full_fp32"] = row["examples_per_second"] / base["examples_per_second"]
        row["training_extra_vs_full_fp32"] = row["training_extra_mib"] / base["training_extra_mib"]
    result = {"model": args.model or "all-MiniLM-L6-v2 (embedded)", "batch_size": args.batch_size,
              "seq_length": args.seq_length, "steps": args.steps, "repeat": args.repeat,
              "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "rows": rows}
    print(write_json(result, args.output))


if __name__ == "__main__":
    main()

"""Benchmark loading: peak memory above TensorFlow's baseline, and cold start to first output.

Each measurement runs in a fresh process. Peak RSS is read from /proc (VmHWM) after the
peak has been reset (``/proc/self/clear_refs``) once TensorFlow and transformers are
imported, so the figure is what *loading* costs on top of TensorFlow's own baseline.
Compares tfbert.load with Hugging Face's TFBertModel.from_pretrained on the same checkpoint.

Usage: python scripts/bench_load.py [--model=PATH] [--repeat=3] [--output=benchmarks/results/load.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

CHILD = r"""
import json, os, sys, time
t0 = time.perf_counter()
os.environ["TF_USE_LEGACY_KERAS"] = "1"; os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
os.environ["HF_HUB_OFFLINE"] = "1"
def status(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key + ":"))
which, model = sys.argv[1], sys.argv[2] or None
if which == "tfbert":
    import tfbert
    from tfbert.tf import import_tensorflow
    tf = import_tensorflow()
    from transformers.models.bert import modeling_tf_bert  # noqa: F401
else:
    import tensorflow as tf
    from transformers import TFBertModel
t_import = time.perf_counter()
import numpy as np
ids = np.array([[101, 7592, 2088, 102]], np.int32)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
baseline = status("VmRSS")
if which == "tfbert":
    m = tfbert.load(model)
else:
    from tfbert.checkpoint import default_model_path
    m = TFBertModel.from_pretrained(model or default_model_path())
t_load = time.perf_counter()
m(input_ids=ids, attention_mask=np.ones_like(ids)).last_hidden_state.numpy()
t_first = time.perf_counter()
weights = sum(int(np.prod(v.shape)) * v.dtype.size for v in m.weights)
print(json.dumps({"baseline_rss": baseline, "peak_rss": status("VmHWM"), "weight_bytes": weights,
                  "import_s": t_import - t0, "load_s": t_load - t_import, "first_output_s": t_first - t_load}))
"""


def run_child(which: str, model: str | None) -> dict:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, which, model or ""], capture_output=True, text=True,
                         check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - start
    result["load_peak_over_baseline"] = result["peak_rss"] - result["baseline_rss"]
    result["ratio_to_weights"] = result["load_peak_over_baseline"] / result["weight_bytes"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--output", default="benchmarks/results/load.json")
    args = parser.parse_args()
    results = {}
    for which in ("tfbert", "huggingface"):
        runs = [run_child(which, args.model) for _ in range(args.repeat)]
        results[which] = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpu": _cpu(), "cores": os.cpu_count(), "python": platform.python_version()},
        "model": args.model or "embedded all-MiniLM-L6-v2",
        "median_of": args.repeat,
        "results": results,
    }
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(report, f, indent=2)
    mib = 2**20
    for which, r in results.items():
        print(f"{which:12s} load peak over TF baseline {r['load_peak_over_baseline'] / mib:6.1f} MiB "
              f"({r['ratio_to_weights']:.2f}x weights {r['weight_bytes'] / mib:.1f} MiB); "
              f"import {r['import_s']:.2f}s load {r['load_s']:.2f}s first output {r['first_output_s']:.2f}s; "
              f"whole process {r['process_s']:.2f}s")
    print(f"wrote {args.output}")


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


if __name__ == "__main__":
    main()

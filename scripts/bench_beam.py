"""Benchmark (not a test): the predict job on Beam's DirectRunner with 2 worker processes against
single-process ``python -m tfbert.predict``, same int8 .tflite, same 20,000 real texts.

Both are timed as whole processes (start, load, run, exit); each is also timed on one text,
which is its start-up cost, so the steady throughput is ``real tokens / (wall - start-up)``.
Real tokens are the non-padding tokens the model's tokenizer makes (tfbert.predict.measure).
Memory is sampled every ``--interval`` s over each run's process tree: peak RSS and PSS of the
launcher and of each Beam worker process. The Beam output is checked against the single
process's (max abs difference by key). Build the .tflite first:

    python -m tfbert.export --quantize --output_dir=/tmp/perf_exports

Usage: python scripts/bench_beam.py [--int8=PATH] [--texts=20000] [--workers=2] [--output=beam_bench.json]
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import psutil

from tfbert.report import write_json

INT8 = "/tmp/perf_exports/all-minilm-l6-v2-tflite/1/model_int8.tflite"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--int8", default=INT8, help="int8 .tflite from python -m tfbert.export --quantize")
    parser.add_argument("--texts", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=2, help="DirectRunner worker processes")
    parser.add_argument("--threads", type=int, default=2, help="LiteRT threads of the single process; each Beam "
                        "worker gets threads // workers (at least 1), so both use the same cores")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--interval", type=float, default=0.5, help="memory sampling period (s)")
    parser.add_argument("--output", default="beam_bench.json")
    args = parser.parse_args()
    if not os.path.isfile(args.int8):
        sys.exit(f"bench_beam: {args.int8} does not exist — fix: build it as the docstring shows, or pass --int8")

    from tfbert.benchmark.measure import machine_info
    from tfbert.predict import Predictor
    from tfbert.predict.measure import real_tokens, sample_texts

    load_before = os.getloadavg()[0]
    texts = sample_texts(args.texts)
    tokens = real_tokens(Predictor(args.int8), texts)
    worker_threads = max(1, args.threads // args.workers)
    with tempfile.TemporaryDirectory() as tmp:
        many, one = os.path.join(tmp, "texts.txt"), os.path.join(tmp, "one.txt")
        with open(many, "w", encoding="utf-8") as f:
            f.write("\n".join(texts) + "\n")
        with open(one, "w", encoding="utf-8") as f:
            f.write(texts[0] + "\n")
        base = [sys.executable, "-m", "tfbert.predict", f"--model={args.int8}", "--noprogress",
                f"--batch_size={args.batch_size}"]
        single = [*base, f"--num_threads={args.threads}"]
        beam = [*base, f"--num_threads={worker_threads}", "--runner=DirectRunner",
                "--direct_running_mode=multi_processing", f"--direct_num_workers={args.workers}"]
        runs = {"single": run_sampled([*single, f"--input={many}", f"--output={tmp}/single.npy"], args.interval),
                "beam": run_sampled([*beam, f"--input={many}", f"--output={tmp}/beam"], args.interval),
                "single_start_up": run_sampled([*single, f"--input={one}", f"--output={tmp}/s1.npy"], args.interval),
                "beam_start_up": run_sampled([*beam, f"--input={one}", f"--output={tmp}/b1"], args.interval)}
        max_diff = beam_vs_single(f"{tmp}/beam", f"{tmp}/single.npy", many)
    rows = {}
    for name in ("single", "beam"):
        wall, start_up = runs[name]["wall_s"], runs[f"{name}_start_up"]["wall_s"]
        rows[name] = {"wall_s": wall, "start_up_s": start_up,
                      "real_tokens_per_s_whole_process": round(tokens / wall),
                      "real_tokens_per_s_after_start_up": round(tokens / max(wall - start_up, 1e-9)),
                      "memory": runs[name]["memory"]}
    result = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": machine_info(), "load_average_1m": {"before": round(load_before, 2),
                                                             "after": round(os.getloadavg()[0], 2)},
              "model": args.int8, "texts": len(texts), "real_tokens": tokens, "batch_size": args.batch_size,
              "single_process_threads": args.threads, "beam_workers": args.workers,
              "beam_threads_per_worker": worker_threads, "runs": rows,
              "beam_over_single": {
                  "whole_process": round(rows["beam"]["real_tokens_per_s_whole_process"]
                                         / rows["single"]["real_tokens_per_s_whole_process"], 3),
                  "after_start_up": round(rows["beam"]["real_tokens_per_s_after_start_up"]
                                          / rows["single"]["real_tokens_per_s_after_start_up"], 3)},
              "beam_max_abs_diff_vs_single": max_diff}
    print(write_json(result, args.output))
    return 0


def run_sampled(command: list[str], interval: float) -> dict:
    """Run ``command`` to its end; its wall seconds and the peak RSS/PSS (MiB) of the launcher and
    of each Beam worker process (``sdk_worker_main``) in its tree."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.append(process.stderr.read()), daemon=True)
    reader.start()
    peaks: dict[int, dict] = {}
    root = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for p in tree:
            try:
                role = "launcher" if p.pid == process.pid else (
                    "worker" if "sdk_worker_main" in " ".join(p.cmdline()) and p.name().startswith("python") else None)
                if role is None:
                    continue
                info = p.memory_full_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            peak = peaks.setdefault(p.pid, {"role": role, "rss_mib": 0, "pss_mib": 0})
            peak["rss_mib"] = max(peak["rss_mib"], round(info.rss / 2**20))
            peak["pss_mib"] = max(peak["pss_mib"], round(info.pss / 2**20))
        time.sleep(interval)
    wall = time.perf_counter() - start
    reader.join()
    if process.returncode != 0:
        raise SystemExit(f"bench_beam: {' '.join(command)} failed: {''.join(stderr)[-2000:]}")
    return {"wall_s": round(wall, 2), "memory": sorted(peaks.values(), key=lambda m: m["role"])}


def beam_vs_single(output: str, single_npy: str, source: str) -> float:
    """Max abs difference between the Beam output's rows and the single process's, joined by key."""
    from tfbert.beam import read_output

    rows = read_output(output)
    expected = np.load(single_npy)
    got = np.stack([rows[f"{source}:{i}"] for i in range(len(expected))])
    return float(np.abs(got - expected).max())


if __name__ == "__main__":
    sys.exit(main())

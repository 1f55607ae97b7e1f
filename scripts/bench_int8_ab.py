"""tfbert int8 .tflite files against ONNX Runtime's best int8 configuration, side by side in one process.

For changes to the int8 graph (issue 16): two or more .tflite files (e.g. before and after a
change) and the peer — ONNX Runtime's dynamic per-channel int8 of its optimized graph
(``onnxruntime-int8-dynamic`` of ``python -m tfbert.benchmark``), length-sorted batches — run the
same texts: the built-in real sentences, sorted by token count and cut into groups of
``--batch_size``. Every runner tokenizes inside its own call, as in ``tfbert.benchmark``.

Figures, each with its ratio to the peer:

* ``best_pass``: whole passes over all texts, runners alternated (order reversed each round),
  the fastest of ``--rounds`` passes;
* ``group_min``: the groups, runners interleaved group by group, the sum over groups of each
  group's fastest run — steadier than whole passes when other jobs share the cores;
* ``p50``: single texts (``Predictor.predict_one`` / the peer's ``embed([text])``), runners
  interleaved call by call;
* cosine mean / min of each file's embeddings to ``--reference`` (an fp32 .tflite).

``--clock=cpu`` times process CPU time instead of wall time: with ``--num_threads=1`` it leaves
out the time other processes hold the cores, so figures taken on a shared machine compare.
``uptime`` is recorded before, after every round and at the end. Needs ``pip install -e ".[bench]"``.

Usage: python scripts/bench_int8_ab.py --model=before=A.tflite --model=after=B.tflite
       --reference=model_none.tflite [--rounds=3] [--latency_calls=200] [--num_threads=2]
       [--clock=wall|cpu] [--work_dir=/tmp/bench] [--output=int8_ab.json]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

from tfbert.report import write_json

PEER = "onnxruntime-int8-dynamic"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, help="NAME=PATH of an int8 .tflite (repeat)")
    parser.add_argument("--reference", required=True, help="fp32 .tflite the cosines are taken against")
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency_calls", type=int, default=200)
    parser.add_argument("--num_threads", type=int, default=2)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--work_dir", default="/tmp/bench", help="cache of the ONNX Runtime peer model")
    parser.add_argument("--output", default="int8_ab.json")
    args = parser.parse_args()
    models = dict(m.split("=", 1) for m in args.model)
    for path in [*models.values(), args.reference]:
        if not os.path.isfile(path):
            sys.exit(f"bench_int8_ab: {path} does not exist — fix: python -m tfbert.export --quantize")

    from tfbert.benchmark.onnx_peers import prepare_onnx_peers
    from tfbert.benchmark.runners import OnnxRuntimeRunner, PredictorRunner, onnx_unavailable
    from tfbert.checkpoint import find_checkpoint
    from tfbert.predict.measure import sample_texts

    reason = onnx_unavailable(None)
    if reason:
        sys.exit(f"bench_int8_ab: the ONNX Runtime peer is {reason}")
    files = find_checkpoint(None)
    paths, notes = prepare_onnx_peers(["int8-dynamic"], checkpoint_root=files.root, work_dir=args.work_dir)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    loads = [uptime()]
    common = {"batch_size": args.batch_size, "max_length": 128, "num_threads": args.num_threads}
    runners = {PEER: OnnxRuntimeRunner(PEER, paths["int8-dynamic"], os.path.join(files.root, "tokenizer.json"),
                                       sort_by_length=True, **common)}
    tflite = {"vocab_path": files.vocab, "tokenizer_config": files.tokenizer_config, **common}
    for name, path in models.items():
        runners[name] = PredictorRunner(name, path, "tflite", **tflite)
    texts = sample_texts(args.texts)
    reference = PredictorRunner("reference", args.reference, "tflite", **tflite).embed(texts)
    lengths = [len(e.ids) for e in runners[PEER].tokenizer.encode_batch(texts)]
    order = np.argsort(lengths, kind="stable")
    groups = [[texts[i] for i in order[s:s + args.batch_size]] for s in range(0, len(texts), args.batch_size)]
    embeddings = {}
    for name, runner in runners.items():
        runner.embed(texts[:2 * args.batch_size])  # warm-up
        embeddings[name] = runner.embed(texts)
    passes: dict[str, list[float]] = {k: [] for k in runners}
    group_times = {k: np.full((args.rounds, len(groups)), np.inf) for k in runners}
    for i in range(args.rounds):
        for name in list(runners) if i % 2 == 0 else list(runners)[::-1]:
            start = clock()
            runners[name].embed(texts)
            passes[name].append(clock() - start)
        for j, group in enumerate(groups):
            for name in list(runners) if (i + j) % 2 == 0 else list(runners)[::-1]:
                start = clock()
                runners[name].embed(group)
                group_times[name][i, j] = clock() - start
        loads.append(uptime())
    latency: dict[str, list[float]] = {k: [] for k in runners}
    for runner in runners.values():
        for text in texts[:10]:
            runner.embed_one(text)
    for i in range(args.latency_calls):
        for name in list(runners) if i % 2 == 0 else list(runners)[::-1]:
            start = clock()
            runners[name].embed_one(texts[i % len(texts)])
            latency[name].append(clock() - start)
    loads.append(uptime())
    tokens = int(sum(lengths))
    peer_pass, peer_group = min(passes[PEER]), float(group_times[PEER].min(0).sum())
    peer_p50 = float(np.median(latency[PEER]))
    rows = {}
    for name in runners:
        cosine = (embeddings[name] * reference).sum(1)
        group = float(group_times[name].min(0).sum())
        p50 = float(np.median(latency[name]))
        rows[name] = {"best_pass_s": min(passes[name]), "passes_s": passes[name],
                      "real_tokens_per_s_best_pass": tokens / min(passes[name]),
                      "ratio_to_peer_best_pass": peer_pass / min(passes[name]),
                      "group_min_s": group, "real_tokens_per_s_group_min": tokens / group,
                      "ratio_to_peer_group_min": peer_group / group,
                      "p50_ms": 1e3 * p50, "p50_ratio_to_peer": p50 / peer_p50,
                      "cosine_mean": float(cosine.mean()), "cosine_min": float(cosine.min())}
        row = rows[name]
        print(f"{name:26s} pass {row['real_tokens_per_s_best_pass']:7.0f} tok/s x{row['ratio_to_peer_best_pass']:.2f}"
              f" | group-min {row['real_tokens_per_s_group_min']:7.0f} tok/s x{row['ratio_to_peer_group_min']:.2f}"
              f" | p50 {1e3 * p50:.2f} ms x{row['p50_ratio_to_peer']:.2f}"
              f" | cosine {cosine.mean():.5f} / {cosine.min():.5f}")
    machine = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.split("Model name:")[-1]
    result = {"machine": machine.splitlines()[0].strip(), "clock": args.clock, "threads": args.num_threads,
              "texts": len(texts), "real_tokens": tokens, "batch_size": args.batch_size, "rounds": args.rounds,
              "latency_calls": args.latency_calls, "models": models, "reference": args.reference,
              "peer_model": paths["int8-dynamic"], "peer_note": notes.get("int8-dynamic"), "uptime": loads,
              "rows": rows}
    print(write_json(result, args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())

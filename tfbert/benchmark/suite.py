"""The benchmark run: every row on the same texts in one process, results rewritten after each row."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

import numpy as np

from tfbert.benchmark import measure
from tfbert.benchmark.exports import TFLITE_ROWS, ensure_exports
from tfbert.benchmark.results import COLUMNS, write_results
from tfbert.benchmark.runners import (
    FP32_ROWS,
    ONNX_ROWS,
    PROCESS_PEER_MODEL,
    PROCESS_ROWS,
    ROWS,
    Runner,
    make_runner,
    onnx_unavailable,
    row_role,
)
from tfbert.errors import BadInputError
from tfbert.fidelity import fidelity
from tfbert.report import Report

Progress = Callable[[str], None]


def parse_rows(spec: str | None) -> list[str]:
    """Benchmark rows from a comma list (None or ``all``: every row), in the canonical order.

    Raises:
        BadInputError: an unknown name, naming it and the valid ones.

    Example:
        >>> parse_rows("tflite-int8,keras-graph")
        ['keras-graph', 'tflite-int8']
    """
    if spec is None or spec.strip() in ("", "all"):
        return list(ROWS)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in ROWS]
    if unknown or not names:
        raise BadInputError("unknown backend", where="--backends", expected=", ".join(ROWS),
                            actual=",".join(unknown) or repr(spec),
                            fix="pass a comma list of those names, or leave --backends out for all")
    return [r for r in ROWS if r in names]


def run_benchmark(texts: list[str], *, rows: list[str], output_dir: str, work_dir: str,
                  model_path: str | None = None, exports_dir: str | None = None, batch_size: int = 32,
                  max_length: int = 128, num_threads: int = 2, repeats: int = 3, latency_samples: int = 200,
                  latency_budget_s: float = 60.0, progress: Progress = lambda line: None) -> Report:
    """Run ``rows`` on ``texts`` one after another in this process and write the results.

    Per row: build it; warm up (a full pass for keras-xla, which compiles one program per
    padded length, two batches otherwise); time a pass over all texts; after 10 warm-up calls,
    time ``latency_samples`` single-text calls, or as many as fit in ``latency_budget_s``
    (p50/p95, tokenization included);
    sample this process's RSS all along (peak, and growth over the RSS when the row started);
    compare its embeddings with the fp32 reference — the first fp32 row that ran. Then
    ``repeats - 1`` rounds of one more pass per row, every row kept loaded, order reversed each
    round; a row's throughput is its fastest pass (real tokens/s).

    ``output_dir/benchmark.{json,md,png}`` are rewritten after every row, so an interrupted
    run keeps the rows it finished. A row that cannot run gets a status saying why.

    Args:
        texts: the inputs, the same for every row.
        rows: names from :data:`tfbert.benchmark.ROWS`.
        output_dir: where the results go.
        work_dir: cache of the exports the savedmodel / tflite rows need.
        model_path: the checkpoint (None: the embedded all-MiniLM-L6-v2).
        exports_dir: use SavedModel / .tflite files found here instead of exporting.
        batch_size, max_length: as in :class:`tfbert.predict.Predictor`.
        num_threads: TensorFlow intra-op and inter-op threads, LiteRT and ONNX Runtime threads.
        repeats: timed passes over all texts per row (1 + rounds at the end); the fastest counts.
        latency_samples: single-text calls timed per row.
        latency_budget_s: stop timing single-text calls after this many seconds.
        progress: called with a line before each step.

    Returns:
        The :class:`~tfbert.report.Report` also written to ``output_dir``.
    """
    from tfbert.checkpoint import find_checkpoint
    from tfbert.runtime import configure_runtime

    for name, value in (("batch_size", batch_size), ("max_length", max_length), ("num_threads", num_threads),
                        ("repeats", repeats), ("latency_samples", latency_samples)):
        if value < 1:
            raise BadInputError("must be at least 1", where=f"--{name}", actual=value, fix=f"pass --{name}=1 or more")
    files = find_checkpoint(model_path)
    with open(files.config, encoding="utf-8") as f:
        config = json.load(f)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    machine = measure.machine_info()
    progress(f"configuring TensorFlow: {num_threads} intra-op and inter-op threads")
    configure_runtime(intra_op_threads=num_threads, inter_op_threads=num_threads)
    progress("measuring the fp32 matrix-multiply peak (TensorFlow and LiteRT kernels)")
    gemm = measure.gemm_peak_gflops(num_threads=num_threads)
    peak = gemm["peak"]
    report = Report(f"tfbert benchmark: {files.root}", COLUMNS, [], {
        "date": started, **machine, "model": files.root, "texts": len(texts), "batch_size": batch_size,
        "max_length": max_length, "threads": num_threads, "repeats": repeats, "latency_samples": latency_samples,
        "latency_budget_s": latency_budget_s, "gemm_peak_gflops": peak,
        "gemm_measurements_gflops": [gemm],
        "rss": "sampled every 10 ms in this one process while a row loads, warms up, runs once and is timed "
               "at batch 1; growth = peak minus the RSS when the row started (earlier rows stay loaded)",
        "throughput": "fastest of `repeats` passes over all texts: one right after the row's warm-up, the "
                      "others in rounds over all rows at the end (order alternating)",
        "pct_of_compute_limit": "real tokens/s x FLOPs per token / fp32 GEMM peak (highest of TensorFlow matmul "
                                "and LiteRT fully-connected, measured each round); int8 rows may exceed 100",
    })
    progress(f"GEMM peak {peak:.1f} GFLOP/s at {num_threads} threads (TensorFlow {gemm['tensorflow']:.1f}, "
             f"LiteRT {gemm['litert']:.1f})")
    write_results(report, output_dir)

    # The whole-process tfbert row runs the tflite-int8 export.
    export_rows = list(dict.fromkeys([*rows, "tflite-int8"])) if "process-tfbert-int8" in rows else rows
    exports, export_errors = ensure_exports(export_rows, model_path=model_path, max_length=max_length,
                                            work_dir=work_dir, exports_dir=exports_dir, num_threads=num_threads,
                                            progress=progress)
    peer_notes = _prepare_onnx_peers(rows, exports, export_errors, model_path=model_path, work_dir=work_dir,
                                     progress=progress)
    report.summary["onnx_peer_models"] = peer_notes
    measure.release_memory()
    reference: np.ndarray | None = None
    runners: dict[str, Runner] = {}  # kept alive for the interleaved passes
    for row in rows:
        result = {"backend": row, "role": row_role(row), "description": ROWS[row]}
        report.rows.append(result)
        reason = export_errors.get("tflite-int8" if row == "process-tfbert-int8" else row)
        needs = "tflite-int8" if row == "process-tfbert-int8" else row
        if (needs == "savedmodel" or needs in TFLITE_ROWS or needs in ONNX_ROWS) and needs not in exports \
                and reason is None:
            reason = "no export found"
        if row in PROCESS_ROWS and reason is None:
            result["status"] = "pending: whole processes are timed after the rounds"
            continue
        if reason:
            result["status"] = reason
            progress(f"{row}: {reason}")
            write_results(report, output_dir)
            continue
        try:
            embeddings, runners[row] = _measure_row(
                row, result, texts, model_path=model_path, exports=exports, batch_size=batch_size,
                max_length=max_length, num_threads=num_threads, latency_samples=latency_samples,
                latency_budget_s=latency_budget_s, progress=progress)
        except Exception as e:  # one failing backend must not lose the other rows
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            result["status"] = f"error: {type(e).__name__}: {first}"[:300]
            progress(f"{row}: {result['status']}")
        else:
            if reference is None and row in FP32_ROWS:
                reference = embeddings
                report.summary["fidelity_reference"] = row
                result["status"] = "ok (fidelity reference)"
            else:
                result["status"] = "ok"
            if reference is not None:
                result.update(fidelity(reference, embeddings))
            _summarize(report, config, result, texts)
            progress(f"{row}: {result['texts_per_s']:.1f} texts/s, {result['real_tokens_per_s']:.0f} real tokens/s, "
                     f"p50 {result['latency_p50_ms']:.2f} ms, p95 {result['latency_p95_ms']:.2f} ms, "
                     f"peak RSS {result['peak_rss_mib']:.0f} MiB (+{result['rss_growth_mib']:.0f})"
                     + (f", cosine {result['cosine_mean']:.5f}" if "cosine_mean" in result else ""))
        measure.release_memory()
        write_results(report, output_dir)
    _interleaved_passes(report, runners, texts, repeats - 1, output_dir, num_threads, progress)
    del runners
    measure.release_memory()
    _time_processes(report, [r["backend"] for r in report.rows if r["status"].startswith("pending")], texts, exports,
                    reference, repeats=repeats, batch_size=batch_size, max_length=max_length,
                    num_threads=num_threads, output_dir=output_dir, progress=progress)
    report.summary["load_average_1min_end"] = measure.machine_info()["load_average_1min"]
    write_results(report, output_dir)
    return report


def _prepare_onnx_peers(rows: list[str], exports: dict[str, str], errors: dict[str, str], *,
                        model_path: str | None, work_dir: str, progress: Progress) -> dict[str, str]:
    """Add the ONNX Runtime peer models the rows need to ``exports`` (row → file), or to ``errors``
    why not; returns what was done to each peer model (optimizer fusions, quantization)."""
    wanted = [r for r in rows if r in ONNX_ROWS or r == "process-onnxruntime"]
    if not wanted:
        return {}
    reason = onnx_unavailable(model_path)
    if reason:
        errors.update({r: reason for r in wanted})
        return {}
    from tfbert.benchmark.onnx_peers import prepare_onnx_peers
    from tfbert.checkpoint import find_checkpoint

    kind = {r: ONNX_ROWS[r][0] if r in ONNX_ROWS else PROCESS_PEER_MODEL for r in wanted}
    paths, notes = prepare_onnx_peers(sorted(set(kind.values())), checkpoint_root=find_checkpoint(None).root,
                                      work_dir=work_dir, progress=progress)
    for row, k in kind.items():
        if k in paths:
            exports[row] = paths[k]
        else:
            errors[row] = notes.get(k, "could not be prepared")
    return notes


def _time_processes(report: Report, rows: list[str], texts: list[str], exports: dict[str, str],
                    reference: np.ndarray | None, *, repeats: int, batch_size: int, max_length: int,
                    num_threads: int, output_dir: str, progress: Progress) -> None:
    """Whole processes on a file of ``texts``: start, import, load, run, write ``.npy``. Each
    row's command runs ``repeats`` times, rows alternating; the median wall time counts, and the
    ``.npy`` it wrote is compared with the fidelity reference."""
    import subprocess
    import sys
    import tempfile

    from tfbert.checkpoint import find_checkpoint
    from tfbert.predict.measure import process_seconds

    results = {r["backend"]: r for r in report.rows}
    tokens = next((r["real_tokens"] for r in report.rows if "real_tokens" in r), None)
    with tempfile.TemporaryDirectory(prefix="tfbert-bench-") as tmp:
        source = os.path.join(tmp, "texts.txt")
        with open(source, "w", encoding="utf-8") as f:
            f.write("\n".join(texts) + "\n")
        commands, outputs = {}, {}
        for row in rows:
            outputs[row] = os.path.join(tmp, f"{row}.npy")
            if row == "process-tfbert-int8":
                commands[row] = [sys.executable, "-m", "tfbert.predict", f"--model={exports['tflite-int8']}",
                                 f"--input={source}", f"--output={outputs[row]}", "--noprogress",
                                 f"--batch_size={batch_size}", f"--max_length={max_length}",
                                 f"--num_threads={num_threads}"]
            else:
                tokenizer = os.path.join(find_checkpoint(None).root, "tokenizer.json")
                commands[row] = [sys.executable, "-c", _PEER_PROCESS, source, outputs[row], exports[row], tokenizer,
                                 str(batch_size), str(max_length), str(num_threads)]
        if not commands:
            return
        progress(f"timing whole processes, {repeats} each, alternating: {', '.join(commands)}")
        try:
            seconds = process_seconds(commands, repeats=repeats)
        except subprocess.CalledProcessError as e:
            lines = (e.stderr or b"").decode(errors="replace").strip().splitlines()
            for row in commands:
                results[row]["status"] = f"error: exit {e.returncode}: {lines[-1] if lines else ''}"[:300]
            return
        for row, wall in seconds.items():
            result = results[row]
            embeddings = np.load(outputs[row])
            result.update({"seconds": wall, "texts_per_s": len(texts) / wall, "status": "ok",
                           "process_repeats": repeats, "command": " ".join(commands[row][:3]) + " ..."})
            if tokens is not None:
                result["real_tokens"], result["real_tokens_per_s"] = tokens, tokens / wall
            if reference is not None and embeddings.shape == reference.shape:
                result.update(fidelity(reference, embeddings))
            elif embeddings.shape[0] != len(texts):
                result["status"] = f"error: wrote {embeddings.shape[0]} rows for {len(texts)} texts"
            progress(f"{row}: {wall:.2f} s median wall time for {len(texts)} texts")
    write_results(report, output_dir)


# The lean ONNX Runtime peer as its own process: only numpy, onnxruntime and tokenizers load.
_PEER_PROCESS = ("import sys; from tfbert.benchmark.runners import embed_file; a = sys.argv[1:]; "
                 "embed_file(*a[:4], batch_size=int(a[4]), max_length=int(a[5]), num_threads=int(a[6]))")


def _measure_row(row: str, result: dict, texts: list[str], *, model_path: str | None, exports: dict[str, str],
                 batch_size: int, max_length: int, num_threads: int, latency_samples: int,
                 latency_budget_s: float, progress: Progress) -> tuple[np.ndarray, Runner]:
    with measure.RssSampler() as rss:
        progress(f"{row}: loading")
        start = time.perf_counter()
        runner = make_runner(row, model_path=model_path, exports=exports, batch_size=batch_size,
                             max_length=max_length, num_threads=num_threads)
        result["load_s"] = time.perf_counter() - start
        progress(f"{row}: warming up")
        start = time.perf_counter()
        runner.embed(texts if row == "keras-xla" else texts[:2 * batch_size])
        result["warmup_s"] = time.perf_counter() - start
        progress(f"{row}: timing {len(texts)} texts")
        start = time.perf_counter()
        embeddings = runner.embed(texts)
        seconds = time.perf_counter() - start
        progress(f"{row}: timing up to {latency_samples} single-text calls ({runner.latency_path}, "
                 f"at most {latency_budget_s:.0f} s)")
        for text in texts[:min(10, latency_samples)]:  # warm-up: first calls trace / compile per length
            runner.embed_one(text)
        samples: list[float] = []
        budget_end = time.perf_counter() + latency_budget_s
        for i in range(latency_samples):
            t0 = time.perf_counter()
            runner.embed_one(texts[i % len(texts)])
            samples.append(time.perf_counter() - t0)
            if t0 > budget_end:
                break
    result["pass_seconds"] = [seconds]
    result["real_tokens"] = runner.count_tokens(texts)
    result["latency_p50_ms"], result["latency_p95_ms"] = measure.latency_ms(samples)
    result["latency_samples"], result["latency_path"] = len(samples), runner.latency_path
    result["peak_rss_mib"], result["rss_growth_mib"] = rss.peak_mib, rss.growth_mib
    if embeddings.shape[0] != len(texts):
        raise RuntimeError(f"{row} returned {embeddings.shape[0]} rows for {len(texts)} texts")
    return embeddings, runner


def _interleaved_passes(report: Report, runners: dict[str, Runner], texts: list[str], rounds: int,
                        output_dir: str, num_threads: int, progress: Progress) -> None:
    """More timed passes, in rounds over every live row (order reversed each round), so load from
    other processes on the machine hits every row alike; the fastest pass of a row counts. The
    GEMM peak is measured again each round and the highest counts, for the same reason."""
    results = {r["backend"]: r for r in report.rows}
    summary = report.summary
    for i in range(rounds):
        order = list(runners)[::-1] if i % 2 == 0 else list(runners)
        progress(f"round {i + 2} of {rounds + 1}: GEMM peak again, then one more timed pass of {', '.join(order)}")
        gemm = measure.gemm_peak_gflops(num_threads=num_threads)
        summary["gemm_measurements_gflops"].append(gemm)
        summary["gemm_peak_gflops"] = max(summary["gemm_peak_gflops"], gemm["peak"])
        if "mflop_per_token" in summary:
            summary["compute_limit_tokens_per_s"] = summary["gemm_peak_gflops"] * 1e3 / summary["mflop_per_token"]
        for row in order:
            start = time.perf_counter()
            runners[row].embed(texts)
            results[row]["pass_seconds"].append(time.perf_counter() - start)
        for row in runners:
            _throughput(report, results[row], texts)
        write_results(report, output_dir)


def _summarize(report: Report, config: dict, result: dict, texts: list[str]) -> None:
    """Summary figures that need a token count: FLOPs per token, compute limit, % of it per row."""
    summary = report.summary
    if "mflop_per_token" not in summary:
        mean_length = result["real_tokens"] / len(texts)
        flops = measure.flops_per_token(config, mean_length)
        summary["mean_real_tokens_per_text"] = mean_length
        summary["mflop_per_token"] = flops / 1e6
        summary["compute_limit_tokens_per_s"] = summary["gemm_peak_gflops"] * 1e9 / flops
    _throughput(report, result, texts)


def _throughput(report: Report, result: dict, texts: list[str]) -> None:
    # The fastest pass: other processes on the machine only ever slow a pass down.
    result["seconds"] = min(result["pass_seconds"])
    result["texts_per_s"] = len(texts) / result["seconds"]
    result["real_tokens_per_s"] = result["real_tokens"] / result["seconds"]
    result["pct_of_compute_limit"] = (100.0 * result["real_tokens_per_s"]
                                      / report.summary["compute_limit_tokens_per_s"])

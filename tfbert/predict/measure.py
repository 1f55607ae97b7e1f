"""Measuring :class:`~tfbert.predict.Predictor`: steady-state throughput, batch-1 latency, fidelity.

Plain functions over Predictors already built, so any script (``scripts/bench_predict.py``)
or the benchmark can reuse them. :func:`compare` runs several Predictors side by side on the
same texts, alternating their order every repeat, so the load other processes put on the
machine hits them all alike and their ratios stay meaningful even when absolute figures do not.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from tfbert.fidelity import fidelity
from tfbert.samples import read_texts, repeat_texts


def sample_texts(count: int = 2000, path: str | None = None) -> list[str]:
    """``count`` short real texts: the lines of ``path`` (default: tfbert's sample dialog lines), repeated.

    Example:
        >>> len(sample_texts(500))
        500
    """
    return repeat_texts(read_texts(path), count)


def real_tokens(predictor, texts: list[str]) -> int:
    """Non-padding tokens the Predictor's tokenizer makes of ``texts`` (with [CLS]/[SEP], truncated)."""
    total = 0
    for start in range(0, len(texts), 256):
        ids = predictor.tokenizer.tokenize_numpy(texts[start:start + 256], predictor.max_length)
        total += int(ids["attention_mask"].sum())
    return total


def time_predict(predictor, texts: list[str]) -> tuple[float, dict[str, np.ndarray]]:
    """Seconds for one :meth:`~tfbert.predict.Predictor.predict` over ``texts``, and its outputs."""
    start = time.perf_counter()
    out = predictor.predict(texts)
    return time.perf_counter() - start, out


def batch1_latencies(predictor, texts: list[str], samples: int = 200, warmup: int = 10) -> np.ndarray:
    """Seconds per :meth:`~tfbert.predict.Predictor.predict_one` call (tokenization included), one per text."""
    for text in texts[:warmup]:
        predictor.predict_one(text)
    times = np.empty(samples)
    for i in range(samples):
        text = texts[i % len(texts)]
        start = time.perf_counter()
        predictor.predict_one(text)
        times[i] = time.perf_counter() - start
    return times


def compare(predictors: dict[str, Any], texts: list[str], *, reference: str | None = None, repeats: int = 3,
            latency_samples: int = 200) -> list[dict[str, Any]]:
    """Throughput, batch-1 latency and fidelity of several Predictors, measured side by side.

    Each Predictor first runs ``texts`` once (warm-up: tracing, XLA compilation, tf.data start),
    then ``repeats`` timed passes, the Predictors alternating in forward and reverse order so
    drift in the machine's load is shared; the median pass counts. Batch-1 latency is measured
    the same way, interleaved in rounds of 20 calls.

    Args:
        predictors: name → :class:`~tfbert.predict.Predictor` (task ``embed``).
        texts: the texts; real tokens are counted with each Predictor's own tokenizer.
        reference: the name whose embeddings the others' cosine is computed against (default:
            the first).
        repeats: timed passes per Predictor.
        latency_samples: batch-1 calls per Predictor (0 skips latency).

    Returns:
        One dict per Predictor: ``name``, ``backend``, ``texts_per_s``, ``real_tokens_per_s``,
        ``mean_real_tokens``, ``batch1_p50_ms``, ``batch1_p95_ms``, ``cosine_mean``, ``cosine_min``.

    Example:
        >>> rows = compare({"int8": Predictor("model_int8.tflite"),  # doctest: +SKIP
        ...                 "fp32": Predictor("model_none.tflite")}, sample_texts(), reference="fp32")
    """
    names = list(predictors)
    reference = reference or names[0]
    outputs, seconds, tokens = {}, {n: [] for n in names}, {}
    for name in names:
        tokens[name] = real_tokens(predictors[name], texts)
        outputs[name] = predictors[name].predict(texts)["sentence_embedding"]
    for rep in range(repeats):
        for name in names if rep % 2 == 0 else names[::-1]:
            seconds[name].append(time_predict(predictors[name], texts)[0])
    latencies: dict[str, list[np.ndarray]] = {n: [] for n in names}
    rounds = -(-latency_samples // 20) if latency_samples else 0
    for rnd in range(rounds):
        for name in names if rnd % 2 == 0 else names[::-1]:
            chunk = [texts[(rnd * 20 + i) % len(texts)] for i in range(20)]
            latencies[name].append(batch1_latencies(predictors[name], chunk, 20, warmup=2 if rnd else 10))
    rows = []
    for name in names:
        best = float(np.median(seconds[name]))
        row = {"name": name, "backend": predictors[name].backend,
               "texts_per_s": round(len(texts) / best, 1), "real_tokens_per_s": round(tokens[name] / best),
               "mean_real_tokens": round(tokens[name] / len(texts), 2)}
        if latencies[name]:
            times = np.concatenate(latencies[name]) * 1e3
            row["batch1_p50_ms"] = round(float(np.percentile(times, 50)), 3)
            row["batch1_p95_ms"] = round(float(np.percentile(times, 95)), 3)
        scores = fidelity(outputs[reference], outputs[name])
        row.update({k: round(scores[k], 6) for k in ("cosine_mean", "cosine_min")})
        rows.append(row)
    return rows


def process_seconds(commands: dict[str, list[str]], repeats: int = 2) -> dict[str, float]:
    """Median wall seconds of whole processes (start, load, run, exit), alternated like :func:`compare`.

    Example:
        >>> process_seconds({"int8": [sys.executable, "-m", "tfbert.predict", "--model=m.tflite",  # doctest: +SKIP
        ...                           "--input=in.txt", "--output=out.npy"]})
    """
    import subprocess

    times: dict[str, list[float]] = {k: [] for k in commands}
    names = list(commands)
    for rep in range(repeats):
        for name in names if rep % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            subprocess.run(commands[name], check=True, capture_output=True)
            times[name].append(time.perf_counter() - start)
    return {k: round(float(np.median(v)), 2) for k, v in times.items()}

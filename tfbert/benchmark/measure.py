"""What the benchmark measures with: the machine's GEMM peak, the model's FLOPs, RSS, latency, fidelity.

Nothing here imports TensorFlow at module level.
"""

from __future__ import annotations

import os
import platform
import threading
import time
from typing import Any

import numpy as np


def gemm_peak_gflops(size: int = 1536, trials: int = 5, per_trial: int = 4, num_threads: int = 2
                     ) -> dict[str, float]:
    """The machine's fp32 matrix-multiply peak in GFLOP/s, by TensorFlow's and by LiteRT's kernels.

    Returns ``{"tensorflow": ..., "litert": ..., "peak": max of both}``: TensorFlow's matmul
    (its thread settings apply, see ``configure_runtime``) and a LiteRT model of
    fully-connected layers (XNNPACK, ``num_threads``) — the two kernel libraries the fp32 paths
    run on, so neither path can look faster than the "limit". Each is the best of ``trials``
    chains of ``per_trial`` square ``size`` x ``size`` products (best, because other
    processes on the machine only ever slow a run down).
    """
    from tfbert.tf import import_tensorflow

    tf = import_tensorflow()
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32)
    weights = [(rng.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32) for _ in range(per_trial)]

    def chain(out):
        # Each product feeds the next: identical products would be merged by Grappler's
        # common-subexpression elimination. The 1/sqrt(n) scale keeps values finite.
        for w in weights:
            out = tf.matmul(out, w)
        return out

    def best_seconds(run) -> float:
        run()
        best = float("inf")
        for _ in range(trials):
            start = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - start)
        return best

    flops = 2.0 * size**3 * per_trial
    graph = tf.function(chain, input_signature=[tf.TensorSpec([size, size], tf.float32)])
    result = {"tensorflow": flops / best_seconds(lambda: graph(x).numpy()) / 1e9}
    from ai_edge_litert.interpreter import Interpreter

    converter = tf.lite.TFLiteConverter.from_concrete_functions([graph.get_concrete_function()], graph)
    interpreter = Interpreter(model_content=converter.convert(), num_threads=num_threads)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    result["litert"] = flops / best_seconds(interpreter.invoke) / 1e9
    result["peak"] = max(result["tensorflow"], result["litert"])
    return result


def flops_per_token(config: dict, mean_length: float) -> float:
    """Multiply-add FLOPs the encoder spends per real token (embedding lookups and pooling excluded).

    Per layer: the Q, K, V and output projections (4 h²), the feed-forward pair (2 h i),
    and attention scores plus the weighted sum over ``mean_length`` keys (2 h L); each
    multiply-add is 2 FLOPs.

    Example:
        >>> round(flops_per_token({"hidden_size": 384, "intermediate_size": 1536,
        ...                        "num_hidden_layers": 6}, 17) / 1e6, 1)
        21.4
    """
    h, i, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    return 2.0 * layers * (4 * h * h + 2 * h * i + 2 * h * mean_length)


class RssSampler:
    """Peak resident memory of this process while a block runs, sampled on a thread.

    ``start_mib`` is the RSS when the block starts; ``peak_mib`` the highest sample. Memory
    a backend frees back to its allocator but not to the OS stays counted in later rows'
    start, so ``growth_mib = peak - start`` is what a row added on top of what was resident.

    Example:
        >>> with RssSampler() as rss:
        ...     block = bytearray(50 * 2**20)
        >>> rss.growth_mib > 40
        True
    """

    def __init__(self, interval: float = 0.01) -> None:
        import psutil

        self._process = psutil.Process()
        self.interval = interval
        self.start_mib = self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _rss(self) -> float:
        return self._process.memory_info().rss / 2**20

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mib = max(self.peak_mib, self._rss())

    def __enter__(self) -> RssSampler:
        self.start_mib = self.peak_mib = self._rss()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_mib = max(self.peak_mib, self._rss())

    @property
    def growth_mib(self) -> float:
        return self.peak_mib - self.start_mib


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc ``malloc_trim``), so memory a
    finished step freed does not sit in the next row's RSS."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    libc = ctypes.util.find_library("c")
    if libc:
        try:
            ctypes.CDLL(libc).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass


def latency_ms(samples: list[float]) -> tuple[float, float]:
    """(p50, p95) in milliseconds of durations given in seconds."""
    values = np.asarray(samples, dtype=np.float64) * 1e3
    return float(np.percentile(values, 50)), float(np.percentile(values, 95))


def machine_info() -> dict[str, Any]:
    """CPU model, core count and SIMD flags that matter for the kernels, plus the load average."""
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name") and model in ("unknown", "", "x86_64"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16") if f in flags]
    return {"cpu": model, "cpus": os.cpu_count(), "simd": " ".join(simd),
            "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}

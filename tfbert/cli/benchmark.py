"""``python -m tfbert.benchmark``: every backend and quantization on the same texts, in one process.

Writes ``benchmark.json``, ``benchmark.md`` and ``benchmark.png`` into ``--output_dir`` (after
every row, so an interrupted run keeps what it measured) and prints the table.
"""

from __future__ import annotations

import importlib.util
import os

from absl import flags

from tfbert.benchmark.runners import ROWS
from tfbert.cli import common

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Checkpoint directory (default: the embedded all-MiniLM-L6-v2).")
flags.DEFINE_string("input", None, "Text file, one text per line (default: tfbert's built-in real sentences).")
flags.DEFINE_integer("num_texts", 2000, "Texts per run; the input is repeated in order to reach it.", lower_bound=1)
flags.DEFINE_integer("batch_size", 32, "Texts per batch.", lower_bound=1)
flags.DEFINE_integer("max_length", 128, "Truncation length in tokens (the padded peer pads to it).", lower_bound=3)
flags.DEFINE_integer("num_threads", 2, "Threads for TensorFlow (intra- and inter-op), LiteRT and ONNX Runtime.",
                     lower_bound=1)
flags.DEFINE_string("backends", "all", f"Comma list of rows to run, or all: {', '.join(ROWS)}.")
flags.DEFINE_string("output_dir", os.path.join("benchmarks", "results"), "Where benchmark.{json,md,png} go.")
flags.DEFINE_string("work_dir", None, "Cache of the SavedModel / .tflite exports, reused across runs "
                    "(default: benchmark/ in tfbert's cache, $TFBERT_CACHE or ~/.cache/tfbert).")
flags.DEFINE_string("exports_dir", None, "Use the SavedModel / model_<quantization>.tflite files found under "
                    "this directory (python -m tfbert.export output) instead of exporting.")
flags.DEFINE_integer("repeats", 3, "Timed passes over all texts per row (one after its warm-up, then rounds "
                     "over all rows, alternating order); the fastest counts.", lower_bound=1)
flags.DEFINE_integer("latency_samples", 200, "Single-text calls timed per row for p50/p95.", lower_bound=1)
flags.DEFINE_float("latency_seconds", 60.0, "Stop timing single-text calls of a row after this long.",
                   lower_bound=0.0)


_progress = common.progress_writer("benchmark")


def _default_work_dir() -> str:
    import tempfile

    from tfbert.cache import cache_dir

    return cache_dir("benchmark") or os.path.join(tempfile.gettempdir(), "tfbert-benchmark")


def main(argv: list[str]) -> int:
    from tfbert.benchmark import parse_rows, run_benchmark
    from tfbert.benchmark.results import display
    from tfbert.errors import BadInputError
    from tfbert.samples import read_texts, repeat_texts

    rows = parse_rows(FLAGS.backends)
    missing = [p for p in ("matplotlib", "psutil") if importlib.util.find_spec(p) is None]
    if missing:
        raise BadInputError("the benchmark needs packages that are not installed", where="environment",
                            actual=", ".join(missing), fix="pip install 'tfbert[bench]'")
    if FLAGS.exports_dir and not os.path.isdir(FLAGS.exports_dir):
        raise BadInputError("no such directory", where=f"--exports_dir={FLAGS.exports_dir}",
                            fix="pass the --output_dir of python -m tfbert.export, or leave it out")
    texts = repeat_texts(read_texts(FLAGS.input), FLAGS.num_texts)
    common.quiet_tensorflow()
    report = run_benchmark(texts, rows=rows, output_dir=FLAGS.output_dir, work_dir=FLAGS.work_dir or
                           _default_work_dir(), model_path=FLAGS.model, exports_dir=FLAGS.exports_dir,
                           batch_size=FLAGS.batch_size, max_length=FLAGS.max_length, num_threads=FLAGS.num_threads,
                           repeats=FLAGS.repeats, latency_samples=FLAGS.latency_samples,
                           latency_budget_s=FLAGS.latency_seconds, progress=_progress)
    print(display(report).to_table())
    _progress(f"wrote {', '.join(os.path.join(FLAGS.output_dir, f'benchmark.{e}') for e in ('json', 'md', 'png'))}")
    return 0


def run() -> None:
    common.run(main, "benchmark")

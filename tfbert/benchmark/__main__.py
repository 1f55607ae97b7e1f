"""Benchmark every backend and quantization on the same texts; JSON, Markdown and a PNG plot.

Usage: python -m tfbert.benchmark [--model=PATH] [--input=FILE] [--num_texts=2000] [--batch_size=32]
       [--num_threads=2] [--backends=keras-graph,tflite-int8,...] [--output_dir=benchmarks/results]
       [--work_dir=~/.cache/tfbert/benchmark] [--exports_dir=DIR] [--repeats=3] [--latency_samples=200]
       [--latency_seconds=60]
"""

from absl import flags

from tfbert.cli import benchmark as cli
from tfbert.cli import common

flags.adopt_module_key_flags(cli)
flags.adopt_module_key_flags(common)

if __name__ == "__main__":
    cli.run()

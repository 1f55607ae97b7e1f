"""``python -m tfbert.predict``: batched inference over a file of texts, with any backend.

Writes ``.npy`` (an array: sentence embeddings, or probabilities for classify) or ``.jsonl``
(one object per input text, in input order), through a temporary sibling renamed into place.
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags

from tfbert.cli import common

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Checkpoint directory, exported SavedModel version directory or .tflite file "
                    "(default: the embedded all-MiniLM-L6-v2).")
flags.DEFINE_string("input", None, "Input texts: .txt (one per line), .jsonl, .csv/.tsv or .tfrecord.")
flags.DEFINE_string("output", None, "Output file: .npy (arrays) or .jsonl (one object per input).")
flags.DEFINE_enum("task", "embed", ["embed", "classify", "fill_mask"], "What to compute.")
flags.DEFINE_enum("backend", "auto", ["auto", "keras-eager", "keras-graph", "keras-xla", "savedmodel", "tflite"],
                  "How to run the model (auto: from the --model path).")
flags.DEFINE_integer("batch_size", 32, "Texts per batch.", lower_bound=1)
flags.DEFINE_integer("max_length", 128, "Truncation length in tokens.", lower_bound=3)
flags.DEFINE_string("input_format", None, "txt | jsonl | csv | tsv | tfrecord (default: from the extension).")
flags.DEFINE_string("text_field", "text", "JSONL key / TFRecord bytes feature holding the text.")
flags.DEFINE_string("text_column", "text", "CSV/TSV header of the text column.")
flags.DEFINE_enum("on_bad_line", "skip", ["skip", "error"], "Skip bad input lines with a warning, or stop.")
flags.DEFINE_string("vocab", None, "vocab.txt for a .tflite model (default: next to it, else the embedded "
                    "MiniLM's).")
flags.DEFINE_integer("num_threads", 2, "TFLite interpreter threads.", lower_bound=1)
flags.DEFINE_boolean("progress", True, "Print a progress line on stderr about every second.")


def _stderr(line: str) -> None:
    sys.stderr.write(f"[tfbert.predict] {line}\n")
    sys.stderr.flush()


def _record(task: str, out: dict, row: int, mask_id: int | None) -> dict:
    """One JSON object for output row ``row`` (fill_mask: the candidates at each [MASK])."""
    if task == "embed":
        return {"index": row, "sentence_embedding": out["sentence_embedding"][row].tolist()}
    if task == "classify":
        return {"index": row, "label": str(out["labels"][row]),
                "score": float(out["probabilities"][row, out["label_ids"][row]])}
    predictions = []
    for position, token_id in enumerate(out["input_ids"][row]):
        if token_id == mask_id:
            predictions.append({"position": position,
                                "tokens": [str(t) for t in out["top_k_tokens"][row, position]],
                                "scores": [float(p) for p in out["top_k_probabilities"][row, position]]})
    return {"index": row, "masks": predictions}



def write_output(path: str, task: str, out: dict, mask_id: int | None = None) -> None:
    """Write ``out`` (rows in input order) to ``path`` through a temporary sibling, then rename."""
    import numpy as np

    from tfbert.errors import BadInputError

    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise BadInputError("the output directory does not exist", where=directory,
                            fix="create it first or pass --output in an existing directory")
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        if path.endswith(".npy"):
            key = {"embed": "sentence_embedding", "classify": "probabilities", "fill_mask": "top_k_ids"}[task]
            with open(tmp, "wb") as f:
                np.save(f, out[key])
        else:
            rows = len(next(iter(out.values())))
            with open(tmp, "w", encoding="utf-8") as f:
                for row in range(rows):
                    f.write(json.dumps(_record(task, out, row, mask_id), ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        sys.stderr.write(f"tfbert.predict: error: unexpected arguments {argv[1:]} — fix: use --flags only\n")
        return 2
    from tfbert.errors import BadInputError

    for name in ("input", "output"):
        if not getattr(FLAGS, name):
            raise BadInputError("is required", where=f"--{name}", fix=f"pass --{name}=FILE")
    if not os.path.isfile(FLAGS.input):
        raise BadInputError("no such input file", where=FLAGS.input, fix="pass --input=FILE naming an existing file")
    if not FLAGS.output.endswith((".npy", ".jsonl")):
        raise BadInputError("unknown output format", where=FLAGS.output, expected=".npy or .jsonl",
                            actual=os.path.splitext(FLAGS.output)[1] or "no extension",
                            fix="name the output file *.npy or *.jsonl")
    common.quiet_tensorflow()
    from tfbert.predict import Predictor, Progress, count_records, text_dataset

    predictor = Predictor(FLAGS.model, task=FLAGS.task, backend=FLAGS.backend, batch_size=FLAGS.batch_size,
                          max_length=FLAGS.max_length, num_threads=FLAGS.num_threads, vocab_path=FLAGS.vocab)
    dataset = text_dataset(FLAGS.input, fmt=FLAGS.input_format, text_field=FLAGS.text_field,
                           text_column=FLAGS.text_column, on_bad_line=FLAGS.on_bad_line)
    progress = Progress(count_records(FLAGS.input, FLAGS.input_format), _stderr) if FLAGS.progress else None
    out = predictor.predict(dataset, progress=progress)
    stats = dataset.tfbert_stats
    if progress is not None:
        progress(stats.texts, final=True)
    if stats.texts == 0:
        raise BadInputError("the input holds no usable text", where=FLAGS.input,
                            actual=f"{len(stats.bad_lines)} bad lines", fix="check --input_format and --text_field")
    write_output(FLAGS.output, FLAGS.task, out, predictor.tokenizer.mask_id)
    skipped = f", skipped {len(stats.bad_lines)} bad lines" if stats.bad_lines else ""
    _stderr(f"wrote {stats.texts} rows to {FLAGS.output} ({predictor.backend}){skipped}")
    return 0


def run() -> None:
    common.run(main)

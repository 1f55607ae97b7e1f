"""``python -m tfbert.doctor``: every check on a checkpoint, before anything is built.

Prints a table of checks (or JSON with ``--json``) and exits 0 when healthy, 1 with
warnings only, 2 with errors.
"""

from __future__ import annotations

import sys

from absl import flags

from tfbert.cli import common

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Checkpoint directory, TF1 checkpoint prefix, exported SavedModel "
                    "directory or .tflite file (default: the embedded all-MiniLM-L6-v2).")
flags.DEFINE_enum("task", "embed", ["embed", "classify", "fill_mask", "token_classify", "question_answering"],
                  "The model head you will load (token_classify: a tag per token, TFBertForTokenClassification; "
                  "question_answering: HF BertForQuestionAnswering, qa_outputs.*).")
flags.DEFINE_integer("batch_size", 32, "Batch size you plan to run, for the memory check.", lower_bound=1)
flags.DEFINE_integer("seq_length", None, "Sequence length you plan to run, for the config and memory checks "
                     "(default: the shorter of 128 and the model's limit).", lower_bound=1)
flags.DEFINE_enum("dtype", "float32", ["float32", "float16", "bfloat16", "mixed_float16", "int8"],
                  "Precision you plan to run in, for the memory check.")
flags.DEFINE_boolean("training", False, "Check memory for fine-tuning rather than inference.")
flags.DEFINE_boolean("scan", True, "Scan every weight for NaN/Inf and flipped bits (reads the whole file).")
flags.DEFINE_boolean("allow_pickle", False, "Allow reading pytorch_model.bin with a weights-only unpickler.")
flags.DEFINE_boolean("json", False, "Print the findings as JSON.")


def main(argv: list[str]) -> int:
    from tfbert.diagnose import diagnose

    with diagnose(FLAGS.model, FLAGS.task, batch_size=FLAGS.batch_size, seq_length=FLAGS.seq_length,
                  dtype=FLAGS.dtype, training=FLAGS.training, scan_values=FLAGS.scan,
                  allow_pickle=FLAGS.allow_pickle) as diagnosis:
        report = diagnosis.report()
    sys.stdout.write(report.to_json() + "\n" if FLAGS.json else report.to_table())
    return diagnosis.exit_code


def run() -> None:
    common.run(main, "doctor")

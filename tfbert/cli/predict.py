"""``python -m tfbert.predict``: batched inference over a file of texts, with any backend.

Writes ``.npy`` (an array: sentence embeddings, or probabilities for classify) or ``.jsonl``
(one object per input text, in input order). Rows are streamed to a temporary sibling as
batches finish (results are never all in memory), which is renamed into place at the end.
With a token-input ``.tflite`` model nothing here imports TensorFlow (LiteRT, numpy and
Hugging Face ``tokenizers`` only), so it runs on a machine with only those installed.
"""

from __future__ import annotations

import logging
import os
import sys

from absl import flags

from tfbert.cli import common

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Checkpoint directory, exported SavedModel version directory or .tflite file "
                    "(default: the embedded all-MiniLM-L6-v2).")
flags.DEFINE_string("input", None, "Input texts: .txt (one per line), .jsonl, .csv/.tsv or .tfrecord.")
flags.DEFINE_string("output", None, "Output file: .npy (arrays) or .jsonl (one object per input).")
flags.DEFINE_enum("task", "embed", ["embed", "classify", "fill_mask", "token_classify", "question_answering"],
                  "What to compute. "
                  "token_classify: the entities of each text (JSONL: word, start, end — character offsets into the "
                  "text —, label, score) from a fine-tuned checkpoint or an exported SavedModel (grouped in the "
                  "graph as exported) or .tflite (grouped here with --aggregation); a text longer than --max_length "
                  "tokens is truncated. question_answering: --input is JSONL {question, context}, --output JSONL "
                  "{answer, start, end, score} (character offsets in the context), from a fine-tuned checkpoint or "
                  "an exported SavedModel or .tflite.")
flags.DEFINE_enum("aggregation", None, ["simple", "first", "max"], "token_classify: how tokens become entities "
                  "(Hugging Face's pipeline strategies; default: the SavedModel's, else first).")
flags.DEFINE_integer("doc_stride", None, "question_answering with a .tflite or a checkpoint: tokens shared by "
                     "consecutive windows of --max_length (default min(max_length // 2, 128)).", lower_bound=0)
flags.DEFINE_integer("max_answer_length", 15, "question_answering with a .tflite or a checkpoint: longest answer, "
                     "in tokens.", lower_bound=1)
flags.DEFINE_float("null_score_threshold", 0.0, "question_answering with a .tflite or a checkpoint: empty answer "
                   "when the null score exceeds the best span's by more than this (a SavedModel uses the one "
                   "chosen at export).")
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
flags.DEFINE_enum("runner", None, ["DirectRunner", "DataflowRunner", "FlinkRunner", "SparkRunner"],
                  "Run on Apache Beam (pip install tfbert[beam]): --input is then a file or glob, --output a directory "
                  "of shards, and other --name=value options are Beam pipeline options (docs/beam.md).")
flags.DEFINE_boolean("overwrite", False, "With --runner: replace an existing --output directory.")


_stderr = common.progress_writer("predict")


def main(argv: list[str]) -> int:
    from tfbert.errors import BadInputError

    for name in ("input", "output"):
        if not getattr(FLAGS, name):
            raise BadInputError("is required", where=f"--{name}", fix=f"pass --{name}=FILE")
    if FLAGS.runner:
        return _run_on_beam()
    if not os.path.isfile(FLAGS.input):
        raise BadInputError("no such input file", where=FLAGS.input, fix="pass --input=FILE naming an existing file")
    if FLAGS.task == "question_answering":
        return _question_answering()
    from tfbert.predict.output import RowWriter

    with RowWriter(FLAGS.output, FLAGS.task, max_length=FLAGS.max_length) as writer:  # checks --output first
        common.quiet_tensorflow()
        from tfbert.predict import Predictor, Progress, TextFile, count_records

        if FLAGS.task == "token_classify":
            from tfbert.predict.entities import EntityPredictor

            predictor = EntityPredictor(FLAGS.model, batch_size=FLAGS.batch_size, max_length=FLAGS.max_length,
                                        aggregation=FLAGS.aggregation, num_threads=FLAGS.num_threads,
                                        vocab_path=FLAGS.vocab)
        else:
            predictor = Predictor(FLAGS.model, task=FLAGS.task, backend=FLAGS.backend, batch_size=FLAGS.batch_size,
                                  max_length=FLAGS.max_length, num_threads=FLAGS.num_threads, vocab_path=FLAGS.vocab)
        writer.mask_id = predictor.tokenizer.mask_id
        source = TextFile(FLAGS.input, fmt=FLAGS.input_format, text_field=FLAGS.text_field,
                          text_column=FLAGS.text_column, on_bad_line=FLAGS.on_bad_line)
        progress = Progress(count_records(FLAGS.input, FLAGS.input_format), _stderr) if FLAGS.progress else None
        for indices, out in predictor.ordered_batches(source, progress=progress):
            writer.write(indices, out)
        stats = source.stats
        if progress is not None:
            progress(stats.texts, final=True)
        if stats.texts == 0:
            raise BadInputError("the input holds no usable text", where=FLAGS.input,
                                actual=f"{len(stats.bad_lines)} bad lines",
                                fix="check --input_format and --text_field")
        writer.commit()
    skipped = f", skipped {len(stats.bad_lines)} bad lines" if stats.bad_lines else ""
    _stderr(f"wrote {stats.texts} rows to {FLAGS.output} ({predictor.backend}){skipped}")
    return 0


def _question_answering() -> int:
    from tfbert.predict import question_answering as qa_predict

    questions, contexts = qa_predict.read_questions(FLAGS.input)
    if not FLAGS.model or not (FLAGS.model.endswith(".tflite") or os.path.isdir(FLAGS.model)):
        from tfbert.errors import BadInputError

        raise BadInputError("question_answering predicts with a fine-tuned checkpoint or an exported model",
                            where=f"--model={FLAGS.model}",
                            expected="a checkpoint directory, a SavedModel version directory or a .tflite",
                            fix="fine-tune one: python -m tfbert.finetune --task=question_answering")
    common.quiet_tensorflow()
    from tfbert.predict.predictor import resolve_backend

    backend = resolve_backend(FLAGS.model, "auto")
    if backend == "keras-graph":  # a checkpoint directory
        answers = qa_predict.answer_with_checkpoint(
            FLAGS.model, questions, contexts, max_seq_length=FLAGS.max_length, doc_stride=FLAGS.doc_stride,
            max_answer_length=FLAGS.max_answer_length, null_threshold=FLAGS.null_score_threshold,
            batch_size=FLAGS.batch_size)
    elif backend == "tflite":
        answers = qa_predict.answer_with_tflite(
            FLAGS.model, questions, contexts, max_seq_length=FLAGS.max_length, doc_stride=FLAGS.doc_stride,
            max_answer_length=FLAGS.max_answer_length, null_threshold=FLAGS.null_score_threshold,
            batch_size=FLAGS.batch_size, num_threads=FLAGS.num_threads, vocab_path=FLAGS.vocab, source=FLAGS.input)
    else:
        answers = qa_predict.answer_with_saved_model(FLAGS.model, questions, contexts, batch_size=FLAGS.batch_size)
    qa_predict.write_answers(FLAGS.output, answers)
    _stderr(f"wrote {len(answers)} answers to {FLAGS.output}")
    return 0


_pipeline_args: list[str] = []


def _run_on_beam() -> int:
    from tfbert.beam import run_job

    if not FLAGS.verbose:  # a worker's failure is one line, as everywhere in tfbert
        logging.getLogger("apache_beam").setLevel(logging.CRITICAL)
    result = run_job(FLAGS.input, FLAGS.output, runner=FLAGS.runner, pipeline_args=_pipeline_args,
                     model_path=FLAGS.model, task=FLAGS.task, backend=FLAGS.backend, batch_size=FLAGS.batch_size,
                     max_length=FLAGS.max_length, num_threads=FLAGS.num_threads, vocab_path=FLAGS.vocab,
                     input_format=FLAGS.input_format, text_field=FLAGS.text_field, text_column=FLAGS.text_column,
                     overwrite=FLAGS.overwrite, progress=_stderr if FLAGS.progress else None)
    _stderr(f"wrote {result.manifest['rows']} rows and {result.manifest['errors']} errors to {result.output}")
    return 0


def run() -> None:
    if any(arg.startswith("--runner") for arg in sys.argv[1:]):
        # tfbert's flags for absl; every other --name=value is a Beam pipeline option
        known = [arg for arg in sys.argv[1:] if arg.lstrip("-").split("=", 1)[0].removeprefix("no") in FLAGS
                 or arg.lstrip("-").split("=", 1)[0] in FLAGS]
        _pipeline_args[:] = [arg for arg in sys.argv[1:] if arg not in known]
        sys.argv[1:] = known
    common.run(main, "predict")

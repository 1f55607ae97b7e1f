"""``python -m tfbert.export``: a verified TF Serving SavedModel and TFLite models, with a report.

With no flags it exports the embedded all-MiniLM-L6-v2 for sentence embeddings.
"""

from __future__ import annotations

import contextlib
import os
import re

from absl import flags

from tfbert.cli import common

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Checkpoint directory (default: the embedded all-MiniLM-L6-v2).")
flags.DEFINE_string("output_dir", "exported", "Where <name>/<version>/ goes.")
flags.DEFINE_string("name", None, "Model name (default: from the checkpoint directory).")
flags.DEFINE_integer("version", None, "SavedModel version (default: the next free integer).", lower_bound=1)
flags.DEFINE_enum("task", "embed", ["embed", "classify", "fill_mask", "token_classify", "question_answering"],
                  "What the exported model computes. token_classify: the SavedModel's serving_default(text) returns "
                  "word-level entities (entity_word, entity_label, entity_start/entity_end character offsets into the "
                  "text, entity_score, padded per batch; num_entities), its tokenized signature and the TFLite models "
                  "per-token logits. question_answering: serving_default(question, context) -> "
                  "answer, start, end (character offsets in the context), score, contexts longer than "
                  "--max_seq_length split into windows overlapping by --doc_stride; tokenized -> start/end logits.")
flags.DEFINE_enum("aggregation", "first", ["simple", "first", "max"], "token_classify: how tokens become entities, "
                  "as Hugging Face's token-classification pipeline: first (a word takes its first sub-token's tag, "
                  "the one fine-tuning trains), max (its most confident sub-token's), simple (no word fusing: a "
                  "sub-token can start or end an entity).")
flags.DEFINE_integer("doc_stride", None, "question_answering: tokens shared by consecutive windows of a long "
                     "context (default min(max_seq_length // 2, 128), as Hugging Face's pipeline).", lower_bound=0)
flags.DEFINE_integer("max_answer_length", 15, "question_answering: longest answer, in tokens.", lower_bound=1)
flags.DEFINE_float("null_score_threshold", 0.0, "question_answering: answer empty (no answer, SQuAD 2.0) when the "
                   "null score p(start=[CLS]) * p(end=[CLS]) exceeds the best span's score by more than this; 0 is "
                   "Hugging Face's handle_impossible_answer, 1 or more never answers empty.")
flags.DEFINE_boolean("quantize", False, "Also write a TFLite model quantized with --quantization "
                     "(alone: int8).")
flags.DEFINE_enum("quantization", "int8", ["int8", "dynamic", "fp16", "none"],
                  "TFLite quantization: int8 (SmoothQuant; activations quantized per row at run time, not "
                  "full-integer), dynamic-range int8, float16 weights, or fp32.")
flags.DEFINE_string("calibration_data", None, "Text file (one text per line) for int8 calibration "
                    "(default: tfbert's built-in sample of real sentences).")
flags.DEFINE_string("held_out_data", None, "Text file (one text per line) the quantized model is measured and "
                    "gated on, against fp32: texts like the ones it will see (default: every 4th line of "
                    "--calibration_data, held out of calibration; else tfbert's built-in held-out sentences).")
flags.DEFINE_integer("max_seq_length", 128, "Truncation length of the in-graph tokenizer.", lower_bound=2)
flags.DEFINE_integer("top_k", 5, "Fill-mask candidates per position.", lower_bound=1)
flags.DEFINE_boolean("overwrite", False, "Replace an existing version.")
flags.DEFINE_boolean("saved_model", True, "Write the TF Serving SavedModel.")
flags.DEFINE_boolean("tflite_text_input", False, "Also write model_<quantization>_text.tflite, whose input is "
                     "raw text tokenized inside the model (needs tensorflow-text's TFLite ops at run time).")
flags.DEFINE_boolean("tflite_speed", True, "Also convert an fp32 .tflite to time the quantized one against "
                     "(--notflite_speed: a faster export, no speed figure).")
flags.DEFINE_boolean("tflite_mediapipe", True, "Also write model_<quantization>_mediapipe.tflite for MediaPipe "
                     "Tasks' TextEmbedder / TextClassifier (static length --max_seq_length, vocab and labels in "
                     "its metadata; --notflite_mediapipe: one conversion less).")
flags.DEFINE_boolean("allow_accuracy_drop", False, "Publish a quantized model even below the accuracy gate.")
flags.DEFINE_float("min_cosine", 0.99, "Accuracy gate: minimum mean sentence-embedding cosine vs fp32.")
flags.DEFINE_float("min_agreement", 0.99, "Accuracy gate: minimum argmax agreement vs fp32 (classify; "
                   "token_classify: of every real token's label).")


def _default_name(model_path: str | None) -> str:
    if model_path is None:
        return "all-minilm-l6-v2"
    base = os.path.basename(os.path.normpath(model_path)) or "model"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-.") or "model"


_progress = common.progress_writer("export")


def main(argv: list[str]) -> int:
    common.quiet_tensorflow()
    from tfbert.checkpoint import find_checkpoint
    from tfbert.errors import BadInputError
    from tfbert.export import export_tflite, layout, saved_model_export
    from tfbert.model import load
    from tfbert.samples import read_texts, split_texts
    from tfbert.tokenizer import BertTokenizer

    files = find_checkpoint(FLAGS.model)
    name = FLAGS.name or _default_name(FLAGS.model)
    calibration = read_texts(FLAGS.calibration_data) if FLAGS.calibration_data else None
    held_out = read_texts(FLAGS.held_out_data) if FLAGS.held_out_data else None
    if calibration and len(calibration) > 1 and not held_out:
        calibration, held_out = split_texts(calibration)
    _progress(f"loading {files.root} ({FLAGS.task})")
    model = load(files.root, task=FLAGS.task, seq_length=FLAGS.max_seq_length, require_head=True)
    _progress("building the tokenizer")
    tokenizer = BertTokenizer.from_files(files.vocab, files.tokenizer_config)
    saved = lite = None
    model_dir = layout.safe_name(name)
    subdirs = [model_dir] * FLAGS.saved_model + [layout.tflite_dir(model_dir)] * FLAGS.quantize
    if not subdirs:
        raise BadInputError("nothing to export", where="--nosaved_model", fix="add --quantize for TFLite models")
    # One version for every artifact, reserved now (another export into the same model takes the
    # next one) and published when the block ends — all of them, or none if anything fails.
    with layout.reserve(FLAGS.output_dir, subdirs, FLAGS.version, FLAGS.overwrite, _progress) as publication:
        with contextlib.ExitStack() as stack:
            # The SavedModel is verified in a fresh process while the TFLite model is converted.
            pending = stack.enter_context(saved_model_export(
                model, tokenizer, task=FLAGS.task, vocab_file=files.vocab, output_dir=FLAGS.output_dir, name=name,
                max_seq_length=FLAGS.max_seq_length, top_k=FLAGS.top_k, aggregation=FLAGS.aggregation,
                publication=publication, progress=_progress, question_answering={
                    "doc_stride": FLAGS.doc_stride, "max_answer_length": FLAGS.max_answer_length,
                    "null_threshold": FLAGS.null_score_threshold} if FLAGS.task == "question_answering" else None,
            )) if FLAGS.saved_model else None
            if FLAGS.quantize:
                lite = export_tflite(model, tokenizer, task=FLAGS.task, quantization=FLAGS.quantization,
                                     output_dir=FLAGS.output_dir, name=name, max_seq_length=FLAGS.max_seq_length,
                                     calibration_texts=calibration, held_out_texts=held_out,
                                     min_cosine=FLAGS.min_cosine, min_agreement=FLAGS.min_agreement,
                                     allow_accuracy_drop=FLAGS.allow_accuracy_drop,
                                     text_input=FLAGS.tflite_text_input, speed_vs_fp32=FLAGS.tflite_speed,
                                     mediapipe=FLAGS.tflite_mediapipe, checkpoint_files=files,
                                     publication=publication, progress=_progress)
            if pending:
                pending.finish()
    if pending:
        saved = pending.published()
    if saved:
        diffs = ", ".join(f"{k} {v:.1e}" for k, v in saved.max_abs_diff.items())
        print(f"SavedModel  {saved.path}  {saved.size_bytes / 2**20:.1f} MiB  signatures "
              f"{', '.join(saved.signatures)}  verified with TensorFlow's C++ loader on {saved.verified_texts} texts "
              f"(max abs diff {diffs}) and {saved.warmup_requests} warmup requests (max abs diff "
              f"{saved.warmup_max_abs_diff:.1e})  {saved.seconds:.1f} s")
        print(f"TF Serving  {saved.op_audit.summary()}")
    if lite:
        f = lite.fidelity
        agreement = f"  argmax agreement {f['argmax_agreement']:.4f}" if "argmax_agreement" in f else ""
        fp32 = f" (fp32 {lite.fp32_size_bytes / 2**20:.1f})" if lite.fp32_size_bytes else ""
        speed = f"  speed {lite.speedup_vs_fp32:.2f}x fp32" if lite.speedup_vs_fp32 is not None else ""
        print(f"TFLite      {lite.path}  {lite.size_bytes / 2**20:.1f} MiB{fp32}  "
              f"cosine vs fp32 mean {f['cosine_mean']:.5f} min {f['cosine_min']:.5f}  max abs diff "
              f"{f['max_abs_diff']:.2e}{agreement}{speed}  {lite.seconds:.1f} s")
        if lite.text_path:
            print(f"TFLite text {lite.text_path}  same outputs as the token-input model on raw text "
                  f"(max abs diff {f['text_vs_tokens_max_abs_diff']:.1e})")
        if lite.mediapipe:
            mp = lite.mediapipe
            mp_agreement = (f"  argmax agreement {mp.fidelity['argmax_agreement']:.4f}"
                            if "argmax_agreement" in mp.fidelity else "")
            print(f"MediaPipe   {lite.mediapipe_path}  {len(mp.content) / 2**20:.1f} MiB  static length "
                  f"{mp.seq_length}  cosine vs fp32 mean {mp.fidelity['cosine_mean']:.5f} min "
                  f"{mp.fidelity['cosine_min']:.5f}{mp_agreement}  MediaPipe's tokenizer: {mp.tokenizer.summary()}  "
                  f"{mp.seconds:.1f} s")
        print(f"report      {lite.report_paths[1]}")
    return 0


def run() -> None:
    common.run(main, "export")

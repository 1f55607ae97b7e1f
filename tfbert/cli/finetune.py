"""``python -m tfbert.finetune``: fine-tune a BERT checkpoint as a text classifier, a tagger
(``--task=token_classify``), or for extractive question answering (``--task=question_answering``:
SQuAD-style JSONL, scored with exact match and F1).

Writes a tfbert checkpoint directory (config.json with the label names and the pooling,
model.safetensors, vocab, eval report, confusion matrix, SHA256SUMS) that load, doctor, export and
predict accept.

Exit codes: 0 done; 2 refused or failed, nothing written; 3 trained and saved, but the model
learned nothing and --allow_no_learning was not given: a classifier's eval accuracy at most 2 points
above the majority class, a tagger's entity F1 at most 0.02, a question-answering model's exact
match at most 2 points above answering "no answer" to every question.
"""

from __future__ import annotations

from absl import flags

from tfbert.cli import common

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Base checkpoint directory (default: the embedded all-MiniLM-L6-v2).")
flags.DEFINE_enum("task", "classify", ["classify", "token_classify", "question_answering"],
                  "classify: a label per text. token_classify: "
                  "a tag per word (NER and other taggers; --train/--eval are CoNLL-style columns 'word ... tag' with a "
                  "blank line between sentences, or .jsonl {\"text\", \"spans\": [{\"start\", \"end\", \"label\"}]} "
                  "with character offsets, made IOB2 tags; a word's first sub-token carries its tag; the eval report "
                  "has entity precision/recall/F1 with seqeval's rules and token accuracy). question_answering: "
                  "SQuAD-style JSONL {question, context, answers: {text: [...], "
                  "answer_start: [...]}} (empty lists: unanswerable) -> a BertForQuestionAnswering checkpoint, "
                  "long contexts split into windows of --max_length tokens overlapping by --doc_stride; the eval "
                  "report gives SQuAD exact match and F1.")
flags.DEFINE_string("train", None, "Training data: .csv/.tsv (header row) or .jsonl with a text and a label field "
                    "(--task=token_classify: see --task).")
flags.DEFINE_string("eval", None, "Eval data, same format (early stopping and the final report).")
flags.DEFINE_string("text_column", "text", "CSV/TSV header or JSONL key of the text.")
flags.DEFINE_string("label_column", "label", "CSV/TSV header or JSONL key of the label (any strings).")
flags.DEFINE_string("freeze", None, "What not to train: comma-separated embeddings, encoder, encoder:A-B "
                    "(0-based, inclusive), pooler; or all_but_head (embeddings and encoder: only the head trains, "
                    "i.e. the classifier, plus the pooler with --pooling=pooler). Default: train everything.")
flags.DEFINE_enum("pooling", None, ["mean", "cls", "max", "pooler"], "What the classifier reads: the mean, [CLS] or "
                  "max of the token states, or BERT's pooler ([CLS] -> dense -> tanh). Default: the checkpoint's "
                  "(sentence-transformers' 1_Pooling/config.json, e.g. mean for the embedded MiniLM; else pooler). "
                  "Saved in config.json (classifier_pooling); export and predict follow it.")
flags.DEFINE_integer("epochs", 3, "Most epochs to run.", lower_bound=1)
flags.DEFINE_integer("batch_size", 16, "Texts per training step.", lower_bound=1)
flags.DEFINE_integer("max_length", 128, "Truncation length in tokens.", lower_bound=3)
flags.DEFINE_integer("doc_stride", None, "question_answering: tokens shared by consecutive windows of a long "
                     "context (default min(max_length // 2, 128), as Hugging Face's pipeline).", lower_bound=0)
flags.DEFINE_float("learning_rate", None, "Peak learning rate (AdamW). Default: 3e-3 when only the head trains "
                   "(--freeze=all_but_head or embeddings,encoder), 5e-5 when any encoder layer or the embeddings "
                   "train (2e-4 for --task=token_classify and question_answering, whose heads start random; "
                   "measured on MiniLM: BERT-base is usually tuned at 3e-5 to 5e-5 there).", lower_bound=0)
flags.DEFINE_float("weight_decay", 0.01, "AdamW weight decay (not on biases and LayerNorm).", lower_bound=0)
flags.DEFINE_float("warmup_ratio", 0.1, "Share of the steps the learning rate warms up over, then decays linearly "
                   "to 0.", lower_bound=0, upper_bound=0.99)
flags.DEFINE_boolean("mixed_precision", False, "mixed_float16 on a GPU; mixed_bfloat16 on a CPU with native "
                     "bfloat16 (AVX512-BF16/AMX: ~30% less training memory, not faster); refused elsewhere.")
flags.DEFINE_integer("early_stopping_patience", 2, "Stop after this many epochs without a lower eval loss "
                     "(0: never); the best epoch's weights are kept.", lower_bound=0)
flags.DEFINE_boolean("class_weights", False, "Weigh classes inversely to their frequency (imbalanced data).")
flags.DEFINE_integer("seed", 0, "Seed of the head's initialisation, dropout and shuffling.")
flags.DEFINE_string("output_dir", None, "Where the fine-tuned checkpoint directory goes.")
flags.DEFINE_boolean("overwrite", False, "Replace an existing --output_dir.")
flags.DEFINE_boolean("allow_no_learning", False, "Exit 0 with a warning when the model learned nothing (eval "
                     "accuracy at most 2 points above always predicting the most frequent label; for "
                     "token_classify entity F1 at most 0.02; for question_answering exact match at most 2 points "
                     "above answering \"no answer\" to every question). Without it that exits 3, after saving "
                     "the checkpoint and printing the eval report.")


_progress = common.progress_writer("finetune")


def main(argv: list[str]) -> int:
    from tfbert.errors import BadInputError

    for name in ("train", "eval", "output_dir"):
        if not getattr(FLAGS, name):
            raise BadInputError("is required", where=f"--{name}",
                                fix=f"pass --{name}={'DIR' if name == 'output_dir' else 'FILE'}")
    common.quiet_tensorflow()
    if FLAGS.task == "token_classify":
        return _token_classify()
    if FLAGS.task == "question_answering":
        return _question_answering()
    from tfbert.finetune import finetune

    return _run_and_print(lambda: finetune(
        FLAGS.model, FLAGS.train, FLAGS.eval, FLAGS.output_dir, text_column=FLAGS.text_column,
        label_column=FLAGS.label_column, freeze=FLAGS.freeze, pooling=FLAGS.pooling, epochs=FLAGS.epochs,
        batch_size=FLAGS.batch_size, max_length=FLAGS.max_length, learning_rate=FLAGS.learning_rate,
        weight_decay=FLAGS.weight_decay, warmup_ratio=FLAGS.warmup_ratio, mixed_precision=FLAGS.mixed_precision,
        early_stopping_patience=FLAGS.early_stopping_patience, class_weights=FLAGS.class_weights, seed=FLAGS.seed,
        overwrite=FLAGS.overwrite, allow_no_learning=FLAGS.allow_no_learning, progress=_progress), _print_result)


def _run_and_print(train, print_result) -> int:
    """Run ``train()`` and print its result; a model that learned nothing is printed too, then raised (exit 3)."""
    from tfbert.errors import NoLearningError

    try:
        result = train()
    except NoLearningError as e:
        print_result(e.result)
        raise
    print_result(result)
    return 0


def _question_answering() -> int:
    from tfbert.finetune.question_answering import finetune_question_answering

    return _run_and_print(lambda: finetune_question_answering(
        FLAGS.model, FLAGS.train, FLAGS.eval, FLAGS.output_dir, freeze=FLAGS.freeze, epochs=FLAGS.epochs,
        batch_size=FLAGS.batch_size, max_length=FLAGS.max_length, doc_stride=FLAGS.doc_stride,
        learning_rate=FLAGS.learning_rate, weight_decay=FLAGS.weight_decay, warmup_ratio=FLAGS.warmup_ratio,
        early_stopping_patience=FLAGS.early_stopping_patience, seed=FLAGS.seed, overwrite=FLAGS.overwrite,
        allow_no_learning=FLAGS.allow_no_learning, progress=_progress), _print_qa_result)


def _print_qa_result(result) -> None:
    print(result.evaluation.report().to_table())
    _print_run(result)


def _print_result(result) -> None:
    e = result.evaluation
    print(e.report().to_table())
    print(e.confusion_report().to_table())
    _print_run(result, f"{result.train.examples_per_second:.1f} examples/s, ")


def _print_run(result, speed: str = "") -> None:
    """What trained, the speed (``speed``, when given), the best epoch and where the checkpoint went."""
    print(f"trainable parameters {result.trainable_params:,} of {result.total_params:,} (frozen: {result.frozen}); "
          f"{speed}best epoch {result.train.best_epoch} of {result.train.epochs_run}")
    print(f"saved       {result.output_dir}  ({', '.join(result.files)})")


def _token_classify() -> int:
    from tfbert.errors import BadInputError
    from tfbert.finetune.tokens import finetune_tokens

    for name in ("pooling", "class_weights", "text_column", "label_column"):
        if FLAGS[name].present:
            raise BadInputError("applies to text classification only", where=f"--{name}",
                                expected="--task=classify", actual="--task=token_classify",
                                fix=f"drop --{name}: a tagger reads CoNLL columns or JSONL spans")

    return _run_and_print(lambda: finetune_tokens(
        FLAGS.model, FLAGS.train, FLAGS.eval, FLAGS.output_dir, freeze=FLAGS.freeze, epochs=FLAGS.epochs,
        batch_size=FLAGS.batch_size, max_length=FLAGS.max_length, learning_rate=FLAGS.learning_rate,
        weight_decay=FLAGS.weight_decay, warmup_ratio=FLAGS.warmup_ratio, mixed_precision=FLAGS.mixed_precision,
        early_stopping_patience=FLAGS.early_stopping_patience, seed=FLAGS.seed, overwrite=FLAGS.overwrite,
        allow_no_learning=FLAGS.allow_no_learning, progress=_progress), _print_token_result)


def _print_token_result(result) -> None:
    print(result.evaluation.report().to_table())
    _print_run(result, f"{result.train.examples_per_second:.1f} sentences/s, ")


def run() -> None:
    common.run(main, "finetune")

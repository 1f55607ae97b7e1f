"""Fine-tuning for extractive question answering: SQuAD-style JSONL → a ``BertForQuestionAnswering`` checkpoint.

Each record is ``{"question", "context", "answers": {"text": [...], "answer_start": [...]}}``
(SQuAD's fields; empty lists: unanswerable, as in SQuAD 2.0). Contexts are split into windows
with ``doc_stride`` (:mod:`tfbert.tasks.question_answering`) and labelled as Hugging Face's
``run_qa.py`` labels them (the first answer; [CLS] where the window does not hold it or there is
none); the loss is the mean of the start and end cross-entropies, as ``TFBertForQuestionAnswering``'s.
The eval set is scored with SQuAD's exact match and F1 on the answers the span search picks.
Training, freezing, the learning-rate schedule and the publication of the checkpoint are
:mod:`tfbert.finetune`'s.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from collections.abc import Callable

import numpy as np

from tfbert import publish
from tfbert.checkpoint import find_checkpoint
from tfbert.diagnose.config_checks import read_config
from tfbert.diagnose.memory import check_memory
from tfbert.errors import BadInputError, NoLearningError
from tfbert.finetune.evaluate import NO_LEARNING_MARGIN
from tfbert.finetune.run import check_reloaded, raise_or_warn, retry_fix
from tfbert.finetune.tokens import TAGGER_LEARNING_RATE
from tfbert.finetune.train import TrainResult, apply_freeze, fit, learning_rate_for, parameter_counts, parse_freeze
from tfbert.predict.pipeline import read_jsonl_fields
from tfbert.report import ERROR, Report
from tfbert.tasks import question_answering as qa

TASK = "question_answering"
# Default peak learning rate when the encoder trains. The qa_outputs head starts from random values,
# as a tagger's does, and a few thousand questions give a few hundred steps: at the sequence
# classifier's 5e-5 the MiniLM model of scripts/qa_task.py (1,506 questions, 3 epochs) was still
# learning (train loss 0.56, eval exact match 0.849) and answered most held-out questions with
# scores under 0.3, where int8 and float32 disagree; at 2e-4, the tagger's rate, it reached 0.899
# (docs/finetune.md).
QA_LEARNING_RATE = TAGGER_LEARNING_RATE


@dataclasses.dataclass
class QAExamples:
    """The records of one SQuAD-style file: questions, contexts and answers (None: unanswerable)."""

    path: str
    questions: list[str]
    contexts: list[str]
    answers: list[tuple[int, int] | None]
    golds: list[list[str]]

    def __len__(self) -> int:
        return len(self.questions)


def read_squad(path: str | os.PathLike) -> QAExamples:
    """Read SQuAD-style JSONL; every record must be usable.

    Raises:
        BadInputError: no such file, a line that is not a JSON object, a missing or empty question
            or context, ``answers`` not ``{"text": [...], "answer_start": [...]}`` of the same
            length, or an ``answer_start`` where the context does not hold the answer's text — the
            line, what was expected and what was found.

    Example:
        >>> data = read_squad("train.jsonl")  # doctest: +SKIP
        >>> data.answers[0]  # doctest: +SKIP
        (12, 17)
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise BadInputError("no such file", where=path, fix="pass --train/--eval naming an existing file")
    data = QAExamples(path, [], [], [], [])
    for number, row, reason in read_jsonl_fields(path, ("question", "context", "answers")):
        where = f"{path}:{number}"
        if reason:
            raise BadInputError(f"bad record ({reason})", where=where, fix="fix or remove that line")
        question, context, answers = row.get("question"), row.get("context"), row.get("answers", {})
        for name, value in (("question", question), ("context", context)):
            if not isinstance(value, str) or not value.strip():
                raise BadInputError(f"no {name}", where=f"{where}: {name}", expected="a non-empty string",
                                    actual=repr(value)[:40], fix="fix or remove that line")
        texts = answers.get("text") if isinstance(answers, dict) else None
        starts = answers.get("answer_start") if isinstance(answers, dict) else None
        if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
            raise BadInputError("answers must hold equally long text and answer_start lists",
                                where=f"{where}: answers", expected='{"text": [...], "answer_start": [...]}',
                                actual=json.dumps(answers)[:60], fix="write [] and [] for an unanswerable question")
        for text, start in zip(texts, starts, strict=True):
            if not isinstance(text, str) or not isinstance(start, int) or context[start:start + len(text)] != text:
                found = context[start:start + len(text)] if isinstance(start, int) and isinstance(text, str) else ""
                raise BadInputError("answer_start does not point at the answer's text", where=f"{where}: answers",
                                    expected=repr(text)[:40], actual=f"{found!r} at {start!r}"[:60],
                                    fix="answer_start is the answer's first character in the context (0-based)")
        data.questions.append(question)
        data.contexts.append(context)
        data.answers.append((starts[0], starts[0] + len(texts[0])) if texts else None)
        data.golds.append(list(texts))
    if not data.questions:
        raise BadInputError("the file holds no record", where=path, fix="write one JSON object per line")
    return data


@dataclasses.dataclass
class QAEvaluation:
    """SQuAD scores of the eval set (exact match and F1 in [0, 1]), and its answers."""

    exact_match: float
    f1: float
    examples: int
    unanswerable: int
    null_threshold: float | None
    answers: list[qa.Answer]

    @property
    def no_answer_baseline(self) -> float:
        """The exact match of answering "no answer" to every question: the unanswerable share."""
        return self.unanswerable / self.examples if self.examples else 0.0

    @property
    def learned(self) -> bool:
        """Exact match more than 2 points above :attr:`no_answer_baseline`, the rule classification uses."""
        return self.exact_match > self.no_answer_baseline + NO_LEARNING_MARGIN

    def report(self) -> Report:
        return Report("tfbert fine-tuning: question answering eval", ["metric", "value"],
                      [{"metric": "exact_match", "value": self.exact_match}, {"metric": "f1", "value": self.f1}],
                      {"examples": self.examples, "unanswerable": self.unanswerable,
                       "no_answer_baseline_exact_match": self.no_answer_baseline,
                       "null_score_threshold": self.null_threshold})


@dataclasses.dataclass
class QAFinetuneResult:
    """What a question-answering fine-tuning run produced."""

    output_dir: str
    learning_rate: float
    frozen: str
    trainable_params: int
    total_params: int
    train: TrainResult
    evaluation: QAEvaluation
    files: list[str]


def qa_model(bert):
    """A Keras model around a ``TFBertForQuestionAnswering`` returning float32 ``[batch, 2, seq]`` logits.

    Sparse cross-entropy on labels ``[batch, 2]`` (start, end) is then the mean of the start and
    end losses, Hugging Face's loss for the class; only trainable variables are differentiated
    (:func:`tfbert.finetune.train.classifier`'s training step, with this head's logits).
    """
    from tfbert.finetune.train import classifier
    from tfbert.tf import import_tensorflow

    tf = import_tensorflow()

    def start_end(model, inputs, training: bool = False):
        out = model(**inputs, training=training)
        return tf.stack([out.start_logits, out.end_logits], axis=1)

    return classifier(bert, logits=start_end)


def _featurize(tokenizer, data: QAExamples, max_length: int, doc_stride: int):
    """(windows, word spans, labels [windows, 2]) of ``data``."""
    questions, contexts = tokenizer.wordpieces(data.questions), tokenizer.wordpieces(data.contexts)
    windows = qa.make_windows([q.ids for q in questions], [c.ids for c in contexts], max_seq_length=max_length,
                              doc_stride=doc_stride, cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id,
                              pad_id=tokenizer.pad_id, source=data.path)
    starts, ends = qa.answer_labels(windows, [(c.begin, c.end) for c in contexts], data.answers)
    return windows, [(c.word_begin, c.word_end) for c in contexts], np.stack([starts, ends], axis=1)


def _dataset(windows: qa.Windows, labels: np.ndarray, batch_size: int, shuffle: bool, seed: int):
    from tfbert.tf import import_tensorflow

    tf = import_tensorflow()
    dataset = tf.data.Dataset.from_tensor_slices((windows.inputs(), labels))
    if shuffle:
        dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _logits(keras_model, dataset) -> np.ndarray:
    return np.concatenate([keras_model(x, training=False).numpy() for x, _ in dataset], axis=0)


def evaluate_answers(logits: np.ndarray, windows: qa.Windows, data: QAExamples, word_spans, *,
                     null_threshold: float | None, max_answer_length: int = qa.DEFAULT_MAX_ANSWER_LENGTH
                     ) -> QAEvaluation:
    """SQuAD exact match and F1 of the answers picked from ``logits`` [windows, 2, seq]."""
    answers = qa.best_answers(logits[:, 0], logits[:, 1], windows, data.contexts, word_spans,
                              max_answer_length=max_answer_length, null_threshold=null_threshold)
    scores = np.array([qa.squad_scores(a.text, gold) for a, gold in zip(answers, data.golds, strict=True)])
    return QAEvaluation(float(scores[:, 0].mean()), float(scores[:, 1].mean()), len(answers),
                        sum(a is None for a in data.answers), null_threshold, answers)


def finetune_question_answering(model: str | os.PathLike | None, train_file: str, eval_file: str, output_dir: str, *,
                                freeze: str | None = None, epochs: int = 3, batch_size: int = 16,
                                max_length: int = 128, doc_stride: int | None = None,
                                learning_rate: float | None = None, weight_decay: float = 0.01,
                                warmup_ratio: float = 0.1, early_stopping_patience: int = 2, seed: int = 0,
                                overwrite: bool = False, allow_no_learning: bool = False,
                                progress: Callable[[str], None] | None = None) -> QAFinetuneResult:
    """Fine-tune a BERT checkpoint for extractive question answering and save it as a checkpoint directory.

    Args:
        model: the base checkpoint (None: the embedded all-MiniLM-L6-v2); its ``qa_outputs``
            head is kept if it has one, else starts random.
        train_file, eval_file: SQuAD-style JSONL (see :func:`read_squad`).
        output_dir: where the checkpoint goes (refused if it exists, unless ``overwrite``).
        learning_rate: AdamW's peak rate; default :data:`QA_LEARNING_RATE` (2e-4) when any encoder
            layer or the embeddings train, 3e-3 for the head alone.
        freeze, epochs, batch_size, weight_decay, warmup_ratio, early_stopping_patience, seed,
            overwrite, allow_no_learning: as :func:`tfbert.finetune.finetune`.
        max_length: window length in tokens; doc_stride: overlap of a long context's windows
            (default ``min(max_length // 2, 128)``).
        progress: called with progress lines (default: stderr).

    Returns:
        A :class:`QAFinetuneResult`; the directory holds config.json, model.safetensors, the
        tokenizer files, eval_report.json/.md, eval_answers.jsonl, training_history.json and SHA256SUMS.
        When the training data has unanswerable questions the eval answers "no answer" when the
        null score beats the best span (threshold 0), else never.

    Raises:
        NoLearningError: eval exact match at most 2 points above answering "no answer" to every
            question (:attr:`QAEvaluation.learned`) and ``allow_no_learning`` False; the
            checkpoint is saved anyway and the error's ``result`` holds the :class:`QAFinetuneResult`.
        TfbertError: bad data or flags, a damaged checkpoint, not enough memory, or a saved
            checkpoint that does not reproduce the model.

    Example:
        >>> result = finetune_question_answering(None, "train.jsonl", "eval.jsonl", "out/qa")  # doctest: +SKIP
        >>> result.evaluation.f1  # doctest: +SKIP
        0.91
    """
    from tfbert.edge_tokenizer import EdgeTokenizer

    write = progress or (lambda line: (sys.stderr.write(f"[tfbert.finetune] {line}\n"), sys.stderr.flush()))
    doc_stride = qa.default_doc_stride(max_length) if doc_stride is None else doc_stride
    qa.check_window(max_length, doc_stride)
    if os.path.exists(output_dir) and not overwrite:
        raise BadInputError("the output directory exists", where=os.path.abspath(output_dir),
                            fix="pass --overwrite or choose another --output_dir")
    parent = os.path.dirname(os.path.abspath(output_dir))
    if not os.path.isdir(parent):
        raise BadInputError("the parent of the output directory does not exist", where=parent, fix="create it first")
    files = find_checkpoint(model)
    config = read_config(files)
    if max_length > config.get("max_position_embeddings", 512):
        raise BadInputError("longer than the model's position table", where="max_length", actual=max_length,
                            expected=f"<= {config.get('max_position_embeddings', 512)}", fix="lower --max_length")
    train, held_out = read_squad(train_file), read_squad(eval_file)
    tokenizer = EdgeTokenizer.from_files(files.vocab, files.tokenizer_config)
    train_windows, _, train_labels = _featurize(tokenizer, train, max_length, doc_stride)
    eval_windows, eval_spans, eval_labels = _featurize(tokenizer, held_out, max_length, doc_stride)
    num_layers = config["num_hidden_layers"]
    plan = parse_freeze(freeze, num_layers)
    learning_rate = learning_rate_for(learning_rate, plan, num_layers, QA_LEARNING_RATE)
    findings = check_memory(config, TASK, batch_size=batch_size, seq_length=max_length, dtype="float32",
                            training=True)
    if findings[0].status == ERROR:
        raise findings[0].error
    write(f"{len(train)} training questions ({len(train_labels)} windows), {len(held_out)} eval questions "
          f"({len(eval_labels)} windows), window {max_length} tokens, stride {doc_stride}; {findings[0].message}")

    from tfbert.model import load
    from tfbert.runtime import configure_runtime

    configure_runtime()
    import tf_keras

    tf_keras.utils.set_random_seed(seed)
    bert = load(files.root, TASK, batch_size=batch_size, seq_length=max_length)
    apply_freeze(bert, plan)
    keras_model = qa_model(bert)
    trainable, total = parameter_counts(bert)
    frozen = plan.describe(num_layers)
    write(f"frozen: {frozen}; trainable parameters {trainable:,} of {total:,}; learning rate {learning_rate:g}")
    train_data = _dataset(train_windows, train_labels, batch_size, True, seed)
    eval_data = _dataset(eval_windows, eval_labels, batch_size, False, seed)
    null_threshold = 0.0 if any(a is None for a in train.answers) else None

    with publish.published(output_dir, overwrite=overwrite, progress=write) as tmp:
        result = fit(keras_model, train_data, eval_data, epochs=epochs,
                     steps_per_epoch=-(-len(train_labels) // batch_size), train_examples=len(train_labels),
                     learning_rate=learning_rate, weight_decay=weight_decay, warmup_ratio=warmup_ratio,
                     early_stopping_patience=early_stopping_patience,
                     checkpoint_dir=os.path.join(tmp, "training-checkpoints"), progress=write)
        logits = _logits(keras_model, eval_data)
        evaluation = evaluate_answers(logits, eval_windows, held_out, eval_spans, null_threshold=null_threshold)
        write(f"eval: exact match {evaluation.exact_match:.4f}, F1 {evaluation.f1:.4f} on {len(held_out)} questions")
        shutil.rmtree(os.path.join(tmp, "training-checkpoints"))
        saved = _save(bert, tmp, files.root, config, evaluation, result, eval_data, logits)
    outcome = QAFinetuneResult(os.path.abspath(output_dir), learning_rate, frozen, trainable, total, result,
                               evaluation, saved)
    if not evaluation.learned:
        e = evaluation
        raise_or_warn(NoLearningError(
            f"the model learned nothing: exact match {e.exact_match:.4f}, while answering \"no answer\" to every "
            f"question scores {e.no_answer_baseline:.4f}", where=f"--eval={eval_file}",
            expected=f"exact match > {e.no_answer_baseline + NO_LEARNING_MARGIN:.4f}",
            actual=f"{e.exact_match:.4f} (F1 {e.f1:.4f})", fix=retry_fix(learning_rate, outcome.output_dir)),
            outcome, allow_no_learning, write)
    return outcome


def _save(bert, directory: str, base: str, config: dict, evaluation: QAEvaluation, result: TrainResult,
          eval_data, logits: np.ndarray) -> list[str]:
    """Write checkpoint + reports into ``directory`` and check it reloads to the same logits."""
    from tfbert.checkpoint.manifest import write_manifest
    from tfbert.checkpoint.write import write_checkpoint
    from tfbert.model import load

    config = {k: v for k, v in config.items() if k not in ("id2label", "label2id", "num_labels")}
    write_checkpoint(bert, directory, task=TASK, config=config, tokenizer_dir=base, manifest=False)
    evaluation.report().write(os.path.join(directory, "eval_report"))
    with open(os.path.join(directory, "eval_answers.jsonl"), "w", encoding="utf-8") as f:
        for answer in evaluation.answers:
            f.write(json.dumps(dataclasses.asdict(answer), ensure_ascii=False) + "\n")
    with open(os.path.join(directory, "training_history.json"), "w", encoding="utf-8") as f:
        json.dump({"history": result.history, "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                   "stopped_early": result.stopped_early, "seconds": result.seconds}, f, indent=2)
    write_manifest(directory)
    again = _logits(qa_model(load(directory, TASK, require_head=True)), eval_data)
    check_reloaded(directory, float(np.max(np.abs(again - logits))) if len(logits) else 0.0)
    return sorted(os.listdir(directory))

"""Predict for extractive question answering: JSONL ``{"question", "context"}`` → one answer per line.

A SavedModel answers in its own graph (``serving_default(question, context)``), and a checkpoint
directory through the same graph built in memory; for a .tflite
(token inputs → start/end logits) the windows and the span search run here, in numpy
(:mod:`tfbert.tasks.question_answering`), with the vocabulary beside the model. The output is
JSONL ``{"answer", "start", "end", "score"}`` written to a temporary sibling and renamed into
place when every line is answered.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from tfbert.errors import BadInputError
from tfbert.predict.pipeline import read_jsonl_fields
from tfbert.tasks import question_answering as qa


def read_questions(path: str) -> tuple[list[str], list[str]]:
    """Questions and contexts of a JSONL file; a context may be empty (its answer is empty).

    Raises:
        BadInputError: no such file, a bad line, or a question / context that is not a string.
    """
    if not os.path.isfile(path):
        raise BadInputError("no such input file", where=path, fix="pass --input=FILE naming an existing file")
    questions, contexts = [], []
    for number, row, reason in read_jsonl_fields(path, ("question", "context")):
        if not reason and not all(isinstance(row.get(k), str) for k in ("question", "context")):
            reason = "question and context must be strings"
        if reason:
            raise BadInputError(f"bad record ({reason})", where=f"{path}:{number}",
                                expected='{"question": "...", "context": "..."}',
                                actual=f"keys {sorted(row)}" if row is not None else "no JSON object",
                                fix="fix or remove that line")
        questions.append(row["question"])
        contexts.append(row["context"])
    return questions, contexts


def answer_with_tflite(model_path: str, questions: list[str], contexts: list[str], *, max_seq_length: int,
                       doc_stride: int | None, max_answer_length: int, null_threshold: float | None,
                       batch_size: int = 32, num_threads: int = 2, vocab_path: str | None = None,
                       source: str = "input") -> list[qa.Answer]:
    """Answers from a question-answering .tflite: numpy windows, LiteRT logits, numpy span search
    (``source``: the questions' file, named in errors)."""
    from tfbert.edge_tokenizer import EdgeTokenizer
    from tfbert.litert import LiteRTRunner

    directory = os.path.dirname(os.path.abspath(model_path))
    vocab_path = vocab_path or os.path.join(directory, "vocab.txt")
    if not os.path.isfile(vocab_path):
        raise BadInputError("a .tflite holds no vocabulary, and none was given or is next to it", where=model_path,
                            fix="pass --vocab=PATH/vocab.txt")
    config = os.path.join(os.path.dirname(vocab_path), "tokenizer_config.json")
    tokenizer = EdgeTokenizer.from_files(vocab_path, config if os.path.isfile(config) else None)
    with open(model_path, "rb") as f:
        runner = LiteRTRunner(f.read(), num_threads)
    doc_stride = qa.default_doc_stride(max_seq_length) if doc_stride is None else doc_stride
    question_pieces, context_pieces = tokenizer.wordpieces(questions), tokenizer.wordpieces(contexts)
    windows = qa.make_windows([p.ids for p in question_pieces], [p.ids for p in context_pieces],
                              max_seq_length=max_seq_length, doc_stride=doc_stride, cls_id=tokenizer.cls_id,
                              sep_id=tokenizer.sep_id, pad_id=tokenizer.pad_id, source=source)
    start = np.zeros(windows.input_ids.shape, np.float32)
    end = np.zeros_like(start)
    for i in range(0, len(windows.example), batch_size):
        rows = slice(i, i + batch_size)
        out = runner(windows.inputs(rows))
        width = out["start_logits"].shape[1]
        start[rows, :width], end[rows, :width] = out["start_logits"], out["end_logits"]
    return qa.best_answers(start, end, windows, contexts, [(p.word_begin, p.word_end) for p in context_pieces],
                           max_answer_length=max_answer_length, null_threshold=null_threshold)


def answer_with_checkpoint(model_path: str, questions: list[str], contexts: list[str], *, max_seq_length: int,
                           doc_stride: int | None, max_answer_length: int, null_threshold: float | None,
                           batch_size: int = 32) -> list[qa.Answer]:
    """Answers from a question-answering checkpoint directory (fine-tuning's output), through the
    graph its SavedModel export would serve (:func:`tfbert.export.savedmodel.build_question_answering_module`)."""
    from tfbert.checkpoint import find_checkpoint
    from tfbert.export.savedmodel import build_question_answering_module
    from tfbert.model import load
    from tfbert.tokenizer import BertTokenizer

    files = find_checkpoint(model_path)
    module = build_question_answering_module(
        load(model_path, "question_answering", require_head=True),
        BertTokenizer.from_files(files.vocab, files.tokenizer_config), max_seq_length=max_seq_length,
        doc_stride=doc_stride, max_answer_length=max_answer_length, null_threshold=null_threshold)
    return _answer_in_batches(module.serve_text, questions, contexts, batch_size)


def answer_with_saved_model(model_path: str, questions: list[str], contexts: list[str], *,
                            batch_size: int = 32) -> list[qa.Answer]:
    """Answers from a question-answering SavedModel's ``serving_default(question, context)``."""
    from tfbert.tf import import_tensorflow

    tf = import_tensorflow()
    import tensorflow_text  # noqa: F401  (registers the tokenizer's ops the graph uses)

    if not os.path.isfile(os.path.join(model_path, "saved_model.pb")):
        raise BadInputError("not a SavedModel", where=model_path, expected="saved_model.pb",
                            fix="pass a version directory of python -m tfbert.export --task=question_answering "
                                "(answer_with_checkpoint takes a fine-tuned checkpoint directory)")
    signature = tf.saved_model.load(model_path).signatures["serving_default"]
    if set(signature.structured_input_signature[1]) != {"question", "context"}:
        raise BadInputError("not a question-answering SavedModel", where=model_path,
                            expected="serving_default(question, context)",
                            actual=sorted(signature.structured_input_signature[1]),
                            fix="export with python -m tfbert.export --task=question_answering")
    return _answer_in_batches(signature, questions, contexts, batch_size)


def _answer_in_batches(serve, questions: list[str], contexts: list[str], batch_size: int) -> list[qa.Answer]:
    """``serve(question=, context=)`` (a serving signature or function) over ``batch_size`` pairs at a time."""
    from tfbert.tf import import_tensorflow

    tf = import_tensorflow()
    answers = []
    for i in range(0, len(questions), batch_size):
        out = {k: v.numpy() for k, v in serve(question=tf.constant(questions[i:i + batch_size], tf.string),
                                              context=tf.constant(contexts[i:i + batch_size], tf.string)).items()}
        answers += [qa.Answer(out["answer"][j].decode("utf-8"), int(out["start"][j]), int(out["end"][j]),
                              float(out["score"][j])) for j in range(len(out["answer"]))]
    return answers


def write_answers(path: str, answers: list[qa.Answer]) -> None:
    """JSONL ``{"answer", "start", "end", "score"}`` per answer, renamed into place when complete."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for a in answers:
                row = dataclasses.asdict(a)
                f.write(json.dumps({"answer": row["text"], "start": a.start, "end": a.end, "score": a.score},
                                   ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)

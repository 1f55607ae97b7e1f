"""Labelled texts from a file to tf.data training batches, with the label names read from the data.

A CSV/TSV file (header row) or JSONL file gives one ``(text, label)`` per record; labels may be
any strings (or numbers) and become ids in sorted order. Batches come from the inference
pipeline (:func:`tfbert.predict.pipeline.batched_inputs`: tokenized in the graph,
length-sorted within a window, padded per batch), whose kept text index picks each label.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np

from tfbert.errors import BadInputError
from tfbert.predict.pipeline import batched_inputs, infer_format, read_csv_fields, read_jsonl_fields, texts_dataset
from tfbert.tf import import_tensorflow

log = logging.getLogger("tfbert")
LABELLED_FORMATS = ("csv", "tsv", "jsonl")


@dataclasses.dataclass
class LabelledTexts:
    """The usable records of one file, and the lines skipped.

    Args:
        path: the file read.
        texts: texts, in file order.
        labels: each text's label as a string.
        skipped: ``(line number, reason)`` of every record skipped.
    """

    path: str
    texts: list[str]
    labels: list[str]
    skipped: list[tuple[int, str]] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)


def _label_text(value: object) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def _records(path: str, fmt: str, text_column: str, label_column: str):
    """``(line number, text, label, reason)`` per record, from predict's field readers."""
    if fmt == "jsonl":
        rows = read_jsonl_fields(path, (text_column, label_column))
    else:
        rows = read_csv_fields(path, {text_column: ("--text_column", "texts"),
                                      label_column: ("--label_column", "labels")}, "," if fmt == "csv" else "\t")
    for number, row, reason in rows:
        row = row or {}
        yield number, row.get(text_column), row.get(label_column), reason


def read_labelled(path: str | os.PathLike, *, text_column: str = "text", label_column: str = "label",
                  fmt: str | None = None, on_bad_line: str = "skip") -> LabelledTexts:
    """Read ``(text, label)`` records from a CSV/TSV (header row) or JSONL file.

    Records with an empty text, a missing label, bad UTF-8 or bad JSON are skipped with a
    warning naming ``file:line`` (``on_bad_line="skip"``) or stop the read (``"error"``).

    Raises:
        BadInputError: no such file, an unsupported format, a missing column, a bad line with
            ``on_bad_line="error"``, or no usable record at all.

    Example:
        >>> data = read_labelled("train.csv", text_column="sentence")  # doctest: +SKIP
        >>> data.texts[0], data.labels[0]  # doctest: +SKIP
        ('a great film', 'positive')
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise BadInputError("no such file", where=path, fix="pass --train/--eval naming an existing file")
    fmt = fmt or infer_format(path)
    if fmt not in LABELLED_FORMATS:
        raise BadInputError("labelled data must be CSV, TSV or JSONL", where=path, expected="csv | tsv | jsonl",
                            actual=fmt, fix="write one record per line with a text and a label field")
    data = LabelledTexts(path, [], [])
    for number, text, label, reason in _records(path, fmt, text_column, label_column):
        label = _label_text(label)
        if not reason:
            if not isinstance(text, str) or not text.strip():
                reason = f"no text in {text_column!r}"
            elif label is None:
                reason = f"no label in {label_column!r}"
            else:
                try:
                    text.encode("utf-8")
                    label.encode("utf-8")
                except UnicodeEncodeError:
                    reason = "not UTF-8"
        if reason:
            if on_bad_line == "error":
                raise BadInputError(f"bad record ({reason})", where=f"{path}:{number}",
                                    fix="fix or remove that line, or skip bad lines")
            log.warning("%s:%d: skipped bad record (%s)", path, number, reason)
            data.skipped.append((number, reason))
            continue
        data.texts.append(text)
        data.labels.append(label)
    if not data.texts:
        raise BadInputError("the file holds no usable labelled record", where=path,
                            actual=f"{len(data.skipped)} bad records",
                            fix="check --text_column and --label_column")
    return data


def label_names(labels: list[str]) -> list[str]:
    """The distinct labels in id order: numerically when all are integers, else alphabetically.

    Example:
        >>> label_names(["pos", "neg", "pos"])
        ['neg', 'pos']
        >>> label_names(["10", "2", "1"])
        ['1', '2', '10']
    """
    distinct = set(labels)
    if all(s.lstrip("-").isdigit() for s in distinct):
        return sorted(distinct, key=int)
    return sorted(distinct)


def encode_labels(data: LabelledTexts, names: list[str]) -> np.ndarray:
    """Label ids of ``data`` under ``names``; a label the names lack is an error (e.g. eval-only)."""
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted(set(data.labels) - set(index))
    if unknown:
        raise BadInputError("labels that the training data does not have", where=data.path,
                            expected=f"one of {names}", actual=unknown[:5],
                            fix="add examples of those labels to the training file, or drop them")
    return np.array([index[label] for label in data.labels], dtype=np.int32)


def balanced_class_weights(label_ids: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class weights ``n / (classes * count)``, so every class weighs the same in the loss.

    Example:
        >>> balanced_class_weights(np.array([0, 0, 0, 1]), 2).tolist()
        [0.6666666666666666, 2.0]
    """
    counts = np.bincount(label_ids, minlength=num_classes).astype(np.float64)
    return np.where(counts > 0, len(label_ids) / (num_classes * np.maximum(counts, 1)), 0.0)


def labelled_dataset(texts: list[str], label_ids: np.ndarray, tokenizer, *, batch_size: int = 16,
                     max_length: int = 128, shuffle: bool = False, seed: int = 0,
                     class_weights: np.ndarray | None = None):
    """A tf.data dataset of ``(inputs, label)`` (or ``(inputs, label, weight)`` with class weights).

    ``inputs`` holds int32 ``input_ids``, ``attention_mask`` and ``token_type_ids`` padded to
    each batch's longest text; texts are length-sorted within windows (labels travel with
    them, so order does not matter). With ``shuffle`` the texts are reshuffled every epoch
    before the batching, and the batches are shuffled again after it.
    """
    tf = import_tensorflow()
    labels = tf.constant(label_ids, tf.int32)
    weights = None if class_weights is None else tf.constant(class_weights, tf.float32)
    dataset = texts_dataset(texts)
    if shuffle:
        dataset = dataset.shuffle(len(texts), seed=seed, reshuffle_each_iteration=True)
    batches = batched_inputs(dataset, tokenizer, batch_size=batch_size, max_length=max_length)
    if shuffle:
        batches = batches.shuffle(16, seed=seed, reshuffle_each_iteration=True)

    def attach(index, inputs):
        y = tf.gather(labels, index)
        if weights is None:
            return inputs, y
        return inputs, y, tf.gather(weights, y)

    return batches.map(attach, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)

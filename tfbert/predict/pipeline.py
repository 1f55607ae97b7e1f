"""Texts from a file to padded token batches, streaming: a tf.data pipeline, or numpy for LiteRT.

:class:`TextFile` reads a .txt, .jsonl, .csv/.tsv or .tfrecord file one record at a time
(a file larger than memory is fine) and yields ``(index, text)``; :func:`text_dataset` is
it as a tf.data dataset. :func:`batched_inputs` tokenizes in the tf.data pipeline, sorting
texts by length within a window so each batch carries little padding, and keeps each text's
index so outputs can be put back in input order; :func:`numpy_batches` makes the same
batches without TensorFlow (the .tflite path).
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import logging
import os
import struct
from collections.abc import Iterable, Iterator

import numpy as np

from tfbert.errors import BadInputError, IncompatibleEnvironmentError, TfbertError
from tfbert.tf import import_tensorflow

log = logging.getLogger("tfbert")

FORMATS = ("txt", "jsonl", "csv", "tsv", "tfrecord")
_EXTENSIONS = {".txt": "txt", ".text": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv",
               ".tsv": "tsv", ".tfrecord": "tfrecord", ".tfrecords": "tfrecord"}
BAD_LINE_POLICIES = ("skip", "error")
INDEX, TEXT = "index", "text"
INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")
Batch = dict[str, np.ndarray]


@dataclasses.dataclass
class ReadStats:
    """What reading a file met: records kept, bad lines skipped, and an error that stopped it.

    Args:
        path: the file read.
        texts: records yielded so far.
        bad_lines: ``(line number, reason)`` of every record skipped (record number for TFRecord).
        error: the :class:`~tfbert.errors.TfbertError` that stopped the read, if any. tf.data
            wraps exceptions raised in a generator into its own error type; keeping the original
            here lets the consumer re-raise the typed error with its fix.
    """

    path: str
    texts: int = 0
    bad_lines: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    error: TfbertError | None = None


def infer_format(path: str) -> str:
    """The input format from the file's extension (``txt``, ``jsonl``, ``csv``, ``tsv``, ``tfrecord``)."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in _EXTENSIONS:
        raise BadInputError("cannot tell the input format from the extension", where=path,
                            expected=" ".join(sorted(_EXTENSIONS)), actual=ext or "no extension",
                            fix="rename the file or pass fmt= (--input_format) explicitly")
    return _EXTENSIONS[ext]


def count_records(path: str, fmt: str | None = None) -> int | None:
    """How many records the file holds, counted by streaming newlines (None for TFRecord).

    Used for the progress ETA; bad lines are included, so it is an upper bound.
    """
    fmt = fmt or infer_format(path)
    if fmt == "tfrecord":
        return None
    count, last = 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    count += last != b"\n"
    return count - 1 if fmt in ("csv", "tsv") else count  # the header row is not a text


def _txt(path: str) -> Iterator[tuple[int, str | None, str]]:
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                yield number, None, f"not UTF-8 (byte {e.start})"
                continue
            yield number, text, "empty"


def read_jsonl_fields(path: str, fields: tuple[str, ...]) -> Iterator[tuple[int, dict | None, str]]:
    """Each line of a JSONL file: ``(line number, {field: value} for the ``fields`` the object
    has, "")``, or ``(line number, None, reason)``: not UTF-8, empty, malformed JSON, not an object.

    Shared by predict (one text field) and fine-tune (text and label).
    """
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield number, None, f"not UTF-8 (byte {e.start})"
                continue
            if not line.strip():
                yield number, None, "empty"
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                yield number, None, f"malformed JSON ({e.msg})"
                continue
            if not isinstance(record, dict):
                yield number, None, "not a JSON object"
                continue
            yield number, {k: record[k] for k in fields if k in record}, ""


def read_csv_fields(path: str, columns: dict[str, tuple[str, str]],
                    delimiter: str) -> Iterator[tuple[int, dict | None, str]]:
    """Each row of a CSV/TSV file with a header row: ``(line number, {column: value}, "")``, or
    ``(line number, None, reason)``: too few fields, not UTF-8.

    Args:
        columns: the header names to read, each with the flag that names it and what it
            holds (for the error), e.g. ``{"text": ("--text_column", "texts")}``.

    Raises:
        BadInputError: a column is not in the header row.
    """
    # surrogateescape keeps the reader going past invalid bytes; they become lone surrogates,
    # which mark that one row as not UTF-8 instead of stopping the whole file.
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = next(reader, None) or []
        for column, (flag, holds) in columns.items():
            if column not in header:
                raise BadInputError("the column is not in the header row", where=f"{path}:1",
                                    expected=repr(column), actual=header,
                                    fix=f"pass {flag} naming the column that holds the {holds}")
        positions = {column: header.index(column) for column in columns}
        for row in reader:
            number = reader.line_num
            if max(positions.values()) >= len(row):
                yield number, None, f"row has {len(row)} fields, fewer than the header's {len(header)}"
                continue
            values = {column: row[i] for column, i in positions.items()}
            try:
                for value in values.values():
                    value.encode("utf-8")
            except UnicodeEncodeError:
                yield number, None, "not UTF-8"
                continue
            yield number, values, ""


def _jsonl(path: str, field: str) -> Iterator[tuple[int, str | None, str]]:
    for number, record, reason in read_jsonl_fields(path, (field,)):
        if record is None:
            yield number, None, reason
        elif field not in record:
            yield number, None, f"no field {field!r}"
        elif not isinstance(record[field], str):
            yield number, None, f"field {field!r} is {type(record[field]).__name__}, not a string"
        else:
            yield number, record[field], "empty"


def _csv(path: str, column: str, delimiter: str) -> Iterator[tuple[int, str | None, str]]:
    for number, row, reason in read_csv_fields(path, {column: ("--text_column", "texts")}, delimiter):
        yield number, None if row is None else row[column], reason or "empty"


def _tfrecord(path: str, field: str) -> Iterator[tuple[int, str | None, str]]:
    # TFRecord framing is read in Python (length, crc, payload, crc) so the generator stays
    # free of TensorFlow ops and streams one record at a time.
    try:
        from tensorflow.core.example import example_pb2
    except ImportError:
        raise IncompatibleEnvironmentError("reading a TFRecord file needs TensorFlow, which is not installed",
                                           where=path, fix="pip install tensorflow, or convert the input to "
                                           ".jsonl or .txt") from None

    with open(path, "rb") as f:
        number = 0
        while header := f.read(12):
            number += 1
            if len(header) < 12:
                raise BadInputError("the TFRecord file is truncated", where=f"{path}: record {number}",
                                    fix="re-write the file; it ends in the middle of a record")
            (length,) = struct.unpack("<Q", header[:8])
            payload = f.read(length)
            if len(payload) < length or len(f.read(4)) < 4:
                raise BadInputError("the TFRecord file is truncated", where=f"{path}: record {number}",
                                    fix="re-write the file; it ends in the middle of a record")
            try:
                example = example_pb2.Example.FromString(payload)
            except Exception:  # protobuf's DecodeError is not importable the same way everywhere
                yield number, None, "not a tf.train.Example"
                continue
            feature = example.features.feature.get(field)
            if feature is None or not feature.bytes_list.value:
                yield number, None, f"no bytes feature {field!r}"
                continue
            try:
                text = feature.bytes_list.value[0].decode("utf-8")
            except UnicodeDecodeError as e:
                yield number, None, f"not UTF-8 (byte {e.start})"
                continue
            yield number, text, "empty"


def _records(path: str, fmt: str, text_field: str, text_column: str):
    if fmt == "txt":
        return _txt(path)
    if fmt == "jsonl":
        return _jsonl(path, text_field)
    if fmt in ("csv", "tsv"):
        return _csv(path, text_column, "," if fmt == "csv" else "\t")
    return _tfrecord(path, text_field)


class TextFile:
    """The texts of a file, read one record at a time: iterating yields ``(index, text)``.

    ``index`` counts the texts kept (0, 1, 2, ...), so it is the row of the text's output.
    Bad records — not UTF-8, empty, malformed JSON, a missing field or column — are skipped
    with a warning naming ``file:line`` (``on_bad_line="skip"``) or stop the read with a
    :class:`~tfbert.errors.BadInputError` (``"error"``). :attr:`stats` is the
    :class:`ReadStats` filled while reading. Plain Python: TensorFlow is imported only to
    parse a TFRecord file's ``tf.train.Example`` records. :func:`text_dataset` wraps it in
    tf.data; :func:`numpy_batches` batches it without TensorFlow.

    Args:
        path: the input file.
        fmt: ``txt`` (one text per line), ``jsonl`` (``text_field`` of each object), ``csv`` /
            ``tsv`` (``text_column`` of a file with a header row), ``tfrecord`` (tf.train.Example
            with a bytes feature ``text_field``); None infers it from the extension.
        text_field: the JSON key / TFRecord feature holding the text.
        text_column: the CSV/TSV header naming the text column.
        on_bad_line: ``skip`` or ``error``.
        stats: a :class:`ReadStats` to fill (default: a new one).

    Raises:
        BadInputError: no such file, an unknown format or bad-line policy (when built); a bad
            record with ``on_bad_line="error"``, or an unreadable file (while iterating).

    Example:
        >>> next(iter(TextFile("texts.jsonl", text_field="body")))  # doctest: +SKIP
        (0, 'the first text')
    """

    def __init__(self, path: str | os.PathLike, *, fmt: str | None = None, text_field: str = "text",
                 text_column: str = "text", on_bad_line: str = "skip", stats: ReadStats | None = None) -> None:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise BadInputError("no such input file", where=path, fix="pass --input=FILE naming an existing file")
        fmt = fmt or infer_format(path)
        if fmt not in FORMATS:
            raise BadInputError("unknown input format", where="fmt", expected=" | ".join(FORMATS), actual=fmt,
                                fix="pick one of those")
        if on_bad_line not in BAD_LINE_POLICIES:
            raise BadInputError("unknown bad-line policy", where="on_bad_line", expected="skip | error",
                                actual=on_bad_line, fix="pass on_bad_line='skip' or 'error'")
        self.path, self.fmt, self.text_field, self.text_column = path, fmt, text_field, text_column
        self.on_bad_line = on_bad_line
        self.stats = stats if stats is not None else ReadStats(path)

    def __iter__(self) -> Iterator[tuple[int, str]]:
        path, stats = self.path, self.stats
        unit = "record" if self.fmt == "tfrecord" else "line"
        try:
            for number, text, reason in _records(path, self.fmt, self.text_field, self.text_column):
                if text is not None and text.strip():
                    yield stats.texts, text
                    stats.texts += 1
                    continue
                stats.bad_lines.append((number, reason))
                if self.on_bad_line == "error":
                    raise BadInputError(f"bad input {unit} ({reason})", where=f"{path}:{number}",
                                        fix="fix or remove that line, or pass --on_bad_line=skip to skip it")
                log.warning("%s:%d: skipped bad %s (%s)", path, number, unit, reason)
        except TfbertError as e:
            stats.error = e
            raise
        except OSError as e:
            stats.error = BadInputError(f"cannot read the input ({e.strerror or e})", where=path,
                                        fix="check the file exists and is readable")
            raise stats.error from e


def text_dataset(path: str | os.PathLike | TextFile, *, fmt: str | None = None, text_field: str = "text",
                 text_column: str = "text", on_bad_line: str = "skip", stats: ReadStats | None = None):
    """A tf.data dataset of ``(index, text)`` read from a file, one record at a time.

    The records of :class:`TextFile` (see it for the arguments and the bad-record policy); the
    dataset's ``tfbert_stats`` attribute (also ``stats`` when given) is its :class:`ReadStats`.

    Args:
        path: the input file, or a :class:`TextFile` (then the other arguments are unused).

    Returns:
        ``tf.data.Dataset`` of ``(int64 index, string text)``.

    Example:
        >>> ds = text_dataset("texts.jsonl", text_field="body")  # doctest: +SKIP
        >>> [(int(i), t.numpy().decode()) for i, t in ds.take(1)]  # doctest: +SKIP
        [(0, 'the first text')]
    """
    source = path if isinstance(path, TextFile) else TextFile(
        path, fmt=fmt, text_field=text_field, text_column=text_column, on_bad_line=on_bad_line, stats=stats)
    tf = import_tensorflow()
    dataset = tf.data.Dataset.from_generator(
        source.__iter__, output_signature=(tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.string)))
    dataset.tfbert_stats = source.stats
    return dataset


def texts_dataset(texts: list[str]):
    """``(index, text)`` for an in-memory list of texts, shaped like :func:`text_dataset`'s."""
    tf = import_tensorflow()
    texts = [str(t) for t in texts]
    return tf.data.Dataset.from_tensor_slices((tf.range(len(texts), dtype=tf.int64),
                                               tf.constant(texts, tf.string, shape=[len(texts)])))


def batched_inputs(dataset, tokenizer, *, batch_size: int = 32, max_length: int = 128, window: int | None = None,
                   pad_to_multiple: int = 1):
    """Token batches from ``(index, text)``: length-sorted within a window, padded per batch.

    Each window of ``window`` texts (default ``16 * batch_size``) is tokenized in one
    ``dataset.map`` (parallel across windows), sorted by token count, and cut into batches
    padded to their own longest sequence, so short texts are not padded to long ones. Sorting
    only within a window keeps memory bounded and output order close to input order.

    Args:
        dataset: ``(index, text)`` elements, e.g. from :func:`text_dataset`.
        tokenizer: a :class:`tfbert.tokenizer.BertTokenizer`.
        batch_size: texts per batch.
        max_length: truncation length in tokens, including [CLS] and [SEP].
        window: texts sorted together (1 disables sorting).
        pad_to_multiple: round each batch's length up to a multiple of this (XLA compiles once
            per shape, so fewer distinct lengths means fewer compilations).

    Returns:
        ``tf.data.Dataset`` of ``(index [b], {"input_ids", "attention_mask", "token_type_ids"}
        int32 [b, longest])``, prefetched.

    Example:
        >>> batches = batched_inputs(text_dataset("texts.txt"), tokenizer, batch_size=8)  # doctest: +SKIP
        >>> index, inputs = next(iter(batches))  # doctest: +SKIP
    """
    window = _checked_window(batch_size, max_length, window, pad_to_multiple)
    tf = import_tensorflow()
    keys = INPUT_KEYS

    # No tensor-dependent Python control flow here; skipping AutoGraph also keeps it from trying
    # (and warning about) converting the tokenizer's import_tensorflow() call.
    @tf.autograph.experimental.do_not_convert
    def tokenize_window(index, text):
        ids = tokenizer.tokenize(text, max_length)
        lengths = tf.reduce_sum(ids["attention_mask"], axis=1)
        order = tf.argsort(lengths, stable=True)
        return tf.gather(index, order), tf.gather(lengths, order), {k: tf.gather(ids[k], order) for k in keys}

    def trim(index, length, row):
        # Each text back to its own length, so padded_batch pads a batch to its own longest
        # rather than to the window's.
        return index, {k: v[:length] for k, v in row.items()}

    def pad(index, inputs):
        if pad_to_multiple == 1:
            return index, inputs
        length = tf.shape(inputs["input_ids"])[1]
        extra = (-length) % pad_to_multiple
        return index, {k: tf.pad(v, [[0, 0], [0, extra]], constant_values=tokenizer.pad_id if k == "input_ids" else 0)
                       for k, v in inputs.items()}

    batches = (dataset.batch(window)
               .map(tokenize_window, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
               .unbatch()
               .map(trim, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
               .padded_batch(batch_size, padding_values=(tf.constant(-1, tf.int64),
                                                         {"input_ids": tf.constant(tokenizer.pad_id, tf.int32),
                                                          "attention_mask": tf.constant(0, tf.int32),
                                                          "token_type_ids": tf.constant(0, tf.int32)}))
               .map(pad, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
               .prefetch(tf.data.AUTOTUNE))
    stats = getattr(dataset, "tfbert_stats", None)
    if stats is not None:
        batches.tfbert_stats = stats
    return batches


def numpy_batches(records: Iterable[tuple[int, str]], tokenizer, *, batch_size: int = 32, max_length: int = 128,
                  window: int | None = None, pad_to_multiple: int = 1) -> Iterator[tuple[np.ndarray, Batch]]:
    """:func:`batched_inputs`' batches without TensorFlow: numpy, for the LiteRT path.

    The same windows, the same stable sort by token count, the same cut of the sorted stream
    into ``batch_size`` consecutive texts (a batch may span two windows, as after tf.data's
    ``unbatch``), each batch padded to its own longest: the same texts give the same batches,
    id for id.

    Args:
        records: ``(index, text)``, e.g. a :class:`TextFile` or ``enumerate(texts)``.
        tokenizer: anything with ``tokenize_numpy(texts, max_length)`` and ``pad_id``
            (:class:`tfbert.edge_tokenizer.EdgeTokenizer` or :class:`tfbert.tokenizer.BertTokenizer`).
        batch_size, max_length, window, pad_to_multiple: as for :func:`batched_inputs`.

    Returns:
        An iterator of ``(index int64 [b], {"input_ids", "attention_mask", "token_type_ids"}
        int32 [b, longest])``.

    Example:
        >>> batches = numpy_batches(TextFile("texts.txt"), tokenizer, batch_size=8)  # doctest: +SKIP
        >>> index, inputs = next(batches)  # doctest: +SKIP
    """
    window = _checked_window(batch_size, max_length, window, pad_to_multiple)
    records = iter(records)
    held: tuple[np.ndarray, Batch] | None = None
    while chunk := list(itertools.islice(records, window)):
        index = np.array([i for i, _ in chunk], np.int64)
        ids = tokenizer.tokenize_numpy([t for _, t in chunk], max_length)
        order = np.argsort(ids["attention_mask"].sum(1), kind="stable")
        index, ids = index[order], {k: ids[k][order] for k in INPUT_KEYS}
        if held is not None:
            index, ids = np.concatenate([held[0], index]), _stack(held[1], ids, tokenizer.pad_id)
        full = len(index) - len(index) % batch_size
        for start in range(0, full, batch_size):
            rows = slice(start, start + batch_size)
            yield index[rows], _trimmed({k: v[rows] for k, v in ids.items()}, pad_to_multiple, tokenizer.pad_id)
        held = (index[full:], {k: v[full:] for k, v in ids.items()}) if full < len(index) else None
    if held is not None:
        yield held[0], _trimmed(held[1], pad_to_multiple, tokenizer.pad_id)


def pad_length(arrays: Batch, multiple: int, pad_id: int) -> Batch:
    """Token arrays padded on the right to a length that is a multiple of ``multiple`` ([PAD] / 0)."""
    length = arrays["input_ids"].shape[1]
    return _pad_to(arrays, -(-length // multiple) * multiple, pad_id)


def _pad_to(arrays: Batch, width: int, pad_id: int) -> Batch:
    extra = width - arrays["input_ids"].shape[1]
    if extra <= 0:
        return arrays
    return {k: np.pad(v, [(0, 0), (0, extra)], constant_values=pad_id if k == "input_ids" else 0)
            for k, v in arrays.items()}


def _trimmed(arrays: Batch, pad_to_multiple: int, pad_id: int) -> Batch:
    """A batch cut to its own longest sequence (then padded to the multiple)."""
    longest = int(arrays["attention_mask"].sum(1).max())
    return pad_length({k: v[:, :longest] for k, v in arrays.items()}, pad_to_multiple, pad_id)


def _stack(first: Batch, second: Batch, pad_id: int) -> Batch:
    """Two token batches as one, the narrower padded to the wider."""
    width = max(first["input_ids"].shape[1], second["input_ids"].shape[1])
    first, second = _pad_to(first, width, pad_id), _pad_to(second, width, pad_id)
    return {k: np.concatenate([first[k], second[k]]) for k in INPUT_KEYS}


def _checked_window(batch_size: int, max_length: int, window: int | None, pad_to_multiple: int) -> int:
    """The window (default ``16 * batch_size``), after checking every batching argument."""
    for name, value in (("batch_size", batch_size), ("max_length", max_length), ("pad_to_multiple", pad_to_multiple)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise BadInputError("must be a positive integer", where=name, expected=">= 1", actual=value,
                                fix=f"pass {name}=32 or similar")
    window = window if window is not None else 16 * batch_size
    if not isinstance(window, int) or window < 1:
        raise BadInputError("must be a positive integer", where="window", expected=">= 1", actual=window,
                            fix="leave window=None for 16 * batch_size")
    return window

"""Prediction rows to a file as they arrive: ``.npy`` or ``.jsonl``, through a temporary sibling.

:class:`RowWriter` never holds more than the chunk it is given: a ``.npy`` file gets a header
reserved up front whose row count is filled in when the writer commits, a ``.jsonl`` file one
line per row. Nothing appears at ``path`` until :meth:`RowWriter.commit` renames the finished
file into place; an exception (or leaving the ``with`` block uncommitted) deletes the sibling.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable

import numpy as np

from tfbert.errors import BadInputError

OUTPUT_SUFFIXES = (".npy", ".jsonl")
# The array a .npy output holds per task.
NPY_KEY = {"embed": "sentence_embedding", "classify": "probabilities", "fill_mask": "top_k_ids"}
_NPY_MAGIC = b"\x93NUMPY\x01\x00"
_MAX_ROWS = 10**18  # the widest row count the reserved header leaves room for


def _npy_header(dtype: np.dtype, shape: tuple[int, ...], size: int | None = None) -> bytes:
    """A version 1.0 .npy header, padded with spaces to ``size`` bytes (default: to 64 bytes)."""
    descr = np.lib.format.dtype_to_descr(dtype)
    body = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {shape!r}, }}"
    used = len(_NPY_MAGIC) + 2 + len(body) + 1
    size = size if size is not None else -(-used // 64) * 64
    body = body + " " * (size - used) + "\n"
    return _NPY_MAGIC + struct.pack("<H", len(body)) + body.encode("latin1")


def record(task: str, out: dict[str, np.ndarray], row: int, index: int, mask_id: int | None = None) -> dict:
    """The JSON object for row ``row`` of a chunk ``out`` (``index``: its input position).

    embed: ``sentence_embedding``; classify: ``label`` and its ``score``; fill_mask: per [MASK]
    position, the top-k ``tokens`` and ``scores``; token_classify: ``entities`` (``word``,
    ``start``, ``end``, ``label``, ``score`` each).
    """
    if task == "embed":
        return {"index": index, "sentence_embedding": out["sentence_embedding"][row].tolist()}
    if task == "token_classify":
        return {"index": index, "entities": out["entities"][row]}
    if task == "classify":
        return {"index": index, "label": str(out["labels"][row]),
                "score": float(out["probabilities"][row, out["label_ids"][row]])}
    predictions = []
    for position, token_id in enumerate(out["input_ids"][row]):
        if token_id == mask_id:
            predictions.append({"position": position,
                                "tokens": [str(t) for t in out["top_k_tokens"][row, position]],
                                "scores": [float(p) for p in out["top_k_probabilities"][row, position]]})
    return {"index": index, "masks": predictions}


class RowWriter:
    """Streams prediction chunks, already in input order, to a ``.npy`` or ``.jsonl`` file.

    Args:
        path: the output file; its suffix picks the format.
        task: ``embed``, ``classify`` or ``fill_mask``.
        mask_id: the tokenizer's [MASK] id (fill_mask JSONL).
        max_length: fill_mask ``.npy`` rows are padded to this many positions (id -1), since the
            longest row is not known until the end.

    Raises:
        BadInputError: unknown suffix, or the output directory does not exist.

    Example:
        >>> with RowWriter("out.npy", "embed") as writer:  # doctest: +SKIP
        ...     for indices, out in predictor.ordered_batches(["a", "b"]):
        ...         writer.write(indices, out)
        ...     writer.commit()
    """

    def __init__(self, path: str | os.PathLike, task: str, *, mask_id: int | None = None,
                 max_length: int | None = None) -> None:
        self.path, self.task, self.mask_id, self.max_length = os.fspath(path), task, mask_id, max_length
        if not self.path.endswith(OUTPUT_SUFFIXES):
            raise BadInputError("unknown output format", where=self.path, expected=" or ".join(OUTPUT_SUFFIXES),
                                actual=os.path.splitext(self.path)[1] or "no extension",
                                fix="name the output file *.npy or *.jsonl")
        if task == "token_classify" and self.path.endswith(".npy"):
            raise BadInputError("entities have no array form", where=self.path, expected=".jsonl",
                                fix="name the output file *.jsonl")
        if task == "fill_mask" and self.path.endswith(".npy") and not max_length:
            raise BadInputError("fill_mask .npy output needs the row width", where="max_length",
                                fix="pass max_length (the Predictor's)")
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise BadInputError("the output directory does not exist", where=directory,
                                fix="create it first or pass --output in an existing directory")
        self.tmp = os.path.join(directory, f".{os.path.basename(self.path)}.tmp-{os.getpid()}")
        self.rows = 0
        self._npy = self.path.endswith(".npy")
        self._file = open(self.tmp, "wb")  # closed by commit() or discard()
        self._dtype: np.dtype | None = None
        self._row_shape: tuple[int, ...] = ()
        self._header_size = 0

    def write(self, indices: np.ndarray, out: dict[str, np.ndarray]) -> None:
        """Append one chunk: ``indices`` [n] (input positions, for JSONL) and its outputs."""
        if self._npy:
            self._write_npy(out[NPY_KEY[self.task]])
        else:
            lines = [json.dumps(record(self.task, out, row, int(index), self.mask_id), ensure_ascii=False)
                     for row, index in enumerate(indices)]
            if lines:
                self._file.write(("\n".join(lines) + "\n").encode("utf-8"))
        self.rows += len(indices)

    def _write_npy(self, array: np.ndarray) -> None:
        if self.task == "fill_mask":
            array = np.pad(array, [(0, 0), (0, self.max_length - array.shape[1]), (0, 0)], constant_values=-1)
        if self._dtype is None:
            self._dtype, self._row_shape = array.dtype, tuple(array.shape[1:])
            header = _npy_header(self._dtype, (_MAX_ROWS, *self._row_shape))
            self._header_size = len(header) - len(_NPY_MAGIC) - 2
            self._file.write(header)
        self._file.write(np.ascontiguousarray(array, dtype=self._dtype).tobytes())

    def commit(self) -> int:
        """Finish the file (the .npy row count goes into its header) and rename it to ``path``.

        Returns:
            The number of rows written.
        """
        if self._npy:
            if self._dtype is None:  # no rows: an empty float32 array
                self._file.write(_npy_header(np.dtype(np.float32), (0,)))
            else:
                self._file.seek(0)
                self._file.write(_npy_header(self._dtype, (self.rows, *self._row_shape),
                                             len(_NPY_MAGIC) + 2 + self._header_size))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.tmp, self.path)
        return self.rows

    def discard(self) -> None:
        """Close and delete the temporary sibling (``path`` is left as it was)."""
        self._file.close()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        if os.path.exists(self.tmp):
            self.discard()


def write_rows(path: str | os.PathLike, task: str, chunks: Iterable[tuple[np.ndarray, dict[str, np.ndarray]]],
               *, mask_id: int | None = None, max_length: int | None = None) -> int:
    """Write ``(indices, outputs)`` chunks, in input order, to ``path`` as they come; see :class:`RowWriter`.

    Returns:
        The number of rows written.

    Example:
        >>> write_rows("out.jsonl", "embed", predictor.ordered_batches("texts.txt"))  # doctest: +SKIP
        2000
    """
    with RowWriter(path, task, mask_id=mask_id, max_length=max_length) as writer:
        for indices, out in chunks:
            writer.write(indices, out)
        return writer.commit()

"""Reading safetensors files: validate the header first, then map tensors one by one.

The header is checked against the file size before any offset in it is trusted, so a
truncated or tampered file fails with a one-line :class:`CorruptCheckpointError` instead of
a deserialisation error (or, worse, a read past the end of a memory map).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import mmap
import os
import struct

import numpy as np

from tfbert.errors import CorruptCheckpointError

_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit
_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U8": np.uint8, "BOOL": np.bool_,
}
_REDOWNLOAD = "the file is damaged: download or copy it again"


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives and what it is, as the file's header says."""

    dtype: str
    shape: tuple[int, ...]
    file: str
    offset: int = 0  # absolute byte offset in ``file``
    nbytes: int = 0

    @property
    def size(self) -> int:
        return math.prod(self.shape)


def read_header(path: str) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse and validate a safetensors header; returns (tensors, metadata).

    Raises:
        CorruptCheckpointError: header length beyond the file, invalid JSON, unknown dtype,
            a tensor whose byte range disagrees with its shape, overlapping tensors, or a
            data section shorter than the header promises (truncation).
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CorruptCheckpointError(
                "file too short for a safetensors header", where=path,
                expected=">= 8 bytes", actual=f"{size} bytes", fix=_REDOWNLOAD)
        (n,) = struct.unpack("<Q", head)
        if n > min(_MAX_HEADER, size - 8):
            raise CorruptCheckpointError(
                "header length runs past the end of the file (truncated or not safetensors)",
                where=path, expected=f"header <= {size - 8} bytes", actual=f"{n} bytes",
                fix=_REDOWNLOAD)
        raw = f.read(n)
    try:
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptCheckpointError(
            f"header is not valid JSON ({e})", where=path, fix=_REDOWNLOAD) from None
    metadata = header.pop("__metadata__", None) or {}
    data_start, data_size = 8 + n, size - 8 - n
    tensors: dict[str, TensorInfo] = {}
    spans = []
    for name, entry in header.items():
        where = f"{path}: tensor {name}"
        try:
            dtype, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
            if not all(isinstance(d, int) and d >= 0 for d in (*shape, begin, end)):
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise CorruptCheckpointError(
                "malformed header entry", where=where, actual=entry, fix=_REDOWNLOAD) from None
        if dtype not in _DTYPES:
            raise CorruptCheckpointError(
                "unsupported dtype", where=where, expected="/".join(_DTYPES), actual=dtype,
                fix="convert the checkpoint to float32 or float16")
        expected = math.prod(shape) * np.dtype(_DTYPES[dtype]).itemsize
        if end - begin != expected:
            raise CorruptCheckpointError(
                "byte range does not match shape and dtype", where=where,
                expected=f"{expected} bytes for {dtype}{list(shape)}",
                actual=f"{end - begin} bytes", fix=_REDOWNLOAD)
        spans.append((begin, end, name))
        tensors[name] = TensorInfo(dtype, shape, path, data_start + begin, end - begin)
    spans.sort()
    for (_b0, e0, n0), (b1, _, n1) in itertools.pairwise(spans):
        if b1 < e0:
            raise CorruptCheckpointError(
                f"tensors {n0} and {n1} overlap", where=path,
                expected=f"{n1} to start at >= {e0}", actual=b1, fix=_REDOWNLOAD)
    needed = max((e for _, e, _ in spans), default=0)
    if needed > data_size:
        raise CorruptCheckpointError(
            "file is truncated", where=path,
            expected=f"{8 + n + needed} bytes", actual=f"{size} bytes", fix=_REDOWNLOAD)
    return tensors, metadata


class SafetensorsReader:
    """Memory-maps validated safetensors files and returns tensors one at a time.

    Example:
        >>> from tfbert.checkpoint.files import find_checkpoint
        >>> path = find_checkpoint().weights[0]
        >>> tensors, _ = read_header(path)
        >>> with SafetensorsReader() as reader:
        ...     reader.read(tensors["embeddings.LayerNorm.weight"]).shape
        (384,)
    """

    def __init__(self) -> None:
        self._maps: dict[str, mmap.mmap] = {}

    def read(self, info: TensorInfo) -> np.ndarray:
        """A read-only array viewing the mapped bytes (BF16 is widened to float32)."""
        mm = self._maps.get(info.file)
        if mm is None:
            with open(info.file, "rb") as f:
                mm = self._maps[info.file] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        array = np.frombuffer(mm, dtype=_DTYPES[info.dtype], count=info.size, offset=info.offset)
        if info.dtype == "BF16":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array.reshape(info.shape)

    def release(self, info: TensorInfo) -> None:
        """Tell the kernel this process is done with ``info``'s pages, so they leave its RSS."""
        mm = self._maps.get(info.file)
        if mm is None or not hasattr(mm, "madvise"):
            return
        start = info.offset - info.offset % mmap.PAGESIZE
        mm.madvise(mmap.MADV_DONTNEED, start, info.offset + info.nbytes - start)

    def close(self) -> None:
        for mm in self._maps.values():
            try:
                mm.close()
            except BufferError:  # an array still views it; the map closes when it is freed
                pass
        self._maps.clear()

    def __enter__(self) -> SafetensorsReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

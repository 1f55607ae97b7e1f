"""Weight sources: one interface over every checkpoint format.

A :class:`WeightSource` lists the checkpoint's tensors under canonical names (see
:mod:`tfbert.checkpoint.names`) and reads them one at a time in PyTorch layout, so the
diagnosis can check shapes without reading data and the loader can assign tensor by
tensor without holding a second copy of the model.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import numpy as np

from tfbert.checkpoint import files as F
from tfbert.checkpoint.names import (
    canonical_from_hf,
    canonical_from_keras,
    canonical_from_tf1,
)
from tfbert.checkpoint.safetensors_file import (
    SafetensorsReader,
    TensorInfo,
    read_header,
)
from tfbert.errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    UnsafeFileError,
)


class WeightSource:
    """Canonical name → :class:`TensorInfo`, plus ``read(name)`` returning a PyTorch-layout array."""

    def __init__(self, files: F.CheckpointFiles, tensors: dict[str, TensorInfo],
                 reader: Callable[[str], np.ndarray], close: Callable[[], None] = lambda: None,
                 release: Callable[[str], None] = lambda name: None):
        self.files = files
        self.tensors = tensors
        self._read = reader
        self._close = close
        self._release = release

    def read(self, name: str) -> np.ndarray:
        return self._read(name)

    def release(self, name: str) -> None:
        """Drop the memory-mapped pages of ``name`` from this process (no-op for other formats)."""
        self._release(name)

    def close(self) -> None:
        self._close()

    def __enter__(self) -> WeightSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_weights(files: F.CheckpointFiles, *, allow_pickle: bool = False) -> WeightSource:
    """Open the weights of ``files`` for reading (headers are validated here).

    Raises:
        UnsafeFileError: a ``pytorch_model.bin`` pickle without ``allow_pickle=True``.
        CorruptCheckpointError: a truncated or malformed weight file.
    """
    if files.format in (F.SAFETENSORS, F.SAFETENSORS_SHARDED):
        return _open_safetensors(files)
    if files.format == F.KERAS_H5:
        return _open_h5(files)
    if files.format == F.TF1:
        return _open_tf1(files)
    if files.format == F.PYTORCH_PICKLE:
        if not allow_pickle:
            raise UnsafeFileError(
                "pytorch_model.bin is a pickle, and unpickling a file can run arbitrary code",
                where=files.weights[0],
                fix="convert it to model.safetensors (e.g. with the transformers "
                    "`convert` space or `safetensors.torch.save_file`), or pass "
                    "allow_pickle=True / --allow_pickle to load it with a weights-only unpickler")
        from tfbert.checkpoint.torch_pickle import read_torch_zip
        return _from_arrays(files, read_torch_zip(files.weights[0]))
    raise CheckpointNotFoundError("unknown checkpoint format", where=files.root, actual=files.format)


def _open_safetensors(files: F.CheckpointFiles) -> WeightSource:
    paths = list(files.weights)
    if files.format == F.SAFETENSORS_SHARDED:
        try:
            with open(files.index, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
        except (ValueError, KeyError) as e:
            raise CorruptCheckpointError(
                f"shard index is unreadable ({e})", where=files.index,
                fix="download model.safetensors.index.json again") from None
        paths = sorted({os.path.join(files.root, shard) for shard in weight_map.values()})
        for path in paths:
            if not os.path.isfile(path):
                raise CheckpointNotFoundError(
                    "a shard named in the index is missing", where=path,
                    fix="download every model-*.safetensors shard listed in the index")
    tensors: dict[str, TensorInfo] = {}
    transposed: set[str] = set()
    for path in paths:
        header, metadata = read_header(path)
        for name, info in header.items():
            if metadata.get("format") == "tf":  # saved by an HF TF model: Keras names and layout
                name, transpose = canonical_from_keras("model/" + name)  # names lack the model scope
                if transpose:
                    transposed.add(name)
                    info = dataclasses.replace(info, shape=info.shape[::-1])
            else:
                name = canonical_from_hf(name)
            tensors[name] = info
    reader = SafetensorsReader()

    def read(name: str) -> np.ndarray:
        if name in transposed:
            info = tensors[name]
            return reader.read(dataclasses.replace(info, shape=info.shape[::-1])).T
        return reader.read(tensors[name])

    return WeightSource(files, tensors, read, reader.close, lambda name: reader.release(tensors[name]))


def _from_arrays(files: F.CheckpointFiles, arrays: dict[str, np.ndarray]) -> WeightSource:
    arrays = {canonical_from_hf(k): v for k, v in arrays.items()}
    tensors = {k: TensorInfo(str(v.dtype), tuple(v.shape), files.weights[0], 0, v.nbytes)
               for k, v in arrays.items()}
    return WeightSource(files, tensors, arrays.__getitem__)


def _open_h5(files: F.CheckpointFiles) -> WeightSource:
    import h5py

    path = files.weights[0]
    try:
        h5 = h5py.File(path, "r")
    except OSError as e:
        raise CorruptCheckpointError(
            f"not a readable HDF5 file ({e})", where=path, fix="download tf_model.h5 again") from None
    datasets: dict[str, tuple[object, bool]] = {}
    try:
        for layer in h5.attrs.get("layer_names", []):
            group = h5[_decode(layer)]
            for weight in group.attrs.get("weight_names", []):
                weight = _decode(weight)
                name, transpose = canonical_from_keras("model/" + weight.split("/", 1)[-1])
                datasets[name] = (group[weight], transpose)
    except (KeyError, OSError) as e:
        h5.close()
        raise CorruptCheckpointError(
            f"HDF5 weight layout is damaged ({e})", where=path, fix="download tf_model.h5 again") from None
    tensors = {}
    for name, (ds, transpose) in datasets.items():
        shape = tuple(ds.shape[::-1] if transpose else ds.shape)
        tensors[name] = TensorInfo(str(ds.dtype), shape, path, 0, ds.size * ds.dtype.itemsize)

    def read(name: str) -> np.ndarray:
        ds, transpose = datasets[name]
        try:
            array = ds[()]
        except OSError as e:
            raise CorruptCheckpointError(
                f"cannot read tensor {name} ({e})", where=path, fix="download tf_model.h5 again") from None
        return array.T if transpose else array

    return WeightSource(files, tensors, read, h5.close)


def _decode(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _open_tf1(files: F.CheckpointFiles) -> WeightSource:
    from tfbert.tf import import_tensorflow

    tf = import_tensorflow()
    prefix = files.weights[0]
    try:
        reader = tf.train.load_checkpoint(prefix)
        shapes = reader.get_variable_to_shape_map()
        dtypes = reader.get_variable_to_dtype_map()
    except Exception as e:  # TF raises several unrelated types for a damaged index
        raise CorruptCheckpointError(
            f"TF1 checkpoint index is unreadable ({str(e).splitlines()[0]})", where=prefix + ".index",
            fix="copy the bert_model.ckpt.index and .data-* files again") from None
    mapping: dict[str, tuple[str, bool]] = {}
    tensors: dict[str, TensorInfo] = {}
    for var, shape in shapes.items():
        mapped = canonical_from_tf1(var)
        if mapped is None:
            continue
        name, transpose = mapped
        mapping[name] = (var, transpose)
        shape = tuple(shape[::-1] if transpose else shape)
        dtype = dtypes[var].as_numpy_dtype
        tensors[name] = TensorInfo(np.dtype(dtype).name, shape, prefix, 0,
                                   int(np.prod(shape)) * np.dtype(dtype).itemsize)

    def read(name: str) -> np.ndarray:
        var, transpose = mapping[name]
        try:
            array = reader.get_tensor(var)
        except Exception as e:  # DataLossError (checksum) or OutOfRangeError (truncation)
            raise CorruptCheckpointError(
                f"cannot read {var} ({str(e).splitlines()[0]})", where=prefix + ".data-*",
                fix="copy the checkpoint's .data-* files again") from None
        return array.T if transpose else array

    return WeightSource(files, tensors, read)

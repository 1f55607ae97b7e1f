"""A weights-only reader for PyTorch ``pytorch_model.bin`` (zip) checkpoints, without torch.

Unpickling runs whatever code a pickle names, so tfbert never does it by default (see
:func:`tfbert.checkpoint.open_weights`). With the user's explicit opt-in, this reader
unpickles through an allow-list that admits only what a state dict of tensors needs —
``OrderedDict``, torch's tensor-rebuild functions and storage types — and refuses any
other global with :class:`UnsafeFileError`, the same policy as ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import collections
import pickle
import zipfile

import numpy as np

from tfbert.errors import CorruptCheckpointError, UnsafeFileError

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "HalfStorage": np.float16, "DoubleStorage": np.float64,
    "BFloat16Storage": np.uint16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str) -> None:
        self.name = name


def _rebuild_tensor(storage, offset, size, stride, *unused):
    array, is_bf16 = storage
    itemsize = array.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(array[offset:], shape=tuple(size),
                                           strides=tuple(s * itemsize for s in stride))
    out = np.array(view)
    return (out.astype(np.uint32) << 16).view(np.float32) if is_bf16 else out


def _rebuild_parameter(data, *unused):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


def read_torch_zip(path: str) -> dict[str, np.ndarray]:
    """Read a torch zip checkpoint's state dict as numpy arrays, allowing no code to run."""
    if not zipfile.is_zipfile(path):
        raise CorruptCheckpointError(
            "not a PyTorch zip checkpoint (legacy pre-1.6 torch files are not supported)", where=path,
            fix="convert it to model.safetensors with safetensors.torch.save_file")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl")]
        if not pickles:
            raise CorruptCheckpointError("no data.pkl in the archive", where=path,
                                         fix="convert it to model.safetensors")
        prefix = pickles[0][: -len("data.pkl")]

        class _Unpickler(pickle.Unpickler):
            def find_class(self, module: str, name: str):
                if (module, name) in _ALLOWED:
                    return _ALLOWED[(module, name)]
                if module == "torch" and name in _STORAGE_DTYPES:
                    return _StorageType(name)
                raise UnsafeFileError(
                    "the pickle names a global that a weights-only load does not allow", where=path,
                    actual=f"{module}.{name}", fix="convert the file to safetensors in a sandbox, or do not use it")

            def persistent_load(self, pid):
                if not (isinstance(pid, tuple) and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
                    raise UnsafeFileError("unexpected persistent id in the pickle", where=path, actual=repr(pid)[:80],
                                          fix="convert the file to safetensors")
                storage_type, key = pid[1], pid[2]
                raw = archive.read(f"{prefix}data/{key}")
                array = np.frombuffer(raw, dtype=_STORAGE_DTYPES[storage_type.name])
                return array, storage_type.name == "BFloat16Storage"

        with archive.open(pickles[0]) as f:
            try:
                state = _Unpickler(f).load()
            except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as e:
                raise CorruptCheckpointError(f"cannot read the pickle ({e})", where=path,
                                             fix="download pytorch_model.bin again") from None
    if not isinstance(state, dict):
        raise CorruptCheckpointError("the pickle is not a state dict", where=path, actual=type(state).__name__,
                                     fix="save the model's state_dict(), not the model object")
    return {k: v for k, v in state.items() if isinstance(v, np.ndarray)}

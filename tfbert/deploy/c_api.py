"""TensorFlow's C API through ctypes: the C++ SavedModel loader and op registry a model server links.

TF Serving is a C++ binary: it loads a version with ``LoadSavedModel`` (tag ``serve``), runs
signatures through a ``Session`` and knows the ops its binary registers — core TensorFlow
plus tensorflow-text's op libraries. ``libtensorflow_cc.so.2`` in the TensorFlow wheel exports
the same loader as ``TF_LoadSessionFromSavedModel``, and tensorflow-text's ``_*.so`` op
libraries load into it with ``TF_LoadLibrary``. This module drives them with ctypes.

Use it in a process that has *not* imported TensorFlow's Python package (see
:func:`tfbert.deploy.protos.import_protos`): then the op registry and kernels in the process
are the C++ ones a server has, without the kernels only Python registers (``EagerPyFunc``
behind ``tf.py_function``) and without tensorflow-text unless :func:`load_text_op_libraries`
loaded it.
"""

from __future__ import annotations

import ctypes
import dataclasses
import glob
import importlib.util
import os

import numpy as np

from tfbert.errors import ExportError

# TF_DataType values (tensorflow/c/tf_datatype.h) and their numpy types.
NUMPY_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8, 7: object,
           9: np.int64, 10: np.bool_, 17: np.uint16, 19: np.float16, 22: np.uint32, 23: np.uint64}
_TF_STRING = 7
_TSTRING_SIZE = 24  # sizeof(TF_TString) on 64-bit platforms (tsl/platform/ctstring_internal.h)


class _Buffer(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("length", ctypes.c_size_t), ("data_deallocator", ctypes.c_void_p)]


class _Output(ctypes.Structure):
    _fields_ = [("oper", ctypes.c_void_p), ("index", ctypes.c_int)]


def _package_dir(name: str) -> str:
    spec = importlib.util.find_spec(name)  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise ExportError(f"{name} is not installed", fix=f"pip install {name.replace('_', '-')}")
    return spec.submodule_search_locations[0]


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    p, c, i64 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int64
    signatures = {
        "TF_NewStatus": (p, []), "TF_DeleteStatus": (None, [p]), "TF_GetCode": (ctypes.c_int, [p]),
        "TF_Message": (c, [p]), "TF_NewBuffer": (ctypes.POINTER(_Buffer), []),
        "TF_DeleteBuffer": (None, [ctypes.POINTER(_Buffer)]),
        "TF_GetAllOpList": (ctypes.POINTER(_Buffer), []),
        "TF_GetRegisteredKernelsForOp": (ctypes.POINTER(_Buffer), [c, p]),
        "TF_LoadLibrary": (p, [c, p]), "TF_GetOpList": (_Buffer, [p]),
        "TF_NewSessionOptions": (p, []), "TF_DeleteSessionOptions": (None, [p]),
        "TF_NewGraph": (p, []), "TF_DeleteGraph": (None, [p]),
        "TF_LoadSessionFromSavedModel": (p, [p, p, c, ctypes.POINTER(c), ctypes.c_int, p,
                                             ctypes.POINTER(_Buffer), p]),
        "TF_CloseSession": (None, [p, p]), "TF_DeleteSession": (None, [p, p]),
        "TF_GraphOperationByName": (p, [p, c]),
        "TF_SessionRun": (None, [p, p, ctypes.POINTER(_Output), ctypes.POINTER(p), ctypes.c_int,
                                 ctypes.POINTER(_Output), ctypes.POINTER(p), ctypes.c_int, p, ctypes.c_int, p, p]),
        "TF_AllocateTensor": (p, [ctypes.c_int, ctypes.POINTER(i64), ctypes.c_int, ctypes.c_size_t]),
        "TF_DeleteTensor": (None, [p]), "TF_TensorData": (p, [p]), "TF_TensorByteSize": (ctypes.c_size_t, [p]),
        "TF_TensorType": (ctypes.c_int, [p]), "TF_NumDims": (ctypes.c_int, [p]), "TF_Dim": (i64, [p, ctypes.c_int]),
        "TF_StringInit": (None, [p]), "TF_StringCopy": (None, [p, c, ctypes.c_size_t]),
        "TF_StringGetDataPointer": (p, [p]), "TF_StringGetSize": (ctypes.c_size_t, [p]),
        "TF_StringDealloc": (None, [p]),
    }
    for name, (restype, argtypes) in signatures.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


_LIB: ctypes.CDLL | None = None


def library() -> ctypes.CDLL:
    """TensorFlow's C library from the installed wheel (``libtensorflow_cc.so.2``), loaded once."""
    global _LIB
    if _LIB is None:
        tf_dir = _package_dir("tensorflow")
        # The framework library first and global, so libtensorflow_cc and the op libraries
        # TF_LoadLibrary opens later resolve against this one copy.
        ctypes.CDLL(os.path.join(tf_dir, "libtensorflow_framework.so.2"), mode=ctypes.RTLD_GLOBAL)
        _LIB = _declare(ctypes.CDLL(os.path.join(tf_dir, "libtensorflow_cc.so.2"), mode=ctypes.RTLD_GLOBAL))
    return _LIB


class _Status:
    def __init__(self) -> None:
        self.lib = library()
        self.handle = self.lib.TF_NewStatus()

    def check(self, what: str, where: str) -> None:
        if self.lib.TF_GetCode(self.handle):
            message = self.lib.TF_Message(self.handle).decode("utf-8", "replace").splitlines()[0]
            raise ExportError(f"{what} ({message})", where=where,
                              fix="report this as a bug; TF Serving would refuse this SavedModel too")

    def __del__(self) -> None:
        self.lib.TF_DeleteStatus(self.handle)


def _take_buffer(buffer) -> bytes:
    data = ctypes.string_at(buffer.contents.data, buffer.contents.length)
    library().TF_DeleteBuffer(buffer)
    return data


def registered_ops() -> bytes:
    """The serialized ``OpList`` of every op registered in this process (``TF_GetAllOpList``)."""
    return _take_buffer(library().TF_GetAllOpList())


def registered_kernels(op: str) -> bytes:
    """The serialized ``KernelList`` of ``op``'s kernels in this process."""
    status = _Status()
    buffer = library().TF_GetRegisteredKernelsForOp(op.encode(), status.handle)
    status.check("cannot list the kernels", where=op)
    return _take_buffer(buffer)


def text_op_libraries() -> list[str]:
    """tensorflow-text's op libraries (``tensorflow_text/python/ops/_*.so``) in the installed package."""
    return sorted(glob.glob(os.path.join(_package_dir("tensorflow_text"), "python", "ops", "_*.so")))


def load_op_library(path: str) -> bytes:
    """``TF_LoadLibrary`` one op library; returns the serialized ``OpList`` it registered."""
    status = _Status()
    handle = library().TF_LoadLibrary(path.encode(), status.handle)
    status.check("TF_LoadLibrary failed", where=path)
    buffer = library().TF_GetOpList(handle)
    return ctypes.string_at(buffer.data, buffer.length)


@dataclasses.dataclass
class TensorSpec:
    """One input or output of a signature: its graph tensor (``op:index``), dtype and shape."""

    name: str
    dtype: int
    shape: list[int] | None


class SavedModelSession:
    """A SavedModel loaded by TensorFlow's C++ loader (``TF_LoadSessionFromSavedModel``), as TF Serving does.

    Args:
        directory: the version directory.
        tags: the MetaGraphDef tags to load (TF Serving: ``serve``).

    Raises:
        ExportError: the loader refuses the directory (missing tag, unregistered op, bad file).

    Example:
        >>> session = SavedModelSession("exported/minilm/1")
        >>> session.run("serving_default", {"text": np.array([b"hello"], dtype=object)})["sentence_embedding"].shape
        (1, 384)
    """

    def __init__(self, directory: str, tags: tuple[str, ...] = ("serve",)) -> None:
        self.lib, self.directory = library(), directory
        status = _Status()
        self._options = self.lib.TF_NewSessionOptions()
        self._graph = self.lib.TF_NewGraph()
        meta = self.lib.TF_NewBuffer()
        tag_array = (ctypes.c_char_p * len(tags))(*[t.encode() for t in tags])
        self._session = self.lib.TF_LoadSessionFromSavedModel(self._options, None, directory.encode(), tag_array,
                                                              len(tags), self._graph, meta, status.handle)
        status.check("TensorFlow's C++ SavedModel loader refuses it", where=directory)
        self.meta_graph_def = _take_buffer(meta)

    def run(self, inputs: dict[str, TensorSpec], values: dict[str, np.ndarray],
            outputs: dict[str, TensorSpec]) -> dict[str, np.ndarray]:
        """``TF_SessionRun`` feeding ``values`` to ``inputs`` and fetching ``outputs`` (keyed alike).

        Raises:
            ExportError: an input of another dtype than the signature's, or the run fails.
        """
        status = _Status()
        feeds, tensors = [], []
        try:
            for key, spec in inputs.items():
                feeds.append(self._output(spec.name))
                tensors.append(_to_tensor(values[key], spec.dtype, where=f"{self.directory}: input {key}"))
            fetches = [self._output(spec.name) for spec in outputs.values()]
            results = (ctypes.c_void_p * len(fetches))()
            self.lib.TF_SessionRun(self._session, None, (_Output * len(feeds))(*feeds),
                                   (ctypes.c_void_p * len(tensors))(*tensors), len(feeds),
                                   (_Output * len(fetches))(*fetches), results, len(fetches), None, 0, None,
                                   status.handle)
            status.check("TF_SessionRun failed", where=self.directory)
            return {key: _from_tensor(results[i]) for i, key in enumerate(outputs)}
        finally:
            for tensor in tensors:
                _free_tensor(tensor)

    def _output(self, tensor_name: str) -> _Output:
        op, _, index = tensor_name.partition(":")
        handle = self.lib.TF_GraphOperationByName(self._graph, op.encode())
        if not handle:
            raise ExportError("the signature names a tensor the loaded graph does not have", where=tensor_name,
                              fix="report this as a bug")
        return _Output(handle, int(index or 0))

    def close(self) -> None:
        """Close and free the session and its graph."""
        if self._session:
            status = _Status()
            self.lib.TF_CloseSession(self._session, status.handle)
            self.lib.TF_DeleteSession(self._session, status.handle)
            self.lib.TF_DeleteGraph(self._graph)
            self.lib.TF_DeleteSessionOptions(self._options)
            self._session = None


def _to_tensor(value: np.ndarray, dtype: int, where: str) -> int:
    lib = library()
    value = np.asarray(value)
    kind = object if value.dtype.kind in "OSU" else value.dtype.type
    if kind is not NUMPY_DTYPES.get(dtype):  # TF Serving refuses another dtype; it does not cast
        raise ExportError("input dtype differs from the signature's", where=where,
                          expected=getattr(NUMPY_DTYPES.get(dtype), "__name__", dtype),
                          actual=value.dtype.name, fix="send the signature's dtype")
    dims = (ctypes.c_int64 * value.ndim)(*value.shape)
    if dtype == _TF_STRING:
        items = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in value.reshape(-1).tolist()]
        tensor = lib.TF_AllocateTensor(dtype, dims, value.ndim, len(items) * _TSTRING_SIZE)
        base = lib.TF_TensorData(tensor)
        for i, item in enumerate(items):
            lib.TF_StringInit(base + i * _TSTRING_SIZE)
            lib.TF_StringCopy(base + i * _TSTRING_SIZE, item, len(item))
        return tensor
    array = np.ascontiguousarray(value, dtype=NUMPY_DTYPES[dtype])
    tensor = lib.TF_AllocateTensor(dtype, dims, value.ndim, array.nbytes)
    ctypes.memmove(lib.TF_TensorData(tensor), array.ctypes.data, array.nbytes)
    return tensor


def _free_tensor(tensor: int) -> None:
    lib = library()
    if lib.TF_TensorType(tensor) == _TF_STRING:
        base = lib.TF_TensorData(tensor)
        for i in range(lib.TF_TensorByteSize(tensor) // _TSTRING_SIZE):
            lib.TF_StringDealloc(base + i * _TSTRING_SIZE)
    lib.TF_DeleteTensor(tensor)


def _from_tensor(tensor: int) -> np.ndarray:
    lib = library()
    try:
        shape = tuple(lib.TF_Dim(tensor, d) for d in range(lib.TF_NumDims(tensor)))
        dtype, base = lib.TF_TensorType(tensor), lib.TF_TensorData(tensor)
        if dtype == _TF_STRING:
            items = [ctypes.string_at(lib.TF_StringGetDataPointer(base + i * _TSTRING_SIZE),
                                      lib.TF_StringGetSize(base + i * _TSTRING_SIZE))
                     for i in range(int(np.prod(shape, dtype=np.int64)))]
            return np.array(items, dtype=object).reshape(shape)
        if dtype not in NUMPY_DTYPES:
            raise ExportError("an output has a dtype tfbert cannot read through the C API", where=str(dtype),
                              fix="report this as a bug")
        size = lib.TF_TensorByteSize(tensor)
        return np.frombuffer(ctypes.string_at(base, size), dtype=NUMPY_DTYPES[dtype]).reshape(shape).copy()
    finally:
        lib.TF_DeleteTensor(tensor)

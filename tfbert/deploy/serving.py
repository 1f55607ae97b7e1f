"""TF Serving, proven with the pieces the server is made of, on a machine without the server.

No ``tensorflow_model_server`` binary is installable here, so a SavedModel is checked against
what TF Serving is built from (tensorflow/serving, read at its 2.20.0 tag):

* **Ops.** The binary links core TensorFlow and tensorflow-text's ``ops_lib``
  (``tensorflow_serving/model_servers/BUILD``). :func:`audit_ops` sorts every op of
  ``saved_model.pb`` (graph and function library) into core TensorFlow — decided by the C++
  op registry and kernels of a process without TensorFlow's Python package or tensorflow-text
  — or the tensorflow-text op library that registers it, refuses any other, and computes the
  oldest TF Serving release that has them all (:data:`TEXT_LIBRARY_SINCE`).
* **Loader.** :func:`check_like_the_server` loads the version with TensorFlow's C++
  SavedModel loader (tag ``serve``) through the C API (:mod:`tfbert.deploy.c_api`), with
  tensorflow-text's op libraries loaded by ``TF_LoadLibrary``, replays every record of
  ``assets.extra/tf_serving_warmup_requests`` as the server does on load, and runs each signature.
* **REST.** :func:`row_request`, :func:`tensors_from_row_request` and :func:`row_response`
  follow TF Serving's JSON codec (``tensorflow_serving/util/json_tensor.cc``) for the
  ``instances`` (row) format: every output must have the request's batch as its first
  dimension, and strings travel as plain JSON strings. :func:`serving_examples` writes the
  curl and gRPC examples from these rules.
* **Batching.** TF Serving's batching concatenates requests along dimension 0 and, with
  ``pad_variable_length_inputs``, pads every other dimension with the tensor's *first
  element* (``tensorflow_serving/batching/batching_util.cc``). :func:`merge_requests`
  reproduces that; :func:`compare_batched` shows a request's outputs do not depend on what it
  was batched with. :func:`batching_parameters` and :func:`models_config` are the server's
  configuration files.

What cannot be proved here: the server binary itself (its gRPC/HTTP front end, its
threading, its TensorFlow build), and core ops against TensorFlow versions other than the
installed one.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib.util
import itertools
import json
import os
import struct
import subprocess
import sys
import tempfile
import types

import numpy as np

from tfbert.errors import ExportError

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
DEFAULT_SIGNATURE = "serving_default"

# The first TF Serving release whose bundled tensorflow-text ``ops_lib`` links each op library
# (tensorflow_serving/workspace.bzl's org_tensorflow_text at each release tag, and that TF
# Text version's tensorflow_text/BUILD). Keys are the library names of the pip package's
# tensorflow_text/python/ops/_<name>.so.
TEXT_LIBRARY_SINCE = {
    "constrained_sequence_op": "2.0", "normalize_ops": "2.0", "sentence_breaking_ops": "2.0",
    "unicode_script_tokenizer": "2.0", "whitespace_tokenizer": "2.0", "wordpiece_tokenizer": "2.0",
    "mst_ops": "2.2", "regex_split_ops": "2.2", "sentencepiece_tokenizer": "2.2", "split_merge_tokenizer": "2.2",
    "split_merge_from_logits_tokenizer": "2.5", "state_based_sentence_breaker_op": "2.5",
    "fast_wordpiece_tokenizer": "2.10", "whitespace_tokenizer_v2": "2.10",
    "boise_offset_converter": "2.12", "byte_splitter": "2.12", "fast_bert_normalizer": "2.12",
    "fast_sentencepiece_tokenizer": "2.12", "ngrams_op": "2.12", "phrase_tokenizer": "2.12",
    "trimmer_ops": "2.20", "utf8_binarize_op": "2.20",
}
# Kernel fixes a graph of that library needs, and the first TF Serving release with them.
TEXT_LIBRARY_FIXES = {
    "fast_wordpiece_tokenizer": ("2.20", "TF Text 2.19's FastWordpiece fixes (no endless loop, an [UNK] for a "
                                         "separator the kernel's Unicode tables do not share with the model's; "
                                         "tensorflow/text 534859c, 70bd094), bundled from TF Serving 2.20"),
}
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


@dataclasses.dataclass
class OpAudit:
    """Every op of a SavedModel and where a model server gets it.

    ``ops`` maps each op to ``"core"`` or the tensorflow-text op library that registers it;
    ``min_tf_serving`` is the oldest TF Serving release with all of them (None: core ops
    only, any release built on a TensorFlow that has them), and ``reasons`` says why.
    """

    ops: dict[str, str]
    min_tf_serving: str | None
    reasons: list[str]

    def summary(self) -> str:
        text = sorted(op for op, where in self.ops.items() if where != "core")
        version = f"TF Serving >= {self.min_tf_serving}" if self.min_tf_serving else "any TF Serving"
        return (f"{len(self.ops)} ops, {len(self.ops) - len(text)} core TensorFlow"
                + (f" + tensorflow-text {', '.join(text)}" if text else "") + f": needs {version}")


def audit_ops(used: list[str], core: set[str], without_kernel: set[str], text_ops: dict[str, str],
              where: str) -> OpAudit:
    """Sort ``used`` ops into core TensorFlow and tensorflow-text libraries; the TF Serving they need.

    Args:
        used: the ops of the SavedModel's ``serve`` graph and function library.
        core: the ops TensorFlow's C++ library registers (without tensorflow-text or Python).
        without_kernel: ops of ``core`` that have no CPU kernel there (``EagerPyFunc``: a
            ``tf.py_function``, whose kernel only TensorFlow's Python package registers).
        text_ops: op name -> tensorflow-text library (``fast_wordpiece_tokenizer``).
        where: the SavedModel, for the error.

    Raises:
        ExportError: an op no TF Serving can run, named.

    Example:
        >>> audit_ops(["MatMul", "FastBertNormalize"], {"MatMul"}, set(),
        ...           {"FastBertNormalize": "fast_bert_normalizer"}, "m/1").min_tf_serving
        '2.12'
    """
    ops, reasons, minimum = {}, [], None
    for op in sorted(set(used)):
        if op in core and op not in without_kernel:
            ops[op] = "core"
            continue
        library = text_ops.get(op)
        if library not in TEXT_LIBRARY_SINCE:
            why = ("has no kernel outside TensorFlow's Python runtime (tf.py_function / tf.numpy_function)"
                   if op in without_kernel else
                   f"is registered by tensorflow-text's {library} library, which TF Serving does not link"
                   if library else "is neither a core TensorFlow op nor a tensorflow-text op TF Serving links")
            raise ExportError(f"op {op} {why}: TF Serving cannot run this SavedModel", where=where,
                              fix="build the serving graph from core TensorFlow and tensorflow-text ops only; "
                                  "nothing was published")
        ops[op] = library
        since = TEXT_LIBRARY_SINCE[library]
        reason = f"{op} ({library}) is in TF Serving since {since}"
        if library in TEXT_LIBRARY_FIXES:
            since, fix = TEXT_LIBRARY_FIXES[library]
            reason += f"; needs {fix}"
        reasons.append(reason)
        if minimum is None or _version_key(since) > _version_key(minimum):
            minimum = since
    return OpAudit(ops, minimum, reasons)


def import_protos(without_tensorflow: bool = False) -> types.SimpleNamespace:
    """TensorFlow's and TF Serving's protobuf modules.

    With ``without_tensorflow`` (only in a process of its own, before anything imports
    TensorFlow) the generated ``*_pb2`` modules are imported from the installed package
    without running ``tensorflow/__init__.py``: TensorFlow's Python runtime, with the kernels
    only it registers, never enters the process — as in a model server.
    """
    if without_tensorflow and hasattr(sys.modules.get("tensorflow"), "__version__"):
        raise RuntimeError("TensorFlow's Python package is already imported: the op registry is not a server's")
    if without_tensorflow and "tensorflow" not in sys.modules:
        spec = importlib.util.find_spec("tensorflow")  # locates the package without running its __init__
        package = types.ModuleType("tensorflow")
        package.__spec__, package.__path__ = spec, list(spec.submodule_search_locations)
        sys.modules["tensorflow"] = package
    from tensorflow.core.framework import kernel_def_pb2, op_def_pb2, tensor_pb2
    from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

    return types.SimpleNamespace(kernel_def_pb2=kernel_def_pb2, op_def_pb2=op_def_pb2, tensor_pb2=tensor_pb2,
                                 meta_graph_pb2=meta_graph_pb2, saved_model_pb2=saved_model_pb2,
                                 PredictionLog=_prediction_log_class(tensor_pb2))


def _prediction_log_class(tensor_pb2):
    """TF Serving's ``PredictionLog`` as far as a ``PredictLog`` request goes, wire-compatible (the field
    numbers of tensorflow_serving/apis/prediction_log.proto, predict.proto and model.proto): the
    tensorflow-serving-api package pins its own TensorFlow, so tfbert does not depend on it."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    package, fd = "tfbert.deploy.serving_wire", descriptor_pb2.FieldDescriptorProto

    def field(name: str, number: int, kind: int, type_name: str = "", label: int = fd.LABEL_OPTIONAL):
        return fd(name=name, number=number, type=kind, label=label, **({"type_name": type_name} if type_name else {}))

    tensor = "." + tensor_pb2.TensorProto.DESCRIPTOR.full_name
    entry = descriptor_pb2.DescriptorProto(name="InputsEntry", field=[field("key", 1, fd.TYPE_STRING),
                                                                      field("value", 2, fd.TYPE_MESSAGE, tensor)])
    entry.options.map_entry = True
    messages = [
        descriptor_pb2.DescriptorProto(name="ModelSpec", field=[field("name", 1, fd.TYPE_STRING),
                                                                field("signature_name", 3, fd.TYPE_STRING)]),
        descriptor_pb2.DescriptorProto(name="PredictRequest", nested_type=[entry], field=[
            field("model_spec", 1, fd.TYPE_MESSAGE, f".{package}.ModelSpec"),
            field("inputs", 2, fd.TYPE_MESSAGE, f".{package}.PredictRequest.InputsEntry", fd.LABEL_REPEATED)]),
        descriptor_pb2.DescriptorProto(name="PredictLog", field=[
            field("request", 1, fd.TYPE_MESSAGE, f".{package}.PredictRequest")]),
        descriptor_pb2.DescriptorProto(name="PredictionLog", field=[
            field("predict_log", 6, fd.TYPE_MESSAGE, f".{package}.PredictLog")]),
    ]
    pool = descriptor_pool.Default()
    name = package.replace(".", "/") + ".proto"
    try:
        pool.FindFileByName(name)
    except KeyError:
        pool.Add(descriptor_pb2.FileDescriptorProto(name=name, package=package, syntax="proto3",
                                                    dependency=[tensor_pb2.DESCRIPTOR.name], message_type=messages))
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.PredictionLog"))


def serve_meta_graph(directory: str, protos: types.SimpleNamespace):
    """The MetaGraphDef tagged ``serve`` in ``directory/saved_model.pb`` (the one TF Serving loads).

    Raises:
        ExportError: there is none.
    """
    with open(os.path.join(directory, "saved_model.pb"), "rb") as f:
        saved = protos.saved_model_pb2.SavedModel.FromString(f.read())
    for meta in saved.meta_graphs:
        if "serve" in meta.meta_info_def.tags:
            return meta
    tags = [list(m.meta_info_def.tags) for m in saved.meta_graphs]
    raise ExportError("no MetaGraphDef is tagged 'serve', the tag TF Serving loads",
                      where=os.path.join(directory, "saved_model.pb"), expected="tags ['serve']", actual=tags,
                      fix="save with tf.saved_model.save (tag serve)")


def graph_ops(meta_graph) -> list[str]:
    """Every op type in a MetaGraphDef's graph and its function library, sorted."""
    graph = meta_graph.graph_def
    ops = {node.op for node in graph.node}
    for function in graph.library.function:
        ops.update(node.op for node in function.node_def)
    return sorted(ops)


# --- warmup records -----------------------------------------------------------------------

def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C = _crc32c_table()


def _masked_crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_tfrecords(path: str) -> list[bytes]:
    """The records of a TFRecord file, their length and data checksums verified as TF's reader does.

    Raises:
        ExportError: a truncated file or a checksum mismatch.
    """
    with open(path, "rb") as f:
        data = f.read()
    records, offset = [], 0
    while offset < len(data):
        if offset + 12 > len(data):
            raise ExportError("truncated TFRecord header", where=f"{path}: byte {offset}", fix="export again")
        header = data[offset:offset + 8]
        (length,), (length_crc,) = struct.unpack("<Q", header), struct.unpack("<I", data[offset + 8:offset + 12])
        body = data[offset + 12:offset + 12 + length]
        footer = data[offset + 12 + length:offset + 16 + length]
        if length_crc != _masked_crc32c(header) or len(body) < length or len(footer) < 4 \
                or struct.unpack("<I", footer)[0] != _masked_crc32c(body):
            raise ExportError("corrupt TFRecord (checksum or length)", where=f"{path}: record {len(records)}",
                              fix="export again")
        records.append(body)
        offset += 16 + length
    return records


_PROTO_DTYPES = {1: (np.float32, "float_val"), 2: (np.float64, "double_val"), 3: (np.int32, "int_val"),
                 9: (np.int64, "int64_val"), 10: (np.bool_, "bool_val"), 7: (object, "string_val")}


def tensor_from_proto(proto) -> np.ndarray:
    """A ``TensorProto`` as numpy (strings as bytes objects), without TensorFlow's Python package."""
    shape = [d.size for d in proto.tensor_shape.dim]
    if proto.dtype not in _PROTO_DTYPES:
        raise ExportError("a warmup tensor has a dtype tfbert's replay does not read", where=str(proto.dtype),
                          fix="use float, double, int32, int64, bool or string inputs")
    dtype, field = _PROTO_DTYPES[proto.dtype]
    count = int(np.prod(shape, dtype=np.int64))
    if proto.tensor_content and dtype is not object:
        return np.frombuffer(proto.tensor_content, dtype=dtype).reshape(shape).copy()
    values = list(getattr(proto, field))
    if len(values) == 1 and count > 1:  # a single value fills the tensor, as in tf.make_ndarray
        values = values * count
    return np.array(values, dtype=dtype).reshape(shape)


def read_warmup_requests(directory: str, protos: types.SimpleNamespace | None = None) -> list:
    """The ``PredictRequest`` of every record of ``directory``'s warmup file ([] without one).

    Raises:
        ExportError: a record is not a ``PredictLog`` (the only kind tfbert writes and replays).
    """
    path = os.path.join(directory, WARMUP_FILE)
    if not os.path.isfile(path):
        return []
    protos = protos or import_protos()
    requests = []
    for i, record in enumerate(read_tfrecords(path)):
        log = protos.PredictionLog.FromString(record)
        if not log.HasField("predict_log"):
            raise ExportError("warmup record is not a PredictLog request, the only kind tfbert replays",
                              where=f"{path}: record {i}", fix="write PredictLog records (as tfbert.export does)")
        requests.append(log.predict_log.request)
    return requests


def warmup_inputs(directory: str, signatures: dict[str, dict] | None = None,
                  protos: types.SimpleNamespace | None = None) -> list[tuple[str, dict[str, np.ndarray]]]:
    """``(signature, inputs)`` of every warmup record, checked against ``signatures`` as TF Serving does.

    Args:
        directory: the version directory.
        signatures: name -> ``{"inputs": {key: ...}}``; when given, a record must name one of
            them (empty: ``serving_default``) and give exactly its inputs.

    Raises:
        ExportError: a record for a signature that does not exist, or with other inputs.
    """
    out = []
    for i, request in enumerate(read_warmup_requests(directory, protos)):
        name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        where = f"{os.path.join(directory, WARMUP_FILE)}: record {i}"
        if signatures is not None and name not in signatures:
            raise ExportError("warmup request names a signature the SavedModel does not have; TF Serving fails "
                              "to load the version", where=where, expected=sorted(signatures), actual=name,
                              fix="write warmup records only for the SavedModel's signatures")
        if signatures is not None and set(request.inputs) != set(signatures[name]["inputs"]):
            raise ExportError("warmup request inputs differ from the signature's", where=where,
                              expected=sorted(signatures[name]["inputs"]), actual=sorted(request.inputs),
                              fix="give every input of the signature, and only those")
        out.append((name, {key: tensor_from_proto(value) for key, value in request.inputs.items()}))
    return out


# --- REST (row format), as TF Serving's JSON codec -----------------------------------------

def _json_value(value):
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, np.ndarray):
        return [_json_value(v) for v in value] if value.dtype == object else value.tolist()
    return value.item() if isinstance(value, np.generic) else value


def row_request(signature: str, inputs: dict[str, np.ndarray]) -> dict:
    """The JSON body of a row-format (``instances``) REST predict request for ``inputs``.

    One object per example with every input; UTF-8 strings are plain JSON strings (other
    bytes ``{"b64": ...}``).

    Example:
        >>> row_request("serving_default", {"text": np.array([b"hi"], dtype=object)})
        {'signature_name': 'serving_default', 'instances': [{'text': 'hi'}]}
    """
    batch = {len(v) for v in inputs.values()}
    if len(batch) != 1:
        raise ExportError("inputs of one request must share their first dimension", where=signature,
                          actual={k: len(v) for k, v in inputs.items()}, fix="give one row per example in every input")
    instances = [{key: _json_value(np.asarray(value)[i]) for key, value in inputs.items()} for i in range(batch.pop())]
    return {"signature_name": signature, "instances": instances}


def _from_json(value, dtype):
    if isinstance(value, list):
        return [_from_json(v, dtype) for v in value]
    if dtype is object:
        if isinstance(value, dict) and set(value) == {"b64"}:
            return base64.b64decode(value["b64"])
        if not isinstance(value, str):
            raise ExportError("a string input must be a JSON string or {\"b64\": ...}", actual=repr(value)[:40],
                              fix="send strings as JSON strings")
        return value.encode("utf-8")
    return value


def tensors_from_row_request(body: dict, inputs: dict[str, dict]) -> dict[str, np.ndarray]:
    """The tensors TF Serving makes of a row-format request body for a signature's ``inputs``.

    Follows ``FillTensorMapFromInstancesList``: ``instances`` is a non-empty list; with one
    input, elements may be plain values, otherwise each is an object whose keys are exactly
    the input names; every element of an input has the same shape.

    Args:
        body: the parsed JSON.
        inputs: the signature's inputs: name -> ``{"dtype": numpy dtype or object}``.

    Raises:
        ExportError: what TF Serving answers with HTTP 400, on one line.
    """
    instances = body.get("instances")
    if not isinstance(instances, list) or not instances:
        raise ExportError("'instances' must be a non-empty list", where="request body", fix="see serving_examples")
    names = sorted(inputs)
    columns: dict[str, list] = {name: [] for name in names}
    for i, element in enumerate(instances):
        if isinstance(element, dict) and set(element) != {"b64"}:
            if sorted(element) != names:
                raise ExportError("instance keys must equal the signature's inputs", where=f"instances[{i}]",
                                  expected=names, actual=sorted(element), fix="give every input, and only those")
            for name in names:
                columns[name].append(element[name])
        elif len(names) == 1:
            columns[names[0]].append(element)
        else:
            raise ExportError("instances must be objects when a signature has several inputs",
                              where=f"instances[{i}]", expected=names, fix="send one object per example")
    tensors = {}
    for name, values in columns.items():
        dtype = inputs[name]["dtype"]
        array = np.array(_from_json(values, dtype), dtype=dtype)
        if dtype is not object and array.dtype == object:  # ragged: elements of different shapes
            raise ExportError("instances of one input must all have the same shape", where=name,
                              fix="pad every example to the same length")
        tensors[name] = array
    return tensors


def row_response(outputs: dict[str, np.ndarray], batch: int) -> dict:
    """The JSON body TF Serving answers a row-format request with (``MakeRowFormatJsonFromTensors``).

    Raises:
        ExportError: an output without a batch dimension equal to the request's (TF Serving
            then refuses the row format), or a string output that is not UTF-8 and not named
            ``*_bytes`` (TF Serving would write invalid JSON).
    """
    for name, value in outputs.items():
        if value.ndim == 0 or value.shape[0] != batch:
            raise ExportError("output's first dimension is not the batch: TF Serving refuses row-format "
                              "(instances) requests", where=name, expected=f"[{batch}, ...]",
                              actual=list(value.shape), fix="give every output a leading batch dimension")
        if value.dtype == object and not name.endswith("_bytes"):
            for item in value.reshape(-1):
                try:
                    item.decode("utf-8")
                except UnicodeDecodeError:
                    raise ExportError("string output is not UTF-8, which TF Serving writes as raw JSON",
                                      where=name, actual=repr(item[:20]),
                                      fix="name the output *_bytes (base64 in JSON) or return UTF-8") from None

    def value(name: str, row: np.ndarray):
        return _b64_all(row) if name.endswith("_bytes") and row.dtype == object else _json_value(row)

    def row(i: int):
        values = {name: value(name, tensor[i]) for name, tensor in sorted(outputs.items())}
        return values if len(values) > 1 else next(iter(values.values()))

    return {"predictions": [row(i) for i in range(batch)]}


def _b64_all(value):
    if isinstance(value, np.ndarray):
        return [_b64_all(v) for v in value]
    return {"b64": base64.b64encode(value).decode("ascii")}


def serving_examples(model_name: str, signature: str, inputs: dict[str, list], *, host: str = "localhost",
                     rest_port: int = 8501, grpc_port: int = 8500) -> str:
    """The docker, curl and gRPC lines to query ``model_name`` — the request built by :func:`row_request`.

    Args:
        model_name: the name TF Serving serves the model under (``MODEL_NAME``).
        signature: the signature to call.
        inputs: input name -> one example per element (strings as ``str``).

    Example:
        >>> print(serving_examples("minilm", "serving_default", {"text": ["A man is playing a guitar."]}))
    """
    arrays = {k: np.array([v.encode("utf-8") if isinstance(v, str) else v for v in values],
                          dtype=object if values and isinstance(values[0], str) else None)
              for k, values in inputs.items()}
    body = json.dumps(row_request(signature, arrays), ensure_ascii=False)
    grpc_inputs = "\n".join(f"request.inputs[{k!r}].CopyFrom(tf.make_tensor_proto({v!r}))"
                            for k, v in inputs.items())
    return (f"docker run -p {rest_port}:8501 -p {grpc_port}:8500 \\\n"
            f"  -v \"$PWD/exported/{model_name}:/models/{model_name}\" -e MODEL_NAME={model_name} tensorflow/serving\n"
            f"# REST (row format)\n"
            f"curl -d '{body}' \\\n  http://{host}:{rest_port}/v1/models/{model_name}:predict\n"
            f"# gRPC (Python, tensorflow-serving-api)\n"
            f"import grpc, tensorflow as tf\n"
            f"from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc\n\n"
            f"stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(\"{host}:{grpc_port}\"))\n"
            f"request = predict_pb2.PredictRequest()\n"
            f"request.model_spec.name, request.model_spec.signature_name = {model_name!r}, {signature!r}\n"
            f"{grpc_inputs}\n"
            f"response = stub.Predict(request, 10.0)\n"
            f"outputs = {{name: tf.make_ndarray(tensor) for name, tensor in response.outputs.items()}}\n")


# --- server-side batching -----------------------------------------------------------------

def merge_requests(requests: list[dict[str, np.ndarray]], pad_variable_length_inputs: bool) -> dict[str, np.ndarray]:
    """The inputs TF Serving's batching session runs for ``requests`` (batching_session.cc).

    Tensors are concatenated along dimension 0. With ``pad_variable_length_inputs`` every
    other dimension is padded to the largest, *with the tensor's first element*; without it,
    those dimensions must already be equal.

    Raises:
        ExportError: shapes differ and padding is off (TF Serving's FailedPrecondition).
    """
    merged = {}
    for name in requests[0]:
        tensors = [np.asarray(r[name]) for r in requests]
        largest = np.max([t.shape for t in tensors], axis=0)
        if pad_variable_length_inputs:
            tensors = [np.pad(t, [(0, 0)] + [(0, int(m - s)) for s, m in zip(t.shape[1:], largest[1:], strict=True)],
                              constant_values=t.reshape(-1)[0]) if t.dtype != object else t for t in tensors]
        elif any(t.shape[1:] != tensors[0].shape[1:] for t in tensors):
            raise ExportError("requests with different shapes cannot be batched while padding is off", where=name,
                              actual=[list(t.shape) for t in tensors],
                              fix="pad every request to the same length, or set pad_variable_length_inputs")
        merged[name] = np.concatenate(tensors)
    return merged


def compare_batched(alone: dict[str, np.ndarray], merged: dict[str, np.ndarray], where: str,
                    atol: float = 1e-4) -> float:
    """A request's outputs alone vs its rows of a merged batch: equal, up to padding.

    An output whose dimensions past the first differ (token-level outputs padded to the
    merged batch's longest text) is compared on the request's own positions.

    Returns:
        The largest numeric difference.

    Raises:
        ExportError: a difference beyond ``atol`` (strings and integers: any difference).
    """
    worst = 0.0
    for name, value in alone.items():
        got = merged[name]
        if got.ndim != value.ndim or any(g < v for g, v in zip(got.shape, value.shape, strict=True)):
            raise ExportError("batched output has another shape", where=f"{where}: {name}",
                              expected=list(value.shape), actual=list(got.shape), fix="report this as a bug")
        got = got[tuple(slice(0, n) for n in value.shape)]
        if value.dtype.kind in "f":
            diff = float(np.abs(value.astype(np.float64) - got).max()) if value.size else 0.0
            same = diff <= atol
            worst = max(worst, diff)
        else:
            same = np.array_equal(value, got)
        if not same:
            raise ExportError("a request's outputs change when TF Serving batches it with other requests",
                              where=f"{where}: {name}", fix="report this as a bug")
    return worst


def batching_parameters(max_batch_size: int = 32, batch_timeout_micros: int = 2000, num_batch_threads: int = 2,
                        max_enqueued_batches: int = 100) -> str:
    """A ``--batching_parameters_file`` for tfbert's SavedModels (BatchingParameters text proto).

    ``pad_variable_length_inputs`` stays false: ``serving_default``'s text input has no
    dimension to pad, and TF Serving pads with a tensor's first element — ``[CLS]`` and
    attention mask 1 for ``tokenized`` — which would make padding count as text. Clients of
    ``tokenized`` pad to one length themselves (mask 0), as Hugging Face's tokenizer does.
    """
    sizes = [1]
    while sizes[-1] * 2 <= max_batch_size:
        sizes.append(sizes[-1] * 2)
    if sizes[-1] != max_batch_size:
        sizes.append(max_batch_size)
    return (f"max_batch_size {{ value: {max_batch_size} }}\n"
            f"batch_timeout_micros {{ value: {batch_timeout_micros} }}\n"
            f"max_enqueued_batches {{ value: {max_enqueued_batches} }}\n"
            f"num_batch_threads {{ value: {num_batch_threads} }}\n"
            + "".join(f"allowed_batch_sizes: {s}\n" for s in sizes)
            + "pad_variable_length_inputs: false\n")


def models_config(name: str, base_path: str, versions: list[int], labels: dict[str, int] | None = None) -> str:
    """A ``--model_config_file`` serving several versions of one model (ModelServerConfig text proto).

    Example:
        >>> print(models_config("minilm", "/models/minilm", [1, 2], {"stable": 1, "canary": 2}))
    """
    specific = " ".join(f"versions: {v}" for v in versions)
    label_lines = "".join(f"    version_labels {{ key: {k!r} value: {v} }}\n".replace("'", '"')
                          for k, v in (labels or {}).items())
    return ("model_config_list {\n  config {\n"
            f"    name: \"{name}\"\n    base_path: \"{base_path}\"\n    model_platform: \"tensorflow\"\n"
            f"    model_version_policy {{ specific {{ {specific} }} }}\n"
            f"{label_lines}  }}\n}}\n")


# --- the check, in a process of its own -----------------------------------------------------

def _signature_specs(meta_graph) -> dict[str, dict]:
    from tfbert.deploy.c_api import TensorSpec

    def spec(info):
        shape = None if info.tensor_shape.unknown_rank else [d.size for d in info.tensor_shape.dim]
        return TensorSpec(info.name, info.dtype, shape)

    return {name: {"inputs": {k: spec(v) for k, v in sig.inputs.items()},
                   "outputs": {k: spec(v) for k, v in sig.outputs.items()}}
            for name, sig in meta_graph.signature_def.items() if not name.startswith("__")}


def _op_audit(directory: str, protos) -> OpAudit:
    from tfbert.deploy import c_api

    used = graph_ops(serve_meta_graph(directory, protos))
    # The registry before tensorflow-text is loaded: core TensorFlow as the C++ library has it.
    core = {op.name for op in protos.op_def_pb2.OpList.FromString(c_api.registered_ops()).op}
    without_kernel = {op for op in used if op in core and not any(
        k.device_type in ("CPU", "DEFAULT")
        for k in protos.kernel_def_pb2.KernelList.FromString(c_api.registered_kernels(op)).kernel)}
    text_ops = {}
    for path in c_api.text_op_libraries():
        library = os.path.basename(path)[1:-3]
        for op in protos.op_def_pb2.OpList.FromString(c_api.load_op_library(path)).op:
            text_ops[op.name] = library
    return audit_ops(used, core, without_kernel, text_ops, where=directory)


def check_like_the_server(directory: str, inputs: dict[str, dict[str, np.ndarray]] | None = None,
                          protos: types.SimpleNamespace | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """Audit the ops, load ``directory`` with TF's C++ loader, replay the warmup file, run ``inputs``.

    Run it in a fresh process (:class:`ServerProcess`). Each signature's ``inputs`` go through
    the REST row codec first (:func:`row_request` → :func:`tensors_from_row_request`), its
    outputs through :func:`row_response`, and the batch is also run as three requests of
    different lengths to compare with the merged run (:func:`compare_batched`).

    Returns:
        A JSON-able report (``audit``, ``signatures``, ``warmup_requests``,
        ``batching_max_abs_diff``) and the outputs, keyed ``signature/<name>/<output>`` and
        ``warmup/<record>/<output>``.

    Raises:
        ExportError: any check TF Serving would fail, on one line.
    """
    from tfbert.deploy import c_api

    protos = protos or import_protos()
    audit = _op_audit(directory, protos)
    session = c_api.SavedModelSession(directory)
    try:
        meta = protos.meta_graph_pb2.MetaGraphDef.FromString(session.meta_graph_def)
        specs = _signature_specs(meta)
        described = {name: {part: {k: {"dtype": s.dtype, "shape": s.shape} for k, s in sig[part].items()}
                            for part in ("inputs", "outputs")} for name, sig in specs.items()}
        outputs: dict[str, np.ndarray] = {}

        def run(name: str, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return session.run(specs[name]["inputs"], values, specs[name]["outputs"])

        replayed = warmup_inputs(directory, described, protos)
        for i, (name, values) in enumerate(replayed):
            for key, value in run(name, values).items():
                outputs[f"warmup/{i}/{key}"] = value
        batching = {}
        for name, values in (inputs or {}).items():
            if name not in specs:
                raise ExportError("signature missing from the loaded SavedModel", where=f"{directory}: {name}",
                                  expected=sorted(inputs), actual=sorted(specs), fix="report this as a bug")
            dtypes = {k: c_api.NUMPY_DTYPES[s.dtype] for k, s in specs[name]["inputs"].items()}
            body = json.loads(json.dumps(row_request(name, values)))
            result = run(name, tensors_from_row_request(body, {k: {"dtype": d} for k, d in dtypes.items()}))
            batch = len(next(iter(values.values())))
            row_response(result, batch)
            outputs.update({f"signature/{name}/{key}": value for key, value in result.items()})
            if batch >= 3:
                cuts = [0, 1, max(2, batch // 3), batch]
                batching[name] = max(compare_batched(run(name, {k: v[a:b] for k, v in values.items()}),
                                                     {k: v[a:b] for k, v in result.items()},
                                                     where=f"{directory}: {name}")
                                     for a, b in itertools.pairwise(cuts))
        report = {"audit": dataclasses.asdict(audit), "signatures": {
            name: {part: sorted(sig[part]) for part in ("inputs", "outputs")} for name, sig in specs.items()},
            "warmup_requests": len(replayed), "batching_max_abs_diff": batching}
        return report, outputs
    finally:
        session.close()


@dataclasses.dataclass
class ServerCheck:
    """What :func:`check_like_the_server` found, read back by the process that started it."""

    audit: OpAudit
    signatures: dict[str, dict[str, list[str]]]
    warmup_requests: int
    batching_max_abs_diff: dict[str, float]
    outputs: dict[str, dict[str, np.ndarray]]
    warmup_outputs: list[dict[str, np.ndarray]]
    warmup_max_abs_diff: float | None = None  # set by whoever compares the replay with a reference


class ServerProcess:
    """:func:`check_like_the_server` on ``directory`` in a new Python process, started now.

    The process imports no TensorFlow Python and no tensorflow-text Python: only TF's C
    library and tensorflow-text's op libraries, as a model server. It runs while the caller
    goes on; :meth:`result` waits for it. Its output goes to files, not pipes, so a chatty
    TensorFlow can never block it on a full pipe. On Linux it is killed when the thread that
    started it ends (``PR_SET_PDEATHSIG``), so a killed export leaves no orphan: start it
    from the thread that waits for it.

    Args:
        directory: the SavedModel version directory.
        inputs: signature -> input name -> array, run through every signature (optional).
        timeout: seconds :meth:`result` waits.
    """

    entry = "tfbert.deploy.serving"  # the ``python -m`` module that runs :func:`main`

    def __init__(self, directory: str, inputs: dict[str, dict[str, np.ndarray]] | None = None,
                 timeout: float = 600) -> None:
        self.directory, self.timeout = directory, timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="tfbert-serving-")
        args = [directory, self._tmp.name, str(os.getpid())]
        if inputs:
            np.savez(os.path.join(self._tmp.name, "inputs.npz"),
                     **{f"{sig}/{k}": v for sig, values in inputs.items() for k, v in values.items()})
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        self._log = open(os.path.join(self._tmp.name, "log.txt"), "w+")  # closed by close()
        self._process = subprocess.Popen([sys.executable, "-m", self.entry, *args], stdout=self._log,
                                         stderr=subprocess.STDOUT, env=env)

    def running(self) -> bool:
        return self._process.poll() is None

    def result(self) -> ServerCheck:
        """Wait for the process; what it found.

        Raises:
            ExportError: a check failed (its one line), or the process did not finish.
        """
        try:
            code = self._process.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise ExportError("the SavedModel did not load and run in TensorFlow's C++ loader in time",
                              where=self.directory, expected=f"<= {self.timeout:.0f} s",
                              fix="report this as a bug; nothing was published") from None
        try:
            error_path = os.path.join(self._tmp.name, "error.json")
            if os.path.isfile(error_path):
                with open(error_path, encoding="utf-8") as f:
                    raise ExportError(**json.load(f))
            if code != 0:
                self._log.seek(0)
                last = ([line for line in self._log.read().strip().splitlines() if line.strip()] or ["no output"])[-1]
                raise ExportError(f"the SavedModel does not load or run in TensorFlow's C++ loader ({last.strip()})",
                                  where=self.directory, fix="report this as a bug; nothing was published")
            with open(os.path.join(self._tmp.name, "report.json"), encoding="utf-8") as f:
                report = json.load(f)
            nested: dict[str, dict[str, dict[str, np.ndarray]]] = {"signature": {}, "warmup": {}}
            # allow_pickle: string outputs, in a file the child wrote a moment ago
            with np.load(os.path.join(self._tmp.name, "outputs.npz"), allow_pickle=True) as data:
                for key in data.files:
                    kind, group, name = key.split("/", 2)
                    nested[kind].setdefault(group, {})[name] = data[key]
            return ServerCheck(OpAudit(**report["audit"]), report["signatures"], report["warmup_requests"],
                               report["batching_max_abs_diff"], nested["signature"],
                               [nested["warmup"][str(i)] for i in range(report["warmup_requests"])])
        finally:
            self.close()

    def close(self) -> None:
        """Stop the process if it still runs, and delete its files."""
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._log.close()
        self._tmp.cleanup()


def _die_with(parent: int) -> None:
    """End this process when the one that started it dies (Linux), instead of running on as an
    orphan that reads a staging directory the next export will delete."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the process ends after its run, as before
        return
    if os.getppid() != parent:  # the parent died before the line above
        sys.exit(1)


def main(argv: list[str]) -> None:
    """The process :class:`ServerProcess` starts: ``directory out_dir parent_pid``."""
    directory, out_dir, parent = argv
    _die_with(int(parent))
    protos = import_protos(without_tensorflow=True)
    inputs: dict[str, dict[str, np.ndarray]] = {}
    in_path = os.path.join(out_dir, "inputs.npz")
    if os.path.isfile(in_path):
        with np.load(in_path, allow_pickle=True) as data:  # written by the parent a moment ago
            for key in data.files:
                signature, name = key.split("/", 1)
                inputs.setdefault(signature, {})[name] = data[key]
    try:
        report, outputs = check_like_the_server(directory, inputs, protos)
    except ExportError as e:
        with open(os.path.join(out_dir, "error.json"), "w", encoding="utf-8") as f:
            json.dump({"message": e.message, "where": e.where, "expected": _plain(e.expected),
                       "actual": _plain(e.actual), "fix": e.fix}, f)
        return
    np.savez(os.path.join(out_dir, "outputs.npz"), **outputs)
    with open(os.path.join(out_dir, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f)


def _plain(value):
    return value if value is None or isinstance(value, (str, int, float, list)) else str(value)


if __name__ == "__main__":
    main(sys.argv[1:])

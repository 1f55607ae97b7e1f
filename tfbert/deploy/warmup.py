"""TF Serving's warmup file, written by the export and read as the server reads it: TFRecords of
``PredictionLog`` requests.

TF Serving replays ``assets.extra/tf_serving_warmup_requests`` when it loads a version and
fails the load if a record does not fit the SavedModel (a signature it lacks, other inputs).
This reader needs neither TensorFlow's Python runtime nor tensorflow-serving-api: the record
framing and checksums are TensorFlow's TFRecord format, the messages TF Serving's protobufs
(:func:`tfbert.deploy.protos.import_protos`).
"""

from __future__ import annotations

import os
import struct
import types

import numpy as np

from tfbert.deploy.protos import import_protos
from tfbert.errors import ExportError

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
DEFAULT_SIGNATURE = "serving_default"


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


def write_warmup_requests(directory: str, model_name: str, texts: list[str] | dict[str, list[str]]) -> str:
    """Write ``directory``'s warmup file: one ``serving_default`` request per batch size 1, 2, 4, ...
    up to ``len(texts)``, so the first real requests of each common size do not pay for graph
    warm-up. Runs where TensorFlow is imported (the export). ``texts`` is the ``text`` input, or
    a dict of string inputs by name (a question-answering model's ``question`` and ``context``).

    Returns:
        The file's path.
    """
    from tfbert.tf import import_tensorflow

    tf = import_tensorflow()
    protos = import_protos()
    path = os.path.join(directory, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    columns = texts if isinstance(texts, dict) else {"text": texts}
    count = len(next(iter(columns.values())))
    sizes = [1]
    while sizes[-1] * 2 <= count:
        sizes.append(sizes[-1] * 2)
    with tf.io.TFRecordWriter(path) as writer:
        for size in sizes:
            log = protos.PredictionLog()
            request = log.predict_log.request
            request.model_spec.name = model_name
            request.model_spec.signature_name = DEFAULT_SIGNATURE
            for name, values in columns.items():
                request.inputs[name].CopyFrom(tf.make_tensor_proto(values[:size], dtype=tf.string))
            writer.write(log.SerializeToString())
    return path


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

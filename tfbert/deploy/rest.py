"""TF Serving's REST row format (``instances`` in, ``predictions`` out), as its JSON codec makes it.

The rules are those of ``tensorflow_serving/util/json_tensor.cc``: a request's ``instances``
is a non-empty list, of objects naming exactly the signature's inputs (or plain values for a
single input), every element of an input of one shape; strings are plain JSON strings (or
``{"b64": ...}``). The response has one prediction per example, so every output must have the
request's batch as its first dimension, or TF Serving refuses the row format.
:func:`serving_examples` writes the curl and gRPC examples from these rules.
"""

from __future__ import annotations

import base64
import json

import numpy as np

from tfbert.errors import ExportError


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


def serving_examples(model_name: str, signature: str, inputs: dict[str, list], *, model_dir: str | None = None,
                     host: str = "localhost", rest_port: int = 8501, grpc_port: int = 8500) -> dict[str, str]:
    """How to serve and query ``model_name``: the docker and curl lines, and the gRPC client in Python.

    The curl body is :func:`row_request` of ``inputs``, so it follows TF Serving's row format.

    Args:
        model_name: the name TF Serving serves the model under (``MODEL_NAME``).
        signature: the signature to call.
        inputs: input name -> one example per element (strings as ``str``).
        model_dir: the directory holding the model's versions (default ``exported/<model_name>``).

    Returns:
        ``{"shell": docker + curl, "python": the gRPC client}``.

    Example:
        >>> print(serving_examples("minilm", "serving_default", {"text": ["A man is playing a guitar."]})["shell"])
    """
    arrays = {k: np.array([v.encode("utf-8") if isinstance(v, str) else v for v in values],
                          dtype=object if values and isinstance(values[0], str) else None)
              for k, values in inputs.items()}
    body = json.dumps(row_request(signature, arrays), ensure_ascii=False).replace("'", "'\\''")  # in '...'

    grpc_inputs = "".join(f"request.inputs[{k!r}].CopyFrom(tf.make_tensor_proto({v!r}))\n" for k, v in inputs.items())
    shell = (f"docker run -p {rest_port}:8501 -p {grpc_port}:8500 \\\n"
             f"  -v \"$PWD/{model_dir or 'exported/' + model_name}:/models/{model_name}\" -e MODEL_NAME={model_name} "
             "tensorflow/serving\n"
             f"# REST, row format\n"
             f"curl -d '{body}' \\\n  http://{host}:{rest_port}/v1/models/{model_name}:predict\n")
    python = ("# pip install tensorflow-serving-api==<your TensorFlow's major.minor>.*\n"
              "import grpc, tensorflow as tf\n"
              "from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc\n\n"
              f"channel = grpc.insecure_channel(\"{host}:{grpc_port}\")\n"
              "stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)\n"
              "request = predict_pb2.PredictRequest()\n"
              f"request.model_spec.name, request.model_spec.signature_name = {model_name!r}, {signature!r}\n"
              f"{grpc_inputs}"
              "response = stub.Predict(request, 10.0)\n"
              "outputs = {name: tf.make_ndarray(tensor) for name, tensor in response.outputs.items()}\n")
    return {"shell": shell, "python": python}

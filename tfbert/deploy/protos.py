"""TensorFlow's protobuf modules, importable in a process that must not load TensorFlow's Python runtime.

A model server has TensorFlow's C++ op registry and kernels, not the ones TensorFlow's Python
package adds (``EagerPyFunc``, the kernel behind ``tf.py_function``). The generated
``*_pb2`` modules tfbert needs to read a SavedModel and a warmup file can be imported without
running ``tensorflow/__init__.py``, so a checking process stays as close to a server as that.
"""

from __future__ import annotations

import importlib.util
import sys
import types


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

"""Deployments proved with their real consumer: TF Serving's C++ loader, op set, REST codec and batching.

See :mod:`tfbert.deploy.serving` (the checks and the server's configuration files) and
:mod:`tfbert.deploy.c_api` (TensorFlow's C API through ctypes).
"""

from tfbert.deploy.serving import (
    OpAudit,
    ServerCheck,
    ServerProcess,
    audit_ops,
    batching_parameters,
    check_like_the_server,
    compare_batched,
    merge_requests,
    models_config,
    row_request,
    row_response,
    serving_examples,
    tensors_from_row_request,
)

__all__ = ["OpAudit", "ServerCheck", "ServerProcess", "audit_ops", "batching_parameters", "check_like_the_server",
           "compare_batched", "merge_requests", "models_config", "row_request", "row_response", "serving_examples",
           "tensors_from_row_request"]

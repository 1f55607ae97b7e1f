"""Deployments proved with their real consumer: TF Serving's C++ loader, op set, REST codec and batching.

:mod:`tfbert.deploy.serving` runs the checks in a process of its own; :mod:`~tfbert.deploy.ops`,
:mod:`~tfbert.deploy.warmup`, :mod:`~tfbert.deploy.rest`, :mod:`~tfbert.deploy.batching` and
:mod:`~tfbert.deploy.config` hold TF Serving's rules, :mod:`~tfbert.deploy.c_api` TensorFlow's C API.
"""

from tfbert.deploy.batching import compare_batched, merge_requests
from tfbert.deploy.config import batching_parameters, models_config
from tfbert.deploy.ops import OpAudit, audit_ops
from tfbert.deploy.rest import row_request, row_response, serving_examples, tensors_from_row_request
from tfbert.deploy.serving import ServerCheck, ServerProcess, check_like_the_server
from tfbert.deploy.warmup import warmup_inputs

__all__ = ["OpAudit", "ServerCheck", "ServerProcess", "audit_ops", "batching_parameters", "check_like_the_server",
           "compare_batched", "merge_requests", "models_config", "row_request", "row_response", "serving_examples",
           "tensors_from_row_request", "warmup_inputs"]

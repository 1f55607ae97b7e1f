"""Scale-out inference on Apache Beam (the ``beam`` extra): tfbert's Predictor as a ModelHandler.

Importing ``tfbert`` never imports this package; it needs ``pip install "tfbert[beam]"``
(without it, importing this package raises one IncompatibleEnvironmentError naming the fix).

Example:
    >>> from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
    >>> from tfbert.beam import BertModelHandler
    >>> handler = KeyedModelHandler(BertModelHandler("model_int8.tflite", task="embed"))
"""

from tfbert.beam import requirement  # noqa: F401  (first: the one-line error when Beam is missing)
from tfbert.beam.handler import BertModelHandler, SharedPredictor, unreadable
from tfbert.beam.job import RUNNERS, JobResult, match_inputs, read_output, run_job, worker_error

__all__ = ["RUNNERS", "BertModelHandler", "JobResult", "SharedPredictor", "match_inputs", "read_output", "run_job",
           "unreadable", "worker_error"]

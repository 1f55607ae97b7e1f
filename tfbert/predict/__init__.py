"""Stage 5b — predict: batched inference, one :class:`Predictor` over every backend.

Importing this package does not import TensorFlow; the tflite backend never does.

Example:
    >>> from tfbert.predict import Predictor
    >>> Predictor(task="embed").predict(["a cat sat"])["sentence_embedding"].shape
    (1, 384)
"""

from tfbert.predict.output import RowWriter, write_rows
from tfbert.predict.pipeline import (
    ReadStats,
    TextFile,
    batched_inputs,
    count_records,
    numpy_batches,
    text_dataset,
    texts_dataset,
)
from tfbert.predict.predictor import (
    BACKENDS,
    TASKS,
    Predictor,
    Progress,
    assemble,
    in_order,
    resolve_backend,
)

__all__ = ["BACKENDS", "TASKS", "Predictor", "Progress", "ReadStats", "RowWriter", "TextFile", "assemble",
           "batched_inputs", "count_records", "in_order", "numpy_batches", "resolve_backend", "text_dataset",
           "texts_dataset", "write_rows"]

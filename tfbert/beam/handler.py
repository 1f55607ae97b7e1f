"""tfbert's :class:`~tfbert.predict.Predictor` as an Apache Beam ``ModelHandler``.

:class:`BertModelHandler` drops into ``RunInference`` for every backend the Predictor runs
(a checkpoint through the Keras graph, an exported SavedModel, a ``.tflite`` under LiteRT)
and the tasks ``embed`` and ``classify``. It holds paths and settings only: Beam pickles it to
the workers, and each worker process loads one Predictor (shared by its threads under a lock;
``large_model=True`` serves one copy per machine through Beam's ``MultiProcessShared``).

A text the model cannot take (not a ``str``, or a ``str`` that is not valid Unicode) is
weighed as a whole batch by ``element_size_fn``, so Beam's ``BatchElements`` puts it in a
batch of its own and ``RunInference(...).with_exception_handling()`` sends exactly that text
to its error output, with the reason; a batch that fails for another reason is retried text
by text before anything is reported.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from tfbert.errors import BadInputError, TfbertError
from tfbert.predict import BACKENDS

log = logging.getLogger("tfbert")

TASKS = ("embed", "classify")
DEFAULT_MODEL_ID = "all-MiniLM-L6-v2 (embedded)"


def unreadable(text: Any) -> str | None:
    """Why the model cannot take ``text`` (not a ``str``, not valid Unicode), or None if it can.

    Example:
        >>> unreadable(None), unreadable("a cat sat")
        ('not a string (NoneType)', None)
    """
    if not isinstance(text, str):
        return f"not a string ({type(text).__name__})"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"not valid Unicode (a lone surrogate at character {e.start})"
    return None


def _text_of(element: Any) -> Any:
    """The text of an element as ``BatchElements`` sees it: ``text`` or ``(key, text)``."""
    return element[1] if isinstance(element, tuple) and len(element) == 2 else element


class _Weight:
    """``element_size_fn``: 1 per text, a whole batch for a text the model cannot take."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size

    def __call__(self, element: Any) -> int:
        return self.batch_size if unreadable(_text_of(element)) else 1


class _TokenCount:
    """``batch_length_fn``: BERT's basic-tokenizer word count plus [CLS] and [SEP], at most
    ``max_length`` — a lower bound of the WordPiece count, without a vocabulary; 0 for a text
    the model cannot take (so it falls in a bucket of its own)."""

    _split = threading.local()

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length

    def __call__(self, element: Any) -> int:
        text = _text_of(element)
        if unreadable(text):
            return 0
        split = getattr(self._split, "fns", None)
        if split is None:
            from tokenizers import normalizers, pre_tokenizers

            split = self._split.fns = (
                normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False,
                                           lowercase=False),
                pre_tokenizers.BertPreTokenizer())
        words = split[1].pre_tokenize_str(split[0].normalize_str(text))
        return min(len(words) + 2, self.max_length)


class SharedPredictor:
    """One loaded :class:`~tfbert.predict.Predictor` per worker process, called under a lock.

    Beam shares the loaded model between a worker's threads (and, with ``large_model``,
    between processes through a proxy that exposes methods only); a LiteRT interpreter must
    not run two batches at once.

    Args:
        predictor: the loaded Predictor.
    """

    def __init__(self, predictor) -> None:
        self._predictor = predictor
        self._lock = threading.Lock()

    def predict(self, texts: list[str]) -> dict[str, np.ndarray]:
        """The Predictor's outputs for ``texts``, in their order."""
        with self._lock:
            return self._predictor.predict(texts)

    def backend(self) -> str:
        """The concrete backend the Predictor runs (``tflite``, ``savedmodel``, ``keras-graph``...)."""
        return self._predictor.backend


class BertModelHandler(ModelHandler[str, PredictionResult, SharedPredictor]):
    """A Beam ``ModelHandler`` running tfbert's Predictor: texts in, embeddings or labels out.

    Args:
        model_path: a checkpoint directory, an exported SavedModel version directory or a
            ``.tflite`` file, as the workers see it; None is the embedded all-MiniLM-L6-v2.
            Only the path is shipped: the model is loaded on the workers.
        task: ``embed`` (inference: the float32 sentence embedding) or ``classify``
            (inference: ``{"label": str, "probabilities": float32 array}``).
        backend: as for :class:`~tfbert.predict.Predictor` (``auto`` picks from the path).
        batch_size: texts per model call.
        max_length: truncation length in tokens.
        num_threads: LiteRT interpreter threads per worker process.
        vocab_path: vocab.txt for a ``.tflite`` model (default: next to it, else the MiniLM's).
        texts_per_batch: texts per Beam batch (fixed, so an unreadable text can be given a
            batch of its own); the Predictor sorts each batch by length before cutting it
            into ``batch_size`` model calls. Large, because each batch is one
            :meth:`~tfbert.predict.Predictor.predict` call, which for the TensorFlow backends
            builds a tf.data pipeline (about a second each, measured under load).
        length_buckets: token-count boundaries for Beam's length-aware batching
            (``batch_length_fn`` + ``batch_bucket_boundaries``), e.g. ``[16, 32, 64]``; this
            makes ``BatchElements`` stateful, which the DirectRunner runs on its
            single-process engine only (docs/beam.md). None: off.
        max_batch_duration_secs: how long a bucket may wait to fill (with ``length_buckets``).
        large_model: one model per machine, served to the worker processes through Beam's
            ``MultiProcessShared`` (for models that do not fit once per process).
        model_copies: with ``large_model``, how many copies per machine.

    Raises:
        BadInputError: an unknown task or backend, or a non-positive size.

    Example:
        >>> import apache_beam as beam
        >>> from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
        >>> with beam.Pipeline() as p:  # doctest: +SKIP
        ...     results, errors = (p | beam.Create([("a", "a cat sat"), ("b", "hello world")])
        ...         | RunInference(KeyedModelHandler(BertModelHandler("model_int8.tflite")))
        ...         .with_exception_handling())
    """

    def __init__(self, model_path: str | os.PathLike | None = None, task: str = "embed", backend: str = "auto", *,
                 batch_size: int = 32, max_length: int = 128, num_threads: int = 1, vocab_path: str | None = None,
                 texts_per_batch: int = 1024, length_buckets: Sequence[int] | None = None,
                 max_batch_duration_secs: int = 10, large_model: bool = False, model_copies: int | None = None) -> None:
        if task not in TASKS:
            raise BadInputError("the Beam handler runs embed and classify", where="task",
                                expected=" | ".join(TASKS), actual=task,
                                fix="use python -m tfbert.predict without --runner for fill_mask")
        if backend not in BACKENDS:
            raise BadInputError("unknown backend", where="backend", expected=" | ".join(BACKENDS), actual=backend,
                                fix="pass backend='auto' to pick from the model path")
        for name, value in (("batch_size", batch_size), ("max_length", max_length), ("num_threads", num_threads),
                            ("texts_per_batch", texts_per_batch)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise BadInputError("must be a positive integer", where=name, expected=">= 1", actual=value,
                                    fix=f"pass {name}=1 or more")
        bucketing = {}
        if length_buckets is not None:
            bucketing = {"batch_length_fn": _TokenCount(max_length),
                         # below 1: the texts the model cannot take, in batches of their own
                         "batch_bucket_boundaries": [1, *sorted(b for b in length_buckets if b > 1)],
                         "max_batch_duration_secs": max_batch_duration_secs}
        super().__init__(min_batch_size=texts_per_batch, max_batch_size=texts_per_batch,
                         element_size_fn=_Weight(texts_per_batch), large_model=large_model,
                         model_copies=model_copies, **bucketing)
        self.model_path = None if model_path is None else os.fspath(model_path)
        self.task, self.backend = task, backend
        self.batch_size, self.max_length, self.num_threads = batch_size, max_length, num_threads
        self.vocab_path, self.texts_per_batch = vocab_path, texts_per_batch

    def load_model(self) -> SharedPredictor:
        """Load the Predictor on this worker.

        Raises:
            BadInputError: the model cannot be loaded here (one line naming the path and host).
        """
        from tfbert.predict import Predictor

        try:
            predictor = Predictor(self.model_path, task=self.task, backend=self.backend, batch_size=self.batch_size,
                                  max_length=self.max_length, num_threads=self.num_threads,
                                  vocab_path=self.vocab_path, window=self.texts_per_batch)
        except TfbertError as e:
            raise BadInputError(f"a Beam worker on {socket.gethostname()} cannot load the model: {e.message}",
                                where=e.where or self.model_path, expected=e.expected, actual=e.actual,
                                fix="put the model where every worker reads it (a path on shared storage or in "
                                "the worker container; docs/beam.md)") from None
        return SharedPredictor(predictor)

    def run_inference(self, batch: Sequence[str], model: SharedPredictor,
                      inference_args: dict[str, Any] | None = None) -> Iterable[PredictionResult]:
        """``PredictionResult(text, inference)`` per text, in batch order.

        Raises:
            BadInputError: some texts cannot be run (each named with its position and reason;
                the batch goes to ``with_exception_handling()``'s error output).
        """
        problems = {i: reason for i, text in enumerate(batch) if (reason := unreadable(text))}
        if not problems:
            try:
                return self._results(batch, model.predict(list(batch)))
            except Exception as e:  # any failure is retried text by text
                log.warning("a batch of %d texts failed (%s); retrying them one by one", len(batch), _first_line(e))
        outputs = {}
        for i, text in enumerate(batch):
            if i not in problems:
                try:
                    outputs[i] = model.predict([text])
                except Exception as e:  # reported with the text below
                    problems[i] = _first_line(e)
        if problems:
            shown = "; ".join(f"text {i} {_preview(batch[i])}: {reason}" for i, reason in sorted(problems.items()))
            raise BadInputError(f"{len(problems)} of {len(batch)} texts cannot be run ({shown})",
                                where=self.model_path or DEFAULT_MODEL_ID,
                                fix="drop or repair those records (strings of valid Unicode)")
        return [result for i in range(len(batch)) for result in self._results([batch[i]], outputs[i])]

    def _results(self, texts: Sequence[str], out: dict[str, np.ndarray]) -> list[PredictionResult]:
        model_id = self.model_path or DEFAULT_MODEL_ID
        if self.task == "embed":
            rows = np.asarray(out["sentence_embedding"], np.float32)
            return [PredictionResult(text, rows[i], model_id) for i, text in enumerate(texts)]
        probabilities = np.asarray(out["probabilities"], np.float32)
        return [PredictionResult(text, {"label": str(out["labels"][i]), "probabilities": probabilities[i]}, model_id)
                for i, text in enumerate(texts)]

    def get_num_bytes(self, batch: Sequence[str]) -> int:
        """Bytes of text in the batch (Beam's default pickles the whole batch to count them)."""
        return sum(len(t.encode("utf-8")) if not unreadable(t) else 0 for t in batch)

    def get_metrics_namespace(self) -> str:
        """Beam metrics of this handler are under ``tfbert``."""
        return "tfbert"

    def update_model_path(self, model_path: str | None = None) -> None:
        """Beam's model refresh: the next load reads ``model_path``."""
        if model_path:
            self.model_path = model_path


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def _preview(text: Any) -> str:
    shown = repr(text)
    return shown if len(shown) <= 40 else shown[:37] + "..."

"""Entities per text from an exported token classifier: the SavedModel's own aggregation, or a .tflite's logits.

:class:`EntityPredictor` has the interface ``python -m tfbert.predict`` streams from
(:meth:`~EntityPredictor.ordered_batches`, ``tokenizer``, ``backend``):

* **SavedModel** (a version directory written by ``python -m tfbert.export --task=token_classify``):
  its ``serving_default(text)`` returns the entities, grouped in the graph with the aggregation
  chosen at export (``assets/aggregation.txt``), so predict gets what TF Serving answers.
* **.tflite** (token input, per-token logits): ids and character offsets from
  :class:`tfbert.edge_tokenizer.EdgeTokenizer` (Hugging Face's), the model under LiteRT, and
  :func:`tfbert.tasks.token_classification.aggregate_batch` in numpy; no TensorFlow.

A text longer than ``max_length`` tokens is truncated, as everywhere in tfbert: its entities
come from its first ``max_length - 2`` tokens (a 100,000-character text gives the entities of
its first few hundred characters).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator

import numpy as np

from tfbert.errors import BadInputError
from tfbert.tasks.token_classification import (
    DEFAULT_AGGREGATION,
    TagTables,
    aggregate_batch,
    check_strategy,
    entities_from_outputs,
)

AGGREGATION_ASSET = "aggregation.txt"  # in a token classifier SavedModel's assets/: how it groups entities


def read_labels(path: str) -> list[str]:
    """Tag names in id order from a ``labels.txt`` (one per line) or a ``config.json`` (``id2label``)."""
    from tfbert.model import label_names

    with open(path, encoding="utf-8") as f:
        if path.endswith(".json"):
            return label_names(json.load(f))
        return f.read().split("\n")[:-1]


class EntityPredictor:
    """Entities for texts from a token-classification SavedModel, .tflite or checkpoint directory.

    Args:
        model_path: a SavedModel version directory, a ``.tflite`` file, or a checkpoint directory
            (fine-tuning's output: run through the graph the SavedModel export would write).
        batch_size: texts per batch.
        max_length: truncation length in tokens (.tflite and checkpoint; a SavedModel has its export's).
        aggregation: ``simple``, ``first`` or ``max``; None: the SavedModel's, else ``first``.
        num_threads: LiteRT threads.
        vocab_path: the .tflite's vocab.txt (default: next to it).

    Raises:
        BadInputError: not a token-classification export, no vocabulary or labels beside a
            .tflite, or an aggregation other than the SavedModel's.

    Example:
        >>> predictor = EntityPredictor("exported/ner/1")  # doctest: +SKIP
        >>> predictor.predict(["Ada Lovelace was born in London."])[0]  # doctest: +SKIP
        [Entity(word='Ada Lovelace', start=0, end=12, label='PER', score=0.99), ...]
    """

    def __init__(self, model_path: str | os.PathLike, *, batch_size: int = 32, max_length: int = 128,
                 aggregation: str | None = None, num_threads: int = 2, vocab_path: str | None = None) -> None:
        self.model_path = os.fspath(model_path) if model_path is not None else None
        self.batch_size, self.max_length = batch_size, max_length
        if self.model_path is None or not os.path.exists(self.model_path):
            raise BadInputError("token_classify predicts with a fine-tuned checkpoint or an exported model",
                                where=f"--model={model_path}",
                                fix="pass the checkpoint directory python -m tfbert.finetune --task=token_classify "
                                    "wrote, or the SavedModel version directory or .tflite of its export")
        if aggregation is not None:
            check_strategy(aggregation)
        from tfbert.predict.predictor import resolve_backend

        self.backend = resolve_backend(self.model_path, "auto")
        if self.backend == "tflite":
            self._run = self._tflite(aggregation or DEFAULT_AGGREGATION, num_threads, vocab_path)
        elif self.backend == "savedmodel":
            self._run = self._saved_model(aggregation)
        else:  # a checkpoint directory
            self._run = self._checkpoint(aggregation or DEFAULT_AGGREGATION)

    def _saved_model(self, aggregation: str | None) -> Callable[[list[str]], list]:
        from tfbert.tf import import_tensorflow
        from tfbert.tokenizer import Vocabulary

        tf = import_tensorflow()
        import tensorflow_text  # noqa: F401  (registers the tokenizer's ops the graph calls)

        assets = os.path.join(self.model_path, "assets")
        asset = os.path.join(assets, AGGREGATION_ASSET)
        if not os.path.isfile(os.path.join(self.model_path, "saved_model.pb")) or not os.path.isfile(asset):
            raise BadInputError("not a token-classification SavedModel", where=self.model_path,
                                expected=f"saved_model.pb and assets/{AGGREGATION_ASSET}",
                                fix="pass a version directory written by python -m tfbert.export --task=token_classify")
        with open(asset, encoding="utf-8") as f:
            exported = f.read().strip()
        if aggregation is not None and aggregation != exported:
            raise BadInputError("the SavedModel groups entities with another aggregation", where=self.model_path,
                                expected=aggregation, actual=exported,
                                fix=f"re-export with --aggregation={aggregation}, drop --aggregation, or predict with "
                                    "the .tflite (aggregated here)")
        self.aggregation = exported
        self.tokenizer = Vocabulary.from_files(os.path.join(assets, "vocab.txt"))
        try:
            loaded = tf.saved_model.load(self.model_path)
        except (OSError, ValueError, tf.errors.OpError) as e:
            raise BadInputError(f"cannot load the SavedModel ({type(e).__name__})", where=self.model_path,
                                fix="pass a version directory written by python -m tfbert.export") from e
        signature = loaded.signatures["serving_default"]
        self._loaded = loaded  # the signature needs its module alive

        def run(texts: list[str]) -> list:
            out = {k: v.numpy() for k, v in signature(text=tf.constant(texts, tf.string)).items()}
            return [entities_from_outputs(out, row) for row in range(len(texts))]

        return run

    def _checkpoint(self, aggregation: str) -> Callable[[list[str]], list]:
        from tfbert.checkpoint import find_checkpoint
        from tfbert.export.savedmodel import build_serving_module
        from tfbert.model import load
        from tfbert.tf import import_tensorflow
        from tfbert.tokenizer import BertTokenizer

        tf = import_tensorflow()
        files = find_checkpoint(self.model_path)
        self.tokenizer = BertTokenizer.from_files(files.vocab, files.tokenizer_config)
        self.aggregation = aggregation
        module = build_serving_module(load(self.model_path, "token_classify", require_head=True), self.tokenizer,
                                      "token_classify", max_seq_length=self.max_length, aggregation=aggregation)

        def run(texts: list[str]) -> list:
            out = {k: v.numpy() for k, v in module.serve_text(tf.constant(texts, tf.string)).items()}
            return [entities_from_outputs(out, row) for row in range(len(texts))]

        return run

    def _tflite(self, aggregation: str, num_threads: int, vocab_path: str | None) -> Callable[[list[str]], list]:
        from tfbert.edge_tokenizer import EdgeTokenizer, sibling_tokenizer_json
        from tfbert.litert import LiteRTRunner

        directory = os.path.dirname(os.path.abspath(self.model_path))
        vocab_path = vocab_path or os.path.join(directory, "vocab.txt")
        config_path = os.path.join(os.path.dirname(os.path.abspath(vocab_path)), "config.json")
        for path, what in ((vocab_path, "vocab.txt"), (config_path, "config.json (its labels)")):
            if not os.path.isfile(path):
                raise BadInputError(f"a token classifier .tflite needs its {what} beside it", where=path,
                                    fix="predict with the directory python -m tfbert.export wrote, or pass --vocab")
        settings = os.path.join(os.path.dirname(os.path.abspath(vocab_path)), "tokenizer_config.json")
        self.tokenizer = EdgeTokenizer.from_files(vocab_path, settings if os.path.isfile(settings) else None,
                                                  sibling_tokenizer_json(vocab_path))
        self.aggregation = aggregation
        tables = TagTables.for_tokenizer(read_labels(config_path), self.tokenizer)
        try:
            runner = LiteRTRunner(self.model_path, num_threads)
        except (ValueError, RuntimeError) as e:
            raise BadInputError("cannot load the TFLite model", where=self.model_path,
                                fix="pass a .tflite written by python -m tfbert.export --task=token_classify") from e
        if runner.input_names != ["attention_mask", "input_ids"]:
            raise BadInputError("predict takes a token-input .tflite for token_classify", where=self.model_path,
                                expected="inputs input_ids, attention_mask", actual=runner.input_names,
                                fix="pass model_<quantization>.tflite, not the _text one")

        def run(texts: list[str]) -> list:
            tokens = self.tokenizer.tokenize_with_offsets(texts, self.max_length)
            out = runner({"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]})
            if out.get("logits") is None or out["logits"].ndim != 3 or out["logits"].shape[-1] != len(tables.labels):
                raise BadInputError("the .tflite is not this token classifier", where=self.model_path,
                                    expected=f"logits [batch, seq, {len(tables.labels)}]",
                                    actual={k: list(v.shape) for k, v in out.items()},
                                    fix="export with python -m tfbert.export --task=token_classify")
            return aggregate_batch(texts, dict(tokens, logits=out["logits"]), tables, aggregation)

        return run

    def predict(self, texts: list[str]) -> list:
        """The entities of each text (:class:`tfbert.tasks.token_classification.Entity` lists)."""
        out = []
        for start in range(0, len(texts), self.batch_size):
            out.extend(self._run(texts[start:start + self.batch_size]))
        return out

    def ordered_batches(self, records, progress: Callable[[int], None] | None = None
                        ) -> Iterator[tuple[np.ndarray, dict]]:
        """``(indices, {"entities": [[entity dicts] per row]})`` per batch of ``(index, text)`` records, in order."""
        done = 0
        batch: list[tuple[int, str]] = []

        def flush():
            entities = self._run([text for _, text in batch])
            return np.array([i for i, _ in batch]), {"entities": [[e.to_dict() for e in row] for row in entities]}

        for record in records:
            batch.append(record)
            if len(batch) == self.batch_size:
                yield flush()
                done += len(batch)
                batch = []
                if progress is not None:
                    progress(done)
        if batch:
            yield flush()
            if progress is not None:
                progress(done + len(batch))

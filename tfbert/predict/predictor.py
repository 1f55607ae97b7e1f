"""One :class:`Predictor` over every backend: Keras (eager, graph, XLA), SavedModel and TFLite.

Each backend is a function ``token batch -> dict of numpy outputs``; the Predictor feeds it
the batches of :mod:`tfbert.predict.pipeline` and puts the rows back in input order, either
all at once (:meth:`Predictor.predict`) or streaming through a bounded reorder buffer
(:meth:`Predictor.ordered_batches`). The TensorFlow backends get tf.data batches tokenized
in the graph; the tflite backend (a token-input .tflite) runs without TensorFlow: the same
length-sorted batches made in numpy (:func:`~tfbert.predict.pipeline.numpy_batches`), ids
from :class:`~tfbert.edge_tokenizer.EdgeTokenizer`, the model under LiteRT.
:meth:`Predictor.predict_one` is the batch-1 path: no batching, and for the TensorFlow
backends the tokenizer converted to a LiteRT graph.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from tfbert.errors import BadInputError, CheckpointNotFoundError
from tfbert.litert import LiteRTRunner
from tfbert.predict.pipeline import (
    ReadStats,
    TextFile,
    batched_inputs,
    numpy_batches,
    pad_length,
    text_dataset,
    texts_dataset,
)
from tfbert.tf import import_tensorflow
from tfbert.tflite_metadata import BERT_INPUTS

log = logging.getLogger("tfbert")

TASKS = ("embed", "classify", "fill_mask")
BACKENDS = ("auto", "keras-eager", "keras-graph", "keras-xla", "savedmodel", "tflite")
KERAS_MODES = {"keras-eager": "eager", "keras-graph": "graph", "keras-xla": "xla"}
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# What predict returns per task; everything else a backend computes is dropped.
OUTPUTS = {"embed": ("sentence_embedding",), "classify": ("probabilities", "label_ids", "labels"),
           "fill_mask": ("top_k_ids", "top_k_probabilities", "top_k_tokens", "input_ids")}
Batch = dict[str, np.ndarray]
_XLA_MULTIPLE = 16  # keras-xla pads sequence lengths to a multiple of this: one compilation per bucket
_FILL = {"top_k_ids": -1, "top_k_probabilities": 0.0, "top_k_tokens": "", "input_ids": -1}


def resolve_backend(model_path: str | None, backend: str) -> str:
    """The concrete backend ``auto`` stands for: tflite for a .tflite file, savedmodel for a
    SavedModel directory, keras-graph for a checkpoint."""
    if backend not in BACKENDS:
        raise BadInputError("unknown backend", where="backend", expected=" | ".join(BACKENDS), actual=backend,
                            fix="pass backend='auto' to pick from the model path")
    if backend != "auto":
        return backend
    if model_path is not None and str(model_path).endswith(".tflite"):
        return "tflite"
    if model_path is not None and os.path.isfile(os.path.join(model_path, "saved_model.pb")):
        return "savedmodel"
    return "keras-graph"


class _TaskHead:
    """The model plus tfbert's task pooling, shaped the way :func:`compile_forward` compiles it.

    Compiling head and pooling together puts the pooling inside the same graph / XLA cluster.
    """

    def __init__(self, model, task: str) -> None:
        from tfbert.model import task_outputs

        self.config = model.config
        self._outputs = task_outputs(model, task)

    def call(self, input_ids, attention_mask, token_type_ids, training=False):
        return self._outputs({"input_ids": input_ids, "attention_mask": attention_mask,
                              "token_type_ids": token_type_ids})

    __call__ = call


class TFLiteTokenizer:
    """A :class:`~tfbert.tokenizer.BertTokenizer` converted to a LiteRT graph, for one text at a time.

    The graph is the tokenizer's own TensorFlow code (builtin ops plus tensorflow-text's
    kernels), so the ids are the ones :meth:`~tfbert.tokenizer.BertTokenizer.tokenize` gives.

    Args:
        tokenizer: the tokenizer.
        max_length: truncation length.

    Example:
        >>> TFLiteTokenizer(tokenizer, 128)("Hello world!")["input_ids"].tolist()  # doctest: +SKIP
        [[101, 7592, 2088, 999, 102]]
    """

    def __init__(self, tokenizer, max_length: int) -> None:
        from ai_edge_litert.interpreter import InterpreterWithCustomOps

        from tfbert.tokenizer import tflite_op_registerers

        self.interpreter = InterpreterWithCustomOps(model_content=tokenizer.to_tflite(max_length), num_threads=1,
                                                    custom_op_registerers=tflite_op_registerers())
        signature = self.interpreter.get_signature_runner()
        self._input = signature.get_input_details()["text"]["index"]
        self._outputs = {name: d["index"] for name, d in signature.get_output_details().items()}
        del signature  # the interpreter refuses a resize while the runner holds its tensors
        self.interpreter.resize_tensor_input(self._input, [1])
        self.interpreter.allocate_tensors()

    def __call__(self, text: str) -> Batch:
        self.interpreter.set_tensor(self._input, np.array([text.encode("utf-8")], dtype=object))
        self.interpreter.invoke()
        return {name: self.interpreter.get_tensor(index) for name, index in self._outputs.items()}


class Predictor:
    """Batched inference on texts or files, in input order, with any backend.

    Args:
        model_path: a checkpoint directory (Keras backends), an exported SavedModel version
            directory, or a ``.tflite`` file; None is the embedded all-MiniLM-L6-v2.
        task: ``embed``, ``classify`` or ``fill_mask`` (TFLite exports: embed and classify).
        backend: ``keras-eager``, ``keras-graph``, ``keras-xla``, ``savedmodel``, ``tflite`` or
            ``auto`` (from the model path: .tflite → tflite, SavedModel → savedmodel, else keras-graph).
        batch_size: texts per batch.
        max_length: truncation length in tokens.
        num_threads: TFLite interpreter threads.
        vocab_path: vocab.txt for a .tflite model (which has no vocab inside); default: a
            vocab.txt next to the file, else the embedded MiniLM's (right for its default export).
        tokenizer_config: tokenizer_config.json going with ``vocab_path`` (lower-casing).
        window: texts length-sorted together (default 16 * batch_size).

    Attributes:
        uses_tensorflow: False for the tflite backend, which never imports TensorFlow (for a
            token-input .tflite; a raw-text one needs tensorflow-text's kernels).

    Example:
        >>> predictor = Predictor(task="embed")  # the embedded MiniLM, keras-graph
        >>> out = predictor.predict(["a cat sat", "hello world"])
        >>> out["sentence_embedding"].shape
        (2, 384)
    """

    def __init__(self, model_path: str | os.PathLike | None = None, task: str = "embed", backend: str = "auto",
                 batch_size: int = 32, max_length: int = 128, num_threads: int = 2, *,
                 vocab_path: str | None = None, tokenizer_config: str | None = None,
                 window: int | None = None) -> None:
        if task not in TASKS:
            raise BadInputError("unknown task", where="task", expected=" | ".join(TASKS), actual=task,
                                fix="pass task='embed', 'classify' or 'fill_mask'")
        self.model_path = None if model_path is None else os.fspath(model_path)
        if self.model_path is not None and not os.path.exists(self.model_path):
            raise BadInputError("no such model file or directory", where=self.model_path,
                                fix="pass --model=PATH naming a checkpoint, SavedModel or .tflite")
        self.task = task
        self.backend = resolve_backend(self.model_path, backend)
        self.batch_size, self.max_length, self.window = batch_size, max_length, window
        self.labels: list[str] | None = None
        self._tokenize_one = None
        self.uses_tensorflow = self.backend != "tflite"
        # What a backend raises on a batch it cannot run (turned into a one-line error).
        self._failures: tuple[type[Exception], ...] = (ValueError, RuntimeError)
        if self.uses_tensorflow:
            self._failures += (import_tensorflow().errors.OpError,)
        if self.backend in KERAS_MODES:
            self._run = self._keras(KERAS_MODES[self.backend])
        elif self.backend == "savedmodel":
            self._run = self._saved_model()
        else:
            self._run = self._tflite(num_threads, vocab_path, tokenizer_config)

    # === Backends ===
    def _keras(self, mode: str) -> Callable[[Batch], Batch]:
        from tfbert.checkpoint import find_checkpoint
        from tfbert.model import label_names, load
        from tfbert.runtime import compile_forward
        from tfbert.tokenizer import BertTokenizer

        files = find_checkpoint(self.model_path)
        model = load(self.model_path, self.task, batch_size=self.batch_size, seq_length=self.max_length,
                     require_head=True)
        self.tokenizer = BertTokenizer.from_files(files.vocab, files.tokenizer_config)
        if self.task == "classify":
            self.labels = label_names(model.config.to_dict())
        forward = compile_forward(_TaskHead(model, self.task), mode, signature_inputs=INPUT_NAMES)
        return lambda inputs: {k: v.numpy() for k, v in forward(inputs).items()}

    def _saved_model(self) -> Callable[[Batch], Batch]:
        from tfbert.export.savedmodel import TOKENIZED
        from tfbert.tokenizer import BertTokenizer

        tf = import_tensorflow()
        self.tokenizer = BertTokenizer.from_files(os.path.join(self.model_path, "assets", "vocab.txt"))
        try:
            loaded = tf.saved_model.load(self.model_path)
        except (OSError, ValueError, tf.errors.OpError) as e:
            raise BadInputError(f"cannot load the SavedModel ({type(e).__name__})", where=self.model_path,
                                fix="pass a version directory written by python -m tfbert.export") from e
        if TOKENIZED not in loaded.signatures:
            raise BadInputError("the SavedModel has no tokenized signature", where=self.model_path,
                                expected=TOKENIZED, actual=sorted(loaded.signatures),
                                fix="re-export it with python -m tfbert.export")
        signature = loaded.signatures[TOKENIZED]
        wanted = OUTPUTS[self.task][0]
        token_classifier = os.path.isfile(os.path.join(self.model_path, "assets", "aggregation.txt"))
        if wanted not in signature.structured_outputs or token_classifier:
            raise BadInputError("the SavedModel was exported for another task", where=self.model_path,
                                expected=f"output {wanted} (task {self.task})",
                                actual=sorted(signature.structured_outputs),
                                fix="pass the --task the model was exported with")
        labels_file = os.path.join(self.model_path, "assets", "labels.txt")
        if self.task == "classify" and os.path.isfile(labels_file):
            with open(labels_file, encoding="utf-8") as f:
                self.labels = f.read().split("\n")[:-1]
        self._loaded = loaded  # the signature needs its module alive

        def run(inputs: Batch) -> Batch:
            out = signature(**{k: tf.constant(inputs[k], tf.int32) for k in INPUT_NAMES})
            return {k: v.numpy() for k, v in out.items()}

        return run

    def _tflite(self, num_threads: int, vocab_path: str | None, tokenizer_config: str | None
                ) -> Callable[[Batch], Batch]:
        from tfbert.checkpoint import find_checkpoint
        from tfbert.edge_tokenizer import EdgeTokenizer, sibling_tokenizer_json

        if self.task == "fill_mask":
            raise BadInputError("TFLite exports compute embed and classify only", where="task",
                                expected="embed | classify", actual="fill_mask",
                                fix="use the SavedModel or a Keras backend for fill_mask")
        if self.model_path is None or not os.path.isfile(self.model_path):
            raise BadInputError("the tflite backend needs a .tflite file", where="model_path",
                                actual=self.model_path, fix="pass --model=PATH/model_<quantization>.tflite")
        sibling = os.path.join(os.path.dirname(self.model_path), "vocab.txt")
        config_path = None
        if vocab_path is None and os.path.isfile(sibling):
            vocab_path = sibling
        elif vocab_path is None:
            try:
                files = find_checkpoint(None)
            except CheckpointNotFoundError:
                raise BadInputError("a .tflite holds no vocabulary, and none was given or is next to it",
                                    where=self.model_path, fix="pass --vocab=PATH/vocab.txt (the checkpoint's), or "
                                    "put vocab.txt (and tokenizer_config.json, config.json) next to the .tflite"
                                    ) from None
            vocab_path, tokenizer_config, config_path = files.vocab, files.tokenizer_config, files.config
            log.info("no --vocab given: using the embedded MiniLM's vocab (right for its default export)")
        if tokenizer_config is None:
            candidate = os.path.join(os.path.dirname(vocab_path), "tokenizer_config.json")
            tokenizer_config = candidate if os.path.isfile(candidate) else None
        self.tokenizer = EdgeTokenizer.from_files(vocab_path, tokenizer_config, sibling_tokenizer_json(vocab_path))
        config_path = config_path or os.path.join(os.path.dirname(vocab_path), "config.json")
        try:
            runner = LiteRTRunner(self.model_path, num_threads)
        except (ValueError, RuntimeError) as e:
            raise BadInputError("cannot load the TFLite model", where=self.model_path,
                                fix="pass a .tflite written by python -m tfbert.export --quantize") from e
        if runner.input_names == sorted(BERT_INPUTS):
            raise BadInputError("this .tflite is the MediaPipe Tasks model (static length, MediaPipe's input names)",
                                where=self.model_path, expected="inputs input_ids, attention_mask",
                                actual=", ".join(runner.input_names),
                                fix="predict with the model_<quantization>.tflite next to it; run this one in "
                                "MediaPipe's TextEmbedder or TextClassifier (docs/mobile.md)")
        wanted = OUTPUTS[self.task][0]
        if wanted not in runner.output_names:
            raise BadInputError("the .tflite was exported for another task", where=self.model_path,
                                expected=f"output {wanted} (task {self.task})", actual=runner.output_names,
                                fix="pass the --task the model was exported with (logits: --task=token_classify)")
        if self.task == "classify" and os.path.isfile(config_path):
            import json

            from tfbert.model import label_names

            with open(config_path, encoding="utf-8") as f:
                self.labels = label_names(json.load(f))

        def run(inputs: Batch) -> Batch:
            out = runner(inputs)
            if self.task == "classify":
                out["label_ids"] = np.argmax(out["probabilities"], axis=-1).astype(np.int32)
            return out

        return run

    # === Inference ===
    def batches(self, texts_or_dataset) -> Iterator[tuple[np.ndarray, Batch]]:
        """``(indices, outputs)`` per batch, in pipeline order (length-sorted within windows).

        Args:
            texts_or_dataset: a list of strings, a file path or a
                :class:`~tfbert.predict.pipeline.TextFile`, or a tf.data dataset of ``(index, text)``
                (e.g. from :func:`~tfbert.predict.pipeline.text_dataset`).
        """
        for indices, arrays in self._token_batches(texts_or_dataset):
            yield indices, self._call(arrays)

    def _token_batches(self, texts_or_dataset) -> Iterator[tuple[np.ndarray, Batch]]:
        """Length-sorted token batches: numpy for the tflite backend, tf.data for the others."""
        source = _source(texts_or_dataset)
        if not self.uses_tensorflow:
            if isinstance(source, list):
                records = enumerate(source)
            elif isinstance(source, TextFile):
                records = source
            else:  # a tf.data dataset someone built: its records, decoded
                records = ((int(i), t.decode("utf-8")) for i, t in _typed_errors(source.as_numpy_iterator(), source))
            yield from numpy_batches(records, self.tokenizer, batch_size=self.batch_size, max_length=self.max_length,
                                     window=self.window)
            return
        if isinstance(source, list):
            source = texts_dataset(source)
        elif isinstance(source, TextFile):
            source = text_dataset(source)
        pipeline = batched_inputs(source, self.tokenizer, batch_size=self.batch_size, max_length=self.max_length,
                                  window=self.window,
                                  pad_to_multiple=_XLA_MULTIPLE if self.backend == "keras-xla" else 1)
        for indices, inputs in _typed_errors(iter(pipeline), source):
            yield indices.numpy(), {k: v.numpy() for k, v in inputs.items()}

    def _call(self, arrays: Batch) -> Batch:
        """The backend on one token batch, its failures as one-line errors."""
        try:
            out = self._run(arrays)
        except self._failures as e:
            raise BadInputError(f"the {self.backend} model failed on a batch ({type(e).__name__})",
                                where=self.model_path or "default model",
                                expected=f"a {self.task} model matching the vocab",
                                actual=str(e).strip().splitlines()[0][:200] if str(e).strip() else None,
                                fix="check --task, --vocab and --max_length match the model") from None
        return self._finish(out, arrays)

    def _finish(self, out: Batch, inputs: Batch) -> Batch:
        result = {k: out[k] for k in OUTPUTS[self.task] if k in out}
        if self.task == "classify":
            names = np.array(self.labels or [f"LABEL_{i}" for i in range(out["probabilities"].shape[-1])],
                             dtype=object)
            result["labels"] = names[out["label_ids"]]
        elif self.task == "fill_mask":
            result["top_k_tokens"] = np.array(self.tokenizer.vocab, dtype=object)[out["top_k_ids"]]
            result["input_ids"] = inputs["input_ids"]
        return result

    def ordered_batches(self, texts_or_dataset, progress: Callable[[int], None] | None = None
                        ) -> Iterator[tuple[np.ndarray, Batch]]:
        """``(indices, outputs)`` chunks whose rows are in INPUT order, as soon as they can be.

        Streaming counterpart of :meth:`predict` (what ``python -m tfbert.predict`` writes from):
        a row is held back only until every earlier row has arrived, which the length sorting
        within a window bounds to about ``window + batch_size`` rows.

        Args:
            texts_or_dataset: as for :meth:`batches`; a dataset's indices must be 0, 1, 2, ...
            progress: called with the number of texts run so far, after each batch.

        Example:
            >>> for indices, out in Predictor().ordered_batches(["b", "a a a", "c"]):  # doctest: +SKIP
            ...     print(indices)
            [0 1 2]
        """

        def counted() -> Iterator[tuple[np.ndarray, Batch]]:
            seen = 0
            for indices, out in self.batches(texts_or_dataset):
                seen += len(indices)
                if progress is not None:
                    progress(seen)
                yield indices, out

        return in_order(counted(), self.task)

    def predict_one(self, text: str) -> dict[str, np.ndarray]:
        """One text at the lowest latency: no tf.data, the backend called directly.

        The text is tokenized by the same tokenizer converted to a LiteRT graph (built on the
        first call, a few seconds): ~0.05 ms against ~0.3 ms for a TensorFlow call, and no
        TensorFlow thread pool left spinning to compete with the TFLite interpreter's threads.

        Returns:
            The row :meth:`predict` would give for ``[text]``, without the batch axis (embed:
            ``sentence_embedding`` [hidden]; classify: ``probabilities``, ``label_ids``, ``labels``).

        Example:
            >>> Predictor("model_int8.tflite").predict_one("a cat sat")["sentence_embedding"].shape  # doctest: +SKIP
            (384,)
        """
        if not isinstance(text, str):
            raise BadInputError("the text must be a string", where="text", actual=type(text).__name__,
                                fix="pass a str")
        if self._tokenize_one is None:
            self._tokenize_one = (TFLiteTokenizer(self.tokenizer, self.max_length) if self.uses_tensorflow
                                  else lambda one: self.tokenizer.tokenize_numpy([one], self.max_length))
        arrays = self._tokenize_one(text)
        if self.backend == "keras-xla":  # the shapes XLA has compiled for, as in batches()
            arrays = pad_length(arrays, _XLA_MULTIPLE, self.tokenizer.pad_id)
        return {k: v[0] for k, v in self._call(arrays).items()}

    def predict(self, texts_or_dataset, progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
        """Run every text and return the outputs as numpy arrays in INPUT order.

        Returns:
            embed: ``sentence_embedding`` [N, hidden]. classify: ``probabilities`` [N, labels],
            ``label_ids`` [N], ``labels`` [N] (str). fill_mask: ``top_k_ids``,
            ``top_k_probabilities``, ``top_k_tokens`` [N, longest, k] and ``input_ids`` [N, longest];
            rows shorter than the longest are padded with id -1, probability 0, token "".

        Raises:
            BadInputError: a bad input (file, record with ``on_bad_line="error"``, argument).

        Example:
            >>> Predictor(task="classify", model_path="clf").predict(["great film"])["labels"]  # doctest: +SKIP
            array(['positive'], dtype=object)
        """
        chunks, seen = [], 0
        for indices, out in self.batches(texts_or_dataset):
            chunks.append((indices, out))
            seen += len(indices)
            if progress is not None:
                progress(seen)
        return assemble(chunks, self.task)


def _source(texts_or_dataset):
    """A list of texts, a :class:`TextFile` (for a path), or the tf.data dataset as given."""
    if isinstance(texts_or_dataset, (str, os.PathLike)):
        return TextFile(texts_or_dataset)
    if isinstance(texts_or_dataset, (list, tuple)):
        if not all(isinstance(t, str) for t in texts_or_dataset):
            raise BadInputError("texts must be strings", where="texts", fix="pass a list of str")
        return list(texts_or_dataset)
    return texts_or_dataset


def _typed_errors(iterator: Iterator, dataset) -> Iterator:
    """``iterator``'s items, with tf.data's wrapping of a reader's error undone.

    tf.data wraps an exception raised in a generator into its own error type; the reader kept
    the typed one in the dataset's ``tfbert_stats``, which is raised instead.
    """
    tf = import_tensorflow()
    stats: ReadStats | None = getattr(dataset, "tfbert_stats", None)
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            return
        except tf.errors.OpError as e:
            if stats is not None and stats.error is not None:
                raise stats.error from None
            raise BadInputError(f"reading the input failed ({e.message.strip().splitlines()[0]})",
                                where=getattr(stats, "path", "input"),
                                fix="check the input file's format and encoding") from None
        yield item


def _pad_rows(arrays: list[np.ndarray], fill) -> np.ndarray:
    longest = max(a.shape[1] for a in arrays)
    padded = []
    for a in arrays:
        widths = [(0, 0), (0, longest - a.shape[1])] + [(0, 0)] * (a.ndim - 2)
        padded.append(np.pad(a, widths, constant_values=fill))
    return np.concatenate(padded)


def assemble(chunks: list[tuple[np.ndarray, Batch]], task: str) -> dict[str, np.ndarray]:
    """Concatenate per-batch outputs and put their rows back in input order."""
    if not chunks:
        return {k: np.zeros((0,)) for k in OUTPUTS[task]}
    indices = np.concatenate([i for i, _ in chunks])
    order = np.argsort(indices, kind="stable")
    result = {}
    for key in chunks[0][1]:
        parts = [out[key] for _, out in chunks]
        merged = _pad_rows(parts, _FILL[key]) if task == "fill_mask" else np.concatenate(parts)
        result[key] = merged[order]
    return result


def in_order(batches: Iterable[tuple[np.ndarray, Batch]], task: str) -> Iterator[tuple[np.ndarray, Batch]]:
    """Re-sequence ``(indices, outputs)`` batches into chunks of consecutive rows 0, 1, 2, ...

    Each chunk is yielded as soon as its rows are complete, so only rows that arrived ahead of
    an earlier one are held (for the length-sorted pipeline: at most about one window). Rows
    whose predecessors never arrive come out, sorted, at the end.

    Example:
        >>> chunks = in_order([(np.array([1, 0]), {"x": np.array([11, 10])}),
        ...                    (np.array([2]), {"x": np.array([12])})], "embed")
        >>> [(i.tolist(), o["x"].tolist()) for i, o in chunks]
        [([0, 1], [10, 11]), ([2], [12])]
    """
    next_row = 0
    held: list[tuple[np.ndarray, Batch]] = []
    for batch in batches:
        held.append(batch)
        indices = np.concatenate([i for i, _ in held])
        order = np.argsort(indices, kind="stable")
        consecutive = indices[order] == next_row + np.arange(len(order))
        run = len(order) if consecutive.all() else int(np.argmin(consecutive))
        if run == 0:
            continue
        merged = _merge(held, task)
        yield indices[order[:run]], {k: v[order[:run]] for k, v in merged.items()}
        rest = order[run:]
        held = [(indices[rest], {k: v[rest] for k, v in merged.items()})] if len(rest) else []
        next_row += run
    if held:
        indices = np.concatenate([i for i, _ in held])
        order = np.argsort(indices, kind="stable")
        merged = _merge(held, task)
        yield indices[order], {k: v[order] for k, v in merged.items()}


def _merge(chunks: list[tuple[np.ndarray, Batch]], task: str) -> Batch:
    if len(chunks) == 1:
        return chunks[0][1]
    return {key: _pad_rows([out[key] for _, out in chunks], _FILL[key]) if task == "fill_mask"
            else np.concatenate([out[key] for _, out in chunks]) for key in chunks[0][1]}


class Progress:
    """A progress line on stderr at most once per ``every`` seconds: texts/s and, with a total, ETA."""

    def __init__(self, total: int | None, write: Callable[[str], None], every: float = 1.0) -> None:
        self.total, self.write, self.every = total, write, every
        self.start = self.last = time.monotonic()

    def __call__(self, done: int, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < self.every:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        if final:
            self.write(f"done: {done} texts in {now - self.start:.1f}s, {rate:.1f} texts/s")
            return
        line = f"{done} texts, {rate:.1f} texts/s"
        if self.total:
            eta = max(self.total - done, 0) / rate if rate > 0 else float("inf")
            line = f"{done}/{self.total} texts ({100 * done / self.total:.0f}%), {rate:.1f} texts/s, ETA {eta:.0f}s"
        self.write(line)


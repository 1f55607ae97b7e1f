"""MediaPipe Tasks' form of a TFLite export: ``model_<quantization>_mediapipe.tflite``.

MediaPipe's ``TextEmbedder`` and ``TextClassifier`` (Python, Android, iOS, web: one C++ engine)
take a text, tokenize it themselves and feed a BERT model when (from MediaPipe's
``text_model_utils.cc``, ``text_preprocessing_graph.cc``, ``bert_preprocessor_calculator.cc``):

* the model has one subgraph with exactly three int32 inputs of shape [1, seq], whose metadata
  names are ``ids``, ``mask`` and ``segment_ids`` (matched by name, in any order);
* its TFLite Metadata's first input process unit is a ``BertTokenizerOptions`` whose vocab is
  packed in the model;
* each output has tensor metadata (its name is the result's ``head_name``); a classifier's names
  its labels file (``TENSOR_AXIS_LABELS``).

The sequence length is static: with a dynamic one MediaPipe does not truncate (a 600-word text
reaches the model as 602 tokens, past its 512 positions); with a static one it keeps
``[CLS]``, the first ``seq - 2`` wordpieces and ``[SEP]`` and pads with 0 — what tfbert's
tokenizer does at ``max_length=seq``.

MediaPipe's tokenizer is tensorflow-text's regex word split and WordPiece after lower-casing
ASCII letters only: no accent stripping, no Unicode lower-casing, no removal of control
characters, unlike Hugging Face's (and tfbert's) uncased normalisation. ``café`` is ``[UNK]``
to it where tfbert reads ``cafe``, and such a text's embedding is far from tfbert's (all-MiniLM-L6-v2:
cosine 0.04 for ``Café naïve Ångström``; texts whose ids agree: 0.99999997 at worst).
:func:`compare_tokenizers` counts, on the held-out texts, where its ids differ from tfbert's and
why; the export reports it.
"""

from __future__ import annotations

import dataclasses
import time
import unicodedata
from collections.abc import Callable

import numpy as np

from tfbert import tflite_metadata
from tfbert.errors import BadInputError, ExportError
from tfbert.fidelity import fidelity

INPUTS = tflite_metadata.BERT_INPUTS
_INPUT_DESCRIPTIONS = {"ids": "Token ids of the text: [CLS], wordpieces, [SEP], then 0.",
                       "mask": "1 for real tokens, 0 for padding.",
                       "segment_ids": "0 for the first text (MediaPipe sends one text: all 0)."}
_OUTPUT_DESCRIPTIONS = {"sentence_embedding": "Mean-pooled token states, L2-normalised.",
                        "probabilities": "Softmax over the labels."}
VOCAB_FILE, LABELS_FILE = "vocab.txt", "labels.txt"


def filename(quantization: str) -> str:
    """``model_<quantization>_mediapipe.tflite``."""
    return f"model_{quantization}_mediapipe.tflite"


def with_metadata(model: bytes, *, name: str, version: str, output: str, vocab: list[str],
                  labels: list[str] | None = None) -> bytes:
    """``model`` (MediaPipe's three BERT inputs, one output) with the TFLite Metadata MediaPipe Tasks need.

    Input tensor metadata follows the model's own input order (its signature names each input tensor).

    Args:
        model: a converted ``EncoderGraph.module(fixed_length=...)`` (or any model with inputs
            named ``ids``, ``mask``, ``segment_ids`` and one output).
        name, version: the model's name and version, written into the metadata.
        output: the output's name, MediaPipe's ``head_name`` (``sentence_embedding``, ``probabilities``).
        vocab: the tokenizer's vocabulary, packed as ``vocab.txt``.
        labels: a classifier's label names, packed as ``labels.txt`` (one per line, in id order).

    Raises:
        ValueError: the model's inputs are not MediaPipe's three (a bug in the caller).
    """
    from ai_edge_litert import schema_py_generated as schema

    root = schema.Model.GetRootAs(model, 0)
    graph, signature = root.Subgraphs(0), root.SignatureDefs(0)
    # The signature's keys are the tf.function's argument names; the metadata follows the subgraph's order.
    keys = {signature.Inputs(i).TensorIndex(): signature.Inputs(i).Name().decode()
            for i in range(signature.InputsLength())}
    order = [keys.get(graph.Inputs(i), "?") for i in range(graph.InputsLength())]
    if sorted(order) != sorted(INPUTS):
        raise ValueError(f"model inputs {order} are not MediaPipe's {INPUTS}")
    vocab_file = tflite_metadata.AssociatedFile(VOCAB_FILE, "WordPiece vocabulary of the BERT tokenizer.",
                                                tflite_metadata.VOCABULARY)
    out = tflite_metadata.TensorInfo(output, _OUTPUT_DESCRIPTIONS.get(output, ""))
    files = {VOCAB_FILE: ("\n".join(vocab) + "\n").encode("utf-8")}
    if labels is not None:
        out.files.append(tflite_metadata.AssociatedFile(LABELS_FILE, "Label names, one per class id.",
                                                        tflite_metadata.TENSOR_AXIS_LABELS))
        files[LABELS_FILE] = ("\n".join(labels) + "\n").encode("utf-8")
    metadata = tflite_metadata.TextModelMetadata(
        name=name, description=f"tfbert export of {name} for MediaPipe Tasks ({output})", version=version,
        inputs=[tflite_metadata.TensorInfo(n, _INPUT_DESCRIPTIONS[n]) for n in order], outputs=[out],
        vocab=vocab_file)
    return tflite_metadata.populate(model, metadata, files)


def convert(graph, quantization: str, *, seq_length: int, output: str, name: str, version: str, vocab: list[str],
            labels: list[str] | None = None) -> bytes:
    """Convert ``graph`` (an :class:`tfbert.export.graph.EncoderGraph`, SmoothQuant scales set for
    int8) at the static length ``seq_length`` and add the metadata (:func:`with_metadata`).

    Raises:
        BadInputError: ``seq_length`` is longer than the model's position table.
    """
    from tfbert.export import tflite

    positions = graph.config.get("max_position_embeddings", seq_length)
    if not 2 <= seq_length <= positions:
        raise BadInputError("sequence length out of the model's range", where="--max_seq_length",
                            expected=f"2..{positions} (config.json: max_position_embeddings)", actual=seq_length,
                            fix=f"pass --max_seq_length={min(positions, 128)}")
    model = tflite.convert(graph.module(fixed_length=seq_length, output=output), quantization)
    return with_metadata(model, name=name, version=version, output=output, vocab=vocab, labels=labels)


def run(runner, ids: np.ndarray, mask: np.ndarray, seq_length: int, output: str) -> np.ndarray:
    """A MediaPipe model (a :class:`tfbert.litert.LiteRTRunner`) on token-id rows, one row at a time
    as MediaPipe feeds it: each padded with 0 to ``seq_length``, segment ids 0."""
    rows = []
    for row_ids, row_mask in zip(ids, mask, strict=True):
        padded = np.zeros((3, 1, seq_length), np.int32)
        n = min(len(row_ids), seq_length)
        padded[0, 0, :n], padded[1, 0, :n] = row_ids[:n], row_mask[:n]
        rows.append(runner({"ids": padded[0], "mask": padded[1], "segment_ids": padded[2]})[output][0])
    return np.stack(rows)


# MediaPipe's BertTokenizer splits words with these (kDefaultDelimRe / kDefaultIncludeDelimRe in
# mediapipe/tasks/cc/text/tokenizers/bert_tokenizer.h): whitespace, ASCII punctuation, \p{P}, CJK.
_CJK = (r"[\x{4E00}-\x{9FFF}]|[\x{3400}-\x{4DBF}]|[\x{20000}-\x{2A6DF}]|[\x{2A700}-\x{2B73F}]|"
        r"[\x{2B740}-\x{2B81F}]|[\x{2B820}-\x{2CEAF}]|[\x{F900}-\x{FAFF}]|[\x{2F800}-\x{2FA1F}]")
_KEEP_DELIMITERS = r"([!-/]|[:-@]|[\[-`]|[{-~]|[\p{P}]|" + _CJK + ")"
_DELIMITERS = r"(\s+|[!-/]|[:-@]|[\[-`]|[{-~]|[\p{P}]|" + _CJK + ")"


def mediapipe_token_ids(vocab: list[str], texts: list[str], seq_length: int) -> list[list[int]]:
    """The ids MediaPipe Tasks' BERT preprocessor gives ``texts`` (without the padding).

    MediaPipe lower-cases ASCII letters (``absl::AsciiStrToLower``), splits words with
    tensorflow-text's ``RegexSplit`` on its patterns and runs tensorflow-text's
    ``WordpieceTokenize`` (``[UNK]`` for a word it cannot split, 100 bytes / 100 characters at
    most); these are the same tensorflow-text kernels, run here with MediaPipe's settings — not
    tensorflow-text's ``BertTokenizer``, which also replaces control characters. Then ``[CLS]``,
    the first ``seq_length - 2`` wordpieces, ``[SEP]``. The tests check these ids against
    MediaPipe's own.
    """
    import tensorflow_text as tf_text

    from tfbert.tf import import_tensorflow

    tf = import_tensorflow()
    table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
        tf.constant(vocab), tf.range(len(vocab), dtype=tf.int64)), default_value=-1)
    wordpiece = tf_text.WordpieceTokenizer(table, suffix_indicator="##", max_bytes_per_word=100,
                                           max_chars_per_token=100, token_out_type=tf.int64, unknown_token="[UNK]")
    # tf.strings.lower's default encoding is ASCII: it leaves every other byte alone, as absl::AsciiStrToLower.
    words = tf_text.regex_split(tf.strings.lower(tf.constant(texts, tf.string)), _DELIMITERS, _KEEP_DELIMITERS)
    pieces = wordpiece.tokenize(words).merge_dims(-2, -1)
    cls_id, sep_id = vocab.index("[CLS]"), vocab.index("[SEP]")
    return [[cls_id, *row[:seq_length - 2], sep_id] for row in pieces.to_list()]


@dataclasses.dataclass
class TokenizerComparison:
    """Where MediaPipe's token ids differ from tfbert's on some texts, and why.

    ``reasons`` counts the differing texts by their first cause found (see :func:`compare_tokenizers`).
    """

    texts: int
    differ: int
    reasons: dict[str, int]
    examples: list[str]

    def summary(self) -> str:
        """One line, e.g. ``ids differ on 2 of 45 texts: 2 with accents or other combining marks (...)``."""
        why = "; ".join(f"{v} {k}" for k, v in self.reasons.items())
        return f"ids differ on {self.differ} of {self.texts} texts" + (f": {why}" if why else "")


def cause_of_difference(text: str, tokenizer) -> str:
    """Why MediaPipe's ids for ``text`` may differ from ``tokenizer``'s (see :func:`compare_tokenizers`)."""
    if tokenizer.strip_accents and any(unicodedata.category(c) == "Mn" for c in unicodedata.normalize("NFD", text)):
        return "with accents or other combining marks (MediaPipe keeps them)"
    if tokenizer.lower_case and any(ord(c) > 127 and c.lower() != c for c in text):
        return "with non-ASCII capitals (MediaPipe lower-cases ASCII only)"
    if any(unicodedata.category(c) in ("Cc", "Cf") and c not in "\t\n\r" for c in text):
        return "with control or format characters (MediaPipe keeps them)"
    return "for another reason"


def compare_tokenizers(tokenizer, texts: list[str], seq_length: int, examples: int = 3) -> TokenizerComparison:
    """MediaPipe's ids (:func:`mediapipe_token_ids`) against ``tokenizer``'s on ``texts``.

    A differing text's cause is the first of: accents and other combining marks such as Japanese
    dakuten (tfbert strips them when it strips accents), non-ASCII capitals
    (tfbert lower-cases them), control or format characters (Hugging Face's normalisation removes
    them), else another reason.
    """
    ours = tokenizer.tokenize_numpy(texts, seq_length) if texts else {"input_ids": np.zeros((0, 0), np.int32),
                                                                       "attention_mask": np.zeros((0, 0), np.int32)}
    theirs = mediapipe_token_ids(tokenizer.vocab, texts, seq_length) if texts else []
    reasons: dict[str, int] = {}
    differing = []
    for text, ids, mask, mp in zip(texts, ours["input_ids"], ours["attention_mask"], theirs, strict=True):
        if ids[mask.astype(bool)].tolist() != mp:
            differing.append(text)
            cause = cause_of_difference(text, tokenizer)
            reasons[cause] = reasons.get(cause, 0) + 1
    return TokenizerComparison(len(texts), len(differing), reasons, differing[:examples])


@dataclasses.dataclass
class MediaPipeExport:
    """The MediaPipe model :func:`export` made (``content``), how it measured, and what it cost.

    ``fidelity`` is against the float32 graph on the held-out texts, each fed alone at
    ``seq_length`` as MediaPipe feeds it; ``tokenizer`` compares MediaPipe's ids with tfbert's.
    """

    content: bytes
    filename: str
    seq_length: int
    fidelity: dict[str, float]
    tokenizer: TokenizerComparison
    seconds: float


CASED = "the model is cased, and MediaPipe Tasks lower-case every text"


def summary(result: MediaPipeExport | None) -> dict[str, object]:
    """The export report's ``mediapipe_*`` fields (``result`` None: a cased model, none written)."""
    if result is None:
        return {"mediapipe_model": f"not written: {CASED}"}
    return {"mediapipe_model": result.filename, "mediapipe_seq_length": result.seq_length,
            "mediapipe_size_mib": len(result.content) / 2**20,
            **{f"mediapipe_{k}": v for k, v in result.fidelity.items()},
            "mediapipe_tokenizer": result.tokenizer.summary(),
            "mediapipe_tokenizer_examples": result.tokenizer.examples, "mediapipe_seconds": result.seconds}


def export(graph, tokenizer, *, task: str, quantization: str, seq_length: int, name: str, version: int,
           labels: list[str] | None, held_out: list[str], reference: np.ndarray, compare_texts: list[str],
           min_cosine: float, min_agreement: float, allow_accuracy_drop: bool, num_threads: int = 2,
           progress: Callable[[str], None] = lambda message: None) -> MediaPipeExport | None:
    """Convert the MediaPipe model, verify it on ``held_out`` against ``reference`` and compare tokenizers.

    A cased model gets none (MediaPipe's tokenizer lower-cases every text): None is returned.

    Args:
        graph: the :class:`tfbert.export.graph.EncoderGraph` the main model was converted from
            (with its SmoothQuant scales for int8).
        tokenizer: tfbert's tokenizer (its vocab is packed; its ids are what the model is verified on).
        task: ``embed`` or ``classify``.
        quantization: as the main model.
        seq_length: the static sequence length (the export's ``max_seq_length``).
        name, version: written into the metadata.
        labels: a classifier's label names (packed as ``labels.txt``).
        held_out: the texts ``reference`` was computed on, in order.
        reference: the float graph's main output on ``held_out``.
        compare_texts: the texts the tokenizers are compared on.
        min_cosine, min_agreement, allow_accuracy_drop: the main model's accuracy gate.

    Raises:
        ExportError: the model falls below the gate (and not ``allow_accuracy_drop``).
        BadInputError: ``seq_length`` beyond the model's positions.
    """
    from tfbert.export.verify import MAIN_OUTPUT
    from tfbert.litert import LiteRTRunner

    start = time.perf_counter()
    if not tokenizer.lower_case:
        progress(f"no MediaPipe model: {CASED}")
        return None
    output = MAIN_OUTPUT[task]
    progress(f"converting {quantization} for MediaPipe Tasks (static length {seq_length}, with metadata)")
    content = convert(graph, quantization, seq_length=seq_length, output=output, name=name, version=str(version),
                      vocab=tokenizer.vocab, labels=labels)
    progress(f"verifying the MediaPipe model on {len(held_out)} held-out texts, one at a time")
    ids = tokenizer.tokenize_numpy(held_out, seq_length)
    scores = fidelity(reference, run(LiteRTRunner(content, num_threads), ids["input_ids"], ids["attention_mask"],
                                     seq_length, output), task)
    if not allow_accuracy_drop and (scores["cosine_mean"] < min_cosine
                                    or scores.get("argmax_agreement", 1.0) < min_agreement):
        raise ExportError("the MediaPipe model falls below the accuracy gate; nothing was published",
                          where=f"{name} {filename(quantization)}",
                          expected=f"cosine >= {min_cosine}" + (f", agreement >= {min_agreement}"
                                                                if task == "classify" else ""),
                          actual=f"cosine {scores['cosine_mean']:.4f}"
                          + (f", agreement {scores['argmax_agreement']:.4f}" if task == "classify" else ""),
                          fix="report this as a bug; pass --notflite_mediapipe meanwhile")
    comparison = compare_tokenizers(tokenizer, compare_texts, seq_length)
    return MediaPipeExport(content, filename(quantization), seq_length, scores, comparison,
                           time.perf_counter() - start)


__all__ = ["CASED", "INPUTS", "MediaPipeExport", "TokenizerComparison", "cause_of_difference", "compare_tokenizers",
           "convert", "export", "filename", "mediapipe_token_ids", "run", "summary", "with_metadata"]

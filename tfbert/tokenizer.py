"""One WordPiece tokenizer for training, tf.data, SavedModel serving and TFLite.

Built on ``tensorflow_text.FastBertTokenizer``, whose vocabulary lives inside the op (no
asset file to lose) and which has a TFLite kernel, so the ids a server or a phone computes
are the ids tfbert computed when it verified the export. Matches Hugging Face's
``BertTokenizerFast`` (tested on accents, CJK, emoji, punctuation, control characters,
empty strings and truncation).
"""

from __future__ import annotations

import json
import os

import numpy as np

from tfbert.errors import BadInputError, CheckpointNotFoundError, ConfigMismatchError
from tfbert.tf import import_tensorflow

SPECIALS = ("[CLS]", "[SEP]", "[PAD]", "[UNK]")


def _read_vocab(path: str) -> list[str]:
    if not path or not os.path.isfile(path):
        raise CheckpointNotFoundError("vocab.txt is missing", where=str(path),
                                      fix="copy the vocab.txt published with the weights next to them")
    with open(path, encoding="utf-8") as f:
        tokens = [line.rstrip("\n").rstrip("\r") for line in f]
    while tokens and tokens[-1] == "":
        tokens.pop()
    missing = [t for t in SPECIALS if t not in tokens]
    if missing:
        raise ConfigMismatchError("special tokens missing from the vocab", where=path, expected=" ".join(SPECIALS),
                                  actual="missing " + " ".join(missing), fix="use the vocab.txt of the checkpoint")
    return tokens


def _lower_case(tokenizer_config: str | None, lower_case: bool | None) -> bool:
    if lower_case is not None:
        return lower_case
    if tokenizer_config and os.path.isfile(tokenizer_config):
        with open(tokenizer_config, encoding="utf-8") as f:
            config = json.load(f)
        strip = config.get("strip_accents")
        lower = bool(config.get("do_lower_case", True))
        if strip is not None and strip != lower:
            raise ConfigMismatchError(
                "strip_accents differing from do_lower_case is not supported", where=tokenizer_config,
                expected=f"strip_accents null or {lower}", actual=strip,
                fix="tensorflow-text lower-cases and strips accents together; use a matching tokenizer_config")
        return lower
    return True


def _take_first(ragged, counts):
    """The first ``counts[i]`` items of each row of a ragged [batch, (n)] tensor."""
    tf = import_tensorflow()
    positions = tf.ragged.range(tf.cast(ragged.row_lengths(), tf.int32))
    return tf.ragged.boolean_mask(ragged, positions < tf.expand_dims(counts, 1))


class BertTokenizer:
    """WordPiece tokenizer usable eagerly, in ``tf.function``, ``tf.data``, SavedModels and TFLite.

    Args:
        vocab: the vocabulary, one token per id.
        lower_case: lower-case, NFD-normalise and strip accents (uncased BERT).

    Example:
        >>> from tfbert.checkpoint import find_checkpoint
        >>> files = find_checkpoint()
        >>> tok = BertTokenizer.from_files(files.vocab, files.tokenizer_config)
        >>> tok.tokenize_numpy(["Hello world!"], 16)["input_ids"].tolist()
        [[101, 7592, 2088, 999, 102]]
    """

    def __init__(self, vocab: list[str], lower_case: bool = True) -> None:
        tf = import_tensorflow()
        import tensorflow_text as tf_text

        self.vocab = list(vocab)
        self.lower_case = lower_case
        index = {t: i for i, t in enumerate(self.vocab)}
        self.cls_id, self.sep_id = index["[CLS]"], index["[SEP]"]
        self.pad_id, self.unk_id = index["[PAD]"], index["[UNK]"]
        self.mask_id = index.get("[MASK]")
        self._fast = tf_text.FastBertTokenizer(
            vocab=self.vocab, suffix_indicator="##", unknown_token="[UNK]", token_out_type=tf.int32,
            lower_case_nfd_strip_accents=False)
        self._vocab_table = tf.constant(self.vocab)
        self._tf_text = tf_text

    @classmethod
    def from_files(cls, vocab_path: str, tokenizer_config: str | None = None,
                   lower_case: bool | None = None) -> BertTokenizer:
        """From a checkpoint's vocab.txt and (optional) tokenizer_config.json."""
        return cls(_read_vocab(vocab_path), _lower_case(tokenizer_config, lower_case))

    def wordpieces(self, texts):
        """Ragged [batch, (tokens)] int32 WordPiece ids, no special tokens."""
        tf = import_tensorflow()
        # Hugging Face drops control and format characters (e.g. zero-width space) but keeps
        # tab, newline and carriage return as whitespace.
        texts = tf.strings.regex_replace(texts, r"[\t\n\r]", " ")
        texts = tf.strings.regex_replace(texts, r"[\p{Cc}\p{Cf}\x{FFFD}]", "")
        if self.lower_case:
            # Hugging Face lower-cases, then NFD-decomposes and drops combining marks. The op's
            # own lower_case_nfd_strip_accents case-folds instead ("ß" -> "ss"), so do it here.
            texts = tf.strings.lower(texts, encoding="utf-8")
            texts = self._tf_text.normalize_utf8(texts, "NFD")
            texts = tf.strings.regex_replace(texts, r"\p{Mn}", "")
        ids = self._fast.tokenize(texts)
        if ids.shape.rank == 3:  # some versions keep the word dimension
            ids = ids.merge_dims(-2, -1)
        return tf.cast(ids, tf.int32)

    def tokenize(self, texts, max_length: int, text_pairs=None) -> dict:
        """``input_ids``, ``attention_mask``, ``token_type_ids`` int32 [batch, longest in batch].

        ``[CLS] a [SEP]`` (or ``[CLS] a [SEP] b [SEP]``), truncated to ``max_length`` the way
        Hugging Face's ``longest_first`` does, padded to the longest sequence in the batch.
        """
        tf = import_tensorflow()
        if max_length < 3:
            raise BadInputError("max_length must leave room for [CLS] and [SEP]", where="max_length",
                                expected=">= 3", actual=max_length, fix="use a max_length of at least 3")
        segments = [self.wordpieces(texts)]
        if text_pairs is not None:
            segments.append(self.wordpieces(text_pairs))
        budget = max_length - 1 - len(segments)
        if len(segments) == 1:
            segments = [segments[0][:, :budget]]
        else:
            # Hugging Face's longest_first (tokenizers' truncation.rs): the shorter segment keeps
            # at most half the budget (rounded down), the longer one the rest; on a tie the second counts as longer.
            first, second = segments
            n1 = tf.cast(first.row_lengths(), tf.int32)
            n2 = tf.cast(second.row_lengths(), tf.int32)
            first_longer = n1 > n2
            short = tf.minimum(tf.minimum(n1, n2), budget // 2)
            long = tf.minimum(tf.maximum(n1, n2), budget - short)
            fits = n1 + n2 <= budget
            keep1 = tf.where(fits, n1, tf.where(first_longer, long, short))
            keep2 = tf.where(fits, n2, tf.where(first_longer, short, long))
            segments = [_take_first(first, keep1), _take_first(second, keep2)]
        ids, types = self._tf_text.combine_segments(segments, self.cls_id, self.sep_id)
        ids = tf.cast(ids, tf.int32)
        return {"input_ids": ids.to_tensor(self.pad_id),
                "attention_mask": tf.ones_like(ids).to_tensor(0),
                "token_type_ids": tf.cast(types, tf.int32).to_tensor(0)}

    def tokenize_numpy(self, texts: list[str], max_length: int, text_pairs: list[str] | None = None
                       ) -> dict[str, np.ndarray]:
        """:meth:`tokenize` on Python strings, returning numpy arrays."""
        tf = import_tensorflow()
        pairs = None if text_pairs is None else tf.constant(text_pairs, tf.string)
        out = self.tokenize(tf.constant(list(texts), tf.string), max_length, pairs)
        return {k: v.numpy() for k, v in out.items()}

    def id_to_token(self, ids):
        """Token strings for int ids (any shape)."""
        tf = import_tensorflow()
        return tf.gather(self._vocab_table, ids)

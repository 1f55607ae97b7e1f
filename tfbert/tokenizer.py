"""One WordPiece tokenizer for training, tf.data, SavedModel serving and TFLite.

:class:`BertTokenizer` tokenizes inside the TensorFlow graph with the two kernels
``tensorflow_text.FastBertTokenizer`` is made of (``FastBertNormalize`` and
``FastWordpieceTokenize``, both with TFLite kernels) plus plain TensorFlow ops that convert
to TFLite builtins. Predict, fine-tune, a TF Serving SavedModel and a TFLite model therefore
compute their ids with the same graph, and those ids are the ids of Hugging Face's
``BertTokenizerFast`` (``tok(texts, padding="longest", truncation=True, max_length=N)``).

How parity with Hugging Face is reached:

* **Normalization.** tensorflow-text's stock normalizer is not Hugging Face's
  ``BertNormalizer``: it turns control characters into spaces instead of dropping them,
  case-folds ``ß`` to ``ss``, keeps private-use characters, and its Unicode tables are
  newer. ``FastBertNormalize`` is a per-code-point lookup table, so tfbert compiles its
  own: Hugging Face's ``BertNormalizer`` (from the installed ``tokenizers``, with the
  checkpoint's casing, accent and Chinese-character settings) evaluated on every code
  point and written in the kernel's flatbuffer / darts-clone trie format. Unicode planes 4
  to 13, where no character has ever been assigned, pass through unchanged, as in Hugging
  Face. ``tokenizers`` is needed to build the tokenizer, not to run the graph.
* **Word splitting.** ``FastWordpieceTokenize`` splits words on ICU's whitespace and
  punctuation and its own CJK ranges, Hugging Face's ``BertPreTokenizer`` on Rust's, and
  they differ on about 400 characters: ``U+2E5D`` is punctuation only to ICU (to
  tensorflow-text 2.21's; 2.18's ICU predates the character and keeps it in the word, as
  Hugging Face does), ``U+166D`` only to Hugging Face, ``U+2B820``-``U+2B91F`` are CJK
  only to tensorflow-text. Both implementations are run on every code point when the
  table is built, so the table follows the installed tensorflow-text: a character only
  Hugging Face splits on is surrounded with spaces; one only tensorflow-text splits on is
  replaced by a private-use placeholder no token contains, so its word becomes ``[UNK]``
  as in Hugging Face. If the vocabulary contains such a character nothing can hide the
  split; those characters are listed in :attr:`BertTokenizer.unmatched_chars` (none for
  the bert-base-uncased vocabulary of all-MiniLM-L6-v2 under any casing setting; its CJK
  ideographs when ``tokenize_chinese_chars`` is false, since tensorflow-text always
  splits them).
* **Long words.** Hugging Face makes a word of more than 100 characters ``[UNK]``; the
  kernel counts bytes, so it gets 400 bytes and words over 100 characters (counted from
  their pieces) are turned into ``[UNK]`` after WordPiece.
* **Special tokens in the text.** Hugging Face matches ``[CLS]``, ``[SEP]``, ``[PAD]``,
  ``[UNK]`` and ``[MASK]`` in the raw text, case-sensitively, so
  ``"Paris is the [MASK] of France"`` gets the mask id. A second pass, normalizing the
  same way but keeping ``A``-``Z``, with a vocabulary of one token per word (``[``, ``]``,
  the five names, ``[UNK]``), finds ``[ NAME ]`` written contiguously in the raw text; the
  main pass reads the lower-cased output of that normalization.
* **Truncation, special tokens and padding** are dense ops: ``[CLS] a [SEP]`` or
  ``[CLS] a [SEP] b [SEP]``, truncated like Hugging Face's ``longest_first``, padded to the
  longest sequence of the batch.

What remains different: when it strips accents, Hugging Face NFD-decomposes the whole text,
which puts adjacent combining marks in canonical order; a per-code-point table cannot
reorder. Non-spacing marks are removed anyway, so this only concerns 25 spacing marks
(viramas, Hangul tone marks, musical-notation marks) written out of canonical order, and
changes no id unless the vocabulary contains them (bert-base-uncased's does not). Words
containing :attr:`BertTokenizer.unmatched_chars` are split at those characters (Hugging
Face keeps them whole).

Compiling a tokenizer's tables takes about 1.5 s; they are kept in tfbert's cache
(:mod:`tfbert.cache`), so later tokenizers of the same vocabulary and settings load them.

TFLite: a tf.function calling :meth:`BertTokenizer.tokenize` converts with
``converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]`` and
``converter.allow_custom_ops = True`` (no Flex ops), and runs under ai_edge_litert 2.3 with
``ai_edge_litert.interpreter.InterpreterWithCustomOps(model_content=...,
custom_op_registerers=tflite_op_registerers())`` — tensorflow-text's registrar functions
work with LiteRT's op resolver. LiteRT's plain ``Interpreter`` has no
``custom_op_registerers`` argument.
"""

from __future__ import annotations

import collections
import functools
import json
import os

import numpy as np

from tfbert.errors import BadInputError, ConfigMismatchError, IncompatibleEnvironmentError
from tfbert.tf import import_tensorflow

REQUIRED_SPECIALS = ("[CLS]", "[SEP]", "[PAD]", "[UNK]")
SPECIALS = (*REQUIRED_SPECIALS, "[MASK]")
SUFFIX = "##"
MAX_CHARS_PER_WORD = 100  # Hugging Face WordPiece's max_input_chars_per_word
# Planes 4-13 have no assigned characters; 15-16 are private use (dropped by Hugging Face).
_PLANES = (0, 1, 2, 3, 14, 15, 16)
_TEXT_PLANES = (0, 1, 2, 3, 14)  # where survivors of normalization can be punctuation or spaces
_SEPARATOR = "|"  # maps to itself under every BertNormalizer setting
# FastBertNormalizer model encoding (tensorflow-text fast_bert_normalizer.h).
_CHANGED = 0x40000000
_LENGTH_BITS = 6
# darts-clone unit layout (tensorflow-text darts_clone_trie_wrapper.h).
_HAS_LEAF = 0x100
_IS_LEAF = 0x80000000
_OFFSET_SHIFT = 10
_MAX_TRIE_SIZE = 1 << 21  # offsets above this need the extended encoding, not written here
_WORD, _SPLIT, _SPACE = 0, 1, 2
# The specials pass's vocabulary starts with these; the special tokens' names follow.
_WORD_LIST = ("[UNK]", "[", "]")
# Compiled kernel models in the cache: their names and types, and the layout's version.
_MODELS = {"specials": np.uint8, "ascii_lower": np.uint8, "wordpiece": np.uint8, "words": np.uint8,
           "unmatched": np.int64}
_CACHE_FORMAT = 1
_OPEN, _CLOSE = _WORD_LIST.index("["), _WORD_LIST.index("]")


def tflite_op_registerers() -> list:
    """The tensorflow-text TFLite kernels a converted tokenizer graph needs.

    Pass them as ``custom_op_registerers`` to
    ``ai_edge_litert.interpreter.InterpreterWithCustomOps``; LiteRT's plain ``Interpreter``
    has no such argument.

    Returns:
        The ``tensorflow_text.tflite_registrar`` functions for ``FastBertNormalize`` and
        ``FastWordpieceTokenize``.

    Example:
        >>> from ai_edge_litert.interpreter import InterpreterWithCustomOps
        >>> interpreter = InterpreterWithCustomOps(
        ...     model_content=tflite_bytes, custom_op_registerers=tflite_op_registerers())
    """
    import tensorflow_text as tf_text

    return [tf_text.tflite_registrar.AddFastBertNormalize, tf_text.tflite_registrar.AddFastWordpieceTokenize]


class Vocabulary:
    """What every tfbert tokenizer holds: the vocabulary, its special tokens' ids and the
    normalization settings (:class:`BertTokenizer`, :class:`tfbert.edge_tokenizer.EdgeTokenizer`).

    Args:
        vocab: the vocabulary, one token per id; must contain ``[CLS]``, ``[SEP]``,
            ``[PAD]`` and ``[UNK]``.
        lower_case: lower-case the text (uncased models).
        strip_accents: drop accents; ``None`` follows ``lower_case``, as in Hugging Face.
        tokenize_chinese_chars: split CJK ideographs into single-character words.

    Attributes:
        vocab: the vocabulary; ``token_ids`` maps each token to its id.
        lower_case, strip_accents, tokenize_chinese_chars: the settings (``strip_accents`` resolved).
        cls_id, sep_id, pad_id, unk_id: ids of the special tokens; ``mask_id`` is None when the
            vocabulary has no ``[MASK]``.

    Raises:
        ConfigMismatchError: the vocabulary lacks a special token or repeats a token.
    """

    def __init__(self, vocab: list[str], lower_case: bool = True, strip_accents: bool | None = None,
                 tokenize_chinese_chars: bool = True) -> None:
        self.vocab = check_vocab(list(vocab))
        self.lower_case = bool(lower_case)
        self.strip_accents = self.lower_case if strip_accents is None else bool(strip_accents)
        self.tokenize_chinese_chars = bool(tokenize_chinese_chars)
        self.token_ids = {token: i for i, token in enumerate(self.vocab)}
        self.cls_id, self.sep_id = self.token_ids["[CLS]"], self.token_ids["[SEP]"]
        self.pad_id, self.unk_id = self.token_ids["[PAD]"], self.token_ids["[UNK]"]
        self.mask_id = self.token_ids.get("[MASK]")

    @classmethod
    def from_files(cls, vocab_path: str, tokenizer_config_path: str | None = None, *,
                   lower_case: bool | None = None):
        """The tokenizer of a checkpoint's ``vocab.txt`` and (optional) ``tokenizer_config.json``.

        Args:
            vocab_path: the vocabulary, one token per line.
            tokenizer_config_path: Hugging Face's tokenizer config; ``do_lower_case``
                (default true), ``strip_accents`` (null: follow ``do_lower_case``) and
                ``tokenize_chinese_chars`` (default true) are read from it.
            lower_case: overrides ``do_lower_case``.

        Returns:
            The tokenizer.

        Raises:
            BadInputError: a file does not exist.
            ConfigMismatchError: the vocabulary lacks a special token or repeats a token,
                or the config is not valid JSON.

        Example:
            >>> tok = BertTokenizer.from_files("model/vocab.txt", "model/tokenizer_config.json")  # doctest: +SKIP
        """
        vocab, settings = read_tokenizer_files(vocab_path, tokenizer_config_path, lower_case)
        return cls(vocab, **settings)


class BertTokenizer(Vocabulary):
    """Hugging Face-exact WordPiece tokenizer that runs in the TensorFlow graph and in TFLite.

    Args:
        vocab: the vocabulary, one token per id; must contain ``[CLS]``, ``[SEP]``,
            ``[PAD]`` and ``[UNK]``.
        lower_case: lower-case the text (uncased models).
        strip_accents: drop accents (NFD, then remove non-spacing marks); ``None`` follows
            ``lower_case``, as in Hugging Face.
        tokenize_chinese_chars: split CJK ideographs into single-character words.
        cache: keep the compiled kernel models in tfbert's cache (:mod:`tfbert.cache`), so
            the next tokenizer of this vocabulary and settings starts in milliseconds.

    Attributes:
        vocab: the vocabulary.
        cls_id, sep_id, pad_id, unk_id: ids of the special tokens; ``mask_id`` is None
            when the vocabulary has no ``[MASK]``.
        unmatched_chars: characters whose word splitting differs from Hugging Face's and
            cannot be hidden because the vocabulary contains them (see the module
            docstring); empty for bert-base-uncased's vocabulary.

    Raises:
        ConfigMismatchError: the vocabulary lacks a special token or repeats a token.

    Example:
        >>> from tfbert.checkpoint import find_checkpoint
        >>> files = find_checkpoint()
        >>> tok = BertTokenizer.from_files(files.vocab, files.tokenizer_config)
        >>> tok.tokenize_numpy(["Hello world!"], 16)["input_ids"].tolist()
        [[101, 7592, 2088, 999, 102]]
    """

    def __init__(self, vocab: list[str], lower_case: bool = True, strip_accents: bool | None = None,
                 tokenize_chinese_chars: bool = True, cache: bool = True) -> None:
        tf = import_tensorflow()
        import tensorflow_text as tf_text

        super().__init__(vocab, lower_case, strip_accents, tokenize_chinese_chars)
        index = self.token_ids

        names = [t[1:-1] for t in SPECIALS if t in index]
        models = _compiled_models(self.vocab, names, self.lower_case, self.strip_accents,
                                  self.tokenize_chinese_chars, cache)
        self.unmatched_chars = frozenset(map(chr, models["unmatched"].tolist()))

        def model(name: str):
            return tf.constant(models[name], tf.uint8)

        with tf.init_scope():  # the models are constants, built eagerly even when called in a graph
            # Pass "specials" normalizes like Hugging Face but keeps A-Z, so the case-sensitive
            # special tokens can be recognized; lower-casing its output gives the main pass's text.
            self._specials_normalizer = tf_text.FastBertNormalizer(model_buffer=model("specials"))
            self._ascii_lower = (tf_text.FastBertNormalizer(model_buffer=model("ascii_lower"))
                                 if models["ascii_lower"].size else None)
            self._wordpiece = tf_text.FastWordpieceTokenizer(model_buffer=model("wordpiece"), token_out_type=tf.int32)
            # One token per word: "[", "]", a special's name, or [UNK] for any other word.
            self._words = tf_text.FastWordpieceTokenizer(model_buffer=model("words"), token_out_type=tf.int32)
            continuation = [t.startswith(SUFFIX) and len(t) > len(SUFFIX) for t in self.vocab]
            self._is_word_start = tf.constant([0 if c else 1 for c in continuation], tf.int32)
            self._piece_chars = tf.constant([len(t) - len(SUFFIX) if c else len(t)
                                             for t, c in zip(self.vocab, continuation, strict=True)], tf.int32)
            # By specials-pass word id: the vocabulary id it stands for (-1: none) and its raw length.
            no_special = [-1] * len(_WORD_LIST)
            self._special_ids = tf.constant([*no_special, *(index[f"[{n}]"] for n in names)], tf.int32)
            self._special_bytes = tf.constant([*no_special, *(len(n.encode()) + 2 for n in names)], tf.int32)
            self._vocab_table = tf.constant(self.vocab)

    def tokenize(self, texts, max_length: int, text_pairs=None) -> dict:
        """Token ids for a batch of texts (or text pairs), usable in tf.function, tf.data and TFLite.

        Args:
            texts: string tensor [batch] (or a list of str).
            max_length: truncation length including the special tokens, as Hugging
                Face's ``max_length`` with ``truncation=True``.
            text_pairs: optional second texts, string [batch]; truncated together with
                ``texts`` like Hugging Face's ``longest_first``.

        Returns:
            ``input_ids``, ``attention_mask`` and ``token_type_ids``: int32 [batch, seq],
            ``seq`` the longest sequence in the batch (not ``max_length``), padded with
            ``[PAD]`` / 0.

        Raises:
            BadInputError: ``max_length`` leaves no room for the special tokens, or the
                inputs are not string vectors of the same length.

        Example:
            >>> ids = tok.tokenize(tf.constant(["a question", "another"]), 128,
            ...                    text_pairs=tf.constant(["its context", "more"]))
            >>> ids["token_type_ids"].shape
            TensorShape([2, 7])
        """
        tf = import_tensorflow()
        check_max_length(max_length, pairs=text_pairs is not None)
        texts = _string_vector(tf, texts, "texts")
        first = self._wordpieces(texts)
        if text_pairs is None:
            return self._single(*first, max_length - 2)
        text_pairs = _string_vector(tf, text_pairs, "text_pairs")
        if not texts.shape[:1].is_compatible_with(text_pairs.shape[:1]):
            raise BadInputError("texts and text_pairs differ in length", where="text_pairs",
                                expected=texts.shape[0], actual=text_pairs.shape[0], fix="pass one pair text per text")
        return self._pair(first, self._wordpieces(text_pairs), max_length - 3)

    def tokenize_with_offsets(self, texts, max_length: int) -> dict:
        """:meth:`tokenize` plus where each token is in its text, in characters: Hugging Face's offsets.

        Args:
            texts: string tensor [batch] (or a list of str).
            max_length: truncation length including the special tokens.

        Returns:
            :meth:`tokenize`'s outputs, and ``start`` / ``end``: int32 [batch, seq], the
            token's span ``text[start:end]`` in Unicode code points of the raw text (what
            ``BertTokenizerFast``'s ``offset_mapping`` gives); 0 for [CLS], [SEP] and padding.
            An accent or a control character normalization removed inside a word stays inside
            its span.

        Example:
            >>> out = tok.tokenize_with_offsets(tf.constant(["Héllo wörld"]), 16)
            >>> out["start"].numpy().tolist(), out["end"].numpy().tolist()
            ([[0, 0, 6, 0]], [[0, 5, 11, 0]])
        """
        tf = import_tensorflow()
        check_max_length(max_length)
        texts = _string_vector(tf, texts, "texts")
        ids, splits, begin, last, _, _ = self._wordpieces(texts, offsets=True)
        out = self._single(ids, splits, max_length - 2, extra={"start": begin, "end": last})
        # Byte offsets to code points: the character holding a byte is the last one starting at
        # or before it; the span ends after the character holding its last byte.
        _, char_starts = tf.strings.unicode_decode_with_offsets(texts, "UTF-8", errors="replace")
        starts = tf.cast(char_starts, tf.int32).to_tensor(default_value=np.iinfo(np.int32).max)
        pieces = out["input_ids"] != self.cls_id
        pieces &= (out["input_ids"] != self.sep_id) & (out["attention_mask"] > 0)
        first = tf.searchsorted(starts, out["start"], side="right", out_type=tf.int32) - 1
        after = tf.searchsorted(starts, out["end"], side="right", out_type=tf.int32)
        out["start"] = tf.where(pieces, first, 0)
        out["end"] = tf.where(pieces, after, 0)
        return out

    def tokenize_numpy(self, texts: list[str], max_length: int, text_pairs: list[str] | None = None
                       ) -> dict[str, np.ndarray]:
        """:meth:`tokenize` on Python strings, eagerly, returning numpy arrays.

        Args:
            texts: the texts.
            max_length: truncation length including the special tokens.
            text_pairs: optional second texts.

        Returns:
            ``input_ids``, ``attention_mask``, ``token_type_ids``: int32 [len(texts), seq].

        Example:
            >>> tok.tokenize_numpy(["Hello world!", ""], 16)["attention_mask"].tolist()
            [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
        """
        tf = import_tensorflow()
        pairs = None if text_pairs is None else tf.constant(list(text_pairs), tf.string)
        out = self.tokenize(tf.constant(list(texts), tf.string), max_length, pairs)
        return {k: v.numpy() for k, v in out.items()}

    def to_tflite(self, max_length: int, pairs: bool = False) -> bytes:
        """This tokenizer as a TFLite flatbuffer: builtin ops plus tensorflow-text's kernels, no Flex.

        Inputs ``text`` (and ``pair`` with ``pairs=True``), strings [batch]; outputs as
        :meth:`tokenize`. Run it under LiteRT with :func:`tflite_op_registerers` (or
        :class:`tfbert.litert.LiteRTRunner`, which registers them for a ``text`` input).

        Example:
            >>> flatbuffer = tok.to_tflite(128)  # doctest: +SKIP
        """
        tf = import_tensorflow()
        tokenizer = self

        class Graph(tf.Module):
            @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")], autograph=False)
            def single(self, text):
                return tokenizer.tokenize(text, max_length)

            @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text"),
                                          tf.TensorSpec([None], tf.string, name="pair")], autograph=False)
            def paired(self, text, pair):
                return tokenizer.tokenize(text, max_length, text_pairs=pair)

        graph = Graph()
        function = (graph.paired if pairs else graph.single).get_concrete_function()
        converter = tf.lite.TFLiteConverter.from_concrete_functions([function], graph)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.allow_custom_ops = True  # tensorflow-text's kernels, registered at run time
        return converter.convert()

    def id_to_token(self, ids):
        """Token strings for int ids (any shape).

        Args:
            ids: int tensor of vocabulary ids.

        Returns:
            A string tensor of the same shape.

        Example:
            >>> tok.id_to_token(tf.constant([101, 7592])).numpy().tolist()
            [b'[CLS]', b'hello']
        """
        tf = import_tensorflow()
        return tf.gather(self._vocab_table, ids)

    def wordpieces(self, texts, with_offsets: bool = False) -> tuple:
        """The WordPiece ids of each text, without special tokens, truncation or padding.

        Args:
            texts: string tensor [batch].
            with_offsets: also give each token's word as byte offsets into the raw text (Hugging
                Face's ``word_to_chars`` of the token's word, in UTF-8 bytes): extractive question
                answering maps an answer span back to the context with them.

        Returns:
            ``(ids int32 [n], row_splits int32 [batch + 1])``, plus ``word_begin`` and ``word_end``
            (int32 [n], end exclusive) with ``with_offsets``.

        Example:
            >>> ids, splits, begin, end = tok.wordpieces(tf.constant(["Héllo world"]), with_offsets=True)
            >>> begin.numpy().tolist(), end.numpy().tolist()
            ([0, 7], [6, 12])
        """
        out = self._wordpieces(_string_vector(import_tensorflow(), texts, "texts"), with_offsets)
        return out[:2] + out[4:] if with_offsets else out

    def _wordpieces(self, texts, offsets: bool = False):
        """(ids int32 [n], row_splits int32 [batch + 1]): WordPiece ids with Hugging Face's word rules.

        With ``offsets``, also each kept piece's first and last byte in the raw text (a [UNK]
        for a too-long word: the word's last byte; any byte of a character stands for it), then
        its word's first byte and the byte after its word (end exclusive).
        """
        tf = import_tensorflow()
        text, raw_offsets = self._specials_normalizer.normalize_with_offsets(texts)
        lowered = self._ascii_lower.normalize(text) if self._ascii_lower else text
        if offsets:
            pieces, begin, end = self._wordpiece.tokenize_with_offsets(lowered)
        else:
            pieces = self._wordpiece.tokenize(lowered)
        ids = pieces.values
        splits = tf.cast(pieces.row_splits, tf.int32)
        n = tf.size(ids)
        # Every word starts with a token without "##", so a running count numbers the words.
        starts = tf.gather(self._is_word_start, ids)
        word = tf.cumsum(starts) - 1
        word_chars = tf.math.unsorted_segment_sum(tf.gather(self._piece_chars, ids), word, n)
        too_long = tf.gather(word_chars, word) > MAX_CHARS_PER_WORD
        # The specials pass has exactly one token per word, so its word k is word k here.
        special_ids, brackets = self._special_words(text, raw_offsets)
        dropped = tf.gather(brackets, word)
        special_id = tf.gather(special_ids, word)
        is_start = starts > 0
        keep = ~dropped & (is_start | (~too_long & (special_id < 0)))
        ids = tf.where(special_id >= 0, special_id, tf.where(too_long, self.unk_id, ids))
        kept = tf.concat([[0], tf.cumsum(tf.cast(keep, tf.int32))], 0)
        if not offsets:
            return tf.boolean_mask(ids, keep), tf.gather(kept, splits)
        # The normalizer's offsets give each normalized byte the raw offset of the character it
        # came from (every byte of a replaced character points at that character's start).
        base = tf.gather(tf.cast(raw_offsets.row_splits, tf.int32), _row_ids(tf, splits, n))
        flat = tf.cast(raw_offsets.values, tf.int32)
        raw_begin = tf.gather(flat, base + tf.cast(begin.values, tf.int32))
        raw_last = tf.gather(flat, base + tf.cast(end.values, tf.int32) - 1)
        # A word begins at the raw byte its first byte came from and ends after the raw character
        # its last byte came from (characters normalization removed after it, like a zero-width
        # space, are not part of it).
        raw_bytes = tf.strings.bytes_split(texts)
        byte_values = tf.cast(tf.io.decode_raw(raw_bytes.values, tf.uint8, fixed_length=1)[:, 0], tf.int32)
        row = _row_ids(tf, splits, n)
        lead = tf.gather(byte_values, tf.gather(tf.cast(raw_bytes.row_splits, tf.int32), row) + raw_last)
        raw_end = raw_last + _utf8_length(tf, lead)
        word_begin = tf.gather(tf.math.unsorted_segment_min(raw_begin, word, n), word)
        word_end = tf.gather(tf.math.unsorted_segment_max(raw_end, word, n), word)
        written = tf.cast(special_id >= 0, tf.int32)  # "[MASK]" in the text: its word includes the brackets
        word_begin, word_end = word_begin - written, word_end + written
        # One token for a whole word (a too-long word's [UNK], a special token written in the
        # text) ends with the word; a special token also spans its brackets (a byte each, adjacent).
        whole = too_long | (special_id >= 0)
        piece_last = tf.where(whole, tf.gather(tf.math.unsorted_segment_max(raw_last, word, n), word), raw_last)
        piece_begin = tf.where(special_id >= 0, raw_begin - 1, raw_begin)
        piece_last = tf.where(special_id >= 0, piece_last + 1, piece_last)
        return (tf.boolean_mask(ids, keep), tf.gather(kept, splits), tf.boolean_mask(piece_begin, keep),
                tf.boolean_mask(piece_last, keep), tf.boolean_mask(word_begin, keep), tf.boolean_mask(word_end, keep))

    def _special_words(self, text, offsets):
        """Per word: the special token id it is (or -1), and whether it is a bracket of one."""
        tf = import_tensorflow()
        words, begin, end = self._words.tokenize_with_offsets(text)
        word_ids = words.values
        row = _row_ids(tf, tf.cast(words.row_splits, tf.int32), tf.size(word_ids))
        # Offsets into the raw text: a special token must be written exactly, with nothing
        # that normalization removes (a zero-width space, an accent) in between. The raw
        # offset of a word's last byte is used, as what follows "]" may have been removed.
        base = tf.gather(tf.cast(offsets.row_splits, tf.int32), row)
        flat_offsets = tf.cast(offsets.values, tf.int32)
        raw_begin = tf.gather(flat_offsets, base + tf.cast(begin.values, tf.int32))
        raw_last = tf.gather(flat_offsets, base + tf.cast(end.values, tf.int32) - 1)

        def shifted(x, by, fill):
            fills = tf.fill([1], fill)
            return tf.concat([fills, x[:-1]], 0) if by > 0 else tf.concat([x[1:], fills], 0)

        is_special = ((tf.gather(self._special_ids, word_ids) >= 0)
                      & (shifted(word_ids, 1, -1) == _OPEN) & (shifted(word_ids, -1, -1) == _CLOSE)
                      & (shifted(row, 1, -1) == row) & (shifted(row, -1, -1) == row)
                      & (shifted(raw_last, -1, 0) - shifted(raw_begin, 1, 0) + 1
                         == tf.gather(self._special_bytes, word_ids)))
        ids = tf.where(is_special, tf.gather(self._special_ids, word_ids), -1)
        return ids, shifted(is_special, 1, False) | shifted(is_special, -1, False)

    def _single(self, ids, splits, budget: int, extra: dict | None = None) -> dict:
        """[CLS] pieces [SEP], truncated and padded; ``extra`` per-piece values are laid out alike (0 elsewhere)."""
        tf = import_tensorflow()
        kept = tf.minimum(splits[1:] - splits[:-1], budget)
        position, inside = _positions(tf, kept + 2)
        padded = tf.concat([ids, [self.pad_id]], 0)
        is_piece = (position >= 1) & (position <= kept[:, None])
        index = tf.where(is_piece, splits[:-1, None] + position - 1, tf.size(ids))
        pieces = tf.gather(padded, index)
        input_ids = tf.where(position == 0, self.cls_id,
                             tf.where(position == kept[:, None] + 1, self.sep_id, pieces))
        out = {"input_ids": input_ids, "attention_mask": tf.cast(inside, tf.int32),
               "token_type_ids": tf.zeros_like(input_ids)}
        for key, values in (extra or {}).items():
            out[key] = tf.gather(tf.concat([values, [0]], 0), index)
        return out

    def _pair(self, first, second, budget: int) -> dict:
        tf = import_tensorflow()
        (ids_a, splits_a), (ids_b, splits_b) = first, second
        n_a, n_b = splits_a[1:] - splits_a[:-1], splits_b[1:] - splits_b[:-1]
        # Hugging Face's longest_first (tokenizers' truncation.rs): when both do not fit, the
        # shorter keeps its length if that leaves it no more than half the budget, else both
        # get half (the first, or on a tie the first, gets the rounded-down half).
        shorter = tf.minimum(n_a, n_b)
        half = budget // 2
        first_shorter = n_a <= n_b
        fits = n_a + n_b <= budget
        short_keeps = 2 * shorter <= budget
        keep_short = tf.where(short_keeps, shorter, half)
        keep_long = tf.where(short_keeps, budget - shorter, budget - half)
        kept_a = tf.where(fits, n_a, tf.where(first_shorter, keep_short, keep_long))
        kept_b = tf.where(fits, n_b, tf.where(first_shorter, keep_long, keep_short))
        position, inside = _positions(tf, kept_a + kept_b + 3)
        end_a = kept_a[:, None] + 1  # [SEP] after a
        end_b = end_a + kept_b[:, None] + 1  # [SEP] after b
        in_a = (position >= 1) & (position < end_a)
        in_b = (position > end_a) & (position < end_b)
        padded_a = tf.concat([ids_a, [self.pad_id]], 0)
        padded_b = tf.concat([ids_b, [self.pad_id]], 0)
        piece_a = tf.gather(padded_a, tf.where(in_a, splits_a[:-1, None] + position - 1, tf.size(ids_a)))
        piece_b = tf.gather(padded_b, tf.where(in_b, splits_b[:-1, None] + position - end_a - 1, tf.size(ids_b)))
        input_ids = tf.where(position == 0, self.cls_id,
                             tf.where((position == end_a) | (position == end_b), self.sep_id,
                                      tf.where(in_a, piece_a, piece_b)))
        types = (position > end_a) & inside
        return {"input_ids": input_ids, "attention_mask": tf.cast(inside, tf.int32),
                "token_type_ids": tf.cast(types, tf.int32)}


def read_tokenizer_files(vocab_path: str, tokenizer_config_path: str | None = None, lower_case: bool | None = None
                         ) -> tuple[list[str], dict]:
    """The vocabulary and the settings every tfbert tokenizer is built from.

    Args:
        vocab_path: ``vocab.txt``, one token per line.
        tokenizer_config_path: Hugging Face's ``tokenizer_config.json`` (optional):
            ``do_lower_case`` (default true), ``strip_accents`` (null: follow
            ``do_lower_case``) and ``tokenize_chinese_chars`` (default true).
        lower_case: overrides ``do_lower_case``.

    Returns:
        ``(vocab, settings)``: the tokens in id order, and ``lower_case``, ``strip_accents``
        (None: follow ``lower_case``) and ``tokenize_chinese_chars`` as keyword arguments.

    Raises:
        BadInputError: a file does not exist.
        ConfigMismatchError: the vocabulary lacks a special token or repeats a token, or the
            config is not a JSON object.

    Example:
        >>> vocab, settings = read_tokenizer_files("model/vocab.txt", "model/tokenizer_config.json")  # doctest: +SKIP
        >>> settings  # doctest: +SKIP
        {'lower_case': True, 'strip_accents': None, 'tokenize_chinese_chars': True}
    """
    config = _read_config(tokenizer_config_path) if tokenizer_config_path else {}
    if lower_case is None:
        lower_case = bool(config.get("do_lower_case", True))
    strip = config.get("strip_accents")
    return _read_vocab(vocab_path), {"lower_case": lower_case, "strip_accents": None if strip is None else bool(strip),
                                     "tokenize_chinese_chars": bool(config.get("tokenize_chinese_chars", True))}


def check_max_length(max_length: int, pairs: bool = False) -> None:
    """Refuse a ``max_length`` that leaves no room for ``[CLS] [SEP]`` (``[CLS] [SEP] [SEP]`` for pairs).

    Raises:
        BadInputError: it is not an int of at least 2 (3 for pairs).
    """
    minimum = 3 if pairs else 2
    if not isinstance(max_length, int) or max_length < minimum:
        raise BadInputError("max_length must leave room for the special tokens", where="max_length",
                            expected=f"an int >= {minimum}", actual=max_length,
                            fix=f"use a max_length of at least {minimum}")


def _positions(tf, lengths):
    """(position int32 [batch, seq], inside bool [batch, seq]), seq the longest of ``lengths``."""
    width = tf.reduce_max(tf.concat([lengths, [0]], 0))
    position = tf.broadcast_to(tf.range(width)[None, :], [tf.size(lengths), width])
    return position, position < lengths[:, None]


def _row_ids(tf, splits, n):
    """The row of each of the ``n`` values of a ragged tensor with ``splits``, with TFLite builtins only."""
    # Row b ends at splits[b + 1]; the row of value t is the number of rows ending at or before t.
    row_ends = splits[1:]
    ends_at = tf.math.unsorted_segment_sum(tf.ones_like(row_ends), row_ends, n + 1)[:n]
    return tf.cumsum(ends_at)


def _utf8_length(tf, lead_byte):
    """Bytes of the UTF-8 character whose first byte is ``lead_byte`` (int32)."""
    return 1 + tf.cast(lead_byte >= 0xC0, tf.int32) + tf.cast(lead_byte >= 0xE0, tf.int32) \
        + tf.cast(lead_byte >= 0xF0, tf.int32)


def _string_vector(tf, texts, name: str):
    texts = tf.convert_to_tensor(texts, tf.string)
    if texts.shape.rank != 1:
        raise BadInputError("texts must be a vector of strings", where=name, expected="shape [batch]",
                            actual=texts.shape, fix="pass a list or a 1-D string tensor")
    return texts


def check_vocab(vocab: list[str], where: str = "vocab") -> list[str]:
    """``vocab`` itself, if it has the required special tokens and no token twice.

    Raises:
        ConfigMismatchError: naming ``where``, the missing specials or the repeated tokens.
    """
    missing = [t for t in REQUIRED_SPECIALS if t not in vocab]
    if missing:
        raise ConfigMismatchError("special tokens missing from the vocab", where=where,
                                  expected=" ".join(REQUIRED_SPECIALS), actual="missing " + " ".join(missing),
                                  fix="use the vocab.txt of the checkpoint")
    repeated = [t for t, count in collections.Counter(vocab).items() if count > 1]
    if repeated:
        raise ConfigMismatchError("tokens appear twice in the vocab, so their ids are ambiguous", where=where,
                                  expected="unique tokens", actual=" ".join(map(repr, repeated[:5])),
                                  fix="use the vocab.txt of the checkpoint")
    return vocab


def _read_vocab(path: str) -> list[str]:
    if not path or not os.path.isfile(path):
        raise BadInputError("vocab.txt does not exist", where=str(path),
                            fix="pass the vocab.txt published with the weights")
    with open(path, encoding="utf-8") as f:
        tokens = [line.rstrip("\r\n") for line in f]
    while tokens and tokens[-1] == "":
        tokens.pop()
    return check_vocab(tokens, where=path)


def _read_config(path: str) -> dict:
    if not os.path.isfile(path):
        raise BadInputError("tokenizer_config.json does not exist", where=path,
                            fix="pass the tokenizer_config.json published with the weights, or none")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigMismatchError(f"not valid JSON ({e})", where=path,
                                  fix="use the tokenizer_config.json of the checkpoint") from None
    if not isinstance(config, dict):
        raise ConfigMismatchError("not a JSON object", where=path, actual=type(config).__name__,
                                  fix="use the tokenizer_config.json of the checkpoint")
    return config


def _compiled_models(vocab: list[str], names: list[str], lower_case: bool, strip_accents: bool, chinese: bool,
                     use_cache: bool) -> dict[str, np.ndarray]:
    """The four kernel models (uint8 flatbuffers) and the unmatched characters (code points).

    ``specials`` / ``ascii_lower``: the two normalization passes (``ascii_lower`` empty when
    the text keeps its case); ``wordpiece``: the vocabulary; ``words``: the specials pass's.
    Compiling them takes about 1.5 s and 150 MB (every code point through Hugging Face's and
    ICU's rules); with ``use_cache`` the result is kept in tfbert's cache (:mod:`tfbert.cache`), keyed
    by everything it depends on: the vocabulary, the settings, and the versions of
    ``tokenizers`` and ``tensorflow-text``.
    """
    import hashlib

    import tensorflow_text as tf_text

    from tfbert import cache

    settings = [_CACHE_FORMAT, _hf_tokenizers().__version__, tf_text.__version__, lower_case, strip_accents, chinese,
                names, SUFFIX, MAX_CHARS_PER_WORD]
    digest = hashlib.sha256((json.dumps(settings) + "\n" + "\n".join(vocab)).encode("utf-8")).hexdigest()
    directory = cache.cache_dir("tokenizer") if use_cache else None
    path = None if directory is None else os.path.join(directory, f"{digest[:32]}.npz")
    models = cache.read_arrays(path)
    if models is not None and set(models) == set(_MODELS) and all(models[k].dtype == _MODELS[k] for k in _MODELS):
        return models

    from tensorflow_text.core.pybinds import pywrap_fast_wordpiece_tokenizer_model_builder as builder

    vocab_chars = frozenset("".join(vocab))
    placeholder = next(chr(c) for c in range(0xE000, 0xF900) if chr(c) not in vocab_chars)
    table, unmatched = _normalization_table(lower_case, strip_accents, chinese, placeholder,
                                            frozenset(vocab_chars & _split_disagreements().keys()))
    ascii_upper = [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    lowered = {ord(c): table[ord(c)] for c in ascii_upper if ord(c) in table}
    keep_case = {c: s for c, s in table.items() if c not in lowered}

    def normalizer(items: dict[int, str]) -> np.ndarray:
        return np.frombuffer(_normalizer_model(tuple(sorted(items.items()))), np.uint8)

    def wordpiece(words: list[str], max_bytes: int) -> np.ndarray:
        # What tf_text.FastWordpieceTokenizer(vocab=...) builds (without its bytes -> list -> tensor copy).
        return np.frombuffer(builder.build_fast_wordpiece_model(words, max_bytes, SUFFIX, "[UNK]", False, False),
                             np.uint8)

    models = {"specials": normalizer(keep_case),
              "ascii_lower": normalizer(lowered) if lowered else np.zeros(0, np.uint8),  # empty: keeps case
              "wordpiece": wordpiece(vocab, 4 * MAX_CHARS_PER_WORD), "words": wordpiece([*_WORD_LIST, *names], 100),
              "unmatched": np.array(sorted(map(ord, unmatched)), np.int64)}
    cache.write_arrays(path, models)
    return models



def _code_points(planes: tuple[int, ...]) -> np.ndarray:
    cps = np.concatenate([np.arange(p << 16, (p + 1) << 16) for p in planes])
    return cps[((cps < 0xD800) | (cps > 0xDFFF)) & (cps != ord(_SEPARATOR))]


def _hf_tokenizers():
    """Hugging Face's ``tokenizers`` (fast to import, unlike transformers), the source of the tables."""
    try:
        import tokenizers
    except ImportError:
        raise IncompatibleEnvironmentError("the tokenizers package is missing", where="tokenizers",
                                           fix="pip install tokenizers (it comes with transformers)") from None
    return tokenizers


@functools.lru_cache(maxsize=4)
def _hf_normalized(lower_case: bool, strip_accents: bool, chinese: bool) -> dict[int, str]:
    """Hugging Face BertNormalizer's output for every code point it changes."""
    normalizer = _hf_tokenizers().normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=chinese, strip_accents=strip_accents, lowercase=lower_case)
    changed = {}
    cps = _code_points(_PLANES).tolist()
    for i in range(0, len(cps), 65536):
        chunk = cps[i:i + 65536]
        out = normalizer.normalize_str(_SEPARATOR.join(map(chr, chunk))).split(_SEPARATOR)
        if len(out) != len(chunk):  # a character normalized to or from the separator
            raise IncompatibleEnvironmentError("BertNormalizer changed the separator character", where="tokenizers",
                                               expected=len(chunk), actual=len(out),
                                               fix="report this tokenizers version to tfbert")
        changed.update((c, s) for c, s in zip(chunk, out, strict=True) if s != chr(c))
    return changed


@functools.lru_cache(maxsize=1)
def _word_classes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(code points, Hugging Face's class, ICU's class): word character, split off, or whitespace.

    Each is measured by the real implementation on every code point placed between two
    ``a``: Hugging Face's ``BertPreTokenizer`` and tensorflow-text's WordPiece kernel.
    """
    tf = import_tensorflow()
    import tensorflow_text as tf_text

    cps = _code_points(_TEXT_PLANES)
    cps = cps[cps != ord("a")]
    text = "a" + "a".join(map(chr, cps.tolist())) + "a"
    char_starts = 1 + 2 * np.arange(len(cps))
    pieces = _hf_tokenizers().pre_tokenizers.BertPreTokenizer().pre_tokenize_str(text)
    hf = _classify(char_starts, np.ones(len(cps), np.int64), np.array([p[1] for p in pieces]).reshape(-1, 2))

    utf8_lengths = _utf8_lengths(cps)
    byte_starts = 1 + np.concatenate([[0], np.cumsum(utf8_lengths + 1)[:-1]])
    with tf.init_scope():
        splitter = tf_text.FastWordpieceTokenizer(vocab=["[UNK]", "a"], max_bytes_per_word=len(text.encode()) + 1)
        _, begin, end = splitter.tokenize_with_offsets(tf.constant([text]))
        spans = np.stack([begin.flat_values.numpy(), end.flat_values.numpy()], 1)
    return cps, hf, _classify(byte_starts, utf8_lengths, spans)


def _classify(starts: np.ndarray, lengths: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """Per character at ``starts``: _SPLIT if a token is exactly it, _WORD if inside a longer one, else _SPACE."""
    token = np.searchsorted(spans[:, 0], starts, side="right") - 1
    begin, end = spans[np.maximum(token, 0)].T
    covered = (token >= 0) & (end > starts)
    alone = covered & (begin == starts) & (end == starts + lengths)
    return np.where(alone, _SPLIT, np.where(covered, _WORD, _SPACE))


@functools.lru_cache(maxsize=1)
def _split_disagreements() -> dict[str, tuple[int, int]]:
    """Characters Hugging Face and ICU put on different sides of a word boundary: (HF's, ICU's class).

    Hugging Face's whitespace is left out: normalization turns it into spaces.
    """
    cps, hf, icu = _word_classes()
    differ = (hf != icu) & (hf != _SPACE)
    return {chr(c): (h, i) for c, h, i in zip(cps[differ].tolist(), hf[differ].tolist(), icu[differ].tolist(),
                                               strict=True)}


@functools.lru_cache(maxsize=4)
def _normalization_table(lower_case: bool, strip_accents: bool, chinese: bool, placeholder: str,
                         in_vocab: frozenset[str]) -> tuple[dict[int, str], frozenset[str]]:
    """Hugging Face's normalization per code point, with the word-splitting fixes applied.

    Args:
        lower_case, strip_accents, chinese: the BertNormalizer settings.
        placeholder: a character no vocabulary token contains.
        in_vocab: the characters of :func:`_split_disagreements` some token contains.

    Returns:
        The changed code points, and the characters whose split cannot be fixed.
    """
    table = dict(_hf_normalized(lower_case, strip_accents, chinese))

    def isolated(s: str) -> bool:  # what normalization surrounds with spaces (CJK) is a word either way
        return len(s) == 3 and s[0] == s[2] == " "

    produced = set("".join(s for s in table.values() if not isolated(s)))
    fix, unmatched = {}, set()
    for char, (h, i) in _split_disagreements().items():
        if ord(char) in table and char not in produced:  # never in normalized text
            continue
        if h == _SPLIT and i == _WORD:
            fix[char] = f" {char} "
        elif h == _WORD and char not in in_vocab:
            fix[char] = placeholder  # no token contains it, so its word is [UNK], as in Hugging Face
        else:
            unmatched.add(char)
    for c, s in table.items():
        if not isolated(s) and any(ch in fix for ch in s):
            table[c] = "".join(fix.get(ch, ch) for ch in s)
    for char, replacement in fix.items():
        table.setdefault(ord(char), replacement)
    return table, frozenset(unmatched)


@functools.lru_cache(maxsize=8)
def _normalizer_model(items: tuple[tuple[int, str], ...]) -> bytes:
    """A tensorflow-text FastBertNormalizerModel flatbuffer mapping each code point to its string."""
    import flatbuffers

    pool, where, keys, values = bytearray(), {}, [], []
    zero = 0
    for c, s in items:
        data = _CHANGED
        encoded = s.encode("utf-8")
        if encoded:
            if encoded not in where:
                where[encoded] = len(pool)
                pool += encoded
            data |= len(encoded) | (where[encoded] << _LENGTH_BITS)
        if c == 0:
            zero = data  # the trie cannot hold the empty key NUL would need
        else:
            keys.append(c)
            values.append(data)
    trie = _darts_trie(np.array(keys, np.int64), np.array(values, np.uint32))
    builder = flatbuffers.Builder(len(pool) + 4 * len(trie) + 256)
    pool_vector = builder.CreateNumpyVector(np.frombuffer(bytes(pool), np.uint8))
    trie_vector = builder.CreateNumpyVector(trie)
    builder.StartObject(4)
    # Slot 0 (lower_case_nfd_strip_accents) only records how stock tables were built: left unset.
    builder.PrependUOffsetTRelativeSlot(1, trie_vector, 0)
    builder.PrependInt32Slot(2, zero, 0)
    builder.PrependUOffsetTRelativeSlot(3, pool_vector, 0)
    builder.Finish(builder.EndObject())
    return bytes(builder.Output())


def _utf8_lengths(cps: np.ndarray) -> np.ndarray:
    return 1 + (cps > 0x7F) + (cps > 0x7FF) + (cps > 0xFFFF)


def _utf8_bytes(cps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """([n, 4] UTF-8 bytes, zero-padded; [n] byte lengths) of code points."""
    lengths = _utf8_lengths(cps)
    out = np.zeros((len(cps), 4), np.int64)
    out[lengths == 1, 0] = cps[lengths == 1]
    for length, lead in ((2, 0xC0), (3, 0xE0), (4, 0xF0)):
        rows = lengths == length
        c = cps[rows]
        out[rows, 0] = lead | (c >> (6 * (length - 1)))
        for i in range(1, length):
            out[rows, i] = 0x80 | ((c >> (6 * (length - 1 - i))) & 0x3F)
    return out, lengths


def _darts_trie(cps: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A darts-clone double-array trie over the UTF-8 bytes of ``cps`` (which no key prefixes).

    The lookup (``DartsCloneTrieWrapper``) goes from node ``id`` along byte ``b`` to
    ``id ^ offset ^ b`` and accepts it if that unit's label is ``b``; a node with a value
    has it in the unit at ``id ^ offset``. It is correct when no two nodes share a base
    ``id ^ offset``. Here the root's children sit at 256 + byte; every other inner node
    (whose children are all UTF-8 continuation bytes 0x80-0xBF) gets its own 64-unit
    quarter of a 256-unit block; each key's value goes into a free unit, which is also that
    key node's unique base.
    """
    data, lengths = _utf8_bytes(cps)
    position = np.zeros(len(cps), np.int64)
    base = np.full(len(cps), 256, np.int64)  # base of the node reached so far (the root's)
    units, inner_bases = {0: 256 << _OFFSET_SHIFT}, {256}
    next_quarter = 0
    for depth in range(4):
        active = depth < lengths
        position[active] = base[active] ^ data[active, depth]
        inner = active & (depth + 1 < lengths)
        # Inner nodes at this depth (found by position): one quarter each.
        nodes, first, node = np.unique(position[inner], return_index=True, return_inverse=True)
        quarter = next_quarter + np.arange(len(nodes))
        next_quarter += len(nodes)
        node_bases = (2 + quarter // 4) * 256 + np.array([0x00, 0x40, 0x80, 0xC0])[quarter % 4]
        labels = data[inner, depth][first]
        for p, b, label in zip(nodes.tolist(), node_bases.tolist(), labels.tolist(), strict=True):
            units[p] = ((p ^ b) << _OFFSET_SHIFT) | label
        inner_bases.update(node_bases.tolist())
        base[inner] = node_bases[node]
    # Unicode bounds the size: at most 7 planes of keys and one inner node per 64 code points.
    used = np.zeros(_MAX_TRIE_SIZE, bool)
    used[0] = True
    used[list(units)] = True
    used[list(inner_bases)] = True
    used[position] = True
    free = np.flatnonzero(~used)[:len(cps)]
    # Whole blocks: a lookup of a byte no key has still reads a unit of its node's block.
    size = max(int(free.max(initial=0)), int(position.max(initial=0)), max(units)) + 1
    trie = np.zeros(-(-size // 256) * 256, np.uint32)
    for p, unit in units.items():
        trie[p] = unit
    last = data[np.arange(len(cps)), lengths - 1]
    trie[position] = ((position ^ free) << _OFFSET_SHIFT) | _HAS_LEAF | last
    trie[free] = _IS_LEAF | values
    return trie

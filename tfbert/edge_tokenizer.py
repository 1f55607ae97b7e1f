"""tfbert's WordPiece tokenizer without TensorFlow: Hugging Face ``tokenizers`` on the same files.

:class:`EdgeTokenizer` is for machines that have only LiteRT (``python -m tfbert.predict
--model=X.tflite``): it is built from the checkpoint's ``vocab.txt`` and
``tokenizer_config.json``, the files :class:`tfbert.tokenizer.BertTokenizer` reads, with the
pipeline Hugging Face's ``BertTokenizerFast`` builds from them (``BertNormalizer`` with the
same casing, accent and Chinese-character settings, ``BertPreTokenizer``, WordPiece with
words over 100 characters as ``[UNK]``, the special tokens matched in the raw text,
``longest_first`` truncation, padding to the longest sequence of the batch). Its ids are
therefore Hugging Face's, which are tfbert's in-graph tokenizer's (tests/test_tokenizer.py);
the exceptions are the ones :mod:`tfbert.tokenizer` documents, none of which occurs with
bert-base-uncased's vocabulary.

``vocab.txt`` is the truth: a checkpoint's ``tokenizer.json`` is not read for the ids (every
tfbert path, the TensorFlow tokenizer and the exports, tokenizes with ``vocab.txt``); when one
is given and disagrees, a one-line warning names the first difference.

Importing this module imports neither TensorFlow nor ``tokenizers``.
"""

from __future__ import annotations

import json
import logging
import os
from typing import NamedTuple

import numpy as np

from tfbert.errors import BadInputError, IncompatibleEnvironmentError
from tfbert.tokenizer import MAX_CHARS_PER_WORD, SPECIALS, SUFFIX, Vocabulary, check_max_length

log = logging.getLogger("tfbert")

KEYS = ("input_ids", "attention_mask", "token_type_ids")


class EdgeTokenizer(Vocabulary):
    """Hugging Face-exact WordPiece tokenizer on numpy, with no TensorFlow.

    Args and attributes: those of :class:`tfbert.tokenizer.Vocabulary`.

    Raises:
        ConfigMismatchError: the vocabulary lacks a special token or repeats a token.
        IncompatibleEnvironmentError: the ``tokenizers`` package is not installed.

    Example:
        >>> from tfbert.checkpoint import find_checkpoint
        >>> files = find_checkpoint()
        >>> tok = EdgeTokenizer.from_files(files.vocab, files.tokenizer_config)
        >>> tok.tokenize_numpy(["Hello world!"], 16)["input_ids"].tolist()
        [[101, 7592, 2088, 999, 102]]
    """

    def __init__(self, vocab: list[str], lower_case: bool = True, strip_accents: bool | None = None,
                 tokenize_chinese_chars: bool = True) -> None:
        try:
            from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers, processors
        except ImportError:
            raise IncompatibleEnvironmentError("the tokenizers package is missing", where="tokenizers",
                                               fix="pip install tokenizers") from None

        super().__init__(vocab, lower_case, strip_accents, tokenize_chinese_chars)
        index = self.token_ids
        # What transformers' BertConverter makes of vocab.txt and tokenizer_config.json.
        tokenizer = Tokenizer(models.WordPiece(vocab=index, unk_token="[UNK]", continuing_subword_prefix=SUFFIX,
                                               max_input_chars_per_word=MAX_CHARS_PER_WORD))
        tokenizer.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=self.tokenize_chinese_chars, strip_accents=self.strip_accents,
            lowercase=self.lower_case)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
            special_tokens=[("[CLS]", self.cls_id), ("[SEP]", self.sep_id)])
        # Matched in the raw text, case-sensitively: "Paris is the [MASK]" gets the mask id.
        tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIALS if t in index])
        tokenizer.enable_padding(pad_id=self.pad_id, pad_token="[PAD]")
        self._tokenizer = tokenizer
        self._truncation: int | None = None

    @classmethod
    def from_files(cls, vocab_path: str, tokenizer_config_path: str | None = None,
                   tokenizer_json_path: str | None = None, *, lower_case: bool | None = None) -> EdgeTokenizer:
        """From a checkpoint's ``vocab.txt`` and (optional) ``tokenizer_config.json``, as
        :meth:`tfbert.tokenizer.Vocabulary.from_files`.

        Args:
            vocab_path: the vocabulary, one token per line.
            tokenizer_config_path: Hugging Face's tokenizer config.
            tokenizer_json_path: the checkpoint's ``tokenizer.json``, only checked against the
                vocabulary and settings: a one-line warning names the first difference.
            lower_case: overrides ``do_lower_case``.

        Returns:
            The tokenizer.

        Raises:
            BadInputError: a file does not exist.
            ConfigMismatchError: the vocabulary lacks a special token or repeats a token, or the
                config is not a JSON object.

        Example:
            >>> tok = EdgeTokenizer.from_files("model/vocab.txt", "model/tokenizer_config.json",  # doctest: +SKIP
            ...                                "model/tokenizer.json")
        """
        tokenizer = super().from_files(vocab_path, tokenizer_config_path, lower_case=lower_case)
        if tokenizer_json_path is not None:
            difference = tokenizer_json_difference(tokenizer_json_path, tokenizer)
            if difference:
                log.warning("%s: disagrees with %s (%s); tfbert tokenizes with vocab.txt and tokenizer_config.json, "
                            "as its TensorFlow tokenizer and exports do — fix: replace tokenizer.json with the "
                            "checkpoint's own, or check which file the weights were trained with",
                            tokenizer_json_path, vocab_path, difference)
        return tokenizer

    def tokenize_numpy(self, texts: list[str], max_length: int, text_pairs: list[str] | None = None,
                       offsets: bool = False) -> dict[str, np.ndarray]:
        """Token ids for a batch of texts (or text pairs), as :meth:`tfbert.tokenizer.BertTokenizer.tokenize_numpy`.

        Args:
            texts: the texts.
            max_length: truncation length including the special tokens.
            text_pairs: optional second texts, truncated with ``texts`` like Hugging Face's
                ``longest_first``.
            offsets: also ``start`` / ``end`` (see :meth:`tokenize_with_offsets`).

        Returns:
            ``input_ids``, ``attention_mask``, ``token_type_ids``: int32 [len(texts), seq],
            ``seq`` the longest sequence of the batch, padded with ``[PAD]`` / 0.

        Raises:
            BadInputError: ``max_length`` leaves no room for the special tokens, or ``texts``
                and ``text_pairs`` differ in length.

        Example:
            >>> tok.tokenize_numpy(["Hello world!", ""], 16)["attention_mask"].tolist()  # doctest: +SKIP
            [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
        """
        check_max_length(max_length, pairs=text_pairs is not None)
        texts = list(texts)
        if text_pairs is not None:
            text_pairs = list(text_pairs)
            if len(text_pairs) != len(texts):
                raise BadInputError("texts and text_pairs differ in length", where="text_pairs",
                                    expected=len(texts), actual=len(text_pairs), fix="pass one pair text per text")
        if not texts:
            return {k: np.zeros((0, 0), np.int32) for k in KEYS + (("start", "end") if offsets else ())}
        if self._truncation != max_length:
            self._tokenizer.enable_truncation(max_length, strategy="longest_first")
            self._truncation = max_length
        encodings = self._tokenizer.encode_batch(texts if text_pairs is None else list(zip(texts, text_pairs,
                                                                                          strict=True)))
        out = {"input_ids": np.array([e.ids for e in encodings], np.int32),
               "attention_mask": np.array([e.attention_mask for e in encodings], np.int32),
               "token_type_ids": np.array([e.type_ids for e in encodings], np.int32)}
        if offsets:
            spans = np.array([e.offsets for e in encodings], np.int32).reshape(len(texts), -1, 2)
            special = np.array([e.special_tokens_mask for e in encodings], bool)
            out["start"] = np.where(special, 0, spans[..., 0])
            out["end"] = np.where(special, 0, spans[..., 1])
        return out

    def tokenize_with_offsets(self, texts: list[str], max_length: int) -> dict[str, np.ndarray]:
        """:meth:`tokenize_numpy` plus each token's span in its text, as
        :meth:`tfbert.tokenizer.BertTokenizer.tokenize_with_offsets` gives it.

        Returns:
            ``input_ids``, ``attention_mask``, ``token_type_ids`` and ``start`` / ``end``
            (int32 [len(texts), seq]: ``text[start:end]`` in code points, Hugging Face's
            ``offset_mapping``; 0 for special tokens and padding).

        Example:
            >>> tok.tokenize_with_offsets(["Héllo wörld"], 16)["end"].tolist()  # doctest: +SKIP
            [[0, 5, 11, 0]]
        """
        return self.tokenize_numpy(texts, max_length, offsets=True)


    def wordpieces(self, texts: list[str]) -> list[Pieces]:
        """Each text's WordPiece ids (no special tokens, no truncation) with character offsets.

        As :meth:`tfbert.tokenizer.BertTokenizer.wordpieces` with ``with_offsets``, in characters of the
        Python string instead of UTF-8 bytes (Hugging Face's ``word_to_chars`` of each token's word),
        plus each token's own offsets (Hugging Face's ``offset_mapping``).

        Returns:
            A :class:`Pieces` per text.

        Example:
            >>> tok.wordpieces(["Héllo world"])[0].word_begin.tolist()  # doctest: +SKIP
            [0, 6]
        """
        if self._truncation is not None:
            self._tokenizer.no_truncation()
            self._truncation = None
        out = []
        for text in texts:
            encoding = self._tokenizer.encode(text, add_special_tokens=False)
            # A special token written in the text ("[MASK]") has no word: its own offsets are its word.
            words = [encoding.offsets[i] if w is None else encoding.word_to_chars(w)
                     for i, w in enumerate(encoding.word_ids)]
            column = lambda pairs, k: np.array([p[k] for p in pairs], np.int64)  # noqa: E731
            out.append(Pieces(np.array(encoding.ids, np.int32), column(words, 0), column(words, 1),
                              column(encoding.offsets, 0), column(encoding.offsets, 1)))
        return out


class Pieces(NamedTuple):
    """One text's WordPiece ids and character offsets (end exclusive): of each token's word, and its own."""

    ids: np.ndarray
    word_begin: np.ndarray
    word_end: np.ndarray
    begin: np.ndarray
    end: np.ndarray


def tokenizer_json_difference(path: str, tokenizer: EdgeTokenizer) -> str | None:
    """The first way a ``tokenizer.json`` disagrees with the tokenizer built from ``vocab.txt``, or None.

    Compared: the WordPiece vocabulary (every token at its id), tokens it adds on top, and the
    normalizer's casing, accent and Chinese-character settings.

    Example:
        >>> tokenizer_json_difference("model/tokenizer.json", tok)  # doctest: +SKIP
        "id 1037: vocab.txt has 'a', tokenizer.json 'b'"
    """
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"not readable JSON ({type(e).__name__})"
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or model.get("type") != "WordPiece" or not isinstance(model.get("vocab"), dict):
        return "its model is not a WordPiece vocabulary"
    by_id = {i: token for token, i in model["vocab"].items()}
    for added in data.get("added_tokens") or []:
        by_id.setdefault(added.get("id"), added.get("content"))
    for i in sorted({i for i in by_id if isinstance(i, int)} | set(range(len(tokenizer.vocab)))):
        ours = tokenizer.vocab[i] if 0 <= i < len(tokenizer.vocab) else None
        if by_id.get(i) != ours:
            return f"id {i}: vocab.txt has {ours!r}, tokenizer.json {by_id.get(i)!r}"
    normalizer = data.get("normalizer") or {}
    if normalizer.get("type") != "BertNormalizer":
        return f"its normalizer is {normalizer.get('type')}, not BertNormalizer"
    lower_case = bool(normalizer.get("lowercase", True))
    strip = normalizer.get("strip_accents")
    theirs = {"lower-casing": lower_case, "accent stripping": lower_case if strip is None else bool(strip),
              "Chinese-character splitting": bool(normalizer.get("handle_chinese_chars", True))}
    ours = {"lower-casing": tokenizer.lower_case, "accent stripping": tokenizer.strip_accents,
            "Chinese-character splitting": tokenizer.tokenize_chinese_chars}
    for name, value in theirs.items():
        if value != ours[name]:
            return f"{name}: tokenizer_config.json gives {ours[name]}, tokenizer.json {value}"
    return None


def sibling_tokenizer_json(vocab_path: str) -> str | None:
    """The ``tokenizer.json`` next to ``vocab_path``, if there is one."""
    candidate = os.path.join(os.path.dirname(os.path.abspath(vocab_path)), "tokenizer.json")
    return candidate if os.path.isfile(candidate) else None

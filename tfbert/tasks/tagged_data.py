"""Tagged sentences for fine-tuning a token classifier: CoNLL columns or JSONL spans → word tags → token labels.

Two formats, both read to sentences whose words have character spans and a tag each:

* **CoNLL-style columns** (any other suffix than ``.jsonl``): one word per line, the word in the
  first column and its tag in the last (columns split on whitespace), a blank line between
  sentences; ``-DOCSTART-`` lines are skipped. The sentence's text is its words joined by spaces.
* **JSONL** (``.jsonl``): ``{"text": ..., "spans": [{"start": 0, "end": 5, "label": "PER"}]}``
  per line, offsets in characters (Python ``str`` indices, end exclusive). The text is split
  into words as BERT's pre-tokenizer splits it (whitespace and punctuation); a word overlapping
  a span gets its label, as ``B-`` for the span's first word and ``I-`` for the others
  (IOB2), every other word ``O``.

Token labels follow Hugging Face's token-classification fine-tuning: the first sub-token of a
word carries the word's tag, the other sub-tokens and the special tokens get
:data:`IGNORE` (left out of the loss and the scores).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os

import numpy as np

from tfbert.errors import BadInputError

log = logging.getLogger("tfbert")
IGNORE = -100  # label of a token left out of the loss (Hugging Face's)
_RECORD = 'write {"text": ..., "spans": [{"start": ..., "end": ..., "label": ...}]} per line'


@dataclasses.dataclass
class TaggedSentences:
    """The sentences of one file.

    Args:
        path: the file read.
        texts: each sentence's text.
        words: each sentence's words as ``(start, end)`` character spans in its text.
        tags: each word's tag.
        lines: the line each sentence starts on (for messages).
    """

    path: str
    texts: list[str] = dataclasses.field(default_factory=list)
    words: list[list[tuple[int, int]]] = dataclasses.field(default_factory=list)
    tags: list[list[str]] = dataclasses.field(default_factory=list)
    lines: list[int] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def add(self, text: str, words: list[tuple[int, int]], tags: list[str], line: int) -> None:
        self.texts.append(text)
        self.words.append(words)
        self.tags.append(tags)
        self.lines.append(line)


def read_tagged(path: str | os.PathLike) -> TaggedSentences:
    """Read tagged sentences from CoNLL-style columns or JSONL spans (see the module docstring).

    Raises:
        BadInputError: no such file, not UTF-8, a line without a tag column, a bad JSON record,
            a span outside its text or overlapping another, or no sentence at all — naming
            ``file:line``.

    Example:
        >>> data = read_tagged("train.conll")  # doctest: +SKIP
        >>> data.texts[0], data.tags[0]  # doctest: +SKIP
        ('Ada Lovelace wrote', ['B-PER', 'I-PER', 'O'])
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise BadInputError("no such file", where=path, fix="pass --train/--eval naming an existing file")
    data = TaggedSentences(path)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as e:
        raise BadInputError(f"not UTF-8 text ({e.reason} at byte {e.start})", where=path,
                            fix="save the file as UTF-8") from None
    if path.endswith(".jsonl"):
        _read_jsonl(path, lines, data)
    else:
        _read_conll(path, lines, data)
    if not data.texts:
        raise BadInputError("the file holds no tagged sentence", where=path,
                            expected="CoNLL columns (word ... tag, blank line between sentences) or .jsonl spans",
                            fix="check the file's format")
    return data


def _read_conll(path: str, lines: list[str], data: TaggedSentences) -> None:
    words: list[str] = []
    tags: list[str] = []
    first = 0

    def close() -> None:
        if words:
            starts = np.cumsum([0] + [len(w) + 1 for w in words[:-1]])
            data.add(" ".join(words), [(int(s), int(s) + len(w)) for s, w in zip(starts, words, strict=True)],
                     list(tags), first)
            words.clear()
            tags.clear()

    for number, line in enumerate(lines, 1):
        columns = line.split()
        if not columns:
            close()
            continue
        if columns[0] == "-DOCSTART-":
            continue
        if len(columns) < 2:
            raise BadInputError("a word without a tag", where=f"{path}:{number}", expected="word ... tag (columns)",
                                actual=line[:80], fix="give every word its tag in the last column")
        if not words:
            first = number
        words.append(columns[0])
        tags.append(columns[-1])
    close()


def _read_jsonl(path: str, lines: list[str], data: TaggedSentences) -> None:
    from tokenizers.pre_tokenizers import BertPreTokenizer

    splitter = BertPreTokenizer()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise BadInputError(f"not a JSON object ({e.msg})", where=where, fix=_RECORD) from None
        text = record.get("text") if isinstance(record, dict) else None
        spans = record.get("spans", []) if isinstance(record, dict) else None
        if not isinstance(text, str) or not isinstance(spans, list):
            raise BadInputError("a record needs a text string and a spans list", where=where,
                                actual=type(record).__name__ if not isinstance(record, dict) else sorted(record),
                                fix=_RECORD)
        checked = sorted(_check_span(span, i, text, where) for i, span in enumerate(spans))
        for (_, end, _, i), (start, _, _, j) in itertools.pairwise(checked):
            if start < end:
                raise BadInputError("spans overlap", where=f"{where}: spans[{i}] and spans[{j}]",
                                    fix="give every character at most one entity")
        words = [offsets for _, offsets in splitter.pre_tokenize_str(text)]
        if not words:
            continue
        tags = ["O"] * len(words)
        for start, end, label, _ in checked:
            inside = [k for k, (s, e) in enumerate(words) if s < end and e > start]
            for n, k in enumerate(inside):
                tags[k] = f"{'B' if n == 0 else 'I'}-{label}"
        data.add(text, words, tags, number)


def _check_span(span, index: int, text: str, where: str) -> tuple[int, int, str, int]:
    """``(start, end, label, index)`` of a valid span; one line naming it otherwise."""
    where = f"{where}: spans[{index}]"
    if not isinstance(span, dict) or not isinstance(span.get("label"), str) or not span["label"].strip():
        raise BadInputError("a span needs start, end and a label", where=where,
                            actual=json.dumps(span, ensure_ascii=False)[:80],
                            fix='write {"start": 0, "end": 5, "label": "PER"}')
    start, end = span.get("start"), span.get("end")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end)):
        raise BadInputError("span offsets must be integers", where=where, actual=f"start {start!r}, end {end!r}",
                            fix="give character offsets into the text")
    if not 0 <= start < end <= len(text):
        raise BadInputError("span outside its text" + (" (past its end)" if end > len(text) else ""), where=where,
                            expected=f"0 <= start < end <= {len(text)} (the text's length in characters)",
                            actual=f"start {start}, end {end}",
                            fix="give character offsets (Python string indices, end exclusive) into this text")
    label = span["label"].strip()
    if label.startswith(("B-", "I-")) or label == "O":
        raise BadInputError("a span's label is an entity type, not a tag", where=where, actual=label,
                            fix=f"write {entity_name(label)!r}: B-/I- tags are made from the spans")
    return start, end, label, index


def entity_name(tag: str) -> str:
    """``PER`` for ``B-PER`` / ``I-PER``."""
    return tag[2:] if tag.startswith(("B-", "I-")) else tag


def tag_names(tags: list[list[str]]) -> list[str]:
    """The distinct tags in id order: ``O`` first, then by entity type, ``B-`` before ``I-``.

    Example:
        >>> tag_names([["O", "I-PER", "B-LOC"], ["B-PER"]])
        ['O', 'B-LOC', 'B-PER', 'I-PER']
    """
    distinct = {tag for sentence in tags for tag in sentence}
    rest = sorted(distinct - {"O"}, key=lambda t: (entity_name(t), t))
    return (["O"] if "O" in distinct else []) + rest


def check_tags(data: TaggedSentences, names: list[str]) -> None:
    """Every tag of ``data`` must be one of ``names`` (the training data's).

    Raises:
        BadInputError: the first unknown tag, with its file, line and the known tags.
    """
    known = set(names)
    for s, tags in enumerate(data.tags):
        for w, tag in enumerate(tags):
            if tag not in known:
                line = data.lines[s] + (w if not data.path.endswith(".jsonl") else 0)
                raise BadInputError("a tag the training data does not have", where=f"{data.path}:{line}",
                                    expected=f"one of {', '.join(names)}", actual=tag,
                                    fix="add examples of that tag to the training file, or correct it")


@dataclasses.dataclass
class TokenLabels:
    """Sentences tokenized, with a label per token: the arrays training and evaluation read.

    Args:
        input_ids, attention_mask: int32 [sentences, seq].
        labels: int32 [sentences, seq]: the word's tag id on its first sub-token, else :data:`IGNORE`.
        truncated_words: words cut off by the length limit (no token, so not trained or scored).
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    labels: np.ndarray
    truncated_words: int


def token_labels(data: TaggedSentences, tokenizer, names: list[str], max_length: int) -> TokenLabels:
    """Tokenize ``data`` and put each word's tag id on its first sub-token (see the module docstring).

    Args:
        data: the sentences.
        tokenizer: an :class:`tfbert.edge_tokenizer.EdgeTokenizer` (Hugging Face's ids and offsets,
            the ids of tfbert's in-graph tokenizer).
        names: the tags in id order.
        max_length: truncation length.
    """
    index = {name: i for i, name in enumerate(names)}
    tokens = tokenizer.tokenize_with_offsets(data.texts, max_length)
    labels = np.full(tokens["input_ids"].shape, IGNORE, np.int32)
    truncated = 0
    for row, (words, tags) in enumerate(zip(data.words, data.tags, strict=True)):
        starts = np.array([s for s, _ in words])
        ends = np.array([e for _, e in words])
        begin, end = tokens["start"][row], tokens["end"][row]
        word = np.searchsorted(starts, begin, side="right") - 1
        inside = (end > begin) & (word >= 0) & (begin < ends[np.maximum(word, 0)])
        seen = set()
        for position in np.flatnonzero(inside):
            w = int(word[position])
            if w not in seen:
                seen.add(w)
                labels[row, position] = index[tags[w]]
        truncated += len(words) - len(seen)
    return TokenLabels(tokens["input_ids"], tokens["attention_mask"], labels, truncated)


def tagged_dataset(arrays: TokenLabels, *, batch_size: int, shuffle: bool = False, seed: int = 0):
    """A tf.data dataset of ``(inputs, labels, weights)`` batches, each trimmed to its longest sentence.

    ``labels`` are tag ids with :data:`IGNORE` replaced by 0 and ``weights`` 0 there (1 elsewhere),
    so a Keras loss and accuracy count the labelled tokens only. With ``shuffle`` the
    sentences are reshuffled every epoch and batched with others of similar length (buckets
    of 16, 32, 64... tokens), so a batch of short sentences is not padded to a long one; without
    it the batches keep the sentences' order.
    """
    from tfbert.tf import import_tensorflow

    tf = import_tensorflow()
    dataset = tf.data.Dataset.from_tensor_slices((arrays.input_ids, arrays.attention_mask, arrays.labels))
    if shuffle:
        dataset = dataset.shuffle(len(arrays.input_ids), seed=seed, reshuffle_each_iteration=True)

    if shuffle:
        width = arrays.input_ids.shape[1]
        bounds = [b for b in (16, 32, 64, 128, 256) if b < width]
        dataset = dataset.bucket_by_sequence_length(lambda ids, mask, labels: tf.reduce_sum(mask), bounds,
                                                    [batch_size] * (len(bounds) + 1))
    else:
        dataset = dataset.batch(batch_size)

    def trim(ids, mask, labels):
        width = tf.reduce_max(tf.reduce_sum(mask, 1))
        ids, mask, labels = ids[:, :width], mask[:, :width], labels[:, :width]
        inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": tf.zeros_like(ids)}
        return inputs, tf.maximum(labels, 0), tf.cast(labels != IGNORE, tf.float32)

    return dataset.map(trim, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)

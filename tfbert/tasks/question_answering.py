"""Extractive question answering: question + context windows, and the best answer span across them.

The same two steps run in numpy (predict on a .tflite, fine-tuning's evaluation) and as TensorFlow
ops (the SavedModel's ``serving_default(question, context)``), each written to match Hugging Face's
``pipeline("question-answering")`` with a fast tokenizer:

* **Windows.** ``[CLS] question [SEP] context [SEP]``; a context longer than the room left
  (``max_seq_length - 3 - question tokens``) is split into windows that overlap by
  ``doc_stride`` tokens, as the ``tokenizers`` library's ``truncation="only_second"`` with
  ``stride`` and ``return_overflowing_tokens`` does: windows start every ``room - doc_stride``
  tokens until one reaches the end. Hugging Face refuses a question that leaves no more than
  ``doc_stride`` tokens of room; numpy does too (:class:`~tfbert.errors.BadInputError`), the
  graph keeps the question's first ``max_seq_length - 4 - doc_stride`` tokens.
* **Span search.** Per window, start and end logits outside the context (and [CLS]) are set to
  -10000 and softmaxed; ``p(start) * p(end)`` scores every span of at most ``max_answer_length``
  tokens, the 12 best per window are kept (Hugging Face's ``top_k * 2 + 10``), mapped to whole
  words of the context, and candidates with the same text (case-insensitively) add up across
  spans and windows; the highest sum wins. The null score is the smallest ``p(start=[CLS]) *
  p(end=[CLS])`` over the windows; with a ``null_threshold`` the answer is empty when the null
  score exceeds the best span's by more than it (0 is Hugging Face's ``handle_impossible_answer``).

Offsets are characters of the context (Python string indices), end exclusive.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfbert.errors import BadInputError

DEFAULT_MAX_ANSWER_LENGTH = 15  # Hugging Face's pipeline default, in tokens
CANDIDATES_PER_WINDOW = 12  # Hugging Face's pipeline: top_k * 2 + 10 when answers are aligned to words
MASKED_LOGIT = -10000.0
OUTPUTS = ("answer", "start", "end", "score")


def default_doc_stride(max_seq_length: int) -> int:
    """Hugging Face's pipeline default overlap: ``min(max_seq_length // 2, 128)``."""
    return min(max_seq_length // 2, 128)


def check_window(max_seq_length: int, doc_stride: int) -> None:
    """Refuse a window that leaves no room for a question token and a context step.

    Raises:
        BadInputError: ``doc_stride`` negative or ``max_seq_length - 4 - doc_stride < 1``.
    """
    if doc_stride < 0 or max_seq_length - 4 - doc_stride < 1:
        raise BadInputError("the window leaves no room for the question", where="doc_stride",
                            expected=f"0 <= doc_stride <= max_seq_length - 5 = {max_seq_length - 5}",
                            actual=doc_stride, fix=f"e.g. --doc_stride={default_doc_stride(max_seq_length)}")


@dataclasses.dataclass
class Answer:
    """One answer: ``context[start:end] == text``; an empty text (start = end = 0) is "no answer"."""

    text: str
    start: int
    end: int
    score: float


@dataclasses.dataclass
class Windows:
    """Model inputs for question + context windows, and where each window's context lies.

    Attributes:
        input_ids, attention_mask, token_type_ids: int32 [windows, seq].
        example: int [windows], the question/context pair each window belongs to.
        context_offset: int [windows], position of the window's first context token.
        first_token: int [windows], index of that token in its context's tokens.
        context_length: int [windows], context tokens in the window.
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray
    example: np.ndarray
    context_offset: np.ndarray
    first_token: np.ndarray
    context_length: np.ndarray

    def inputs(self, rows: slice | np.ndarray = slice(None)) -> dict[str, np.ndarray]:
        """The model inputs of ``rows``, trimmed to their longest window."""
        width = max(1, int(self.attention_mask[rows].sum(axis=1).max(initial=1)))
        return {k: getattr(self, k)[rows, :width] for k in ("input_ids", "attention_mask", "token_type_ids")}


def window_starts(context_tokens: int, room: int, doc_stride: int) -> list[int]:
    """First context token of each window (``tokenizers``' overflow with ``stride``).

    Example:
        >>> window_starts(10, 4, 1)
        [0, 3, 6]
    """
    if context_tokens <= room:
        return [0]
    step = room - doc_stride
    return list(range(0, context_tokens - room + step, step))


def make_windows(questions: list[np.ndarray], contexts: list[np.ndarray], *, max_seq_length: int, doc_stride: int,
                 cls_id: int, sep_id: int, pad_id: int, source: str = "input") -> Windows:
    """``[CLS] question [SEP] context window [SEP]`` rows for every pair, padded to ``max_seq_length``.

    Args:
        questions, contexts: WordPiece ids of each question and context (no special tokens).
        max_seq_length, doc_stride: window length and overlap, in tokens.
        cls_id, sep_id, pad_id: the special tokens' ids.
        source: the file the pairs came from, for the error naming a question too long (whose fix
            names finetune's and predict's ``--max_length``).

    Raises:
        BadInputError: a question leaving no more than ``doc_stride`` tokens for its context.

    Example:
        >>> w = make_windows([np.array([7])], [np.arange(10, 20)], max_seq_length=8, doc_stride=1,
        ...                  cls_id=2, sep_id=3, pad_id=0)
        >>> w.input_ids[1].tolist(), w.first_token.tolist()
        [[2, 7, 3, 13, 14, 15, 16, 3], [0, 3, 6]]
    """
    check_window(max_seq_length, doc_stride)
    rows: list[np.ndarray] = []
    types, example, offset, first, length = [], [], [], [], []
    for i, (question, context) in enumerate(zip(questions, contexts, strict=True)):
        room = max_seq_length - 3 - len(question)
        if room <= doc_stride:
            raise BadInputError("the question is too long for the window", where=f"{source}: question {i + 1}",
                                expected=f"at most {max_seq_length - 4 - doc_stride} tokens",
                                actual=f"{len(question)} tokens",
                                fix=f"shorten the question, or raise --max_length (now {max_seq_length}) or lower "
                                    f"--doc_stride (now {doc_stride})")
        for start in window_starts(len(context), room, doc_stride):
            piece = context[start:start + room]
            rows.append(np.concatenate([[cls_id], question, [sep_id], piece, [sep_id]]))
            types.append(np.concatenate([np.zeros(len(question) + 2), np.ones(len(piece) + 1)]))
            example.append(i)
            offset.append(len(question) + 2)
            first.append(start)
            length.append(len(piece))
    ids = np.full((len(rows), max_seq_length), pad_id, np.int32)
    mask = np.zeros_like(ids)
    token_types = np.zeros_like(ids)
    for r, (row, row_types) in enumerate(zip(rows, types, strict=True)):
        ids[r, :len(row)], mask[r, :len(row)], token_types[r, :len(row)] = row, 1, row_types
    as_array = lambda values: np.array(values, np.int64)  # noqa: E731
    return Windows(ids, mask, token_types, as_array(example), as_array(offset), as_array(first), as_array(length))


def _span_probabilities(start_logits: np.ndarray, end_logits: np.ndarray, windows: Windows,
                        max_answer_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(span scores [windows, seq, seq], null scores [windows], context mask [windows, seq])."""
    seq = start_logits.shape[1]
    position = np.arange(seq)[None]
    context = (position >= windows.context_offset[:, None]) & (
        position < (windows.context_offset + windows.context_length)[:, None])
    allowed = context | (position == 0)

    def softmax(logits):
        x = np.where(allowed, logits.astype(np.float32), np.float32(MASKED_LOGIT))
        x = np.exp(x - x.max(axis=-1, keepdims=True))
        return x / x.sum(axis=-1, keepdims=True)

    p_start, p_end = softmax(start_logits), softmax(end_logits)
    null = p_start[:, 0] * p_end[:, 0]
    p_start[:, 0] = p_end[:, 0] = 0.0
    band = np.triu(np.tril(np.ones((seq, seq), bool), max_answer_length - 1))
    return p_start[:, :, None] * p_end[:, None, :] * band, null, context


def best_answers(start_logits: np.ndarray, end_logits: np.ndarray, windows: Windows, contexts: list[str],
                 word_spans: list[tuple[np.ndarray, np.ndarray]], *,
                 max_answer_length: int = DEFAULT_MAX_ANSWER_LENGTH,
                 null_threshold: float | None = None) -> list[Answer]:
    """The answer to each question: the best-scoring span across its windows, or none.

    Args:
        start_logits, end_logits: float [windows, seq], the model's outputs on ``windows``
            (any padding beyond each window is ignored).
        windows: from :func:`make_windows`.
        contexts: the contexts.
        word_spans: per context, ``(begin, end)`` character offsets of each context token's word.
        max_answer_length: the longest answer, in tokens.
        null_threshold: None never answers "no answer"; else the answer is empty when the null
            score exceeds the best span's score by more than this (0: Hugging Face's
            ``handle_impossible_answer=True``).

    Returns:
        One :class:`Answer` per context.

    Example:
        >>> best_answers(start, end, windows, ["the cat sat"], spans)[0]  # doctest: +SKIP
        Answer(text='cat', start=4, end=7, score=0.41)
    """
    scores, null, context = _span_probabilities(start_logits, end_logits, windows, max_answer_length)
    seq = scores.shape[1]
    found: list[dict[str, list]] = [{} for _ in contexts]
    null_score = np.full(len(contexts), np.inf)
    for w in range(len(scores)):
        e = int(windows.example[w])
        null_score[e] = min(null_score[e], float(null[w]))
        flat = scores[w].reshape(-1)
        for index in np.argsort(-flat, kind="stable")[:CANDIDATES_PER_WINDOW]:
            s, t = divmod(int(index), seq)
            if not (context[w, s] and context[w, t]):
                continue
            base = int(windows.first_token[w] - windows.context_offset[w])
            begin, end = int(word_spans[e][0][base + s]), int(word_spans[e][1][base + t])
            text = contexts[e][begin:end]
            entry = found[e].setdefault(text.lower(), [0.0, text, begin, end])
            entry[0] += float(flat[index])
    answers = []
    for e in range(len(contexts)):
        best = max(found[e].values(), key=lambda entry: entry[0], default=None)
        nothing = null_score[e] if np.isfinite(null_score[e]) else 0.0
        if best is None or (null_threshold is not None and nothing - best[0] > null_threshold):
            answers.append(Answer("", 0, 0, float(nothing)))
        else:
            answers.append(Answer(best[1], best[2], best[3], best[0]))
    return answers


def answer_labels(windows: Windows, token_spans: list[tuple[np.ndarray, np.ndarray]],
                  answers: list[tuple[int, int] | None]) -> tuple[np.ndarray, np.ndarray]:
    """Start and end positions to train on, per window, as Hugging Face's ``run_qa.py`` labels them.

    Args:
        windows: from :func:`make_windows`.
        token_spans: per example, ``(begin, end)`` character offsets of each context token.
        answers: per example, the answer's ``(start, end)`` characters in the context, or None
            (unanswerable).

    Returns:
        ``(start, end)`` int32 [windows]: token positions of the answer, or 0 ([CLS]) when the
        example has no answer or the window does not hold all of it.

    Example:
        >>> answer_labels(windows, [(begin, end)], [(4, 7)])  # doctest: +SKIP
        (array([3]), array([3]))
    """
    starts = np.zeros(len(windows.example), np.int32)
    ends = np.zeros_like(starts)
    for w, e in enumerate(windows.example):
        if answers[e] is None or windows.context_length[w] == 0:
            continue
        start_char, end_char = answers[e]
        begin, end = token_spans[e]
        first, last = windows.first_token[w], windows.first_token[w] + windows.context_length[w] - 1
        if not (begin[first] <= start_char and end[last] >= end_char):
            continue
        start = first + np.searchsorted(begin[first:last + 1], start_char, side="right") - 1
        stop = last
        while stop > first and end[stop - 1] >= end_char:
            stop -= 1
        offset = windows.context_offset[w] - windows.first_token[w]
        starts[w], ends[w] = start + offset, stop + offset
    return starts, ends


def normalize_answer(text: str) -> str:
    """The official SQuAD normalisation: lower case, no punctuation, no articles, single spaces.

    Example:
        >>> normalize_answer("The  Eiffel-Tower!")
        'eiffeltower'
    """
    import re
    import string

    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def squad_scores(prediction: str, golds: list[str]) -> tuple[float, float]:
    """``(exact match, F1)`` of one prediction against its gold answers, as the official SQuAD 2.0 script.

    No gold answer (or only empty ones) means unanswerable: both are 1 for an empty prediction, else 0.
    F1 is over normalised tokens; the best gold answer counts.

    Example:
        >>> squad_scores("the cat", ["a cat sat"])
        (0.0, 0.6666666666666666)
    """
    import collections

    golds = [g for g in golds if normalize_answer(g)] or [""]
    exact, f1 = 0.0, 0.0
    predicted = normalize_answer(prediction).split()
    for gold in golds:
        truth = normalize_answer(gold).split()
        exact = max(exact, float(predicted == truth))
        if not predicted or not truth:
            f1 = max(f1, float(predicted == truth))
            continue
        common = sum((collections.Counter(predicted) & collections.Counter(truth)).values())
        if common:
            precision, recall = common / len(predicted), common / len(truth)
            f1 = max(f1, 2 * precision * recall / (precision + recall))
    return exact, f1


def graph_windows(tokenizer, question, context, *, max_seq_length: int, doc_stride: int) -> dict:
    """:func:`make_windows` as TensorFlow ops, from raw strings (usable in a SavedModel signature).

    Questions longer than ``max_seq_length - 4 - doc_stride`` tokens keep that many (numpy refuses them).

    Returns:
        ``input_ids``, ``attention_mask``, ``token_type_ids`` (int32 [windows, seq], ``seq`` the
        longest window), ``example``, ``first_token``, ``context_offset``, ``context_length``
        (int32 [windows]), and the context tokens' ``splits``, ``word_begin``, ``word_end``
        (UTF-8 bytes).
    """
    from tfbert.tf import import_tensorflow

    tf = import_tensorflow()
    check_window(max_seq_length, doc_stride)
    q_ids, q_splits = tokenizer.wordpieces(question)
    c_ids, c_splits, word_begin, word_end = tokenizer.wordpieces(context, with_offsets=True)
    q_len = tf.minimum(q_splits[1:] - q_splits[:-1], max_seq_length - 4 - doc_stride)
    c_len = c_splits[1:] - c_splits[:-1]
    room = max_seq_length - 3 - q_len
    step = room - doc_stride
    windows = tf.where(c_len <= room, 1, 1 + (c_len - room + step - 1) // step)
    example = tf.repeat(tf.range(tf.size(windows)), windows)
    index = tf.range(tf.size(example)) - tf.gather(tf.cumsum(windows, exclusive=True), example)
    first = index * tf.gather(step, example)
    length = tf.minimum(tf.gather(room, example), tf.gather(c_len, example) - first)
    question_length = tf.gather(q_len, example)
    offset = question_length + 2
    total = offset + length + 1
    position = tf.range(tf.reduce_max(tf.concat([total, [0]], 0)))[None, :]
    in_question = (position >= 1) & (position <= question_length[:, None])
    in_context = (position >= offset[:, None]) & (position < (offset + length)[:, None])

    def pieces(ids, splits, inside, shift):
        padded = tf.concat([ids, [tokenizer.pad_id]], 0)
        return tf.gather(padded, tf.where(inside, tf.gather(splits[:-1], example)[:, None] + shift, tf.size(ids)))

    input_ids = tf.where(position == 0, tokenizer.cls_id, tf.where(
        in_question, pieces(q_ids, q_splits, in_question, position - 1),
        tf.where(in_context, pieces(c_ids, c_splits, in_context, first[:, None] + position - offset[:, None]),
                 tf.where(position < total[:, None], tokenizer.sep_id, tokenizer.pad_id))))
    inside = position < total[:, None]
    return {"input_ids": input_ids, "attention_mask": tf.cast(inside, tf.int32),
            "token_type_ids": tf.cast(inside & (position >= offset[:, None]), tf.int32), "example": example,
            "first_token": first, "context_offset": offset, "context_length": length, "splits": c_splits,
            "word_begin": word_begin, "word_end": word_end}


def graph_answers(start_logits, end_logits, windows: dict, context, *,
                  max_answer_length: int = DEFAULT_MAX_ANSWER_LENGTH, null_threshold: float | None = None) -> dict:
    """:func:`best_answers` as TensorFlow ops, on :func:`graph_windows`' windows of ``context`` (string [batch]).

    Returns:
        ``answer`` (string [batch]), ``start`` and ``end`` (int32 [batch], characters of the
        context, end exclusive; 0 and 0 for no answer) and ``score`` (float32 [batch]).
    """
    from tfbert.tf import import_tensorflow

    tf = import_tensorflow()
    batch = tf.size(context)
    example, offset, length = windows["example"], windows["context_offset"], windows["context_length"]
    width = tf.shape(start_logits)[1]
    position = tf.range(width)[None, :]
    in_context = (position >= offset[:, None]) & (position < (offset + length)[:, None])
    allowed = in_context | (position == 0)

    def softmax(logits):
        return tf.nn.softmax(tf.where(allowed, tf.cast(logits, tf.float32), MASKED_LOGIT), axis=-1)

    p_start, p_end = softmax(start_logits), softmax(end_logits)
    null = p_start[:, 0] * p_end[:, 0]
    p_start = tf.where(position == 0, 0.0, p_start)
    spans = tf.linalg.band_part(p_start[:, :, None] * p_end[:, None, :], 0, max_answer_length - 1)
    scores, flat = tf.math.top_k(tf.reshape(spans, [tf.size(example), -1]),
                                 k=tf.minimum(CANDIDATES_PER_WINDOW, width * width))
    first_tok, last_tok = flat // width, flat % width
    valid = tf.gather(in_context, first_tok, batch_dims=1) & tf.gather(in_context, last_tok, batch_dims=1)
    base = (tf.gather(windows["splits"][:-1], example) + windows["first_token"] - offset)[:, None]
    candidate_example = tf.boolean_mask(tf.broadcast_to(example[:, None], tf.shape(flat)), valid)
    scores = tf.boolean_mask(scores, valid)
    begin = tf.gather(windows["word_begin"], tf.boolean_mask(base + first_tok, valid))
    end = tf.gather(windows["word_end"], tf.boolean_mask(base + last_tok, valid))
    contexts = tf.gather(context, candidate_example)
    text = tf.strings.substr(contexts, begin, end - begin)
    # Same text (case-insensitively) in the same example: one candidate, scores added (Hugging Face's get_answer).
    groups, group = tf.unique(tf.strings.join([tf.strings.as_string(candidate_example),
                                               tf.strings.lower(text, encoding="utf-8")], ":"))
    n_groups, candidates = tf.size(groups), tf.size(scores)
    group_score = tf.math.unsorted_segment_sum(scores, group, n_groups)
    group_first = tf.math.unsorted_segment_min(tf.range(candidates), group, n_groups)
    group_example = tf.gather(candidate_example, group_first)
    best = tf.math.unsorted_segment_max(group_score, group_example, batch)
    is_best = group_score >= tf.gather(best, group_example)
    # An example without candidates (an empty context) gets the segment's identity: clipped to "none".
    choice = tf.minimum(tf.math.unsorted_segment_min(tf.where(is_best, group_first, candidates), group_example,
                                                     batch), candidates)
    found = choice < candidates
    null_score = tf.math.unsorted_segment_min(null, example, batch)
    best_score = tf.where(found, best, 0.0)
    nothing = ~found
    if null_threshold is not None:
        nothing |= null_score - best_score > null_threshold
    pick = lambda values, fill: tf.where(nothing, fill, tf.gather(tf.concat([values, [fill]], 0), choice))  # noqa: E731
    byte_begin, byte_end = pick(begin, 0), pick(end, 0)
    characters = lambda stop: tf.strings.length(tf.strings.substr(context, tf.zeros_like(stop), stop),  # noqa: E731
                                                unit="UTF8_CHAR")
    return {"answer": pick(text, ""), "start": characters(byte_begin), "end": characters(byte_end),
            "score": tf.where(nothing, null_score, best_score)}

"""Token classification: per-token label scores → word-level entities, as Hugging Face's pipeline makes them.

The rules are those of ``transformers``' ``TokenClassificationPipeline`` (4.54) with
``aggregation_strategy`` ``simple``, ``first`` or ``max``, implemented twice on the same
:class:`TagTables`: :func:`aggregate` in numpy (predict's TFLite path) and
:func:`entity_graph` in TensorFlow ops (the SavedModel's ``serving_default``), tested equal to
each other and to the pipeline.

1. The tokens the tokenizer added ([CLS], [SEP], padding: those covering no text) are dropped;
   every other token's scores are the softmax of its logits (a ``[MASK]`` written in the text
   is a token like any other, as in Hugging Face).
2. ``simple``: every token is a unit with its argmax label. ``first`` / ``max``: tokens are
   fused into words first. A token continues the previous word when its length differs from
   the text it covers (``##ing`` is 5 characters for 3: Hugging Face's test for a WordPiece
   sub-token), unless it is [UNK]. The word takes the label of its first token (``first``) or
   of the token with the highest score (``max``), with that token's score.
3. Adjacent units are grouped while the entity type stays the same and the unit's tag does not
   begin a new entity (``B-``); a label without ``B-`` / ``I-`` counts as ``I-``. A group's
   label is the entity type of its first unit (``B-PER`` → ``PER``), its score the mean of
   the units' scores, its span from the first unit's start to the last one's end. Groups
   labelled ``O`` are dropped.

Which strategy: :data:`DEFAULT_AGGREGATION` is ``first``. Fine-tuning (Hugging Face's and
tfbert's) puts a word's label on its first sub-token only and leaves the others out of the loss,
so the first sub-token's prediction is the one the model was trained to make; ``max`` lets an
untrained sub-token overrule it, and ``simple`` can label part of a word (``Wash`` of
``Washington``) as an entity of its own.

Example:
    >>> tables = TagTables(["O", "B-PER", "I-PER"], vocab, unk_id=100)  # doctest: +SKIP
    >>> aggregate("Ada Lovelace wrote", ids, probabilities, start, end, tables, "first")  # doctest: +SKIP
    [Entity(word='Ada Lovelace', start=0, end=12, label='PER', score=0.98)]
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfbert.errors import BadInputError

STRATEGIES = ("simple", "first", "max")
DEFAULT_AGGREGATION = "first"
OUTSIDE = "O"
# The SavedModel's entity outputs (dense, padded to the batch's most entities per text).
ENTITY_OUTPUTS = ("entity_word", "entity_label", "entity_start", "entity_end", "entity_score", "num_entities")


def split_tag(label: str) -> tuple[str, str]:
    """``(B or I, entity type)`` of a tag, as Hugging Face's pipeline reads it (no prefix counts as ``I``).

    Example:
        >>> split_tag("B-PER"), split_tag("I-LOC"), split_tag("MISC")
        (('B', 'PER'), ('I', 'LOC'), ('I', 'MISC'))
    """
    if label.startswith(("B-", "I-")):
        return label[0], label[2:]
    return "I", label


def entity_type(label: str) -> str:
    """The type an entity starting with ``label`` is reported as (``B-PER`` → ``PER``, ``O`` → ``O``)."""
    return label.split("-", 1)[-1]


def check_strategy(strategy: str) -> str:
    """``strategy`` if it is one of :data:`STRATEGIES`.

    Raises:
        BadInputError: any other value.
    """
    if strategy not in STRATEGIES:
        raise BadInputError("unknown aggregation strategy", where="--aggregation", expected=" | ".join(STRATEGIES),
                            actual=strategy, fix=f"pass --aggregation={DEFAULT_AGGREGATION} (the default)")
    return strategy


@dataclasses.dataclass(frozen=True)
class Entity:
    """One entity: ``text[start:end]`` (code points) is ``word``; ``score`` is its mean probability."""

    word: str
    start: int
    end: int
    label: str
    score: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class TagTables:
    """What aggregation needs to know about the labels and the vocabulary, as arrays.

    Args:
        labels: the tag names in id order (``id2label``).
        vocab: the vocabulary, one token per id.
        unk_id: the [UNK] id.

    Attributes:
        begins: per label, whether it begins an entity (``B-``).
        types: per label, the id of its entity type (``split_tag``), for grouping.
        names: per label, what an entity starting with it is reported as (:func:`entity_type`).
        outside: per label, whether an entity starting with it is dropped (reported as ``O``).
        token_chars: per token, its length in characters (``##`` included).
    """

    def __init__(self, labels: list[str], vocab: list[str], unk_id: int) -> None:
        self.labels, self.unk_id = list(labels), int(unk_id)
        kinds = [split_tag(label) for label in self.labels]
        type_ids = {kind: i for i, kind in enumerate(dict.fromkeys(t for _, t in kinds))}
        self.begins = np.array([b == "B" for b, _ in kinds])
        self.types = np.array([type_ids[t] for _, t in kinds], np.int32)
        self.names = [entity_type(label) for label in self.labels]
        self.outside = np.array([name == OUTSIDE for name in self.names])
        self.token_chars = np.array([len(token) for token in vocab], np.int32)

    @classmethod
    def for_tokenizer(cls, labels: list[str], tokenizer) -> TagTables:
        """The tables for a tfbert tokenizer's vocabulary (:class:`tfbert.tokenizer.Vocabulary`)."""
        return cls(labels, tokenizer.vocab, tokenizer.unk_id)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, computed as Hugging Face's pipeline does (float32 in, max subtracted)."""
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def _units(input_ids, probabilities, start, end, tables: TagTables, strategy: str):
    """``(label id, score, start, end)`` per unit: a token (``simple``) or a word."""
    keep = np.flatnonzero(end > start)  # added tokens and padding cover no text
    ids, probs, starts, ends = input_ids[keep], probabilities[keep], start[keep], end[keep]
    labels = probs.argmax(-1)
    scores = probs[np.arange(len(keep)), labels]
    if strategy == "simple":
        return labels, scores, starts, ends
    subword = (tables.token_chars[ids] != ends - starts) & (ids != tables.unk_id)
    new_word = ~subword
    new_word[:1] = True
    word = np.cumsum(new_word) - 1
    firsts = np.flatnonzero(new_word)
    lasts = np.append(firsts[1:], len(ids)) - 1
    if strategy == "first":
        chosen = firsts
    else:  # max: the word's token with the highest score, the first of equals (Python's max)
        best = np.full(len(firsts), -1.0)
        np.maximum.at(best, word, scores)
        chosen = np.array([firsts[w] + int(np.argmax(scores[firsts[w]:lasts[w] + 1] == best[w]))
                           for w in range(len(firsts))], dtype=np.int64)
    return labels[chosen], scores[chosen], starts[firsts], ends[lasts]


def aggregate(text: str, input_ids: np.ndarray, probabilities: np.ndarray, start: np.ndarray, end: np.ndarray,
              tables: TagTables, strategy: str = DEFAULT_AGGREGATION) -> list[Entity]:
    """The entities in one text, from its tokens' label probabilities (see the module docstring).

    Args:
        text: the text.
        input_ids: int [seq], its tokens (padding allowed).
        probabilities: float [seq, labels], softmax of the logits.
        start, end: int [seq], each token's span in ``text`` in code points, empty for the
            tokens the tokenizer added and padding
            (:meth:`tfbert.edge_tokenizer.EdgeTokenizer.tokenize_with_offsets`).
        tables: the labels and vocabulary.
        strategy: ``simple``, ``first`` or ``max``.

    Returns:
        The entities in text order.
    """
    check_strategy(strategy)
    labels, scores, starts, ends = _units(np.asarray(input_ids), np.asarray(probabilities), np.asarray(start),
                                          np.asarray(end), tables, strategy)
    entities: list[Entity] = []
    group: list[int] = []

    def close() -> None:
        if group and not tables.outside[labels[group[0]]]:
            first, last = group[0], group[-1]
            entities.append(Entity(text[starts[first]:ends[last]], int(starts[first]), int(ends[last]),
                                   tables.names[labels[first]], float(np.mean(scores[group]))))

    for i, label in enumerate(labels):
        if group and (tables.begins[label] or tables.types[label] != tables.types[labels[group[-1]]]):
            close()
            group = []
        group.append(i)
    close()
    return entities


def aggregate_batch(texts: list[str], outputs: dict[str, np.ndarray], tables: TagTables,
                    strategy: str = DEFAULT_AGGREGATION) -> list[list[Entity]]:
    """:func:`aggregate` for every row of a batch.

    Args:
        texts: the batch's texts.
        outputs: ``input_ids``, ``start``, ``end`` [batch, seq] and ``logits`` or
            ``probabilities`` [batch, seq, labels].
        tables, strategy: as :func:`aggregate`.
    """
    probabilities = outputs["probabilities"] if "probabilities" in outputs else softmax(outputs["logits"])
    return [aggregate(text, outputs["input_ids"][i], probabilities[i], outputs["start"][i], outputs["end"][i],
                      tables, strategy) for i, text in enumerate(texts)]


def entity_graph(text, tokens: dict, probabilities, tables: TagTables, strategy: str = DEFAULT_AGGREGATION) -> dict:
    """:func:`aggregate` for a batch as TensorFlow ops: what the SavedModel's ``serving_default`` returns.

    Args:
        text: string [batch], the texts.
        tokens: ``input_ids``, ``start``, ``end`` int32 [batch, seq]
            (:meth:`tfbert.tokenizer.BertTokenizer.tokenize_with_offsets`).
        probabilities: float32 [batch, seq, labels].
        tables, strategy: as :func:`aggregate`.

    Returns:
        ``entity_word`` and ``entity_label`` (string), ``entity_start`` / ``entity_end``
        (int32, code points) and ``entity_score`` (float32), all [batch, n] with ``n`` the most
        entities of any text in the batch, padded with "" / -1 / 0; ``num_entities`` int32 [batch].
    """
    from tfbert.tf import import_tensorflow

    tf = import_tensorflow()
    check_strategy(strategy)
    ids = tokens["input_ids"]
    batch = tf.shape(ids)[0]
    valid = tokens["end"] > tokens["start"]  # added tokens and padding cover no text
    where = tf.cast(tf.where(valid), tf.int32)
    row = where[:, 0]
    flat_ids = tf.boolean_mask(ids, valid)
    probs = tf.boolean_mask(probabilities, valid)
    starts, ends = tf.boolean_mask(tokens["start"], valid), tf.boolean_mask(tokens["end"], valid)
    labels = tf.argmax(probs, -1, output_type=tf.int32)
    scores = tf.reduce_max(probs, -1)
    count = tf.size(row)

    def after(x, fill):  # x shifted right by one: each element's predecessor
        return tf.concat([tf.fill([1], fill), x[:-1]], 0)

    first_in_row = tf.not_equal(row, after(row, -1))
    if strategy == "simple":
        u_labels, u_scores, u_starts, u_ends, u_rows = labels, scores, starts, ends, row
    else:
        subword = tf.not_equal(tf.gather(tf.constant(tables.token_chars), flat_ids), ends - starts)
        subword &= tf.not_equal(flat_ids, tables.unk_id)
        new_word = ~subword | first_in_row
        word = tf.cumsum(tf.cast(new_word, tf.int32)) - 1
        words = tf.reduce_sum(tf.cast(new_word, tf.int32))
        position = tf.range(count)
        last = tf.math.unsorted_segment_max(position, word, words)
        if strategy == "first":
            chosen = tf.boolean_mask(position, new_word)
        else:
            best = tf.math.unsorted_segment_max(scores, word, words)
            is_best = tf.equal(scores, tf.gather(best, word))
            chosen = tf.math.unsorted_segment_min(tf.where(is_best, position, count), word, words)
        u_labels, u_scores = tf.gather(labels, chosen), tf.gather(scores, chosen)
        u_starts, u_ends = tf.boolean_mask(starts, new_word), tf.gather(ends, last)
        u_rows = tf.boolean_mask(row, new_word)
    u_types = tf.gather(tf.constant(tables.types), u_labels)
    new_group = tf.not_equal(u_rows, after(u_rows, -1)) | tf.gather(tf.constant(tables.begins), u_labels)
    new_group |= tf.not_equal(u_types, after(u_types, -1))
    group = tf.cumsum(tf.cast(new_group, tf.int32)) - 1
    groups = tf.reduce_sum(tf.cast(new_group, tf.int32))
    g_labels = tf.boolean_mask(u_labels, new_group)
    g_scores = tf.math.unsorted_segment_mean(u_scores, group, groups)
    g_starts = tf.boolean_mask(u_starts, new_group)
    g_ends = tf.gather(u_ends, tf.math.unsorted_segment_max(tf.range(tf.size(u_rows)), group, groups))
    g_rows = tf.boolean_mask(u_rows, new_group)
    kept = ~tf.gather(tf.constant(tables.outside), g_labels)
    k_labels, k_scores = tf.boolean_mask(g_labels, kept), tf.boolean_mask(g_scores, kept)
    k_starts, k_ends, k_rows = (tf.boolean_mask(x, kept) for x in (g_starts, g_ends, g_rows))
    per_row = tf.math.unsorted_segment_sum(tf.ones_like(k_rows), k_rows, batch)
    width = tf.reduce_max(tf.concat([per_row, [0]], 0))
    column = tf.range(tf.size(k_rows)) - tf.gather(tf.cumsum(per_row, exclusive=True), k_rows)
    slots = tf.stack([k_rows, column], 1)
    shape = tf.stack([batch, width])

    def dense(values, fill):
        return tf.tensor_scatter_nd_update(tf.fill(shape, tf.cast(fill, values.dtype)), slots, values)

    # Strings are placed through an index: entry i of a flat list, the last entry ("") for padding.
    index = dense(tf.range(tf.size(k_rows)), -1)
    index = tf.where(index < 0, tf.size(k_rows), index)
    words = tf.strings.substr(tf.gather(text, k_rows), k_starts, k_ends - k_starts, unit="UTF8_CHAR")
    names = tf.gather(tf.constant(tables.names), k_labels)
    return {"entity_word": tf.gather(tf.concat([words, [""]], 0), index),
            "entity_label": tf.gather(tf.concat([names, [""]], 0), index),
            "entity_start": dense(k_starts, -1), "entity_end": dense(k_ends, -1),
            "entity_score": dense(k_scores, 0.0), "num_entities": per_row}


def entities_from_outputs(outputs: dict[str, np.ndarray], row: int) -> list[Entity]:
    """The entities of row ``row`` of :func:`entity_graph`'s outputs (as numpy), padding dropped."""
    n = int(outputs["num_entities"][row])

    def text(value) -> str:
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)

    return [Entity(text(outputs["entity_word"][row, i]), int(outputs["entity_start"][row, i]),
                   int(outputs["entity_end"][row, i]), text(outputs["entity_label"][row, i]),
                   float(outputs["entity_score"][row, i])) for i in range(n)]

"""Entity-level precision, recall and F1 of predicted tags, with ``seqeval``'s rules, plus token accuracy.

An entity is a chunk of words as ``seqeval`` (default mode, the CoNLL-2000 ``conlleval``
rules) reads IOB/IOBES tags: a chunk starts at ``B-``/``S-``, at an ``I-``/``E-`` after ``O`` or
after another type, and ends where the next one starts or at ``O``. A predicted entity counts
when its type, first and last word all equal a true one's; precision, recall and F1 are over
all entities of all sentences (micro average), as ``seqeval.metrics.f1_score``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfbert.report import Report

# F1 at or below this is a tagger that found (almost) no entity: it learned nothing.
NO_LEARNING_F1 = 0.02


def _ends(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    return (prev_tag in ("E", "S") or (prev_tag in ("B", "I") and tag in ("B", "S", "O"))
            or (prev_tag not in ("O", ".") and prev_type != type_))


def _starts(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    return (tag in ("B", "S") or (prev_tag in ("E", "S", "O") and tag in ("E", "I"))
            or (tag not in ("O", ".") and prev_type != type_))


def chunks(tags: list[str]) -> list[tuple[str, int, int]]:
    """``(type, first word, last word)`` of every entity in one sentence's tags (``seqeval.get_entities``).

    Example:
        >>> chunks(["B-PER", "I-PER", "O", "I-LOC", "B-LOC"])
        [('PER', 0, 1), ('LOC', 3, 3), ('LOC', 4, 4)]
    """
    out = []
    prev_tag, prev_type, begin = "O", "", 0
    for i, label in enumerate([*tags, "O"]):
        tag, type_ = label[0], label[1:].split("-", maxsplit=1)[-1] or "_"
        if _ends(prev_tag, tag, prev_type, type_):
            out.append((prev_type, begin, i - 1))
        if _starts(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return out


def _ratio(a: int, b: int) -> float:
    return a / b if b else 0.0


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


@dataclasses.dataclass
class TaggingEvaluation:
    """Scores of predicted word tags against true ones.

    Args:
        true, predicted: per sentence, its words' tags.
    """

    true: list[list[str]]
    predicted: list[list[str]]

    def _sets(self) -> tuple[set, set]:
        def entities(sentences):
            return {(i, *chunk) for i, tags in enumerate(sentences) for chunk in chunks(tags)}

        return entities(self.true), entities(self.predicted)

    @property
    def words(self) -> int:
        return sum(len(tags) for tags in self.true)

    @property
    def token_accuracy(self) -> float:
        """Share of words whose predicted tag is the true one."""
        correct = sum(t == p for true, pred in zip(self.true, self.predicted, strict=True)
                      for t, p in zip(true, pred, strict=True))
        return _ratio(correct, self.words)

    @property
    def precision(self) -> float:
        true, predicted = self._sets()
        return _ratio(len(true & predicted), len(predicted))

    @property
    def recall(self) -> float:
        true, predicted = self._sets()
        return _ratio(len(true & predicted), len(true))

    @property
    def f1(self) -> float:
        return _f1(self.precision, self.recall)

    @property
    def outside_baseline(self) -> float:
        """Token accuracy of tagging every word ``O`` (whose entity F1 is 0)."""
        return _ratio(sum(t == "O" for tags in self.true for t in tags), self.words)

    @property
    def learned(self) -> bool:
        """Entity F1 above :data:`NO_LEARNING_F1` (tagging everything ``O`` scores 0).

        Example:
            >>> TaggingEvaluation([["B-PER", "O"]], [["O", "O"]]).learned
            False
        """
        return self.f1 > NO_LEARNING_F1

    def per_type(self) -> list[dict]:
        """Precision, recall, F1 and support (true entities) per entity type."""
        true, predicted = self._sets()
        rows = []
        for name in sorted({e[1] for e in true | predicted}):
            t = {e for e in true if e[1] == name}
            p = {e for e in predicted if e[1] == name}
            precision, recall = _ratio(len(t & p), len(p)), _ratio(len(t & p), len(t))
            rows.append({"type": name, "precision": precision, "recall": recall, "f1": _f1(precision, recall),
                         "support": len(t)})
        return rows

    def report(self, title: str = "tfbert finetune: eval (entities)") -> Report:
        """Per-type rows with entity precision / recall / F1 and token accuracy as summary."""
        true, predicted = self._sets()
        return Report(title, ["type", "precision", "recall", "f1", "support"], self.per_type(),
                      {"sentences": len(self.true), "words": self.words, "true_entities": len(true),
                       "predicted_entities": len(predicted), "precision": self.precision, "recall": self.recall,
                       "f1": self.f1, "token_accuracy": self.token_accuracy,
                       "all_outside_token_accuracy": self.outside_baseline, "learned": self.learned})


def word_predictions(logits: np.ndarray, labels: np.ndarray, names: list[str]) -> tuple[list[str], list[str]]:
    """``(true tags, predicted tags)`` of one sentence's labelled words (tokens whose label is not ignored)."""
    positions = np.flatnonzero(labels >= 0)
    return [names[i] for i in labels[positions]], [names[i] for i in logits[positions].argmax(-1)]

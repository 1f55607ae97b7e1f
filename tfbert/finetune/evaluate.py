"""The eval report: accuracy, macro-F1, per-class scores, and the confusion matrix as text and PNG."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from tfbert.report import Report

log = logging.getLogger("tfbert")

# A classifier within this many accuracy points of always predicting the most frequent class
# (or below it) has not learned the task.
NO_LEARNING_MARGIN = 0.02


@dataclasses.dataclass
class Evaluation:
    """Scores of predictions against true labels.

    Args:
        labels: class names in id order.
        confusion: ``[true, predicted]`` counts.
    """

    labels: list[str]
    confusion: np.ndarray

    @property
    def examples(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / max(self.examples, 1))

    @property
    def majority_baseline(self) -> float:
        """Accuracy of always predicting the most frequent true class."""
        return float(self.confusion.sum(axis=1).max() / max(self.examples, 1))

    @property
    def majority_label(self) -> str:
        """The most frequent true class."""
        return self.labels[int(self.confusion.sum(axis=1).argmax())]

    @property
    def learned(self) -> bool:
        """Accuracy more than :data:`NO_LEARNING_MARGIN` above :attr:`majority_baseline` (in counts,
        so 2 points exactly is not enough).

        Example:
            >>> evaluate(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0]), ["a", "b"]).learned
            False
        """
        correct, majority = int(np.trace(self.confusion)), int(self.confusion.sum(axis=1).max())
        return correct - majority > NO_LEARNING_MARGIN * self.examples

    def per_class(self) -> list[dict]:
        """Precision, recall, F1 and support per class (0 where undefined)."""
        rows = []
        for i, name in enumerate(self.labels):
            tp = float(self.confusion[i, i])
            predicted, actual = float(self.confusion[:, i].sum()), float(self.confusion[i].sum())
            precision = tp / predicted if predicted else 0.0
            recall = tp / actual if actual else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            rows.append({"label": name, "precision": precision, "recall": recall, "f1": f1, "support": int(actual)})
        return rows

    @property
    def macro_f1(self) -> float:
        """Mean F1 over the classes present in the true labels."""
        present = [r["f1"] for r in self.per_class() if r["support"]]
        return float(np.mean(present)) if present else 0.0

    def report(self, title: str = "tfbert finetune: eval") -> Report:
        """Per-class rows with accuracy, macro-F1 and the majority-class baseline as summary."""
        return Report(title, ["label", "precision", "recall", "f1", "support"], self.per_class(),
                      {"examples": self.examples, "accuracy": self.accuracy, "macro_f1": self.macro_f1,
                       "majority_baseline": self.majority_baseline, "learned": self.learned})

    def confusion_report(self) -> Report:
        """The confusion matrix as a table: one row per true label, one column per predicted label."""
        corner = "true \\ predicted"
        rows = [{corner: name, **{p: int(self.confusion[i, j]) for j, p in enumerate(self.labels)}}
                for i, name in enumerate(self.labels)]
        return Report("confusion matrix", [corner, *self.labels], rows)


def evaluate(true_ids: np.ndarray, predicted_ids: np.ndarray, labels: list[str]) -> Evaluation:
    """Build the :class:`Evaluation` of ``predicted_ids`` against ``true_ids``.

    Example:
        >>> e = evaluate(np.array([0, 1, 1]), np.array([0, 1, 0]), ["neg", "pos"])
        >>> round(e.accuracy, 3), e.confusion.tolist()
        (0.667, [[1, 0], [1, 1]])
    """
    n = len(labels)
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (np.asarray(true_ids, dtype=np.int64), np.asarray(predicted_ids, dtype=np.int64)), 1)
    return Evaluation(list(labels), confusion)


def predict_ids(keras_model, dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(true ids, predicted ids, logits)`` over a labelled dataset (rows in dataset order)."""
    true, logits = [], []
    for batch in dataset:
        true.append(batch[1].numpy())
        logits.append(np.asarray(keras_model.predict_on_batch(batch[0])))
    stacked = np.concatenate(logits)
    return np.concatenate(true), stacked.argmax(axis=-1), stacked


def plot_confusion(evaluation: Evaluation, path: str) -> str | None:
    """Draw the confusion matrix to a PNG with matplotlib (Agg); None when matplotlib is absent."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no confusion-matrix PNG (pip install matplotlib)")
        return None
    n = len(evaluation.labels)
    size = min(4 + 0.5 * n, 20)
    fig, ax = plt.subplots(figsize=(size, size))
    try:
        ax.imshow(evaluation.confusion, cmap="Blues")
        ax.set_xticks(range(n), evaluation.labels, rotation=45, ha="right")
        ax.set_yticks(range(n), evaluation.labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"accuracy {evaluation.accuracy:.4f}, macro-F1 {evaluation.macro_f1:.4f}")
        peak = evaluation.confusion.max() or 1
        for i in range(n):
            for j in range(n):
                value = evaluation.confusion[i, j]
                ax.text(j, i, str(value), ha="center", va="center",
                        color="white" if value > peak / 2 else "black")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path

"""Stage 5c — fine-tune: labelled texts → a classifier (or tagged sentences → a tagger) saved as a checkpoint.

Importing this package does not import TensorFlow.

Example:
    >>> from tfbert.finetune import finetune
    >>> result = finetune(None, "train.csv", "eval.csv", "out/clf", freeze="all_but_head")  # doctest: +SKIP
"""

from tfbert.finetune.data import LabelledTexts, label_names, labelled_dataset, read_labelled
from tfbert.finetune.evaluate import Evaluation, evaluate, plot_confusion
from tfbert.finetune.run import FinetuneResult, finetune
from tfbert.finetune.tokens import TokenFinetuneResult, finetune_tokens
from tfbert.finetune.train import FreezePlan, apply_freeze, parameter_counts, parse_freeze

__all__ = ["Evaluation", "FinetuneResult", "FreezePlan", "LabelledTexts", "TokenFinetuneResult", "apply_freeze",
           "evaluate", "finetune", "finetune_tokens", "label_names", "labelled_dataset", "parameter_counts",
           "parse_freeze", "plot_confusion", "read_labelled"]

"""Fine-tuning a token classifier (``--task=token_classify``): tagged sentences → a published checkpoint.

The same run as :func:`tfbert.finetune.finetune` — pre-flight, freezing, AdamW with warmup
and early stopping on the eval loss (:func:`tfbert.finetune.train.fit`), a checkpoint staged,
reloaded, checked and published (:mod:`tfbert.publish`) — on tagged sentences
(:mod:`tfbert.tasks.tagged_data`) with a ``TFBertForTokenClassification``. The loss and accuracy
count each word's first sub-token only; the eval report has entity precision / recall / F1
(:mod:`tfbert.tasks.tagging_metrics`, ``seqeval``'s rules) and word accuracy. A tagger whose
entity F1 is at most 0.02 (tagging everything ``O`` scores 0) learned nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from collections.abc import Callable

import numpy as np

from tfbert import publish
from tfbert.checkpoint import find_checkpoint
from tfbert.diagnose.config_checks import read_config
from tfbert.diagnose.memory import check_memory
from tfbert.errors import BadInputError, NoLearningError
from tfbert.finetune.run import bf16_capable_cpu, check_reloaded, mixed_precision_policy, raise_or_warn, retry_fix
from tfbert.finetune.train import (
    TrainResult,
    apply_freeze,
    classifier,
    fit,
    learning_rate_for,
    parameter_counts,
    parse_freeze,
)
from tfbert.report import ERROR
from tfbert.tasks.tagged_data import TokenLabels, check_tags, read_tagged, tag_names, tagged_dataset, token_labels
from tfbert.tasks.tagging_metrics import NO_LEARNING_F1, TaggingEvaluation, word_predictions

TASK = "token_classify"
# Default peak learning rate when the encoder trains. A tagger's head starts from random values and a
# tagging set of a few thousand sentences gives a few hundred steps: at the sequence classifier's 5e-5
# the MiniLM tagger of scripts/token_task.py (1,500 sentences, 3 epochs) was still far from converged
# (eval loss 0.036, entity F1 0.41); at 2e-4 its eval loss was 0.025 after 2 epochs (docs/finetune.md).
TAGGER_LEARNING_RATE = 2e-4


@dataclasses.dataclass
class TokenFinetuneResult:
    """What a token-classification fine-tuning run produced."""

    output_dir: str
    labels: list[str]
    learning_rate: float
    frozen: str
    trainable_params: int
    total_params: int
    policy: str
    memory: str
    train: TrainResult
    evaluation: TaggingEvaluation
    files: list[str]

    @property
    def learned(self) -> bool:
        return self.evaluation.learned


def token_logits(model, inputs, training: bool = False):
    """Per-token logits [batch, seq, labels] of a ``TFBertForTokenClassification``."""
    kwargs = {k: inputs[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in inputs}
    return model(**kwargs, training=training).logits


def finetune_tokens(model: str | os.PathLike | None, train_file: str, eval_file: str, output_dir: str, *,
                    freeze: str | None = None, epochs: int = 3, batch_size: int = 16, max_length: int = 128,
                    learning_rate: float | None = None, weight_decay: float = 0.01, warmup_ratio: float = 0.1,
                    mixed_precision: bool = False, early_stopping_patience: int = 2, seed: int = 0,
                    overwrite: bool = False, allow_no_learning: bool = False,
                    progress: Callable[[str], None] | None = None) -> TokenFinetuneResult:
    """Fine-tune a BERT checkpoint as a token classifier and save it as a tfbert checkpoint directory.

    Args:
        model: the base checkpoint (None: the embedded all-MiniLM-L6-v2).
        train_file, eval_file: tagged sentences, CoNLL columns or JSONL spans
            (:func:`tfbert.tasks.tagged_data.read_tagged`); every eval tag must occur in training.
        output_dir: where the checkpoint goes (refused if it exists, unless ``overwrite``).
        learning_rate: AdamW's peak rate; default :data:`TAGGER_LEARNING_RATE` (2e-4) when any encoder
            layer or the embeddings train, 3e-3 when only the head does.
        freeze: as :func:`tfbert.finetune.finetune`, and so are ``epochs``, ``batch_size``,
            ``max_length``, ``weight_decay``, ``warmup_ratio``, ``mixed_precision``,
            ``early_stopping_patience``, ``seed`` and ``overwrite``.
        allow_no_learning: accept a tagger that learned nothing (see Raises) with a warning.
        progress: called with progress lines (default: stderr).

    Returns:
        A :class:`TokenFinetuneResult`; the directory holds config.json (``architectures``
        BertForTokenClassification, ``id2label`` the tags), model.safetensors, the tokenizer
        files, eval_report.json/.md, training_history.json and SHA256SUMS.

    Raises:
        TfbertError: bad data or flags, a damaged checkpoint, not enough memory, or a saved
            checkpoint that does not reproduce the model.
        NoLearningError: eval entity F1 at most 0.02 and ``allow_no_learning`` False; the
            checkpoint is saved all the same and the error's ``result`` is the result.

    Example:
        >>> result = finetune_tokens(None, "train.conll", "eval.conll", "out/ner")  # doctest: +SKIP
        >>> result.evaluation.f1  # doctest: +SKIP
        0.91
    """
    from tfbert.edge_tokenizer import EdgeTokenizer

    write = progress or (lambda line: (sys.stderr.write(f"[tfbert.finetune] {line}\n"), sys.stderr.flush()))
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("max_length", max_length)):
        if value < 1:
            raise BadInputError("must be a positive integer", where=name, actual=value, fix=f"pass {name} >= 1")
    if os.path.exists(output_dir) and not overwrite:
        raise BadInputError("the output directory exists", where=os.path.abspath(output_dir),
                            fix="pass --overwrite or choose another --output_dir")
    files = find_checkpoint(model)
    config = read_config(files)
    train, held_out = read_tagged(train_file), read_tagged(eval_file)
    labels = tag_names(train.tags)
    if len(labels) < 2:
        raise BadInputError("the training data has a single tag", where=train_file, expected=">= 2 tags",
                            actual=labels, fix="tag the entities in the training sentences")
    check_tags(held_out, labels)
    num_layers = config["num_hidden_layers"]
    plan = parse_freeze(freeze, num_layers)
    learning_rate = learning_rate_for(learning_rate, plan, num_layers, TAGGER_LEARNING_RATE)
    from tfbert.diagnose.memory import available_gpu_memory

    policy = mixed_precision_policy(mixed_precision, has_gpu=available_gpu_memory() is not None,
                                    bf16_cpu=bf16_capable_cpu())
    findings = check_memory(dict(config, id2label=dict(enumerate(labels))), TASK, batch_size=batch_size,
                            seq_length=max_length, dtype=policy, training=True,
                            trainable_layers=None if not plan.embeddings
                            else num_layers - plan.lowest_trainable_layer(num_layers))
    if findings[0].status == ERROR:
        raise findings[0].error
    tokenizer = EdgeTokenizer.from_files(files.vocab, files.tokenizer_config)
    train_arrays = token_labels(train, tokenizer, labels, max_length)
    eval_arrays = token_labels(held_out, tokenizer, labels, max_length)
    write(f"{len(train)} training and {len(held_out)} eval sentences, tags {labels}; {findings[0].message}")
    for name, arrays in ((train_file, train_arrays), (eval_file, eval_arrays)):
        if arrays.truncated_words:
            write(f"WARNING: {name}: {arrays.truncated_words} words fall beyond --max_length={max_length} tokens "
                  "and are neither trained nor scored")

    from tfbert.model import load
    from tfbert.runtime import configure_runtime

    configure_runtime(mixed_precision=policy)
    import tf_keras

    tf_keras.utils.set_random_seed(seed)
    bert = load(files.root, TASK, batch_size=batch_size, seq_length=max_length, labels=labels)
    apply_freeze(bert, plan)
    keras_model = classifier(bert, token_logits)
    trainable, total = parameter_counts(bert)
    frozen = plan.describe(num_layers)
    write(f"frozen: {frozen}; trainable parameters {trainable:,} of {total:,} ({100 * trainable / total:.1f}%); "
          f"learning rate {learning_rate:g}; precision {policy}")
    train_data = tagged_dataset(train_arrays, batch_size=batch_size, shuffle=True, seed=seed)
    eval_data = tagged_dataset(eval_arrays, batch_size=batch_size)

    parent = os.path.dirname(os.path.abspath(output_dir))
    if not os.path.isdir(parent):
        raise BadInputError("the parent of the output directory does not exist", where=parent, fix="create it first")
    with publish.published(output_dir, overwrite=overwrite, progress=write) as tmp:
        result = fit(keras_model, train_data, eval_data, epochs=epochs, steps_per_epoch=-(-len(train) // batch_size),
                     train_examples=len(train), learning_rate=learning_rate, weight_decay=weight_decay,
                     warmup_ratio=warmup_ratio, early_stopping_patience=early_stopping_patience,
                     checkpoint_dir=os.path.join(tmp, "training-checkpoints"), progress=write)
        write(f"best epoch {result.best_epoch} of {result.epochs_run}"
              f"{' (stopped early)' if result.stopped_early else ''}; {result.examples_per_second:.1f} sentences/s")
        logits = predict_logits(keras_model, eval_data)
        evaluation = evaluate_tokens(logits, eval_arrays, labels)
        shutil.rmtree(os.path.join(tmp, "training-checkpoints"))
        saved = _save(bert, tmp, files.root, config, labels, evaluation, result, eval_data, logits)
    outcome = TokenFinetuneResult(os.path.abspath(output_dir), labels, learning_rate, frozen, trainable, total, policy,
                                  findings[0].message, result, evaluation, saved)
    if not evaluation.learned:
        e = evaluation
        raise_or_warn(NoLearningError(
            f"the tagger learned nothing: entity F1 {e.f1:.4f} (tagging every word 'O' scores 0, token accuracy "
            f"{e.outside_baseline:.4f})", where=f"--eval={eval_file}", expected=f"entity F1 > {NO_LEARNING_F1}",
            actual=f"{e.f1:.4f} (token accuracy {e.token_accuracy:.4f})",
            fix=retry_fix(learning_rate, outcome.output_dir)), outcome, allow_no_learning, write)
    return outcome


def predict_logits(keras_model, dataset) -> list[np.ndarray]:
    """Per-sentence logits [seq, labels] over a :func:`tagged_dataset` (not shuffled), in its order."""
    out = []
    for inputs, _, _ in dataset:
        out.extend(np.asarray(keras_model.predict_on_batch(inputs)))
    return out


def evaluate_tokens(logits: list[np.ndarray], arrays: TokenLabels, labels: list[str]) -> TaggingEvaluation:
    """Word-level tags predicted on each word's first sub-token, scored against the true ones."""
    true, predicted = [], []
    for row, sentence in enumerate(logits):
        t, p = word_predictions(sentence, arrays.labels[row, :len(sentence)], labels)
        true.append(t)
        predicted.append(p)
    return TaggingEvaluation(true, predicted)


def _save(bert, directory: str, base: str, config: dict, labels: list[str], evaluation: TaggingEvaluation,
          result: TrainResult, eval_data, logits: list[np.ndarray]) -> list[str]:
    """Write checkpoint + reports into ``directory`` and check it reloads to the same logits."""
    from tfbert.checkpoint.manifest import write_manifest
    from tfbert.checkpoint.write import write_checkpoint
    from tfbert.model import load

    write_checkpoint(bert, directory, task=TASK, labels=labels, config=config, tokenizer_dir=base, manifest=False)
    evaluation.report().write(os.path.join(directory, "eval_report"))
    with open(os.path.join(directory, "training_history.json"), "w", encoding="utf-8") as f:
        json.dump({"history": result.history, "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                   "stopped_early": result.stopped_early, "seconds": result.seconds,
                   "examples_per_second": result.examples_per_second}, f, indent=2)
    write_manifest(directory)
    again = predict_logits(classifier(load(directory, TASK, require_head=True), token_logits), eval_data)
    diff = max((float(np.abs(a - b).max()) for a, b in zip(again, logits, strict=True) if a.size), default=0.0)
    check_reloaded(directory, diff)
    return sorted(os.listdir(directory))

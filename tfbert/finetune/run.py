"""Fine-tuning end to end: data → pre-flight → model → fit → eval report → a published checkpoint.

The output directory is written as an owned temporary sibling (:mod:`tfbert.publish`:
``.tmp-<name>+<owner>``), reloaded with :func:`tfbert.load` and checked to reproduce the
in-memory model's logits, and only then renamed into place without replacing anything (an
``overwrite`` swaps the two trees in one step): a killed run never leaves a half-written
checkpoint under the real name, and only dead runs' leftovers are removed.
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
from tfbert.checkpoint.pooling import check_pooling, checkpoint_pooling
from tfbert.diagnose.config_checks import read_config
from tfbert.diagnose.memory import check_memory
from tfbert.errors import BadInputError, ExportError, NoLearningError, RuntimeSetupError
from tfbert.finetune.data import (
    balanced_class_weights,
    encode_labels,
    label_names,
    labelled_dataset,
    read_labelled,
)
from tfbert.finetune.evaluate import NO_LEARNING_MARGIN, Evaluation, evaluate, plot_confusion, predict_ids
from tfbert.finetune.train import (
    FreezePlan,
    TrainResult,
    apply_freeze,
    classifier,
    fit,
    learning_rate_for,
    parameter_counts,
    parse_freeze,
)
from tfbert.report import ERROR

# Below this max |logit| difference the reloaded checkpoint reproduces the trained model.
RELOAD_TOLERANCE = 1e-3


@dataclasses.dataclass
class FinetuneResult:
    """What a fine-tuning run produced."""

    output_dir: str
    labels: list[str]
    pooling: str
    learning_rate: float
    frozen: str
    trainable_params: int
    total_params: int
    policy: str
    memory: str
    train: TrainResult
    evaluation: Evaluation
    files: list[str]

    @property
    def learned(self) -> bool:
        """Whether the classifier beats always predicting the most frequent class by more than 2 points."""
        return self.evaluation.learned


def bf16_capable_cpu(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX-BF16)."""
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def mixed_precision_policy(enabled: bool, *, has_gpu: bool, bf16_cpu: bool) -> str:
    """The Keras policy for ``--mixed_precision``.

    mixed_float16 on a GPU; on a CPU with native bfloat16 (AVX512-BF16/AMX) mixed_bfloat16,
    whose 8 exponent bits need no loss scaling. On such a CPU it is a memory saving, not a speed-up
    (MiniLM, batch 16 x 128, 2 cores: 30-40% less training memory, 0.88-1.23x the float32 speed;
    scripts/bench_finetune.py). On a CPU without it, bfloat16 is emulated and float16 has no
    fast path, so the run is refused rather than made slower.
    """
    if not enabled:
        return "float32"
    if has_gpu:
        return "mixed_float16"
    if bf16_cpu:
        return "mixed_bfloat16"
    raise RuntimeSetupError("mixed precision needs a GPU or a CPU with native bfloat16", where="--mixed_precision",
                            expected="a GPU, or a CPU with avx512_bf16 / amx_bf16", actual="neither",
                            fix="drop --mixed_precision (float32 is the fastest here)")


def _trainable_layers(plan, num_layers: int) -> int | None:
    """Encoder layers the backward pass goes through, for the memory estimate (None: all + embeddings)."""
    if not plan.embeddings:
        return None
    return num_layers - plan.lowest_trainable_layer(num_layers)


def finetune(model: str | os.PathLike | None, train_file: str, eval_file: str, output_dir: str, *,
             text_column: str = "text", label_column: str = "label", freeze: str | None = None,
             pooling: str | None = None, epochs: int = 3, batch_size: int = 16, max_length: int = 128,
             learning_rate: float | None = None, weight_decay: float = 0.01, warmup_ratio: float = 0.1,
             mixed_precision: bool = False, early_stopping_patience: int = 2, class_weights: bool = False,
             seed: int = 0, overwrite: bool = False, allow_no_learning: bool = False,
             progress: Callable[[str], None] | None = None) -> FinetuneResult:
    """Fine-tune a BERT checkpoint as a text classifier and save it as a tfbert checkpoint directory.

    Args:
        model: the base checkpoint (None: the embedded all-MiniLM-L6-v2).
        train_file, eval_file: labelled CSV/TSV/JSONL (see :func:`tfbert.finetune.data.read_labelled`).
        output_dir: where the checkpoint goes (refused if it exists, unless ``overwrite``).
        text_column, label_column: the fields holding text and label.
        freeze: what to freeze (see :func:`tfbert.finetune.train.parse_freeze`).
        pooling: what the classifier reads: ``mean``, ``cls`` or ``max`` over the token states,
            or ``pooler``; default: the checkpoint's (sentence-transformers' ``1_Pooling``,
            else the pooler; see :func:`tfbert.checkpoint.pooling.checkpoint_pooling`). Saved in
            config.json as ``classifier_pooling``.
        epochs, batch_size, max_length: the training run.
        learning_rate: AdamW's peak rate; default 3e-3 when only the head trains, else 5e-5
            (:func:`tfbert.finetune.train.default_learning_rate`).
        weight_decay, warmup_ratio: AdamW with linear warmup then linear decay.
        mixed_precision: mixed_float16 on a GPU, mixed_bfloat16 on a bfloat16 CPU, else refused.
        early_stopping_patience: epochs without a lower eval loss before stopping (0: never).
        class_weights: weigh each class inversely to its frequency in the training data.
        seed: seeds the head's initialisation, dropout and shuffling.
        overwrite: replace an existing ``output_dir``.
        allow_no_learning: accept a classifier that did not learn (see Raises) with a warning.
        progress: called with progress lines (default: stderr).

    Returns:
        A :class:`FinetuneResult`; the directory holds config.json (with ``id2label``),
        model.safetensors, the tokenizer files, eval_report.json/.md, confusion_matrix.txt/.png,
        training_history.json and SHA256SUMS.

    Raises:
        TfbertError: bad data or flags, a damaged checkpoint, not enough memory (before any
            model is built), or a saved checkpoint that does not reproduce the model.
        NoLearningError: the eval accuracy is at most 2 points above the majority class
            (:attr:`tfbert.finetune.Evaluation.learned`) and ``allow_no_learning`` is False. The
            checkpoint is saved all the same (its eval report says ``learned: false``) and the
            error's ``result`` is the :class:`FinetuneResult`.

    Example:
        >>> result = finetune(None, "train.csv", "eval.csv", "out/clf", freeze="embeddings,encoder")  # doctest: +SKIP
        >>> result.evaluation.accuracy  # doctest: +SKIP
        0.93
    """
    write = progress or (lambda line: (sys.stderr.write(f"[tfbert.finetune] {line}\n"), sys.stderr.flush()))
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("max_length", max_length)):
        if value < 1:
            raise BadInputError("must be a positive integer", where=name, actual=value, fix=f"pass {name} >= 1")
    if not 0 <= warmup_ratio < 1:
        raise BadInputError("must be in [0, 1)", where="warmup_ratio", actual=warmup_ratio, fix="e.g. 0.1")
    if os.path.exists(output_dir) and not overwrite:
        raise BadInputError("the output directory exists", where=os.path.abspath(output_dir),
                            fix="pass --overwrite or choose another --output_dir")
    parent = os.path.dirname(os.path.abspath(output_dir))
    if not os.path.isdir(parent):
        raise BadInputError("the parent of the output directory does not exist", where=parent,
                            fix="create it first")

    files = find_checkpoint(model)
    config = read_config(files)
    train = read_labelled(train_file, text_column=text_column, label_column=label_column)
    held_out = read_labelled(eval_file, text_column=text_column, label_column=label_column)
    labels = label_names(train.labels)
    if len(labels) < 2:
        raise BadInputError("the training data has a single label", where=train_file, expected=">= 2 labels",
                            actual=labels, fix="check --label_column")
    train_ids, eval_ids = encode_labels(train, labels), encode_labels(held_out, labels)
    num_layers = config["num_hidden_layers"]
    plan = parse_freeze(freeze, num_layers)
    pooling = check_pooling(pooling) if pooling is not None else checkpoint_pooling(files, config)
    learning_rate = learning_rate_for(learning_rate, plan, num_layers)

    from tfbert.diagnose.memory import available_gpu_memory

    policy = mixed_precision_policy(mixed_precision, has_gpu=available_gpu_memory() is not None,
                                    bf16_cpu=bf16_capable_cpu())
    findings = check_memory(dict(config, id2label=dict(enumerate(labels))), "classify", batch_size=batch_size,
                            seq_length=max_length, dtype=policy, training=True,
                            trainable_layers=_trainable_layers(plan, num_layers))
    if findings[0].status == ERROR:
        raise findings[0].error
    write(f"{len(train)} training and {len(held_out)} eval texts, labels {labels}; {findings[0].message}")

    from tfbert.model import load
    from tfbert.runtime import configure_runtime
    from tfbert.tokenizer import BertTokenizer

    configure_runtime(mixed_precision=policy)
    import tf_keras

    tf_keras.utils.set_random_seed(seed)
    bert = load(files.root, "classify", batch_size=batch_size, seq_length=max_length, labels=labels,
                pooling=pooling)
    apply_freeze(bert, plan)
    keras_model = classifier(bert)
    trainable, total = parameter_counts(bert)
    frozen = plan.describe(num_layers) + ("" if pooling == "pooler" or plan.pooler else ", pooler (unused)")
    write(f"pooling {pooling}; frozen: {frozen}; trainable parameters {trainable:,} of {total:,} "
          f"({100 * trainable / total:.1f}%); learning rate {learning_rate:g}; precision {policy}")

    tokenizer = BertTokenizer.from_files(files.vocab, files.tokenizer_config)
    weights = balanced_class_weights(train_ids, len(labels)) if class_weights else None
    train_data = labelled_dataset(train.texts, train_ids, tokenizer, batch_size=batch_size, max_length=max_length,
                                  shuffle=True, seed=seed, class_weights=weights)
    eval_data = labelled_dataset(held_out.texts, eval_ids, tokenizer, batch_size=batch_size, max_length=max_length)
    steps = -(-len(train) // batch_size)

    with publish.published(output_dir, overwrite=overwrite, progress=write) as tmp:
        result = fit(keras_model, train_data, eval_data, epochs=epochs, steps_per_epoch=steps,
                     train_examples=len(train), learning_rate=learning_rate, weight_decay=weight_decay,
                     warmup_ratio=warmup_ratio, early_stopping_patience=early_stopping_patience,
                     checkpoint_dir=os.path.join(tmp, "training-checkpoints"), progress=write)
        write(f"best epoch {result.best_epoch} of {result.epochs_run}"
              f"{' (stopped early)' if result.stopped_early else ''}; {result.examples_per_second:.1f} examples/s")
        true, predicted, logits = predict_ids(keras_model, eval_data)
        evaluation = evaluate(true, predicted, labels)
        shutil.rmtree(os.path.join(tmp, "training-checkpoints"))
        saved = _save(bert, tmp, files.root, config, labels, evaluation, result, eval_data, logits)
    outcome = FinetuneResult(os.path.abspath(output_dir), labels, pooling, learning_rate, frozen, trainable, total,
                             policy, findings[0].message, result, evaluation, saved)
    if not evaluation.learned:
        raise_or_warn(no_learning_error(outcome, plan, num_layers, eval_file, class_weights), outcome,
                      allow_no_learning, write)
    return outcome


def raise_or_warn(error: NoLearningError, outcome, allow_no_learning: bool, write: Callable[[str], None]) -> None:
    """Raise ``error`` with the run's ``outcome`` as its ``result``, or, with ``allow_no_learning``,
    write it as a warning line."""
    if not allow_no_learning:
        error.result = outcome
        raise error
    write(f"WARNING: {error.render()}")


def retry_fix(learning_rate: float, output_dir: str) -> str:
    """The fix of a tagger's or a question-answering model's no-learning error."""
    return (f"try more --epochs, a higher --learning_rate (this run: {learning_rate:g}) or more training data. "
            f"The checkpoint was saved anyway to {output_dir}; pass --allow_no_learning to accept it")


def no_learning_error(result: FinetuneResult, plan: FreezePlan, num_layers: int, eval_file: str,
                      class_weights: bool) -> NoLearningError:
    """The one line saying the classifier learned nothing, and what to try for this run."""
    e = result.evaluation
    tries = []
    if plan.head_only(num_layers):
        tries += [f"a higher --learning_rate (this run: {result.learning_rate:g})",
                  f"training the top encoder layers too (--freeze=embeddings,encoder:0-{max(num_layers - 3, 0)})"]
    else:
        tries.append(f"a lower --learning_rate (this run: {result.learning_rate:g})")
    if result.pooling == "pooler" and plan.pooler:
        tries.append("--pooling=mean, or not freezing the pooler")
    if not class_weights:
        tries.append("--class_weights if the labels are imbalanced")
    tries.append("more --epochs or more training data")
    return NoLearningError(
        f"the classifier learned nothing: within {100 * NO_LEARNING_MARGIN:g} points of always predicting "
        f"'{e.majority_label}' (majority baseline {e.majority_baseline:.4f}, macro-F1 {e.macro_f1:.4f})",
        where=f"--eval={eval_file}",
        expected=f"accuracy > {e.majority_baseline + NO_LEARNING_MARGIN:.4f}", actual=f"{e.accuracy:.4f}",
        fix=f"try {'; '.join(tries)}. The checkpoint was saved anyway to {result.output_dir}; "
            "pass --allow_no_learning to accept it")


def _save(bert, directory: str, base: str, config: dict, labels: list[str], evaluation: Evaluation,
          result: TrainResult, eval_data, logits: np.ndarray) -> list[str]:
    """Write checkpoint + reports into ``directory`` and check it reloads to the same logits."""
    from tfbert.checkpoint.manifest import write_manifest
    from tfbert.checkpoint.write import write_checkpoint
    from tfbert.model import load

    write_checkpoint(bert, directory, task="classify", labels=labels, config=config, tokenizer_dir=base,
                     manifest=False)
    evaluation.report().write(os.path.join(directory, "eval_report"))
    with open(os.path.join(directory, "confusion_matrix.txt"), "w", encoding="utf-8") as f:
        f.write(evaluation.confusion_report().to_table())
    plot_confusion(evaluation, os.path.join(directory, "confusion_matrix.png"))
    with open(os.path.join(directory, "training_history.json"), "w", encoding="utf-8") as f:
        json.dump({"history": result.history, "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                   "stopped_early": result.stopped_early, "seconds": result.seconds,
                   "examples_per_second": result.examples_per_second}, f, indent=2)
    write_manifest(directory)
    reloaded = classifier(load(directory, "classify", require_head=True))
    _, _, again = predict_ids(reloaded, eval_data)
    check_reloaded(directory, float(np.max(np.abs(again - logits))) if len(logits) else 0.0)
    return sorted(os.listdir(directory))


def check_reloaded(directory: str, diff: float) -> None:
    """Refuse a saved checkpoint whose reloaded logits differ from the trained model's by ``diff``.

    Raises:
        ExportError: ``diff`` above :data:`RELOAD_TOLERANCE` (nothing is published).
    """
    if not diff <= RELOAD_TOLERANCE:
        raise ExportError("the saved checkpoint does not reproduce the trained model", where=directory,
                          expected=f"max |logit diff| <= {RELOAD_TOLERANCE}", actual=f"{diff:.3g}",
                          fix="report this as a bug; nothing was published")

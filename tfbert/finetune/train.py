"""Training: freezing that skips gradients, AdamW with warmup and linear decay, fit with early stopping.

Frozen parts get ``trainable=False``, so they have no optimizer state, and the training step
records only the trainable variables on its tape: no gradient is computed for a frozen weight,
and layers below the lowest trainable one keep no activations for a backward pass.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
import time
from collections.abc import Callable

from tfbert.checkpoint.pooling import CONFIG_FIELD
from tfbert.errors import BadInputError
from tfbert.tf import import_tensorflow

# Parameters kept out of weight decay (as in BERT's original optimizer).
NO_DECAY = ("LayerNorm", "layer_norm", "bias")


# Default peak learning rates (AdamW) by what trains. The whole model (or any encoder layer or the
# embeddings): BERT's usual fine-tuning rate. The head alone (the classifier, plus the pooler with
# --pooling=pooler) on a frozen encoder: a linear layer on fixed features, which at 5e-5 barely
# moves in 3 epochs (the question/statement task of scripts/question_task.py stays at the
# majority class); 3e-3 reached logistic regression's figure there.
ENCODER_LEARNING_RATE = 5e-5
HEAD_LEARNING_RATE = 3e-3


@dataclasses.dataclass(frozen=True)
class FreezePlan:
    """What is frozen: the embeddings, some encoder layers, the pooler.

    The classification head (``classifier``) is never frozen.
    """

    embeddings: bool = False
    layers: frozenset[int] = frozenset()
    pooler: bool = False

    @property
    def frozen_anything(self) -> bool:
        return self.embeddings or bool(self.layers) or self.pooler

    def head_only(self, num_layers: int) -> bool:
        """Whether nothing below the pooling trains (the embeddings and every encoder layer are frozen)."""
        return self.embeddings and len(self.layers) == num_layers

    def lowest_trainable_layer(self, num_layers: int) -> int:
        """Index of the lowest encoder layer that trains (``num_layers`` when none does)."""
        return next((n for n in range(num_layers) if n not in self.layers), num_layers)

    def describe(self, num_layers: int) -> str:
        parts = ["embeddings"] if self.embeddings else []
        if self.layers:
            parts.append(f"encoder layers {_ranges(sorted(self.layers))} of 0-{num_layers - 1}")
        if self.pooler:
            parts.append("pooler")
        return ", ".join(parts) or "nothing"


def _ranges(numbers: list[int]) -> str:
    out, start = [], None
    for i, n in enumerate(numbers):
        start = n if start is None else start
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            out.append(str(n) if start == n else f"{start}-{n}")
            start = None
    return ",".join(out)


def default_learning_rate(plan: FreezePlan, num_layers: int, encoder_rate: float = ENCODER_LEARNING_RATE) -> float:
    """:data:`HEAD_LEARNING_RATE` when only the head trains, else ``encoder_rate`` (the task's:
    :data:`ENCODER_LEARNING_RATE` for a sequence classifier).

    Example:
        >>> default_learning_rate(parse_freeze("all_but_head", 6), 6)
        0.003
    """
    return HEAD_LEARNING_RATE if plan.head_only(num_layers) else encoder_rate


def learning_rate_for(learning_rate: float | None, plan: FreezePlan, num_layers: int,
                      encoder_rate: float = ENCODER_LEARNING_RATE) -> float:
    """``learning_rate``, or :func:`default_learning_rate` when None.

    Raises:
        BadInputError: a rate that is not positive.
    """
    if learning_rate is None:
        return default_learning_rate(plan, num_layers, encoder_rate)
    if not learning_rate > 0:
        raise BadInputError("must be positive", where="learning_rate", actual=learning_rate,
                            fix=f"e.g. {default_learning_rate(plan, num_layers, encoder_rate):g}")
    return learning_rate


def parse_freeze(spec: str | None, num_layers: int) -> FreezePlan:
    """Parse ``--freeze``: comma-separated ``embeddings``, ``encoder`` (all layers),
    ``encoder:A-B`` / ``encoder:N`` (layers, 0-based, inclusive), ``pooler``, or ``all_but_head``.

    ``all_but_head`` freezes the embeddings and the encoder. The head is what turns token states
    into logits: the classifier, and with ``pooler`` pooling the pooler too (trained for
    next-sentence prediction, not for the task: frozen, it left the classifier at the majority
    class). With ``mean``/``cls``/``max`` pooling the pooler is not used, and
    :func:`apply_freeze` always freezes it.

    Example:
        >>> parse_freeze("embeddings,encoder:0-3", 6)
        FreezePlan(embeddings=True, layers=frozenset({0, 1, 2, 3}), pooler=False)
    """
    plan = FreezePlan()
    for part in (p.strip() for p in (spec or "").split(",")):
        if not part:
            continue
        if part == "all_but_head":
            return FreezePlan(True, frozenset(range(num_layers)), False)
        if part == "embeddings":
            plan = dataclasses.replace(plan, embeddings=True)
        elif part == "pooler":
            plan = dataclasses.replace(plan, pooler=True)
        elif part == "encoder":
            plan = dataclasses.replace(plan, layers=frozenset(range(num_layers)))
        elif m := re.fullmatch(r"encoder:(\d+)(?:-(\d+))?", part):
            first, last = int(m.group(1)), int(m.group(2) or m.group(1))
            if first > last or last >= num_layers:
                raise BadInputError("encoder layer range out of bounds", where=f"--freeze={spec}",
                                    expected=f"layers within 0-{num_layers - 1}", actual=part,
                                    fix=f"use e.g. encoder:0-{max(0, num_layers - 3)}")
            plan = dataclasses.replace(plan, layers=plan.layers | frozenset(range(first, last + 1)))
        else:
            raise BadInputError("unknown part to freeze", where=f"--freeze={spec}",
                                expected="embeddings | encoder | encoder:A-B | pooler | all_but_head",
                                actual=part, fix="e.g. --freeze=embeddings,encoder:0-3")
    return plan


def apply_freeze(model, plan: FreezePlan) -> None:
    """Set ``trainable=False`` on the frozen sublayers of a Hugging Face TF BERT model.

    A frozen sublayer also runs in inference mode, as Keras' transfer-learning guide has a frozen
    base do: its dropout is switched off, so it computes the features the exported model will.
    The pooler is frozen too when the classifier does not read it (``classifier_pooling`` other
    than ``pooler``): it gets no gradient, so it is not counted as trained.
    """
    bert = model.bert
    frozen = [bert.embeddings] if plan.embeddings else []
    frozen += [layer for n, layer in enumerate(bert.encoder.layer) if n in plan.layers]
    unused_pooler = getattr(model.config, CONFIG_FIELD, "pooler") != "pooler"
    if (plan.pooler or unused_pooler) and getattr(bert, "pooler", None) is not None:
        frozen.append(bert.pooler)
    for sublayer in frozen:
        sublayer.trainable = False
        for inner in sublayer.submodules:
            if type(inner).__name__ == "Dropout":
                inner.rate = 0.0


def parameter_counts(model) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts."""
    count = lambda variables: sum(int(v.shape.num_elements()) for v in variables)  # noqa: E731
    return count(model.trainable_weights), count(model.weights)


def warmup_linear_decay(learning_rate: float, total_steps: int, warmup_ratio: float):
    """Learning rate rising linearly from 0 over ``warmup_ratio`` of the steps, then falling to 0."""
    tf_keras = _tf_keras()

    class WarmupLinearDecay(tf_keras.optimizers.schedules.LearningRateSchedule):
        def __init__(self, peak: float, total: int, warmup: int) -> None:
            self.peak, self.total, self.warmup = peak, total, warmup

        def __call__(self, step):
            tf = import_tensorflow()
            step = tf.cast(step, tf.float32)
            up = self.peak * (step + 1.0) / max(self.warmup, 1)
            down = self.peak * tf.maximum(0.0, (self.total - step) / max(self.total - self.warmup, 1))
            return tf.where(step < self.warmup, up, down)

        def get_config(self) -> dict:
            return {"peak": self.peak, "total": self.total, "warmup": self.warmup}

    return WarmupLinearDecay(learning_rate, max(total_steps, 1), round(warmup_ratio * total_steps))


def make_optimizer(learning_rate: float, total_steps: int, *, weight_decay: float = 0.01,
                   warmup_ratio: float = 0.1):
    """tf-keras AdamW on :func:`warmup_linear_decay`; biases and LayerNorm get no weight decay."""
    tf_keras = _tf_keras()
    optimizer = tf_keras.optimizers.AdamW(learning_rate=warmup_linear_decay(learning_rate, total_steps, warmup_ratio),
                                          weight_decay=weight_decay, epsilon=1e-6)
    optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY))
    return optimizer


def _tf_keras():
    import_tensorflow()
    import tf_keras

    return tf_keras


def classifier(model, logits=None):
    """A Keras model around a ``TFBertForSequenceClassification`` that returns float32 logits (with
    the pooling of its config, :func:`tfbert.model.classifier_logits`) and whose training step
    differentiates only the trainable variables.

    ``logits(model, inputs, training)`` replaces ``classifier_logits`` for another head (the
    token classifier's, :func:`tfbert.finetune.tokens.token_logits`; question answering's start and
    end logits, :func:`tfbert.finetune.question_answering.qa_model`).
    """
    tf = import_tensorflow()
    tf_keras = _tf_keras()
    from tfbert.model import classifier_logits

    logits = logits or classifier_logits

    class Classifier(tf_keras.Model):
        def __init__(self, bert_model) -> None:
            super().__init__(name="tfbert_classifier")
            self.bert_model = bert_model

        def call(self, inputs, training=False):
            return tf.cast(logits(self.bert_model, inputs, training=training), tf.float32)

        def train_step(self, data):
            x, y, sample_weight = tf_keras.utils.unpack_x_y_sample_weight(data)
            variables = self.trainable_variables
            # Only the trainable variables are watched: ops on frozen weights are not recorded,
            # so no gradient is computed for them and their activations are not kept.
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(variables)
                logits = self(x, training=True)
                loss = self.compute_loss(x, y, logits, sample_weight)
            self.optimizer.minimize(loss, variables, tape=tape)
            return self.compute_metrics(x, y, logits, sample_weight)

    return Classifier(model)


@dataclasses.dataclass
class TrainResult:
    """What training did: per-epoch history, the best epoch restored, and throughput."""

    history: dict[str, list[float]]
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    seconds: float
    train_examples: int

    @property
    def examples_per_second(self) -> float:
        return self.train_examples * self.epochs_run / max(self.seconds, 1e-9)


def fit(keras_model, train_data, eval_data, *, epochs: int, steps_per_epoch: int, train_examples: int,
        learning_rate: float, weight_decay: float = 0.01, warmup_ratio: float = 0.1,
        early_stopping_patience: int = 2, checkpoint_dir: str,
        progress: Callable[[str], None] | None = None) -> TrainResult:
    """Compile and fit; keep the weights of the epoch with the lowest eval loss.

    Args:
        keras_model: from :func:`classifier`, with its freezing applied.
        train_data, eval_data: from :func:`tfbert.finetune.data.labelled_dataset`.
        epochs: the most epochs to run.
        steps_per_epoch: batches per epoch (for the schedule and progress).
        train_examples: texts per epoch (for the throughput).
        learning_rate, weight_decay, warmup_ratio: AdamW and its schedule.
        early_stopping_patience: stop after this many epochs without a lower eval loss (0: never).
        checkpoint_dir: the best weights are saved here after every improving epoch and
            restored at the end.
        progress: called with one line per epoch and about every 10 s within an epoch.
    """
    tf_keras = _tf_keras()
    keras_model.compile(
        optimizer=make_optimizer(learning_rate, epochs * steps_per_epoch, weight_decay=weight_decay,
                                 warmup_ratio=warmup_ratio),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    best_path = os.path.join(checkpoint_dir, "best")
    callbacks = [tf_keras.callbacks.ModelCheckpoint(best_path, monitor="val_loss", save_best_only=True,
                                                    save_weights_only=True, mode="min"),
                 progress_callback(progress or _stderr, epochs, steps_per_epoch)]
    if early_stopping_patience > 0:
        callbacks.append(tf_keras.callbacks.EarlyStopping(monitor="val_loss", patience=early_stopping_patience,
                                                          mode="min"))
    start = time.monotonic()
    history = keras_model.fit(train_data, validation_data=eval_data, epochs=epochs, callbacks=callbacks, verbose=0)
    seconds = time.monotonic() - start
    losses = history.history["val_loss"]
    best = min(range(len(losses)), key=losses.__getitem__)
    if best != len(losses) - 1:
        keras_model.load_weights(best_path).expect_partial()
    return TrainResult({k: [float(x) for x in v] for k, v in history.history.items()}, best + 1, len(losses),
                       len(losses) < epochs, seconds, train_examples)


def _stderr(line: str) -> None:
    sys.stderr.write(f"[tfbert.finetune] {line}\n")
    sys.stderr.flush()


def progress_callback(write: Callable[[str], None], epochs: int, steps: int, every: float = 10.0):
    """A Keras callback writing one line per epoch, and one about every ``every`` seconds within it."""
    tf_keras = _tf_keras()

    class Progress(tf_keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch, self.start = epoch, time.monotonic()
            self.last = self.start

        def on_train_batch_end(self, batch, logs=None):
            now = time.monotonic()
            if now - self.last < every:
                return
            self.last = now
            rate = (batch + 1) / (now - self.start)
            eta = (steps - batch - 1) / rate if rate > 0 else math.inf
            loss = (logs or {}).get("loss", math.nan)
            write(f"epoch {self.epoch + 1}/{epochs} step {batch + 1}/{steps} loss {loss:.4f} "
                  f"({rate:.1f} steps/s, epoch ETA {eta:.0f}s)")

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            write(f"epoch {epoch + 1}/{epochs}: loss {logs.get('loss', math.nan):.4f} "
                  f"accuracy {logs.get('accuracy', math.nan):.4f}, eval loss {logs.get('val_loss', math.nan):.4f} "
                  f"eval accuracy {logs.get('val_accuracy', math.nan):.4f} ({time.monotonic() - self.start:.1f}s)")

    return Progress()

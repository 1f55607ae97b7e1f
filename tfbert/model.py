"""Stage 4 — model: build the Hugging Face TF BERT class for a task and fill it from a checkpoint.

tfbert owns the checkpoint → Keras variable mapping (see :mod:`tfbert.checkpoint.names`)
rather than calling ``from_pretrained``, so loading works across transformers 4.44-4.57
(4.55+ cannot load safetensors into TF classes itself) and reads one tensor at a time.
Where transformers has no TF classes (5.x, or not installed) it builds tfbert's own Keras BERT
(:mod:`tfbert.keras_bert`) instead.
"""

from __future__ import annotations

import logging
import os
import sys

import numpy as np

from tfbert.checkpoint.names import canonical_from_keras, foreign_head, head_tensors
from tfbert.checkpoint.pooling import CONFIG_FIELD, check_pooling, checkpoint_pooling
from tfbert.checkpoint.sources import WeightSource
from tfbert.diagnose import diagnose
from tfbert.errors import ConfigMismatchError
from tfbert.report import WARN
from tfbert.tf import import_tensorflow

log = logging.getLogger("tfbert")
_CHUNK_BYTES = 4 * 2**20

TASK_CLASSES = {
    "embed": "TFBertModel",
    "classify": "TFBertForSequenceClassification",
    "fill_mask": "TFBertForMaskedLM",
    "token_classify": "TFBertForTokenClassification",
    "question_answering": "TFBertForQuestionAnswering",
}


def bert_config(config: dict):
    """A ``transformers.BertConfig`` from a config dict (label maps keyed by int)."""
    from transformers.models.bert.configuration_bert import BertConfig

    config = dict(config)
    if isinstance(config.get("id2label"), dict):
        config["id2label"] = {int(k): v for k, v in config["id2label"].items()}
        config["num_labels"] = len(config["id2label"])
    return BertConfig(**config)


def hf_tf_bert():
    """Hugging Face's TF BERT module, or None where it is missing (transformers 5, or no transformers)."""
    try:
        from transformers.models.bert import modeling_tf_bert
    except ImportError:
        return None
    return modeling_tf_bert


def build_model(config: dict, task: str = "embed", *, initialize: bool = True):
    """A Keras BERT for ``task`` with all variables created (no forward pass).

    Hugging Face's TF class (:data:`TASK_CLASSES`) where transformers 4.x has it, else tfbert's
    own Keras BERT (:mod:`tfbert.keras_bert`: the same names, outputs and attributes).

    With ``initialize=False`` the kernels and embeddings start as zeros instead of random
    values — about 0.5 s faster for MiniLM — for a caller that overwrites them at once;
    :func:`initialize_fresh` gives any left over their proper random start.
    """
    import_tensorflow()
    import tf_keras

    modeling_tf_bert = hf_tf_bert()
    if modeling_tf_bert is None:
        from tfbert import keras_bert

        log.info("transformers has no TF BERT here: building tfbert's Keras BERT")
        return keras_bert.build(config, task, initializer=None if initialize else tf_keras.initializers.Zeros())
    cls = getattr(modeling_tf_bert, TASK_CLASSES[task])
    original = modeling_tf_bert.get_initializer
    if not initialize:
        modeling_tf_bert.get_initializer = lambda initializer_range=0.02: tf_keras.initializers.Zeros()
    # transformers 4.x logs "TensorFlow and JAX classes are deprecated ..." for every TF model it
    # builds; tfbert chose these classes knowingly (and has its own where they are gone), so a
    # user of tfbert is not told to migrate. Its other warnings still show.
    hf_logger = logging.getLogger("transformers.modeling_tf_utils")
    level = hf_logger.level
    hf_logger.setLevel(logging.ERROR)
    try:
        model = cls(bert_config(config))
        model.build_in_name_scope()
    finally:
        modeling_tf_bert.get_initializer = original
        hf_logger.setLevel(level)
    return model


def initialize_fresh(model, names: list[str]) -> None:
    """Give the variables named (canonical names) the random start HF would have given them."""
    tf = import_tensorflow()
    stddev = model.config.initializer_range
    for variable in model.weights:
        name, _ = canonical_from_keras(variable.name)
        # Only kernels and embedding tables use the random initializer; biases and LayerNorm
        # parameters were created with their usual zeros / ones.
        if name in names and name.endswith(".weight") and "LayerNorm" not in name:
            variable.assign(tf.random.truncated_normal(variable.shape, stddev=stddev, dtype=variable.dtype))


def assign_weights(model, source: WeightSource, skip: tuple[str, ...] = ()) -> list[str]:
    """Copy every checkpoint tensor into its Keras variable; returns the variables left as initialised.

    Variables whose canonical name starts with a prefix in ``skip`` are left as initialised too.

    Tensors are read, transposed and assigned one at a time, and the checkpoint's pages are
    released after each, so peak memory stays near the model's own size.
    """
    fresh = []
    for variable in model.weights:
        name, transpose = canonical_from_keras(variable.name)
        if name not in source.tensors or name.startswith(skip):
            fresh.append(name)
            continue
        array = source.read(name)
        if transpose:
            array = array.T
        if tuple(array.shape) != tuple(variable.shape):
            raise ConfigMismatchError(
                "weight shape disagrees with the model built from the config",
                where=f"{source.files.root}: {name}", expected=list(variable.shape),
                actual=list(array.shape), fix="use the config.json that belongs to these weights")
        dtype = variable.dtype.as_numpy_dtype
        # Large tables go in slices of rows, so the transient copies stay a few MiB.
        rows = max(1, _CHUNK_BYTES // max(1, array[0].nbytes)) if array.ndim > 1 else len(array)
        if rows >= len(array):
            variable.assign(array.astype(dtype, copy=False))
        else:
            tf = import_tensorflow()
            for start in range(0, len(array), rows):
                stop = min(start + rows, len(array))
                # The raw op writes in place; ``variable[a:b].assign`` reads the whole variable
                # first, which makes TensorFlow copy the table (copy-on-write).
                tf.raw_ops.ResourceStridedSliceAssign(
                    ref=variable.handle, begin=[start] + [0] * (array.ndim - 1),
                    end=[stop, *array.shape[1:]], strides=[1] * array.ndim,
                    value=np.ascontiguousarray(array[start:stop], dtype=dtype))
                source.release(name)
        source.release(name)
    return fresh


def load(model: str | os.PathLike | None = None, task: str = "embed", *, batch_size: int = 32,
         seq_length: int | None = None, dtype: str = "float32", allow_pickle: bool = False,
         scan_values: bool = True, check_memory: bool = True, require_head: bool = False,
         labels: list[str] | None = None, pooling: str | None = None):
    """Diagnose, then build and fill the Hugging Face TF model for ``task``.

    Args:
        model: a Hugging Face checkpoint directory (model.safetensors, sharded safetensors,
            tf_model.h5, or pytorch_model.bin with ``allow_pickle``), an original Google BERT TF1
            checkpoint directory or prefix, or None for the embedded all-MiniLM-L6-v2.
        task: ``embed`` (TFBertModel), ``classify`` (TFBertForSequenceClassification),
            ``fill_mask`` (TFBertForMaskedLM), ``token_classify`` (TFBertForTokenClassification,
            one label per token) or ``question_answering`` (TFBertForQuestionAnswering).
        batch_size, seq_length, dtype: the run you plan, for the memory pre-flight (a
            seq_length is also checked against the model's position table).
        allow_pickle: read pytorch_model.bin with a weights-only unpickler (never by default).
        scan_values: scan the weights for NaN/Inf and flipped bits before loading.
        check_memory: refuse a run that would not fit in memory.
        require_head: refuse a checkpoint without the task's head (for inference and export;
            fine-tuning leaves it False and starts the head from random values).
        labels: classify and token_classify: the class (tag) names of the model to build
            (fine-tuning on new labels); the checkpoint's classifier is kept only when its
            labels are the same.

    Returns:
        The Keras model, with its ``config`` the checkpoint's.

    Raises:
        TfbertError: the first problem the diagnosis found, as its typed subclass.

    Example:
        >>> model = load()  # the embedded MiniLM
        >>> model.config.hidden_size
        384
    """
    diagnosis = diagnose(model, task, batch_size=batch_size, seq_length=seq_length, dtype=dtype,
                         scan_values=scan_values, allow_pickle=allow_pickle, memory=check_memory,
                         environment=True, tf_loaded="tensorflow" in sys.modules, require_head=require_head)
    diagnosis.raise_for_errors()
    for finding in diagnosis.findings:
        if finding.status == WARN:
            log.warning("%s: %s (fix: %s)", finding.check, finding.message, finding.fix)
    config, skip = diagnosis.config, ()
    if foreign_head(config, task):
        skip = head_tensors(task)
    if labels is not None and task in ("classify", "token_classify"):
        if label_names(config) != list(labels):
            skip = head_tensors(task)
        config = {k: v for k, v in config.items() if k not in ("num_labels", "label2id")}
        config.update(id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)})
    if task == "question_answering":  # two outputs per token (start, end), whatever labels the base had
        config = {k: v for k, v in config.items() if k not in ("id2label", "label2id")}
        config["num_labels"] = 2
    if task == "classify":
        config = dict(config, **{CONFIG_FIELD: check_pooling(pooling) if pooling is not None
                                 else checkpoint_pooling(diagnosis.files, config)})
    with diagnosis:
        keras_model = build_model(config, task, initialize=False)
        fresh = assign_weights(keras_model, diagnosis.source, skip)
    if fresh:
        initialize_fresh(keras_model, fresh)
        log.info("initialised fresh (not in the checkpoint): %s", ", ".join(fresh))
    return keras_model


def mean_pool(hidden, attention_mask, normalize: bool = True):
    """Mean of the token states over real (mask = 1) tokens, optionally L2-normalised.

    This is sentence-transformers' pooling for all-MiniLM-L6-v2.
    """
    tf = import_tensorflow()
    mask = tf.cast(attention_mask, hidden.dtype)[:, :, None]
    summed = tf.reduce_sum(hidden * mask, axis=1)
    pooled = summed / tf.maximum(tf.reduce_sum(mask, axis=1), 1e-9)
    return tf.math.l2_normalize(pooled, axis=-1) if normalize else pooled


def sentence_pool(hidden, attention_mask, pooling: str):
    """sentence-transformers' pooling of the token states over real (mask = 1) tokens, not normalised.

    ``mean``: their average; ``cls``: the first token's state; ``max``: the per-channel maximum
    (padding set to -1e9 first, as sentence-transformers does).
    """
    tf = import_tensorflow()
    if pooling == "mean":
        return mean_pool(hidden, attention_mask, normalize=False)
    if pooling == "cls":
        return hidden[:, 0]
    mask = tf.cast(attention_mask, hidden.dtype)[:, :, None]
    return tf.reduce_max(hidden * mask + (mask - 1) * tf.cast(1e9, hidden.dtype), axis=1)


def classifier_logits(model, inputs, training: bool = False):
    """Logits of a ``TFBertForSequenceClassification`` with the pooling in its config.

    ``pooler`` (also when ``classifier_pooling`` is absent) is Hugging Face's own forward; the
    other poolings feed the sentence-transformers pooled token states to the same dropout and
    ``classifier`` layer, so the head's weights keep Hugging Face's names.
    """
    kwargs = {k: inputs[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in inputs}
    pooling = getattr(model.config, CONFIG_FIELD, "pooler")
    if pooling == "pooler":
        return model(**kwargs, training=training).logits
    hidden = model.bert(**kwargs, training=training).last_hidden_state
    pooled = sentence_pool(hidden, inputs["attention_mask"], pooling)
    return model.classifier(model.dropout(pooled, training=training))


def task_outputs(model, task: str, *, pooling: str = "mean", top_k: int = 5):
    """A function ``inputs dict -> outputs dict`` of numeric tensors for ``task``.

    Outputs:
        embed: ``sentence_embedding`` [batch, hidden] (mean or CLS pooled, L2-normalised) and
            ``token_embeddings`` [batch, seq, hidden].
        classify: ``logits`` and ``probabilities`` [batch, labels], ``label_ids`` [batch]; the
            head reads the pooling of the model's config (:func:`classifier_logits`), not ``pooling``.
        fill_mask: ``top_k_ids`` and ``top_k_probabilities`` [batch, seq, k] for every position.
        token_classify: ``logits`` and ``probabilities`` [batch, seq, labels], ``label_ids``
            [batch, seq], one row per token (special tokens and padding included).
        question_answering: ``start_logits`` and ``end_logits`` [batch, seq] (the span search
            is :mod:`tfbert.tasks.question_answering`).

    The same function backs the Keras backends, the SavedModel signatures and the TFLite
    model, so every path computes the same thing.
    """
    tf = import_tensorflow()
    if pooling not in ("mean", "cls"):
        raise ValueError(f"pooling must be 'mean' or 'cls', not {pooling!r}")

    def run(inputs):
        if task == "classify":
            logits = classifier_logits(model, inputs)
            return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1),
                    "label_ids": tf.argmax(logits, axis=-1, output_type=tf.int32)}
        kwargs = {k: inputs[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in inputs}
        out = model(**kwargs, training=False)
        if task == "token_classify":
            return {"logits": out.logits, "probabilities": tf.nn.softmax(out.logits, axis=-1),
                    "label_ids": tf.argmax(out.logits, axis=-1, output_type=tf.int32)}
        if task == "question_answering":
            return {"start_logits": out.start_logits, "end_logits": out.end_logits}
        if task == "embed":
            hidden = out.last_hidden_state
            if pooling == "mean":
                sentence = mean_pool(hidden, inputs["attention_mask"])
            else:
                sentence = tf.math.l2_normalize(hidden[:, 0], axis=-1)
            return {"sentence_embedding": sentence, "token_embeddings": hidden}
        probs = tf.nn.softmax(out.logits, axis=-1)
        top = tf.math.top_k(probs, k=top_k)
        return {"top_k_ids": top.indices, "top_k_probabilities": top.values}

    return run


def label_names(config: dict) -> list[str]:
    """Class names in id order, from ``id2label`` (``LABEL_<i>`` when absent)."""
    from tfbert.checkpoint.names import num_labels

    id2label = {int(k): v for k, v in (config.get("id2label") or {}).items()}
    return [id2label.get(i, f"LABEL_{i}") for i in range(num_labels(config))]

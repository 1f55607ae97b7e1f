"""Writing a checkpoint directory from a Keras model: the inverse of the loader.

The weights go to ``model.safetensors`` under the canonical (Hugging Face PyTorch) names and
layout of :mod:`tfbert.checkpoint.names`, so ``tfbert.load``, ``doctor`` and Hugging Face's
own ``from_pretrained`` read the directory as it is.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

from tfbert.checkpoint.manifest import write_manifest
from tfbert.checkpoint.names import canonical_from_keras
from tfbert.checkpoint.pooling import CONFIG_FIELD

# Tokenizer files copied from the source checkpoint when it has them.
TOKENIZER_FILES = ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json")
ARCHITECTURES = {"embed": "BertModel", "classify": "BertForSequenceClassification",
                 "fill_mask": "BertForMaskedLM", "token_classify": "BertForTokenClassification",
                 "question_answering": "BertForQuestionAnswering"}


def state_dict(model) -> dict[str, np.ndarray]:
    """The model's weights under canonical names, in PyTorch layout (dense weights ``[out, in]``)."""
    out = {}
    for variable in model.weights:
        name, transpose = canonical_from_keras(variable.name)
        array = variable.numpy().astype(np.float32, copy=False)
        out[name] = np.ascontiguousarray(array.T if transpose else array)
    return out


def write_checkpoint(model, directory: str | os.PathLike, *, task: str, labels: list[str] | None = None,
                     config: dict | None = None, tokenizer_dir: str | os.PathLike | None = None,
                     manifest: bool = True) -> str:
    """Write ``model`` as a Hugging Face style checkpoint directory; returns its path.

    Args:
        model: a Hugging Face TF BERT model (``TFBertModel`` / ``TFBertFor*``).
        directory: where to write; created if missing. Callers publishing a result write to a
            temporary sibling and rename it once verified.
        task: ``embed``, ``classify`` or ``fill_mask`` (sets ``architectures`` in config.json).
        labels: class names in id order, saved as ``id2label`` / ``label2id`` (classify).
            A classifier's pooling (the model config's ``classifier_pooling``, else ``pooler``)
            is saved under that name. Hugging Face's ``from_pretrained`` reads the directory,
            but its ``BertForSequenceClassification`` always runs the pooler: with ``mean``,
            ``cls`` or ``max`` pooling only tfbert (load, predict, the exports) reproduces
            the logits.
        config: the config to save (e.g. the base checkpoint's, which keeps its own fields);
            default: the model's full ``config.to_dict()``.
        tokenizer_dir: a directory whose vocab.txt and tokenizer files are copied alongside.
        manifest: also write ``SHA256SUMS`` over every file.

    Example:
        >>> write_checkpoint(model, "out/clf", task="classify", labels=["neg", "pos"],
        ...                  tokenizer_dir="base")  # doctest: +SKIP
    """
    from safetensors.numpy import save_file

    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    config = dict(config) if config is not None else model.config.to_dict()
    config["architectures"] = [ARCHITECTURES[task]]
    if task == "classify":
        config[CONFIG_FIELD] = getattr(model.config, CONFIG_FIELD, "pooler")
    if labels is not None:
        config["id2label"] = {str(i): name for i, name in enumerate(labels)}
        config["label2id"] = {name: i for i, name in enumerate(labels)}
        config.pop("num_labels", None)
    with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, ensure_ascii=False, sort_keys=True)
    save_file(state_dict(model), os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    if tokenizer_dir is not None:
        for name in TOKENIZER_FILES:
            source = os.path.join(os.fspath(tokenizer_dir), name)
            if os.path.isfile(source):
                shutil.copyfile(source, os.path.join(directory, name))
    if manifest:
        write_manifest(directory)
    return directory

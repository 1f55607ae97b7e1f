"""Which sentence pooling a checkpoint's classifier head reads: the one the encoder was trained for.

A sentence-transformers checkpoint says how its sentences are pooled: ``modules.json`` names a
``Pooling`` module whose ``config.json`` sets one ``pooling_mode_*`` (all-MiniLM-L6-v2: mean).
A plain Hugging Face BERT has the pooler ([CLS] → dense → tanh) that ``BertForSequenceClassification``
uses. A classifier tfbert saved records its pooling in config.json under ``classifier_pooling``
(the field Hugging Face's ModernBERT config uses for the same choice), which wins over both.
"""

from __future__ import annotations

import json
import os

from tfbert.checkpoint.files import CheckpointFiles
from tfbert.errors import BadInputError, ConfigMismatchError

POOLINGS = ("mean", "cls", "max", "pooler")
CONFIG_FIELD = "classifier_pooling"
MODULES_FILE = "modules.json"
# sentence-transformers' pooling_mode_<key> flags (and its single-string pooling_mode) → tfbert's name.
_ST_MODES = {"mean_tokens": "mean", "cls_token": "cls", "max_tokens": "max", "mean": "mean", "cls": "cls",
             "max": "max"}


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigMismatchError("unreadable sentence-transformers file", where=path, actual=type(e).__name__,
                                  fix="restore the file from the checkpoint's source, or pass --pooling") from e


def sentence_transformers_pooling(root: str | os.PathLike) -> str | None:
    """The pooling a sentence-transformers layout at ``root`` declares (None when it has none).

    Raises:
        ConfigMismatchError: an unreadable file, or a pooling mode tfbert does not build
            (``mean_sqrt_len_tokens``, ``weightedmean``, ``lasttoken``, or several at once).

    Example:
        >>> from tfbert.checkpoint import default_model_path
        >>> sentence_transformers_pooling(default_model_path())
        'mean'
    """
    modules_path = os.path.join(os.fspath(root), MODULES_FILE)
    if not os.path.isfile(modules_path):
        return None
    modules = _read_json(modules_path)
    pooling = [m for m in modules if isinstance(m, dict) and str(m.get("type", "")).endswith(".Pooling")] \
        if isinstance(modules, list) else []
    if not pooling:
        return None
    config_path = os.path.join(os.fspath(root), str(pooling[0].get("path", "")), "config.json")
    config = _read_json(config_path)
    config = config if isinstance(config, dict) else {}
    if isinstance(config.get("pooling_mode"), str):  # the single-string form newer versions accept
        modes = [config["pooling_mode"]]
    else:
        modes = [key.removeprefix("pooling_mode_") for key, on in config.items()
                 if key.startswith("pooling_mode_") and on is True]
    if len(modes) != 1 or modes[0] not in _ST_MODES:
        raise ConfigMismatchError("sentence pooling mode not supported by tfbert's classifier", where=config_path,
                                  expected="exactly one of mean_tokens, cls_token, max_tokens", actual=modes,
                                  fix="pass --pooling=mean|cls|max|pooler to choose one")
    return _ST_MODES[modes[0]]


def checkpoint_pooling(files: CheckpointFiles, config: dict | None = None) -> str:
    """The pooling a classifier on this checkpoint should use.

    ``config``'s ``classifier_pooling`` (a classifier tfbert saved); ``pooler`` for a Hugging Face
    sequence classifier without it (``architectures`` ``*ForSequenceClassification``: its head was
    trained on the pooler, whatever sentence-transformers files sit beside it); else the
    sentence-transformers pooling; else ``pooler`` (Hugging Face BERT).

    Raises:
        ConfigMismatchError: an unknown ``classifier_pooling`` value, or an unsupported
            sentence-transformers pooling (see :func:`sentence_transformers_pooling`).

    Example:
        >>> from tfbert.checkpoint import find_checkpoint
        >>> checkpoint_pooling(find_checkpoint())  # the embedded MiniLM: its 1_Pooling says mean
        'mean'
    """
    return pooling_origin(files, config)[0]


def pooling_origin(files: CheckpointFiles, config: dict | None = None) -> tuple[str, str]:
    """:func:`checkpoint_pooling`'s answer and where it comes from, in words (for the doctor).

    Example:
        >>> from tfbert.checkpoint import find_checkpoint
        >>> pooling_origin(find_checkpoint())
        ('mean', "sentence-transformers' modules.json")
    """
    recorded = (config or {}).get(CONFIG_FIELD)
    if recorded is not None:
        if recorded not in POOLINGS:
            raise ConfigMismatchError("unknown classifier pooling", where=f"{files.config}: {CONFIG_FIELD}",
                                      expected=" | ".join(POOLINGS), actual=recorded,
                                      fix="set it to the pooling the classifier was trained with")
        return recorded, f"config.json {CONFIG_FIELD}"
    if any(str(name).endswith("ForSequenceClassification") for name in (config or {}).get("architectures") or ()):
        return "pooler", "architectures: a Hugging Face sequence classifier, trained on the pooler"
    declared = sentence_transformers_pooling(files.root)
    if declared is not None:
        return declared, f"sentence-transformers' {MODULES_FILE}"
    return "pooler", "Hugging Face BERT's default"


def check_pooling(pooling: str, where: str = "--pooling") -> str:
    """``pooling`` if tfbert builds it.

    Raises:
        BadInputError: any other value, named at ``where``.
    """
    if pooling not in POOLINGS:
        raise BadInputError("unknown pooling", where=where, expected=" | ".join(POOLINGS), actual=pooling,
                            fix="e.g. --pooling=mean")
    return pooling

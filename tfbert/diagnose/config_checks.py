"""Config and vocab checks: everything that can be known from config.json and vocab.txt."""

from __future__ import annotations

import json
import os

from tfbert.checkpoint.files import CheckpointFiles
from tfbert.errors import CheckpointNotFoundError, ConfigMismatchError, CorruptCheckpointError
from tfbert.report import ERROR, INFO, OK, WARN, Finding

REQUIRED_INT_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                       "intermediate_size", "max_position_embeddings")
# The activations the Hugging Face TF BERT accepts (transformers.activations_tf.ACT2FN).
KNOWN_ACTIVATIONS = ("gelu", "gelu_10", "gelu_fast", "gelu_new", "glu", "mish", "quick_gelu",
                     "relu", "sigmoid", "silu", "swish", "tanh")
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _error(check: str, error: Exception) -> Finding:
    return Finding(check, ERROR, error.render(with_fix=False), error.fix or "", error=error)


def read_config(files: CheckpointFiles) -> dict:
    """The checkpoint's config as a dict.

    Raises:
        CheckpointNotFoundError: no config.json / bert_config.json.
        ConfigMismatchError: the file is not a JSON object.
    """
    if files.config is None:
        raise CheckpointNotFoundError(
            "config.json is missing", where=files.root,
            fix="copy the config.json that was published with these weights into the directory")
    try:
        with open(files.config, encoding="utf-8") as f:
            config = json.load(f)
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigMismatchError(f"not valid JSON ({e})", where=files.config,
                                  fix="restore config.json from the original model") from None
    return config


def check_config(config: dict, path: str) -> list[Finding]:
    """Sanity of the config on its own: positive sizes, head split, activation."""
    findings = []

    def bad(field: str, message: str, expected: object, fix: str) -> None:
        err = ConfigMismatchError(message, where=f"{path}: {field}", expected=expected,
                                  actual=config.get(field), fix=fix)
        findings.append(_error("config", err))

    if config.get("model_type", "bert") != "bert":
        bad("model_type", "not a BERT checkpoint", "bert",
            "tfbert loads BERT checkpoints only; use the model's own transformers class")
    for field in REQUIRED_INT_FIELDS:
        value = config.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            bad(field, "missing or not a positive integer", "a positive integer",
                "restore config.json from the original model")
    if findings:
        return findings
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    if hidden % heads:
        bad("num_attention_heads", f"hidden_size {hidden} is not divisible by it",
            f"a divisor of {hidden}", "restore config.json from the original model")
    act = config.get("hidden_act", "gelu")
    if act not in KNOWN_ACTIVATIONS:
        bad("hidden_act", "unknown activation", "one of " + ", ".join(KNOWN_ACTIVATIONS),
            "set hidden_act to the activation the model was trained with (BERT uses gelu)")
    if not findings:
        findings.append(Finding("config", OK, (
            f"{os.path.basename(path)}: {config['num_hidden_layers']} layers, hidden {hidden}, {heads} heads, "
            f"vocab {config['vocab_size']}, act {act}")))
    return findings


def check_seq_length(config: dict, path: str, seq_length: int) -> list[Finding]:
    """The requested sequence length fits the model's position table."""
    limit = config["max_position_embeddings"]
    if seq_length <= limit:
        return []
    err = ConfigMismatchError(
        "the requested sequence length is longer than the model's position table",
        where=f"{path}: max_position_embeddings", expected=f"<= {limit}", actual=seq_length,
        fix=f"use a sequence length of at most {limit}")
    return [_error("config", err)]


# Embedding tables are often padded past the vocab to a multiple of 8-128 rows for speed (e.g.
# 30,522 tokens in 30,528 rows); a larger gap means tokens are missing.
PADDING_ROWS = 128


def check_vocab(files: CheckpointFiles, config: dict, task: str) -> list[Finding]:
    """vocab.txt present and whole, as many lines as vocab_size (up to padding), special tokens present."""
    if files.vocab is None:
        err = CheckpointNotFoundError(
            "vocab.txt is missing (needed to tokenize text)", where=files.root,
            fix="copy the vocab.txt published with these weights into the directory")
        return [_error("vocab", err)]
    with open(files.vocab, "rb") as f:
        raw = f.read()
    tokens = raw.decode("utf-8", errors="replace").splitlines()
    findings = []
    vocab_size = config.get("vocab_size")
    if raw and not raw.endswith(b"\n") and isinstance(vocab_size, int) and len(tokens) < vocab_size:
        # A vocab written by a tokenizer ends with a newline; one that stops mid-line short of
        # the table was cut off (an interrupted copy or download), and its last token is a fragment.
        err = CorruptCheckpointError(
            "vocab.txt ends mid-line: the file looks truncated", where=f"{files.vocab}: line {len(tokens)}",
            expected=f"{vocab_size} lines ending in a newline (vocab_size in {files.config})",
            actual=f"{len(tokens)} lines, the last {tokens[-1][:20]!r} without a newline",
            fix="copy vocab.txt again from the source of these weights")
        findings.append(_error("vocab", err))
    if isinstance(vocab_size, int) and len(tokens) > vocab_size:
        err = ConfigMismatchError(
            "vocab.txt has more tokens than the embedding table has rows (ids would overflow)",
            where=f"{files.vocab} vs {files.config}: vocab_size", expected=f"<= {vocab_size} lines",
            actual=f"{len(tokens)} lines", fix="use the vocab.txt that belongs to these weights")
        findings.append(_error("vocab", err))
    present = set(tokens)
    needed = SPECIAL_TOKENS if task == "fill_mask" else SPECIAL_TOKENS[:4]
    if missing := [t for t in needed if t not in present]:
        err = ConfigMismatchError(
            "special tokens missing from the vocab", where=files.vocab, expected=" ".join(needed),
            actual="missing " + " ".join(missing), fix="use the vocab.txt that belongs to these weights")
        findings.append(_error("vocab", err))
    if findings:
        return findings
    if isinstance(vocab_size, int) and len(tokens) < vocab_size:
        short = vocab_size - len(tokens)
        if short < PADDING_ROWS:
            return [Finding("vocab", INFO, f"vocab.txt: {len(tokens)} tokens for {vocab_size} "
                            "embedding rows (the extra rows are padding, never used)")]
        return [Finding("vocab", WARN, f"vocab.txt has {len(tokens):,} tokens for {vocab_size:,} embedding rows: "
                        f"{short:,} trained tokens are missing, so text they cover is split into other pieces "
                        "or [UNK], unlike in training",
                        f"use the vocab.txt published with these weights ({vocab_size:,} lines)")]
    return [Finding("vocab", OK, f"vocab.txt: {len(tokens)} tokens, special tokens present")]


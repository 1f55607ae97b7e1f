"""Weight checks: shapes against the config, integrity (checksums, non-finite and implausible values)."""

from __future__ import annotations

import os
import re

import numpy as np

from tfbert.checkpoint.manifest import sha256_file, verify_manifest
from tfbert.checkpoint.names import IGNORED, expected_tensors, foreign_head, head_tensors
from tfbert.checkpoint.sources import WeightSource
from tfbert.diagnose.config_checks import _error
from tfbert.errors import CheckpointNotFoundError, ConfigMismatchError, CorruptCheckpointError
from tfbert.report import INFO, OK, WARN, Finding

# Which config field a tensor's dimension comes from, to name the field in the error.
_FIELD_OF = [
    (re.compile(r"word_embeddings"), 0, "vocab_size"),
    (re.compile(r"position_embeddings"), 0, "max_position_embeddings"),
    (re.compile(r"token_type_embeddings"), 0, "type_vocab_size"),
    (re.compile(r"intermediate\.dense\.(weight|bias)"), 0, "intermediate_size"),
    (re.compile(r"layer\.\d+\.output\.dense\.weight$"), 1, "intermediate_size"),
    (re.compile(r"^classifier\."), 0, "id2label / num_labels"),
    (re.compile(r"cls\.predictions\.bias"), 0, "vocab_size"),
]
# A float tensor whose largest magnitude is this many times its median magnitude has
# almost certainly been damaged (a flipped exponent bit): real BERT weights stay under ~300x.
IMPLAUSIBLE_RATIO = 1e4
IMPLAUSIBLE_ABS = 1e4
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_REFETCH = "the weights are damaged: download or copy the checkpoint again"


def _first_few(items: list[str], n: int, sep: str = ", ") -> str:
    return sep.join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def _field_for(name: str, expected: tuple, actual: tuple) -> str:
    for pattern, dim, field in _FIELD_OF:
        if pattern.search(name) and len(expected) > dim and len(actual) > dim and expected[dim] != actual[dim]:
            return field
    return "hidden_size"


def check_shapes(source: WeightSource, config: dict, task: str, require_head: bool = False) -> list[Finding]:
    """Every tensor the config implies is present with the implied shape; all problems at once.

    A task head missing from the checkpoint is fine for fine-tuning (it starts random) and an
    error with ``require_head`` (inference and export, where it would produce noise).
    """
    expected = expected_tensors(config, task)
    actual = source.tensors
    config_path = source.files.config
    heads = head_tensors(task)
    foreign = foreign_head(config, task)
    if foreign:  # another task's classifier: not this task's head (names.foreign_head)
        actual = {n: info for n, info in actual.items() if not n.startswith(heads)}
    mismatched = []
    for name, shape in expected.items():
        info = actual.get(name)
        if info is not None and tuple(info.shape) != tuple(shape):
            mismatched.append((name, shape, tuple(info.shape)))
    missing = [n for n in expected if n not in actual and not n.startswith(heads)]
    fresh = [n for n in expected if n not in actual and n.startswith(heads)]
    unexpected = [n for n in actual if n not in expected and not IGNORED.match(n)
                  and not (task not in ("classify", "token_classify") and n.startswith("classifier."))
                  and not (task != "question_answering" and n.startswith("qa_outputs."))
                  and not (task in ("fill_mask", "token_classify", "question_answering")
                           and n.startswith("bert.pooler."))]
    findings = []
    if mismatched:
        fields = {}
        for name, exp, act in mismatched:
            item = f"{name} {list(act)} (config implies {list(exp)})"
            fields.setdefault(_field_for(name, exp, act), []).append(item)
        detail = "; ".join(f"{field}: " + _first_few(items, 3) for field, items in fields.items())
        err = ConfigMismatchError(
            f"{len(mismatched)} weight shapes disagree with the config — {detail}",
            where=f"{config_path}: {', '.join(fields)}",
            fix="use the config.json that was published with these weights (or correct the named fields)")
        findings.append(_error("weights", err))
    layer_ids = {int(m.group(1)) for n in actual if (m := re.match(r"bert\.encoder\.layer\.(\d+)\.", n))}
    if missing:
        if layer_ids and len(layer_ids) != config["num_hidden_layers"]:
            detail = (f"num_hidden_layers: weights have {len(layer_ids)} layers, "
                      f"config says {config['num_hidden_layers']}")
            where = f"{config_path}: num_hidden_layers"
        else:
            detail = _first_few(missing, 5)
            where = source.files.weights[0] if source.files.weights else source.files.root
        err = ConfigMismatchError(
            f"{len(missing)} tensors the config needs are missing from the weights ({detail})", where=where,
            fix="use the config.json that belongs to these weights, or a complete checkpoint")
        findings.append(_error("weights", err))
    if unexpected:
        findings.append(Finding(
            "weights", WARN,
            f"{len(unexpected)} tensors in the checkpoint are not used by the {task} model: "
            + _first_few(unexpected, 5),
            "check that the checkpoint is a BERT and the config matches it"))
    if fresh:
        head = ", ".join(sorted({n.rsplit(".", 1)[0] for n in fresh}))
        if foreign:
            head += f"; its classifier is a {foreign} head"
        if require_head:
            fix = ("use a checkpoint saved with a masked-LM head (BertForMaskedLM or BertForPreTraining)"
                   if task == "fill_mask" else f"fine-tune one first: python -m tfbert.finetune --task={task}")
            err = CheckpointNotFoundError(
                f"the checkpoint has no {task} head ({head}); its outputs would be noise",
                where=source.files.root, fix=fix)
            findings.append(_error("weights", err))
        else:
            findings.append(Finding("weights", INFO, f"the {task} head ({head}) is not in the checkpoint and "
                                    "starts from random values", "fine-tune it before relying on its outputs"))
    if not mismatched and not missing:
        n_params = sum(int(np.prod(s)) for s in expected.values())
        findings.insert(0, Finding("weights", OK, f"{len(expected)} tensors, {n_params:,} parameters, "
                                   "shapes match the config"))
    return findings


def check_integrity(source: WeightSource, *, scan_values: bool = True) -> list[Finding]:
    """Checksums (tfbert manifest, Hugging Face cache blob names) and a scan for damaged values."""
    files = source.files
    findings: list[Finding] = []
    if files.manifest:
        bad = verify_manifest(files.root, files.manifest)
        for rel, expected, actual in bad:
            err = CorruptCheckpointError(
                "sha256 differs from the manifest", where=os.path.join(files.root, rel),
                expected=expected[:16] + "…", actual=actual if actual == "missing" else actual[:16] + "…",
                fix=_REFETCH)
            findings.append(_error("integrity", err))
        if not bad:
            findings.append(Finding("integrity", OK, f"sha256 of every file matches {files.manifest}"))
    for path in files.weights:
        blob = os.path.basename(os.path.realpath(path))
        if os.path.islink(path) and _HEX64.match(blob):
            actual = sha256_file(path)
            if actual != blob:
                err = CorruptCheckpointError(
                    "sha256 differs from the Hugging Face cache blob name", where=path,
                    expected=blob[:16] + "…", actual=actual[:16] + "…", fix=_REFETCH)
                findings.append(_error("integrity", err))
            else:
                findings.append(Finding("integrity", OK, f"{path}: sha256 matches its cache blob name"))
    if scan_values:
        findings.extend(scan_values_of(source))
    return findings


def scan_values_of(source: WeightSource) -> list[Finding]:
    """Flag tensors with NaN/Inf or magnitudes no trained BERT has (the mark of flipped bits)."""
    damaged = []
    for name in source.tensors:
        array = source.read(name)
        if array.dtype.kind != "f" or not array.size:
            continue
        # max and min need no temporary copy (np.abs would double a 90 MB embedding table).
        peak = max(abs(float(array.max())), abs(float(array.min())))
        if not np.isfinite(peak):
            damaged.append(f"{name}: NaN/Inf")
        else:
            # The median of a strided sample is a robust scale estimate and costs little.
            flat = array.reshape(-1)
            sample = np.abs(flat[:: max(1, flat.size // 4096)])
            median = float(np.median(sample)) if flat.size >= 64 else 0.0
            if peak > IMPLAUSIBLE_ABS or (median > 0 and peak / median > IMPLAUSIBLE_RATIO):
                damaged.append(f"{name}: max |x| {peak:.3g}, median {median:.3g}")
        source.release(name)
    if damaged:
        err = CorruptCheckpointError(
            f"damaged values in {len(damaged)} tensor(s)",
            where=source.files.weights[0] if source.files.weights else source.files.root,
            expected=f"finite values under {IMPLAUSIBLE_RATIO:.0e}x the tensor's median magnitude",
            actual=_first_few(damaged, 3, "; "), fix=_REFETCH)
        return [_error("integrity", err)]
    return [Finding("integrity", OK, f"{len(source.tensors)} tensors scanned: all finite, magnitudes plausible")]

"""Stage 2 — diagnose: everything that can go wrong, found before a model is built.

:func:`diagnose` reads only headers, metadata and (optionally) the weight values, never
builds a model, and returns every finding at once. :func:`tfbert.load` runs it first and
raises the first error; ``python -m tfbert.doctor`` prints all of them.
"""

from __future__ import annotations

import dataclasses
import os

from tfbert.checkpoint import (
    CheckpointFiles,
    WeightSource,
    find_checkpoint,
    open_weights,
    pooling_origin,
    sentence_transformers_pooling,
)
from tfbert.checkpoint.pooling import MODULES_FILE
from tfbert.diagnose.artifacts import check_artifact, is_artifact
from tfbert.diagnose.config_checks import _error, check_config, check_seq_length, check_vocab, read_config
from tfbert.diagnose.environment import check_edge_environment, check_environment
from tfbert.diagnose.memory import check_memory
from tfbert.diagnose.weights import check_integrity, check_shapes
from tfbert.errors import ConfigMismatchError, TfbertError
from tfbert.report import ERROR, Finding, Report, worst_exit_code


@dataclasses.dataclass
class Diagnosis:
    """All findings for one checkpoint, plus what was read to make them.

    ``source`` stays open so the loader can read the weights without parsing headers again;
    close it (or use the diagnosis as a context manager) when done.
    """

    files: CheckpointFiles | None
    config: dict | None
    findings: list[Finding]
    source: WeightSource | None = None
    model: str | None = None

    @property
    def exit_code(self) -> int:
        """0 healthy, 1 warnings only, 2 errors."""
        return worst_exit_code(self.findings)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.status == ERROR]

    def raise_for_errors(self) -> None:
        """Raise the typed error of the first error finding (the one a fix should start with)."""
        if self.errors:
            self.close()
            raise self.errors[0].error

    def report(self) -> Report:
        where = self.files.root if self.files else self.model
        summary = {"format": self.files.format} if self.files else {}
        return Report.from_findings(f"tfbert doctor: {where}", self.findings, **summary, exit_code=self.exit_code)

    def close(self) -> None:
        if self.source is not None:
            self.source.close()
            self.source = None

    def __enter__(self) -> Diagnosis:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def diagnose(model: str | os.PathLike | None = None, task: str = "embed", *, batch_size: int = 32,
             seq_length: int | None = None, dtype: str = "float32", training: bool = False,
             trainable_layers: int | None = None, scan_values: bool = True, allow_pickle: bool = False,
             environment: bool = True, memory: bool = True, tf_loaded: bool = False,
             require_head: bool = False) -> Diagnosis:
    """Pre-flight checks for loading ``model`` (default: the embedded MiniLM) for ``task``.

    Args:
        model: checkpoint directory, TF1 checkpoint prefix, an exported SavedModel directory or
            .tflite file, or None for the embedded MiniLM.
        task: ``embed``, ``classify``, ``fill_mask`` or ``question_answering``.
        batch_size, seq_length, dtype, training, trainable_layers: the run the memory check is for
            (seq_length None: the shorter of 128 and the model's limit, not checked against it).
        scan_values: read every tensor once to find NaN/Inf and implausible magnitudes.
        allow_pickle: permit reading ``pytorch_model.bin`` with the weights-only unpickler.
        environment, memory: run those checks.
        tf_loaded: TensorFlow is already imported (its baseline memory is already spent).
        require_head: a task head missing from the checkpoint is an error (inference, export)
            rather than a note (fine-tuning starts it from random values).

    Example:
        >>> with diagnose() as d:
        ...     d.exit_code
        0
    """
    findings: list[Finding] = []
    if environment:
        edge = model is not None and os.fspath(model).endswith(".tflite")
        findings += check_edge_environment() if edge else check_environment()
    if model is not None and is_artifact(os.fspath(model)):
        return Diagnosis(None, None, findings + check_artifact(os.fspath(model)), model=os.fspath(model))
    try:
        files = find_checkpoint(model)
    except TfbertError as e:
        return Diagnosis(None, None, [*findings, _error("files", e)], model=str(model))
    names = ", ".join(os.path.relpath(p, files.root) for p in files.weights) or "sharded"
    findings.append(Finding("files", "ok", f"{files.format}: {names}"))
    config = None
    try:
        config = read_config(files)
    except TfbertError as e:
        findings.append(_error("config", e))
    if config is not None:
        findings += check_config(config, files.config)
    config_ok = config is not None and not any(f.status == ERROR and f.check == "config" for f in findings)
    if config_ok:
        if seq_length is None:
            seq_length = min(128, config["max_position_embeddings"])
        else:
            findings += check_seq_length(config, files.config, seq_length)
    source = None
    try:
        source = open_weights(files, allow_pickle=allow_pickle)
    except TfbertError as e:
        findings.append(_error("weights", e))
    # Shapes before the vocab: when both disagree with the config, the config is the culprit.
    if source is not None and config_ok:
        findings += check_shapes(source, config, task, require_head)
    if config_ok:
        findings += check_vocab(files, config, task)
    if config_ok and task == "classify":
        try:
            pooling, origin = pooling_origin(files, config)
            findings.append(Finding("pooling", "ok", f"the classifier reads {pooling} pooling, set by {origin} "
                                                     "(fine-tuning's --pooling chooses another)"))
        except TfbertError as e:
            findings.append(_error("pooling", e))
    if config_ok and task == "embed":
        findings.append(_embedding_pooling(files))
    if source is not None:
        try:
            findings += check_integrity(source, scan_values=scan_values)
        except TfbertError as e:
            findings.append(_error("integrity", e))
    if memory and config_ok:
        findings += check_memory(config, task, batch_size=batch_size, seq_length=seq_length, dtype=dtype,
                                 training=training, trainable_layers=trainable_layers, tf_loaded=tf_loaded)
    return Diagnosis(files, config, findings, source)


def _embedding_pooling(files: CheckpointFiles) -> Finding:
    """The embed task mean-pools and L2-normalises: an error for a sentence-transformers checkpoint
    that declares another pooling, whose embeddings tfbert would silently compute differently."""
    try:
        declared = sentence_transformers_pooling(files.root)
    except TfbertError as e:
        return _error("pooling", e)
    if declared in (None, "mean"):
        origin = "as its sentence-transformers modules.json declares" if declared else "tfbert's embedding"
        return Finding("pooling", "ok", f"sentence embeddings are the mean of the token states, L2-normalised "
                                        f"({origin})")
    return _error("pooling", ConfigMismatchError(
        "the embed task mean-pools, but this sentence-transformers checkpoint pools otherwise: its embeddings "
        "would not be the model's", where=os.path.join(files.root, MODULES_FILE), expected="mean pooling",
        actual=f"{declared} pooling", fix="use a mean-pooled model for --task=embed, or fine-tune it as a "
                                          f"classifier (its --pooling={declared} is supported there)"))


__all__ = ["Diagnosis", "diagnose"]

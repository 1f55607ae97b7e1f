"""Stage 5 — export: a TF Serving SavedModel and TFLite models, each verified before it is published.

:func:`export_saved_model` writes ``<output_dir>/<name>/<version>/`` (see
:mod:`tfbert.export.layout`): both signatures, vocab and labels in ``assets/``, warmup
requests in ``assets.extra/``, a ``SHA256SUMS`` manifest — and only after the files,
reloaded in a fresh process, reproduce the in-memory model on held-out text.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable

from tfbert.checkpoint.manifest import write_manifest
from tfbert.export import layout, savedmodel, verify
from tfbert.export.samples import EDGE_CASES, read_texts, split_texts

Progress = Callable[[str], None]


@dataclasses.dataclass
class SavedModelExport:
    """What :func:`export_saved_model` published and how it checked out."""

    path: str
    version: int
    signatures: list[str]
    max_abs_diff: dict[str, float]
    size_bytes: int
    seconds: float
    verified_texts: int


def _size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def export_saved_model(model, tokenizer, *, task: str, vocab_file: str, output_dir: str, name: str,
                       version: int | None = None, overwrite: bool = False, max_seq_length: int = 128,
                       top_k: int = 5, texts: list[str] | None = None,
                       progress: Progress = lambda message: None) -> SavedModelExport:
    """Write, verify in a fresh process, and publish a TF Serving SavedModel version.

    Args:
        model: the Keras model (from :func:`tfbert.load`).
        tokenizer: the :class:`tfbert.tokenizer.BertTokenizer` for the checkpoint.
        task: ``embed``, ``classify`` or ``fill_mask``.
        vocab_file: the checkpoint's vocab.txt (copied to ``assets/``).
        output_dir, name, version, overwrite: the version goes to ``output_dir/name/version``;
            version None is the next free integer; an existing version needs ``overwrite``.
        max_seq_length: truncation length of the in-graph tokenizer.
        top_k: fill-mask candidates per position.
        texts: held-out texts to verify with (default: the built-in sample), plus edge cases.
        progress: called with a line of text before each slow step.

    Raises:
        ExportError: verification failed; nothing was published.
        BadInputError: the version exists and ``overwrite`` is False, or a bad name.
    """
    start = time.perf_counter()
    model_dir = os.path.join(output_dir, layout.safe_name(name))
    for stale in layout.remove_stale_temporaries(model_dir):
        progress(f"removed {stale} left by an interrupted export")
    version = layout.resolve_version(model_dir, version, overwrite)
    target = os.path.join(model_dir, str(version))
    module = savedmodel.build_serving_module(model, tokenizer, task, max_seq_length=max_seq_length, top_k=top_k)
    held_out = (texts or split_texts(read_texts())[1])[:24] + EDGE_CASES
    inputs = savedmodel.signature_inputs(tokenizer, held_out, max_seq_length)
    expected = savedmodel.run_signatures(module, inputs)
    labels = list(model.config.id2label[i] for i in sorted(model.config.id2label)) if task == "classify" else None
    with layout.staged_directory(target, overwrite=overwrite) as tmp:
        progress(f"writing SavedModel ({task}) to {target}")
        savedmodel.write_saved_model(module, tmp, vocab_file=vocab_file, labels=labels)
        savedmodel.write_warmup_requests(tmp, name, held_out[:8])
        progress("verifying: reloading the SavedModel in a fresh process")
        actual = verify.run_saved_model_in_fresh_process(tmp, inputs)
        worst = verify.compare_outputs(expected, actual, where=target)
        write_manifest(tmp)
    return SavedModelExport(path=target, version=version, signatures=sorted(expected), max_abs_diff=worst,
                            size_bytes=_size(target), seconds=time.perf_counter() - start,
                            verified_texts=len(held_out))


__all__ = ["SavedModelExport", "export_saved_model"]

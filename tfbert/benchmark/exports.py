"""The SavedModel and .tflite files the benchmark runs: found in a directory, or exported once and cached.

Exports go through :func:`tfbert.export.export_saved_model` / :func:`~tfbert.export.export_tflite`
(each staged in a temporary sibling and renamed only when verified), into a cache directory
keyed by the checkpoint's path, weight files and ``max_length``, so a second run reuses them.
"""

from __future__ import annotations

import gc
import hashlib
import os
from collections.abc import Callable

# Benchmark row -> tfbert.export quantization name.
TFLITE_ROWS = {"tflite-fp32": "none", "tflite-fp16": "fp16", "tflite-dynamic": "dynamic", "tflite-int8": "int8"}


def cache_key(model_root: str, weights: tuple[str, ...], max_length: int) -> str:
    """A directory name that changes when the checkpoint's weights or the sequence length change."""
    digest = hashlib.sha256(os.path.abspath(model_root).encode())
    for path in weights:
        stat = os.stat(path)
        digest.update(f"{os.path.basename(path)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    digest.update(str(max_length).encode())
    name = os.path.basename(os.path.normpath(model_root)) or "model"
    return f"{''.join(c if c.isalnum() or c in '-_.' else '-' for c in name)}-{digest.hexdigest()[:12]}"


def find_exports(directory: str) -> dict[str, str]:
    """Rows whose model file lies under ``directory``: ``savedmodel`` → a version directory
    (``saved_model.pb`` with ``assets/vocab.txt``), ``tflite-*`` → ``model_<quantization>.tflite``."""
    found: dict[str, str] = {}
    by_file = {f"model_{q}.tflite": row for row, q in TFLITE_ROWS.items()}
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if "saved_model.pb" in files and os.path.isfile(os.path.join(root, "assets", "vocab.txt")):
            found.setdefault("savedmodel", root)
        for name in sorted(files):
            if name in by_file:
                found.setdefault(by_file[name], os.path.join(root, name))
    return found


def ensure_exports(rows: list[str], *, model_path: str | None, max_length: int, work_dir: str,
                   exports_dir: str | None = None, num_threads: int = 2,
                   progress: Callable[[str], None] = lambda line: None) -> tuple[dict[str, str], dict[str, str]]:
    """Paths of the exported models ``rows`` need, exporting the missing ones into the cache.

    Args:
        rows: benchmark rows; only ``savedmodel`` and ``tflite-*`` need files.
        model_path: the checkpoint (None: the embedded MiniLM).
        max_length: truncation length of the exports.
        work_dir: the cache; exports land in ``work_dir/<cache_key>/``.
        exports_dir: take files found here (see :func:`find_exports`) before exporting.
        num_threads: LiteRT threads for the export's own verification.
        progress: called with a line before each slow step.

    Returns:
        ``(paths, errors)``: row → model path, and row → one-line reason it could not be exported.
        The int8 export is kept even below the export's accuracy gate: the benchmark reports its
        fidelity instead of refusing it.
    """
    from tfbert.checkpoint import find_checkpoint
    from tfbert.errors import TfbertError

    wanted = [r for r in rows if r == "savedmodel" or r in TFLITE_ROWS]
    paths = find_exports(exports_dir) if exports_dir else {}
    paths = {r: p for r, p in paths.items() if r in wanted}
    for row, path in paths.items():
        progress(f"{row}: using {path}")
    missing = [r for r in wanted if r not in paths]
    errors: dict[str, str] = {}
    if not missing:
        return paths, errors
    files = find_checkpoint(model_path)
    cache = os.path.join(work_dir, cache_key(files.root, files.weights, max_length))
    cached = find_exports(cache) if os.path.isdir(cache) else {}
    for row in list(missing):
        if row in cached:
            paths[row] = cached[row]
            missing.remove(row)
            progress(f"{row}: cached {cached[row]}")
    if not missing:
        return paths, errors

    from tfbert.export import export_saved_model, export_tflite
    from tfbert.model import load
    from tfbert.tokenizer import BertTokenizer

    progress(f"exporting {', '.join(missing)} into {cache} (once; later runs reuse it)")
    model = load(files.root, task="embed", seq_length=max_length, require_head=True)
    tokenizer = BertTokenizer.from_files(files.vocab, files.tokenizer_config)
    for row in missing:
        try:
            if row == "savedmodel":
                result = export_saved_model(model, tokenizer, task="embed", vocab_file=files.vocab,
                                            output_dir=cache, name="model", version=1, overwrite=True,
                                            max_seq_length=max_length, progress=progress)
            else:
                result = export_tflite(model, tokenizer, task="embed", quantization=TFLITE_ROWS[row],
                                       output_dir=os.path.join(cache, row), name="model", version=1,
                                       overwrite=True, max_seq_length=max_length, allow_accuracy_drop=True,
                                       num_threads=num_threads, speed_vs_fp32=False, progress=progress)
            paths[row] = result.path
        except TfbertError as e:
            errors[row] = f"export failed: {e}"
            progress(f"{row}: {errors[row]}")
    del model
    gc.collect()
    return paths, errors

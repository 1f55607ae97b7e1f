"""Stage 5 — export: a TF Serving SavedModel and TFLite models, each verified before it is published.

:func:`export_saved_model` writes ``<output_dir>/<name>/<version>/`` (see
:mod:`tfbert.export.layout`): both signatures, vocab and labels in ``assets/``, warmup
requests in ``assets.extra/``, a ``SHA256SUMS`` manifest — and only after the files,
reloaded in a fresh process, reproduce the in-memory model on held-out text.
:func:`saved_model_export` does the same while the caller goes on (the CLI converts the
TFLite model while the fresh process loads the SavedModel).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
from collections.abc import Callable, Iterator

import numpy as np

from tfbert.checkpoint.files import CheckpointFiles
from tfbert.checkpoint.manifest import write_manifest
from tfbert.deploy.ops import OpAudit
from tfbert.deploy.warmup import write_warmup_requests
from tfbert.export import layout, savedmodel, verify
from tfbert.export.mediapipe import MediaPipeExport
from tfbert.fidelity import fidelity
from tfbert.model import label_names
from tfbert.samples import EDGE_CASES, read_texts, split_texts

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
    op_audit: OpAudit | None = None  # its ops and the oldest TF Serving that has them
    warmup_requests: int = 0  # warmup records replayed by TensorFlow's C++ loader
    warmup_max_abs_diff: float | None = None


def _size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


class PendingSavedModel:
    """A SavedModel version written to its staging directory and being verified in a fresh process.

    :meth:`finish` waits for the verification; the version is published when the
    :func:`saved_model_export` block ends (or the caller's :func:`tfbert.export.layout.reserve`
    block, when it passed its own ``publication``).
    """

    def __init__(self, run: verify.FreshProcessRun, expected: dict, publication: layout.VersionPublication,
                 subdir: str, texts: int, start: float, progress: Progress) -> None:
        self._run, self._expected, self._publication, self._subdir = run, expected, publication, subdir
        self._texts, self._start, self._progress = texts, start, progress
        self._result: SavedModelExport | None = None

    @property
    def version(self) -> int:
        return self._publication.version

    @property
    def path(self) -> str:
        return self._publication.target(self._subdir)

    def finish(self) -> SavedModelExport:
        """Wait for the fresh-process verification and compare every signature's outputs.

        Raises:
            ExportError: the reloaded SavedModel does not reproduce the in-memory one.
        """
        if self._result is None:
            if self._run.running():
                self._progress("waiting for the SavedModel's fresh-process verification")
            check = self._run.result()
            worst = verify.compare_outputs(self._expected, check.outputs, where=self.path)
            staging = self._publication.staging(self._subdir)
            write_manifest(staging)
            self._result = SavedModelExport(path=self.path, version=self.version, signatures=sorted(self._expected),
                                            max_abs_diff=worst, size_bytes=_size(staging),
                                            seconds=time.perf_counter() - self._start, verified_texts=self._texts,
                                            op_audit=check.audit, warmup_requests=len(check.warmup_outputs),
                                            warmup_max_abs_diff=check.warmup_max_abs_diff)
        return self._result

    def published(self) -> SavedModelExport:
        """The result with the path and version it was published under."""
        return dataclasses.replace(self.finish(), path=self.path, version=self.version)


@contextlib.contextmanager
def saved_model_export(model, tokenizer, *, task: str, vocab_file: str, output_dir: str, name: str,
                       version: int | None = None, overwrite: bool = False, max_seq_length: int = 128,
                       top_k: int = 5, texts: list[str] | None = None, aggregation: str | None = None,
                       publication: layout.VersionPublication | None = None,
                       progress: Progress = lambda message: None,
                       question_answering: dict | None = None) -> Iterator[PendingSavedModel]:
    """Write a TF Serving SavedModel version and verify it in a fresh process while the caller goes on.

    Yields a :class:`PendingSavedModel` as soon as the files are written and the verifying
    process is started, so other work (the TFLite export) overlaps the ~6 s that process
    takes to import TensorFlow and load the files. The version is published (renamed into
    place) when the block ends, after :meth:`PendingSavedModel.finish` — called then if the
    block did not. If the block raises, the process is stopped and nothing is published.
    With ``publication`` (a :func:`tfbert.export.layout.reserve` block of the caller's), the
    version is that one's and is published when the caller's block ends, with the others.

    Args: as :func:`export_saved_model`, and ``publication``.
        question_answering: keyword arguments of the question-answering serving module (doc_stride,
            max_answer_length, null_threshold; :func:`tfbert.export.savedmodel.build_question_answering_module`).

    Example:
        >>> with layout.reserve("exported", ["minilm", "minilm-tflite"]) as publication:
        ...     with saved_model_export(model, tokenizer, task="embed", vocab_file=vocab, output_dir="exported",
        ...                             name="minilm", publication=publication) as pending:
        ...         lite = export_tflite(model, tokenizer, task="embed", quantization="int8",
        ...                              output_dir="exported", name="minilm", publication=publication)
        ...         saved = pending.finish()
        >>> saved = pending.published()
    """
    start = time.perf_counter()
    subdir = layout.safe_name(name)
    with contextlib.ExitStack() as stack:
        if publication is None:
            publication = stack.enter_context(layout.reserve(output_dir, [subdir], version, overwrite, progress))
        target = publication.target(subdir)
        held_out = (texts or split_texts(read_texts())[1])[:24] + EDGE_CASES
        progress(f"tracing the serving signatures ({task}) and checking them against the Keras model on "
                 f"{len(held_out)} held-out texts")
        module = savedmodel.build_serving_module(model, tokenizer, task, max_seq_length=max_seq_length, top_k=top_k,
                                                 aggregation=aggregation, question_answering=question_answering)
        inputs = savedmodel.signature_inputs(tokenizer, held_out, max_seq_length, task)
        expected = savedmodel.run_signatures(module, inputs)
        _check_against_keras(model, task, top_k, inputs[savedmodel.TOKENIZED], expected[savedmodel.TOKENIZED],
                             where=target)
        labels = label_names(model.config.to_dict()) if task in ("classify", "token_classify") else None
        tmp = publication.staging(subdir)
        progress(f"writing the SavedModel for {target}")
        savedmodel.write_saved_model(module, tmp, vocab_file=vocab_file, labels=labels,
                                     aggregation=getattr(module, "aggregation", None))
        write_warmup_requests(tmp, name, held_out[:8] if task != "question_answering"
                              else {k: list(v[:8]) for k, v in inputs[savedmodel.SERVING_DEFAULT].items()})
        progress("verifying: loading the SavedModel in a fresh process with TF Serving's C++ loader "
                 "(in the background)")
        run = verify.FreshProcessRun(tmp, inputs, module)
        del module
        try:
            pending = PendingSavedModel(run, expected, publication, subdir, len(held_out), start, progress)
            yield pending
            pending.finish()
        finally:
            run.close()


def export_saved_model(model, tokenizer, *, task: str, vocab_file: str, output_dir: str, name: str,
                       version: int | None = None, overwrite: bool = False, max_seq_length: int = 128,
                       top_k: int = 5, texts: list[str] | None = None, aggregation: str | None = None,
                       progress: Progress = lambda message: None) -> SavedModelExport:
    """Write, verify in a fresh process, and publish a TF Serving SavedModel version.

    Args:
        model: the Keras model (from :func:`tfbert.load`).
        tokenizer: the :class:`tfbert.tokenizer.BertTokenizer` for the checkpoint.
        task: ``embed``, ``classify``, ``fill_mask`` or ``token_classify``.
        vocab_file: the checkpoint's vocab.txt (copied to ``assets/``).
        output_dir, name, version, overwrite: the version goes to ``output_dir/name/version``;
            version None is the next free integer; an existing version needs ``overwrite``.
        max_seq_length: truncation length of the in-graph tokenizer.
        top_k: fill-mask candidates per position.
        texts: held-out texts to verify with (default: the built-in sample), plus edge cases.
        aggregation: token_classify: how ``serving_default`` groups tokens into entities,
            ``simple``, ``first`` (default) or ``max`` (:mod:`tfbert.tasks.token_classification`).
        progress: called with a line of text before each slow step.

    Raises:
        ExportError: the serving graph differs from the Keras model, or the files reloaded in
            a fresh process do not reproduce it; nothing was published.
        BadInputError: the version exists and ``overwrite`` is False, another export is
            writing it, or a bad name.
    """
    with saved_model_export(model, tokenizer, task=task, vocab_file=vocab_file, output_dir=output_dir, name=name,
                            version=version, overwrite=overwrite, max_seq_length=max_seq_length, top_k=top_k,
                            texts=texts, aggregation=aggregation, progress=progress) as pending:
        pending.finish()
    return pending.published()


@dataclasses.dataclass
class TFLiteExport:
    """What :func:`export_tflite` published and its report.

    ``speedup_vs_fp32`` and ``fp32_size_bytes`` are None when the fp32 comparison was
    skipped (``speed_vs_fp32=False``); ``text_path`` is the raw-text model, when asked for.
    The paths are those of the published version (known once its publication has ended).
    """

    publication: layout.VersionPublication
    subdir: str
    filename: str
    quantization: str
    size_bytes: int
    fidelity: dict[str, float]
    speedup_vs_fp32: float | None
    fp32_size_bytes: int | None
    layer_errors: list[dict[str, float]]
    seconds: float
    report_files: tuple[str, str]
    text_filename: str | None = None
    mediapipe: MediaPipeExport | None = None  # model_<quantization>_mediapipe.tflite, when written

    @property
    def version(self) -> int:
        return self.publication.version

    @property
    def path(self) -> str:
        return os.path.join(self.publication.target(self.subdir), self.filename)

    @property
    def report_paths(self) -> tuple[str, ...]:
        return tuple(os.path.join(self.publication.target(self.subdir), f) for f in self.report_files)

    @property
    def text_path(self) -> str | None:
        return os.path.join(self.publication.target(self.subdir), self.text_filename) if self.text_filename else None

    @property
    def mediapipe_path(self) -> str | None:
        return os.path.join(os.path.dirname(self.path), self.mediapipe.filename) if self.mediapipe else None


def export_tflite(model, tokenizer, *, task: str, quantization: str, output_dir: str, name: str,
                  version: int | None = None, overwrite: bool = False, max_seq_length: int = 128,
                  calibration_texts: list[str] | None = None, held_out_texts: list[str] | None = None,
                  min_cosine: float = 0.99, min_agreement: float = 0.99, allow_accuracy_drop: bool = False,
                  num_threads: int = 2, text_input: bool = False, speed_vs_fp32: bool = True, mediapipe: bool = True,
                  checkpoint_files: CheckpointFiles | None = None,
                  publication: layout.VersionPublication | None = None,
                  progress: Progress = lambda message: None) -> TFLiteExport:
    """Convert, measure against the float graph on held-out text, gate on accuracy, and publish a .tflite.

    Writes ``<output_dir>/<name>-tflite/<version>/model_<quantization>.tflite`` with
    ``report.json`` / ``report.md`` and a ``SHA256SUMS`` manifest, all staged and renamed
    into place only when the accuracy gate passes (or ``allow_accuracy_drop``). ``version``
    None is the next free one; with ``publication`` (the caller's
    :func:`tfbert.export.layout.reserve` block) the files are staged in it and published with
    the caller's other artifacts when that block ends.

    Fidelity is measured against the float32 TensorFlow graph the .tflite was converted
    from (itself checked against the Keras model); ``speed_vs_fp32`` also converts an fp32
    .tflite, only to time the two side by side. ``text_input`` adds
    ``model_<quantization>_text.tflite``, whose input is ``text`` (string [batch]) tokenized
    inside the model by tensorflow-text's TFLite kernels (:class:`tfbert.litert.LiteRTRunner`
    registers them); it is published only if its outputs equal the
    token-input model's on the held-out texts plus edge cases. ``mediapipe`` adds
    ``model_<quantization>_mediapipe.tflite`` for MediaPipe Tasks (:mod:`tfbert.export.mediapipe`:
    static length ``max_seq_length``, tokenizer and labels in its metadata), gated like the
    main model on the held-out texts fed as MediaPipe feeds them; the report compares
    MediaPipe's tokenizer with tfbert's on them. ``checkpoint_files``' vocab.txt,
    tokenizer_config.json, tokenizer.json and config.json (labels) are copied beside the
    models, so ``python -m tfbert.predict --model=<.tflite>`` tokenizes as the checkpoint did.

    Raises:
        ExportError: the float graph differs from the Keras model, or below the gate
            (sentence cosine ``min_cosine``, or argmax agreement
            ``min_agreement`` for classification), or the raw-text model disagrees with the
            token-input one — nothing is published.
    """
    from tfbert.errors import ExportError
    from tfbert.export import mediapipe as mediapipe_export
    from tfbert.export import tflite
    from tfbert.export.graph import EncoderGraph, model_weights
    from tfbert.litert import LiteRTRunner
    from tfbert.report import Report

    start = time.perf_counter()
    calibration, held_out = split_texts(read_texts())
    calibration = calibration_texts or calibration
    held_out = held_out_texts or held_out

    def batches(texts: list[str], size: int) -> list[dict]:
        # Length-sorted windows, like predict's bucketing, padded to each batch's longest.
        out = []
        for i in range(0, len(texts), size):
            if task == "question_answering":  # question/context pairs, as the model will see them
                questions, contexts = savedmodel.question_context_pairs(texts[i:i + size])
                ids = tokenizer.tokenize_numpy(questions, max_seq_length, contexts)
                # Padded to max_seq_length: logits are per token, so every batch needs the same width.
                out.append({k: np.pad(ids[k], [(0, 0), (0, max_seq_length - ids[k].shape[1])],
                                      constant_values=tokenizer.pad_id if k == "input_ids" else 0)
                            for k in ("input_ids", "attention_mask", "token_type_ids")})
                continue
            ids = tokenizer.tokenize_numpy(texts[i:i + size], max_seq_length)
            out.append({"input_ids": ids["input_ids"], "attention_mask": ids["attention_mask"]})
        return out

    if task == "question_answering" and (text_input or mediapipe):
        text_input = mediapipe = False
        progress("question_answering: the .tflite takes token ids only (no raw-text or MediaPipe model)")

    graph = EncoderGraph(model_weights(model), model.config.to_dict(), task)
    key = verify.MAIN_OUTPUT[task]
    mediapipe = mediapipe and task != "token_classify"  # MediaPipe Tasks has no token classifier
    eval_batches = batches(held_out, 32)
    # One float module (one copy of the weights as variables) serves as the reference and for
    # every float conversion; only int8's smoothed weights need a module of their own.
    float_module = graph.module()
    reference = tflite.run_batches(tflite.GraphRunner(float_module), eval_batches, key)
    if quantization == "int8":
        progress(f"calibrating SmoothQuant scales on {len(calibration)} texts")
        graph.smooth = tflite.smoothquant_scales(graph, batches(calibration, 16))
    progress(f"converting {quantization} ({task})")
    converted = tflite.convert(graph.module() if quantization == "int8" else float_module, quantization)
    runner = LiteRTRunner(converted, num_threads)
    progress(f"verifying on {len(held_out)} held-out texts against the float graph")
    candidate = tflite.run_batches(runner, eval_batches, key)
    scores = fidelity(reference, candidate, task)
    # The first batch's rows of the reference: its texts, or its real tokens (tflite.main_rows).
    head = eval_batches[0]
    first = int(head["attention_mask"].sum()) if task == "token_classify" else len(head["input_ids"])
    scores["fp32_vs_keras_max_abs_diff"] = _check_against_keras(model, task, 5, eval_batches[0],
                                                                {key: reference[:first]}, where=f"{name} fp32 graph")
    text_model = None
    if text_input:
        progress(f"converting {quantization} with raw-text input")
        text_model = tflite.convert(graph.module(tokenizer=tokenizer, max_seq_length=max_seq_length), quantization,
                                    text_input=True)
        progress("verifying the raw-text model against the token-input model")
        scores["text_vs_tokens_max_abs_diff"] = _text_model_difference(
            LiteRTRunner(text_model, num_threads), runner, held_out + EDGE_CASES,
            tokenizer, max_seq_length, key, where=f"{name} {quantization} text")
    fp32_size = speedup = None
    if quantization == "none":
        fp32_size, speedup = len(converted), 1.0
    elif speed_vs_fp32:
        progress("converting fp32 for the speed comparison")
        fp32 = tflite.convert(float_module, "none")
        fp32_size = len(fp32)
        progress("timing against fp32")
        timings = tflite.time_runners({"fp32": LiteRTRunner(fp32, num_threads), quantization: runner},
                                      eval_batches)
        del fp32
        speedup = timings["fp32"] / timings[quantization]
    layer_errors = tflite.matmul_errors(graph, eval_batches[0]) if quantization in ("int8", "dynamic") else []
    gate_ok = scores["cosine_mean"] >= min_cosine and scores.get("argmax_agreement", 1.0) >= min_agreement
    report = Report(
        f"tfbert TFLite export: {name} ({quantization})",
        ["layer", *tflite.MATMULS], layer_errors,
        {"task": task, "quantization": quantization, "size_mib": len(converted) / 2**20,
         "fp32_size_mib": None if fp32_size is None else fp32_size / 2**20, "reference": "float32 TF graph",
         **scores, "speedup_vs_fp32": speedup,
         "held_out_texts": len(held_out), "calibration_texts": len(calibration) if quantization == "int8" else 0,
         **({"text_model_size_mib": len(text_model) / 2**20} if text_model else {}),
         "accuracy_gate": f"cosine >= {min_cosine}"
         + (f", agreement >= {min_agreement}" if task in ("classify", "token_classify") else ""),
         "gate_passed": gate_ok})
    if not gate_ok and not allow_accuracy_drop:
        worst = (f"cosine {scores['cosine_mean']:.4f}" if scores["cosine_mean"] < min_cosine
                 else f"argmax agreement {scores['argmax_agreement']:.4f}")
        raise ExportError(f"{quantization} model falls below the accuracy gate; nothing was published",
                          where=f"{name} {quantization}", expected=report.summary["accuracy_gate"], actual=worst,
                          fix="use --quantization=dynamic or fp16, more representative --calibration_data, "
                              "or --allow_accuracy_drop to publish anyway")
    subdir = layout.tflite_dir(layout.safe_name(name))
    filename = f"model_{quantization}.tflite"
    text_filename = f"model_{quantization}_text.tflite"
    with contextlib.ExitStack() as stack:
        if publication is None:
            publication = stack.enter_context(layout.reserve(output_dir, [subdir], version, overwrite, progress))
        tmp = publication.staging(subdir)
        lite_mp = mediapipe_export.export(
            graph, tokenizer, task=task, quantization=quantization, seq_length=max_seq_length, name=name,
            version=publication.version, labels=label_names(model.config.to_dict()) if task == "classify" else None,
            held_out=held_out, reference=reference, compare_texts=held_out + EDGE_CASES, min_cosine=min_cosine,
            min_agreement=min_agreement, allow_accuracy_drop=allow_accuracy_drop, num_threads=num_threads,
            progress=progress) if mediapipe else None
        if mediapipe:
            report.summary.update(mediapipe_export.summary(lite_mp))
        for file, content in ((filename, converted), (text_filename, text_model),
                              *([(lite_mp.filename, lite_mp.content)] if lite_mp else [])):
            if content is not None:
                with open(os.path.join(tmp, file), "wb") as f:
                    f.write(content)
        for source, file in _tokenizer_files(checkpoint_files):
            shutil.copyfile(source, os.path.join(tmp, file))
        report.summary["seconds"] = time.perf_counter() - start
        paths = report.write(os.path.join(tmp, "report"))
        write_manifest(tmp)
    return TFLiteExport(publication, subdir, filename, quantization, len(converted), scores, speedup, fp32_size,
                        layer_errors, time.perf_counter() - start, tuple(os.path.basename(p) for p in paths),
                        text_filename if text_model else None, lite_mp)


def _tokenizer_files(files: CheckpointFiles | None) -> list[tuple[str, str]]:
    """``(source, file name)`` of what a .tflite needs beside it to tokenize as its checkpoint did."""
    if files is None or files.vocab is None:
        return []
    json_file = os.path.join(os.path.dirname(files.vocab), "tokenizer.json")
    candidates = [(files.vocab, "vocab.txt"), (files.tokenizer_config, "tokenizer_config.json"),
                  (json_file, "tokenizer.json"), (files.config, "config.json")]
    return [(source, name) for source, name in candidates if source and os.path.isfile(source)]


def _check_against_keras(model, task: str, top_k: int, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray],
                         where: str, atol: float = 1e-4) -> float:
    """tfbert's export graph (its ``outputs`` on ``inputs``) must equal the Keras model's.

    Every float output both have is compared, relative to its scale (``max(1, max |output|)``):
    unnormalised token states reach magnitudes of 10 and more, where float32 rounding in two
    differently fused graphs alone gives 1e-4 (measured on MiniLM: 1.5e-4). Ids and label ids
    follow from the compared scores.

    Returns:
        The largest difference (absolute for the normalised embeddings and probabilities).

    Raises:
        ExportError: an output differs beyond ``atol`` of its scale; nothing is written.
    """
    from tfbert.errors import ExportError
    from tfbert.model import task_outputs

    keras = task_outputs(model, task, top_k=top_k)(dict(inputs))
    worst = 0.0
    for key, got in outputs.items():
        value = keras[key].numpy() if key in keras else None
        if value is not None and value.ndim == got.ndim + 1:  # token rows of the TFLite comparison
            from tfbert.export.tflite import main_rows

            value = main_rows(value, inputs)
        if value is None or value.dtype.kind != "f" or not value.size:
            continue
        scale = max(1.0, float(np.abs(value).max()))
        diff = float(np.abs(value.astype(np.float64) - got).max()) / scale
        worst = max(worst, diff)
        if not diff <= atol:
            raise ExportError("tfbert's export graph differs from the Keras model; nothing was written",
                              where=f"{where}: {key}", expected=f"max abs diff <= {atol} x {scale:.3g} (its scale)",
                              actual=f"{diff * scale:.3g}",
                              fix="report this as a bug (with the checkpoint's config.json)")
    return worst


def _text_model_difference(text_runner, token_runner, texts: list[str], tokenizer, max_seq_length: int, key: str,
                           where: str, atol: float = 1e-4) -> float:
    """Largest difference between the raw-text model on ``texts`` and the token-input model on
    tfbert's ids for them, batch by batch (same batches, so the same padding).

    Raises:
        ExportError: beyond ``atol``: the in-model tokenization differs.
    """
    from tfbert.errors import ExportError

    worst = 0.0
    for i in range(0, len(texts), 32):
        chunk = texts[i:i + 32]
        ids = tokenizer.tokenize_numpy(chunk, max_seq_length)
        expected = token_runner(ids)[key]
        got = text_runner({"text": np.array(chunk, dtype=object)})[key]
        worst = max(worst, float(np.abs(expected.astype(np.float64) - got).max()))
    if worst > atol:
        raise ExportError("the raw-text TFLite model differs from the token-input model; nothing was published",
                          where=where, expected=f"max abs diff <= {atol}", actual=f"{worst:.3g}",
                          fix="report this as a bug; export without --tflite_text_input meanwhile")
    return worst


__all__ = ["PendingSavedModel", "SavedModelExport", "TFLiteExport", "export_saved_model", "export_tflite",
           "saved_model_export"]

"""Checks for what ``tfbert.export`` wrote: a SavedModel directory or a .tflite file."""

from __future__ import annotations

import os

import numpy as np

from tfbert.checkpoint.files import MANIFEST_NAME
from tfbert.checkpoint.manifest import verify_manifest
from tfbert.diagnose.config_checks import _error
from tfbert.errors import BadInputError, CorruptCheckpointError, ExportError
from tfbert.report import OK, WARN, Finding


def is_artifact(path: str | None) -> bool:
    """True for a SavedModel directory or a .tflite file."""
    return bool(path) and (os.path.isfile(os.path.join(path, "saved_model.pb"))
                           or (os.path.isfile(path) and path.endswith(".tflite")))


def _manifest_findings(root: str) -> list[Finding]:
    manifest = os.path.join(root, MANIFEST_NAME)
    if not os.path.isfile(manifest):
        return [Finding("integrity", WARN, f"no {MANIFEST_NAME} next to the model: integrity cannot be checked",
                        "export with tfbert.export, which writes one")]
    bad = verify_manifest(root, manifest)
    if not bad:
        return [Finding("integrity", OK, f"sha256 of every file matches {MANIFEST_NAME}")]
    return [_error("integrity", CorruptCheckpointError(
        "sha256 differs from the manifest", where=os.path.join(root, rel), expected=exp[:16] + "…",
        actual=act if act == "missing" else act[:16] + "…", fix="export again or copy the files again"))
        for rel, exp, act in bad]


def _mediapipe_findings(path: str, runner) -> list[Finding]:
    """What MediaPipe Tasks' BERT preprocessor needs of a model (export's ``model_<q>_mediapipe.tflite``),
    and the model run on ``[CLS] [SEP]`` as MediaPipe feeds it."""
    from tfbert import tflite_metadata

    def bad(message: str, expected, actual, error=BadInputError) -> list[Finding]:
        return [_error("mediapipe", error(message, where=path, expected=expected, actual=actual,
                                          fix="use model_<quantization>_mediapipe.tflite from python -m tfbert.export "
                                              "--quantize"))]

    with open(path, "rb") as f:
        content = f.read()
    try:
        metadata = tflite_metadata.read(content)
    except ValueError as e:
        return bad(f"its metadata is damaged ({e})", "TFLite Metadata (M001)", "unreadable", CorruptCheckpointError)
    if metadata is None:
        return bad("no TFLite Metadata: MediaPipe Tasks cannot tokenize text for this model",
                   "a TFLITE_METADATA buffer with a BertTokenizer and the vocab packed", "none")
    names = [t.name for t in metadata.inputs]
    if sorted(names) != sorted(tflite_metadata.BERT_INPUTS):
        return bad("input metadata does not name MediaPipe's BERT inputs", list(tflite_metadata.BERT_INPUTS), names)
    if tflite_metadata.subgraph_count(content) != 1:
        return bad("MediaPipe's text tasks take a model with one subgraph", 1,
                   tflite_metadata.subgraph_count(content))
    files = tflite_metadata.packed_files(content)
    missing = [name for name in metadata.file_names() if name not in files]
    if metadata.vocab is None or missing:
        return bad("the tokenizer's files are not all packed in the model", metadata.file_names() or "a vocab file",
                   f"missing {missing or 'a BertTokenizer'}", CorruptCheckpointError)
    shapes = {tuple(int(n) for n in d["shape_signature"]) for d in runner.interpreter.get_input_details()}
    shape = next(iter(shapes))
    if len(shapes) != 1 or len(shape) != 2 or shape[0] != 1 or shape[1] < 2:
        return bad("MediaPipe truncates texts only for a static input length", "[1, seq] on all three inputs",
                   sorted(shapes))
    vocab = files[metadata.vocab.name].decode("utf-8").splitlines()
    ids = np.zeros(shape, np.int32)
    ids[0, :2] = vocab.index("[CLS]"), vocab.index("[SEP]")
    outputs = runner({"ids": ids, "mask": (ids != 0).astype(np.int32), "segment_ids": np.zeros_like(ids)})
    heads = ", ".join(f"{name} {list(value.shape)}" for name, value in outputs.items())
    labels = [f.name for t in metadata.outputs for f in t.files if f.type == tflite_metadata.TENSOR_AXIS_LABELS]
    label_note = "".join(f", {n} ({len(files[n].decode('utf-8').splitlines())} labels)" for n in labels)
    return [Finding("mediapipe", OK, f"MediaPipe Tasks model: BertTokenizer with {metadata.vocab.name} "
                    f"({len(vocab)} tokens), inputs {', '.join(names)} int32 {list(shape)} (texts truncated to "
                    f"{shape[1]} tokens), output {heads}{label_note}; runs in LiteRT")]


def check_artifact(path: str) -> list[Finding]:
    """Integrity, loadability and signatures of an exported model; for a SavedModel also its ops, the
    oldest TF Serving that has them, and a load and warmup replay in TensorFlow's C++ loader."""
    if path.endswith(".tflite"):
        findings = _manifest_findings(os.path.dirname(os.path.abspath(path)))
        with open(path, "rb") as f:
            head = f.read(8)
        if len(head) < 8 or head[4:8] != b"TFL3":
            return [*findings, _error("files", CorruptCheckpointError(
                "not a TFLite flatbuffer", where=path, expected="identifier TFL3 at byte 4",
                actual=head[4:8] or "a short file", fix="export again"))]
        from tfbert.litert import LiteRTRunner
        from tfbert.tflite_metadata import BERT_INPUTS

        try:
            runner = LiteRTRunner(path)
            if runner.input_names == sorted(BERT_INPUTS) or path.endswith("_mediapipe.tflite"):
                return [*findings, *_mediapipe_findings(path, runner)]
            if "text" in runner.input_names:  # a raw-text model (export --tflite_text_input)
                outputs = runner({"text": ["a short sentence"]})
            else:
                ids = np.array([[2, 5, 6, 3]], np.int32)
                # token types too: a question-answering model takes them (other models ignore them)
                outputs = runner({"input_ids": ids, "attention_mask": np.ones_like(ids),
                                  "token_type_ids": np.zeros_like(ids)})
        except (ValueError, RuntimeError) as e:
            return [*findings, _error("files", CorruptCheckpointError(
                f"LiteRT cannot run it ({str(e).splitlines()[0]})", where=path, fix="export again"))]
        shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in outputs.items())
        return [Finding("files", OK, f"TFLite model, {os.path.getsize(path) / 2**20:.1f} MiB; runs in LiteRT: "
                        f"{shapes}"), *findings]
    findings = _manifest_findings(path)
    from tfbert.deploy.serving import ServerProcess
    from tfbert.tf import import_tensorflow

    server = ServerProcess(path)  # loads it as TF Serving would, while this process loads it in Python

    tf = import_tensorflow()
    import tensorflow_text  # noqa: F401  (the tokenizer ops of serving_default)

    try:
        loaded = tf.saved_model.load(path)
    except Exception as e:  # TF raises many types for a damaged SavedModel
        return [*findings, _error("files", CorruptCheckpointError(
            f"the SavedModel does not load ({str(e).splitlines()[0][:200]})", where=path, fix="export again")),
            _serving_finding(server)]
    signatures = {name: sorted(fn.structured_input_signature[1]) for name, fn in loaded.signatures.items()}
    text = "; ".join(f"{name}({', '.join(args)})" for name, args in sorted(signatures.items()))
    findings.insert(0, Finding("files", OK, f"SavedModel with signatures {text}"))
    if "serving_default" not in signatures:
        findings.append(Finding("files", WARN, "no serving_default signature: TF Serving clients must name one",
                                "export with tfbert.export"))
    return [*findings, _serving_finding(server)]


def _serving_finding(server) -> Finding:
    """The op audit, C++ load and warmup replay of a SavedModel, as TF Serving would do them."""
    try:
        check = server.result()
    except ExportError as e:
        return _error("serving", e)
    return Finding("serving", OK, f"{check.audit.summary()}; loads in TensorFlow's C++ SavedModel loader "
                   f"(tag serve, as TF Serving) and replays its {check.warmup_requests} warmup requests")

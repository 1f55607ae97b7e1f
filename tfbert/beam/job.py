"""``python -m tfbert.predict --runner=...``: the predict job as a Beam pipeline, files in, shards out.

The pipeline: the files a pattern matches are read one per worker with tfbert's own readers
(:class:`~tfbert.predict.TextFile`: the same formats, fields and bad-record rules as the
single-process path), the texts are spread over the workers, run by
``RunInference(KeyedModelHandler(BertModelHandler(...)))``, and written as shards: embeddings
as ``.npy`` with a ``.keys.jsonl`` beside each (row i of one is key i of the other), labels as
JSONL, and the records that could not be read or run as ``errors-*.jsonl`` (key or file and
line, and the reason). A text's key is ``<file>:<n>``, n its row in what the single-process
``python -m tfbert.predict --input=<file>`` writes.

Everything is written into a staging directory beside the output; only when the pipeline
has finished, and every shard it reported is there, is ``manifest.json`` written and the
staging directory renamed to the output. A run that fails or is killed publishes nothing.
Progress is counted in Beam metrics (namespace ``tfbert``), which a runner's UI shows live.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.window import GlobalWindows

from tfbert import errors, publish
from tfbert.beam.handler import BertModelHandler
from tfbert.errors import BadInputError, PipelineError, TfbertError
from tfbert.predict import TextFile, resolve_backend
from tfbert.predict.pipeline import infer_format
from tfbert.tf import import_tensorflow

log = logging.getLogger("tfbert")

RUNNERS = ("DirectRunner", "DataflowRunner", "FlinkRunner", "SparkRunner")
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "tfbert-beam-predict/1"
NAMESPACE = "tfbert"
_NPY_MAGIC = b"\x93NUMPY\x01\x00"


@dataclasses.dataclass
class JobResult:
    """What a finished job published.

    Args:
        output: the output directory.
        manifest: the contents of its ``manifest.json``.
        seconds: wall time of the pipeline run.
    """

    output: str
    manifest: dict
    seconds: float


def run_job(input_pattern: str, output: str, *, runner: str = "DirectRunner", pipeline_args: Sequence[str] = (),
            model_path: str | None = None, task: str = "embed", backend: str = "auto", batch_size: int = 32,
            max_length: int = 128, num_threads: int = 1, vocab_path: str | None = None,
            input_format: str | None = None, text_field: str = "text", text_column: str = "text",
            texts_per_batch: int = 1024, overwrite: bool = False,
            progress: Callable[[str], None] | None = None) -> JobResult:
    """Run the predict job on a Beam runner and publish its shards and manifest at ``output``.

    Args:
        input_pattern: a file or glob (local, or any filesystem Beam reads, e.g. ``gs://``).
        output: the output directory; it must not exist unless ``overwrite``.
        runner: one of :data:`RUNNERS`.
        pipeline_args: Beam pipeline options, e.g. ``["--direct_num_workers=2"]``.
        model_path, task, backend, batch_size, max_length, num_threads, vocab_path, texts_per_batch: as
            for :class:`~tfbert.beam.BertModelHandler`.
        input_format, text_field, text_column: as for :class:`~tfbert.predict.TextFile`.
        overwrite: replace an existing output.
        progress: called with progress lines (Beam metrics, polled while the job runs).

    Returns:
        A :class:`JobResult`.

    Raises:
        BadInputError: no file matches, the output exists, the model is not there (on the
            DirectRunner, whose workers share this machine), or a worker met a bad input
            (an unreadable file, a model it cannot load) — one line each.
        PipelineError: the job failed outside tfbert's code (a worker died); nothing published.

    Example:
        >>> run_job("texts-*.jsonl", "out/", model_path="model_int8.tflite",  # doctest: +SKIP
        ...         pipeline_args=["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    """
    if runner not in RUNNERS:
        raise BadInputError("unknown Beam runner", where="--runner", expected=" | ".join(RUNNERS), actual=runner,
                            fix="pass --runner=DirectRunner, or leave --runner out for the single-process path")
    handler = BertModelHandler(model_path, task, backend, batch_size=batch_size, max_length=max_length,
                               num_threads=num_threads, vocab_path=vocab_path, texts_per_batch=texts_per_batch)
    files = match_inputs(input_pattern, input_format)
    output = output.rstrip("/")
    _check_output(output, overwrite)
    if runner == "DirectRunner" and model_path is not None and not os.path.exists(model_path):
        raise BadInputError("no such model file or directory (the DirectRunner's workers read it here)",
                            where=model_path, fix="pass --model=PATH naming a checkpoint, SavedModel or .tflite")
    staging = _make_staging(output, progress)
    quiet = [] if any(a.startswith("--default_sdk_harness_log_level") for a in pipeline_args) else [
        "--default_sdk_harness_log_level=ERROR"]  # worker processes log every channel they open at INFO
    options = PipelineOptions([f"--runner={runner}", *quiet, *pipeline_args])
    start = time.monotonic()
    with _runner_thread_errors() as thread_errors:
        try:
            pipeline = beam.Pipeline(options=options)
            _build(pipeline, files, staging, handler, input_format, text_field, text_column)
            result = pipeline.run()
            _wait(result, progress)
            counters = _counters(result)
            manifest = _manifest(staging, files, handler, counters, input_pattern, runner)
            if manifest["rows"] == 0:
                raise BadInputError("the input holds no usable text", where=input_pattern,
                                    actual=f"{manifest['errors']} bad records",
                                    fix="check --input_format, --text_field and --text_column")
            _publish(staging, output, manifest, overwrite)
        except Exception as e:
            _remove(staging)
            raised = worker_error(e)
            if raised is None:
                seen = "; ".join(dict.fromkeys(thread_errors))
                raised = PipelineError(f"the Beam job failed ({type(e).__name__}: {_first_line(e)}"
                                       + (f"; runner threads: {seen}" if seen else "") + ")",
                                       where=f"--runner={runner}", fix="nothing was published; rerun (with --verbose "
                                       "for the runner's log)")
                raise raised from e  # --verbose shows the runner's own traceback
            raise raised from None
    seconds = time.monotonic() - start
    if progress is not None:
        progress(f"done: {manifest['rows']} rows in {len(manifest['shards'])} shards, {manifest['errors']} errors, "
                 f"{seconds:.1f}s")
    return JobResult(output, manifest, seconds)


def match_inputs(pattern: str, input_format: str | None = None) -> list[str]:
    """The files ``pattern`` matches, sorted, each with a format tfbert reads.

    Raises:
        BadInputError: nothing matches, or a file's format cannot be told from its extension.
    """
    try:
        matched = FileSystems.match([pattern])[0].metadata_list
    except Exception as e:  # Beam raises its own BeamIOError or a filesystem's error
        raise BadInputError(f"cannot list the input ({type(e).__name__})", where=pattern,
                            fix="pass --input=PATTERN on a filesystem Beam can read") from None
    files = sorted(m.path for m in matched if not m.path.endswith("/"))
    if not files:
        raise BadInputError("the input pattern matches no file", where=pattern,
                            fix="check the path and glob (quote it so the shell does not expand it)")
    if input_format is None:
        for path in files:
            infer_format(path)
    return files


def worker_error(error: BaseException) -> TfbertError | None:
    """The tfbert error a Beam pipeline failed with, as one line (None for any other failure).

    Beam re-raises a worker's exception in-process with `` [while running 'step']`` appended,
    and from worker processes as a RuntimeError carrying the worker's traceback text.
    """
    if isinstance(error, TfbertError):
        return type(error)(_strip_step(str(error)))
    found = re.findall(r"tfbert\.errors\.(\w+): ([^\n]+)", str(error))
    if not found:
        return None
    name, line = found[-1]
    cls = getattr(errors, name, None)
    return cls(_strip_step(line)) if isinstance(cls, type) and issubclass(cls, TfbertError) else None


@contextlib.contextmanager
def _runner_thread_errors() -> Iterator[list[str]]:
    """Collect the exceptions that end runner threads while the job runs, as one-liners.

    When a worker dies, the DirectRunner's gRPC threads end with tracebacks of their own;
    the job's failure already says so, so they are logged (shown with --verbose), and their
    first lines join the job's one-line error.
    """
    seen: list[str] = []
    previous = threading.excepthook

    def hook(args) -> None:
        seen.append(f"{args.exc_type.__name__}: {_first_line(args.exc_value)}")
        log.info("a Beam runner thread ended", exc_info=(args.exc_type, args.exc_value, args.exc_traceback))

    threading.excepthook = hook
    try:
        yield seen
    finally:
        threading.excepthook = previous


def _first_line(error: BaseException | None) -> str:
    text = str(error).strip() if error is not None else ""
    return text.splitlines()[0][:200] if text else ""


def _strip_step(line: str) -> str:
    return re.sub(r" \[while running '[^']*'\]$", "", line.strip())


def _check_output(output: str, overwrite: bool) -> None:
    if FileSystems.exists(output) and not overwrite:
        raise BadInputError("the output already exists (a second run would mix two runs' shards)", where=output,
                            fix="pass --overwrite to replace it, or another --output directory")
    parent = os.path.dirname(output)
    if "://" not in output and parent and not os.path.isdir(parent):
        raise BadInputError("the output's parent directory does not exist", where=parent,
                            fix="create it first or pass --output in an existing directory")


# === The pipeline ===
def _build(pipeline, files: list[str], staging: str, handler: BertModelHandler, input_format: str | None,
           text_field: str, text_column: str) -> None:
    read = (pipeline
            | "Files" >> beam.Create(files)
            | "SpreadFiles" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(_ReadTexts(input_format, text_field, text_column)).with_outputs("bad", main="texts"))
    results, failed = (read.texts
                       | "SpreadTexts" >> beam.Reshuffle()
                       | "Predict" >> RunInference(KeyedModelHandler(handler)).with_exception_handling())
    shards = results | "WriteRows" >> beam.ParDo(_ShardWriter(staging, handler.task))
    errors_out = ((read.bad, failed.failed_inferences | "InferenceErrors" >> beam.FlatMap(_inference_errors))
                  | "Errors" >> beam.Flatten()
                  | "WriteErrors" >> beam.ParDo(_ShardWriter(staging, "errors")))
    _ = ((shards, errors_out)
         | "Shards" >> beam.Flatten()
         | "ListShards" >> beam.combiners.ToList()
         | "WriteIndex" >> beam.Map(_write_index, staging))


class _ReadTexts(beam.DoFn):
    """``(key, text)`` per text of one file; the records it skipped to the ``bad`` output."""

    def __init__(self, input_format: str | None, text_field: str, text_column: str) -> None:
        self.input_format, self.text_field, self.text_column = input_format, text_field, text_column
        self.texts = Metrics.counter(NAMESPACE, "texts_read")
        self.bad = Metrics.counter(NAMESPACE, "bad_records")

    def process(self, path: str) -> Iterator:
        fmt = self.input_format or infer_format(path)
        if fmt == "tfrecord":  # its tf.train.Example parser is TensorFlow's: imported with its start-up logs swallowed
            import_tensorflow()
        with _local_copy(path) as local:
            source = TextFile(local, fmt=fmt, text_field=self.text_field,
                              text_column=self.text_column, on_bad_line="skip")
            try:
                for index, text in source:
                    self.texts.inc()
                    yield f"{path}:{index}", text
            except TfbertError as e:  # named by the input, not by a worker's local copy of it
                raise type(e)(e.message, where=(e.where or path).replace(local, path), expected=e.expected,
                              actual=e.actual, fix=e.fix) from None
        for number, reason in source.stats.bad_lines:
            self.bad.inc()
            yield beam.pvalue.TaggedOutput("bad", {"file": path, "line": number, "reason": reason})


class _local_copy:
    """A local path for ``path``: itself when local, else a temporary copy."""

    def __init__(self, path: str) -> None:
        self.path, self.tmp = path, None

    def __enter__(self) -> str:
        if "://" not in self.path:
            return self.path
        fd, self.tmp = tempfile.mkstemp(suffix=os.path.splitext(self.path)[1])
        with os.fdopen(fd, "wb") as out, FileSystems.open(self.path) as src:
            shutil.copyfileobj(src, out, 1 << 20)
        return self.tmp

    def __exit__(self, *exc_info) -> None:
        if self.tmp is not None:
            os.remove(self.tmp)


def _inference_errors(failure) -> Iterator[dict]:
    """One error record per text of a batch RunInference could not run."""
    batch, (_, message, _) = failure
    reason = _strip_step(message)
    for item in batch:
        key, text = item if isinstance(item, tuple) and len(item) == 2 else (None, item)
        yield {"key": key, "text": text if isinstance(text, str) else repr(text), "reason": reason}


class _ShardWriter(beam.DoFn):
    """One shard per bundle, in the staging directory: ``.npy`` + ``.keys.jsonl`` (embed) or
    ``.jsonl`` (classify, errors). Yields ``{"kind", "files", "rows"}`` for each shard it
    finished, so only shards of committed bundles are published."""

    def __init__(self, staging: str, kind: str) -> None:
        self.staging, self.kind = staging, kind
        self.rows_written = Metrics.counter(NAMESPACE, "errors_written" if kind == "errors" else "rows_written")

    def start_bundle(self) -> None:
        self._data = self._keys = None
        self._rows, self._width = 0, None

    def process(self, element) -> None:
        if self._data is None:
            self._data, self._keys = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        if self.kind == "errors":
            self._data.write(json.dumps(element, ensure_ascii=False).encode("utf-8") + b"\n")
        else:
            key, result = element
            if self.kind == "embed":
                row = np.asarray(result.inference, np.float32)
                self._width = row.shape[0]
                self._data.write(row.tobytes())
                self._keys.write(json.dumps(key, ensure_ascii=False).encode("utf-8") + b"\n")
            else:
                line = {"key": key, "label": result.inference["label"],
                        "probabilities": [float(p) for p in result.inference["probabilities"]]}
                self._data.write(json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n")
        self._rows += 1
        self.rows_written.inc()

    def finish_bundle(self) -> Iterator:
        if self._data is None:
            return
        name = f"{'errors' if self.kind == 'errors' else 'part'}-{uuid.uuid4().hex[:12]}"
        if self.kind == "embed":
            files = [f"{name}.npy", f"{name}.keys.jsonl"]
            _copy_into(self._data, FileSystems.join(self.staging, files[0]),
                       header=_npy_header((self._rows, self._width)))
            _copy_into(self._keys, FileSystems.join(self.staging, files[1]))
        else:
            files = [f"{name}.jsonl"]
            _copy_into(self._data, FileSystems.join(self.staging, files[0]))
            self._keys.close()
        yield GlobalWindows.windowed_value({"kind": "errors" if self.kind == "errors" else "rows",
                                            "files": files, "rows": self._rows})


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """A version 1.0 .npy header for a C-order float32 array of ``shape``."""
    body = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape!r}, }}"
    pad = -(len(_NPY_MAGIC) + 2 + len(body) + 1) % 64
    body = body + " " * pad + "\n"
    return _NPY_MAGIC + len(body).to_bytes(2, "little") + body.encode("latin1")


def _copy_into(temporary, path: str, header: bytes = b"") -> None:
    temporary.seek(0)
    with FileSystems.create(path) as out:
        out.write(header)
        shutil.copyfileobj(temporary, out, 1 << 20)
    temporary.close()


def _write_index(shards: list[dict], staging: str) -> None:
    with FileSystems.create(FileSystems.join(staging, "shards.json")) as f:
        f.write(json.dumps(sorted(shards, key=lambda s: s["files"][0])).encode("utf-8"))


# === After the pipeline ===
def _wait(result, progress: Callable[[str], None] | None, every: float = 10.0) -> None:
    """Wait for the job, writing its Beam counters as progress while it runs (runners whose
    ``run()`` returns early, such as Dataflow; the DirectRunner's returns when done)."""
    from apache_beam.runners.runner import PipelineState

    while not PipelineState.is_terminal(result.state):
        result.wait_until_finish(duration=int(every * 1000))
        if progress is not None and not PipelineState.is_terminal(result.state):
            counters = _counters(result)
            progress(f"{counters.get('texts_read', 0)} texts read, {counters.get('rows_written', 0)} rows written")
    if result.state != PipelineState.DONE:
        raise BadInputError("the Beam job did not finish", where="--runner", expected="DONE", actual=result.state,
                            fix="see the runner's log for the failing step")


def _counters(result) -> dict[str, int]:
    metrics = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    counters: dict[str, int] = {}
    for counter in metrics["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        counters[counter.key.metric.name] = counters.get(counter.key.metric.name, 0) + (value or 0)
    return counters


def _manifest(staging: str, files: list[str], handler: BertModelHandler, counters: dict[str, int],
              input_pattern: str, runner: str) -> dict:
    """The manifest of a finished run, after checking every shard it reported is staged."""
    index_path = FileSystems.join(staging, "shards.json")
    with FileSystems.open(index_path) as f:
        shards = json.loads(f.read().decode("utf-8"))
    for shard in shards:
        for name in shard["files"]:
            if not FileSystems.exists(FileSystems.join(staging, name)):
                raise BadInputError("a shard the job reported is missing from the staging directory",
                                    where=FileSystems.join(staging, name), fix="rerun the job")
    FileSystems.delete([index_path])
    rows = [s for s in shards if s["kind"] == "rows"]
    bad = [s for s in shards if s["kind"] == "errors"]
    local = handler.model_path is None or os.path.exists(handler.model_path)
    backend = resolve_backend(handler.model_path, handler.backend) if local else handler.backend
    return {"format": MANIFEST_FORMAT, "task": handler.task, "model": handler.model_path, "backend": backend,
            "max_length": handler.max_length, "input": input_pattern, "files": files, "runner": runner,
            "rows": sum(s["rows"] for s in rows), "errors": sum(s["rows"] for s in bad),
            "shards": [{"files": s["files"], "rows": s["rows"]} for s in rows],
            "error_shards": [{"files": s["files"], "rows": s["rows"]} for s in bad],
            "counters": counters,
            "layout": ("embed: <part>.npy float32 [rows, hidden], row i keyed by line i of <part>.keys.jsonl"
                       if handler.task == "embed" else "classify: <part>.jsonl, one {key, label, probabilities} "
                       "per line") + "; a key is <file>:<n>, n the text's row in single-process predict of that file"}


def _publish(staging: str, output: str, manifest: dict, overwrite: bool) -> None:
    """Write the manifest into the staging directory, then put it in place of ``output``.

    Locally the staging directory is renamed (one atomic step); on an object store the files
    are renamed one by one and the manifest last, so a manifest always means a complete output.
    """
    body = json.dumps(manifest, indent=1).encode("utf-8")
    if "://" not in output:
        with open(os.path.join(staging, MANIFEST), "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        with publish.locked(os.path.dirname(os.path.abspath(output))):
            try:
                publish.publish(staging, os.path.abspath(output), overwrite=overwrite)
            except FileExistsError:  # created while the job ran
                raise BadInputError("the output appeared while the job ran; nothing was replaced", where=output,
                                    fix="pass --overwrite or another --output") from None
        return
    if overwrite and FileSystems.exists(output):
        FileSystems.delete([output])
    names = [n for s in manifest["shards"] + manifest["error_shards"] for n in s["files"]]
    FileSystems.rename([FileSystems.join(staging, n) for n in names], [FileSystems.join(output, n) for n in names])
    with FileSystems.create(FileSystems.join(output, MANIFEST)) as f:
        f.write(body)
    _remove(staging)


def _make_staging(output: str, progress: Callable[[str], None] | None) -> str:
    """The job's staging directory beside ``output``: locally tfbert's owned staging (:mod:`tfbert.publish`:
    a dead job's is removed, a live one's kept), on an object store a uniquely named prefix."""
    if "://" in output:
        staging = f"{output}.staging-{uuid.uuid4().hex[:8]}"
        FileSystems.mkdirs(staging)
        return staging
    parent, name = os.path.split(os.path.abspath(output))
    with publish.locked(parent):
        for line in publish.remove_stale(parent, label=name):
            if progress is not None:
                progress(line)
        return publish.make_staging(parent, name)


def _remove(path: str) -> None:
    try:
        if FileSystems.exists(path):
            FileSystems.delete([path])
    except Exception as e:  # cleanup must not hide the job's own error
        log.warning("could not remove the staging directory %s (%s)", path, e)


def read_output(output: str) -> dict[str, np.ndarray | list]:
    """A published embed or classify output as ``{key: row}`` (embedding, or ``{label, probabilities}``).

    Example:
        >>> rows = read_output("out/")  # doctest: +SKIP
        >>> rows["texts.jsonl:0"].shape  # doctest: +SKIP
        (384,)
    """
    with open(os.path.join(output, MANIFEST), encoding="utf-8") as f:
        manifest = json.load(f)
    rows: dict = {}
    for shard in manifest["shards"]:
        if manifest["task"] == "embed":
            array = np.load(os.path.join(output, shard["files"][0]))
            with open(os.path.join(output, shard["files"][1]), encoding="utf-8") as f:
                keys = [json.loads(line) for line in f]
            rows.update(zip(keys, array, strict=True))
        else:
            with open(os.path.join(output, shard["files"][0]), encoding="utf-8") as f:
                for line in f:
                    record = json.loads(line)
                    rows[record.pop("key")] = record
    return rows

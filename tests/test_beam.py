"""tfbert.beam: the Predictor as a Beam ModelHandler and ``python -m tfbert.predict --runner``, on the DirectRunner.

The reference for every output is the single-process Predictor on the same texts (itself
checked against Hugging Face in test_predict.py); the models are test_predict.py's tiny
checkpoint, its SavedModel and its .tflite.
"""

import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

import tests.test_predict as predict_tests
from tests import tiny
from tests.processes import living, own_descendants, wait_until_ended
from tfbert import errors, publish

# test_predict.py's tiny checkpoint and its SavedModel / .tflite exports, registered here by name
embed_ckpt, tiny_models = predict_tests.embed_ckpt, predict_tests.tiny_models
TEXTS = predict_tests.TEXTS

BACKENDS = ("keras-graph", "savedmodel", "tflite")
TWO_WORKERS = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]


def _options(mode: str):
    from apache_beam.options.pipeline_options import PipelineOptions

    return PipelineOptions(["--runner=DirectRunner", *(TWO_WORKERS if mode == "multi_processing" else [])])


@pytest.fixture(scope="module")
def classify_tflite(tmp_path_factory):
    """A tiny classifier (labels negative/positive/neutral in its config.json) as .tflite with its vocab."""
    from tfbert.export.graph import EncoderGraph, model_weights
    from tfbert.export.tflite import convert

    directory = tmp_path_factory.mktemp("beam_clf")
    model, _, _ = tiny.checkpoint_with_tokenizer(str(directory / "ckpt"), tiny.reference_model("classify", seed=7),
                                                     "classify")
    lite = directory / "ckpt" / "clf.tflite"  # next to its vocab.txt and config.json
    lite.write_bytes(convert(EncoderGraph(model_weights(model), model.config.to_dict(), "classify").module(), "none"))
    return str(lite)


def _handler(tiny_models, backend, **kwargs):
    from tfbert.beam import BertModelHandler

    return BertModelHandler(tiny_models[backend], backend=backend, batch_size=4, max_length=32,
                            vocab_path=tiny_models["vocab"] if backend == "tflite" else None, **kwargs)


def _single_process(tiny_models, backend, texts):
    from tfbert.predict import Predictor

    return Predictor(tiny_models[backend], backend=backend, batch_size=4, max_length=32,
                     vocab_path=tiny_models["vocab"] if backend == "tflite" else None).predict(texts)


def test_importing_tfbert_and_its_predict_path_stays_beam_free():
    code = ("import sys, tfbert, tfbert.predict, tfbert.cli.predict; "
            "assert 'apache_beam' not in sys.modules, 'beam imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert done.returncode == 0, done.stderr


def test_handler_pickles_as_paths_and_settings(tiny_models):
    handler = _handler(tiny_models, "tflite")
    shipped = pickle.dumps(handler)
    assert len(shipped) < 2000  # paths and settings: no model, no tokenizer
    assert tiny_models["tflite"].encode() in shipped
    copy = pickle.loads(shipped)
    results = list(copy.run_inference(TEXTS[:3], copy.load_model()))
    expected = _single_process(tiny_models, "tflite", TEXTS[:3])["sentence_embedding"]
    assert [r.example for r in results] == TEXTS[:3]
    np.testing.assert_array_equal(np.stack([r.inference for r in results]), expected)


@pytest.mark.parametrize("mode", ["in_memory", "multi_processing"])
def test_runinference_equals_single_process_predict(tiny_models, classify_tflite, mode):
    """Through RunInference — in this process for every backend, in 2 worker processes for the
    TensorFlow-free .tflite — the rows are the single-process Predictor's; keyed texts join back
    by key; one malformed record among many is the only thing in the error output, with its key
    and reason; classify gives the Predictor's labels and probabilities."""
    import apache_beam as beam
    from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
    from apache_beam.testing.util import assert_that

    from tfbert.beam import BertModelHandler
    from tfbert.predict import Predictor

    backends = BACKENDS if mode == "in_memory" else ("tflite",)
    texts = TEXTS * 2  # two Beam batches of 16
    keyed = [(f"k{i}", t) for i, t in enumerate(texts)]
    keyed.insert(20, ("broken", None))
    expected = {b: _single_process(tiny_models, b, texts)["sentence_embedding"] for b in backends}
    clf = Predictor(classify_tflite, task="classify", batch_size=4, max_length=32).predict(texts)

    def equals_rows(rows):
        def check(results):
            got = dict(results)
            assert sorted(got) == sorted(f"k{i}" for i in range(len(texts)))
            for key, result in got.items():
                i = int(key[1:])
                assert result.example == texts[i] and result.inference.dtype == np.float32
                assert np.abs(result.inference - rows[i]).max() <= 1e-6, key
        return check

    def only_the_broken_record(failures):
        assert [(batch, "not a string (NoneType)" in message) for batch, (_, message, _) in failures] == [
            ([("broken", None)], True)]

    def equals_labels(results):
        got = dict(results)
        assert sorted(got) == list(range(len(texts)))
        for i, result in got.items():
            assert result.inference["label"] == clf["labels"][i]
            assert np.abs(result.inference["probabilities"] - clf["probabilities"][i]).max() <= 1e-6

    with beam.Pipeline(options=_options(mode)) as p:
        source = p | "Keyed" >> beam.Create(keyed)
        for backend in backends:
            results, failed = source | f"Run {backend}" >> RunInference(KeyedModelHandler(
                _handler(tiny_models, backend, texts_per_batch=16))).with_exception_handling()
            assert_that(results, equals_rows(expected[backend]), label=f"rows {backend}")
            assert_that(failed.failed_inferences, only_the_broken_record, label=f"errors {backend}")
        labels = (p | "Numbered" >> beam.Create(list(enumerate(texts)))
                  | "Classify" >> RunInference(KeyedModelHandler(BertModelHandler(
                      classify_tflite, task="classify", batch_size=4, max_length=32))))
        assert_that(labels, equals_labels, label="labels")


_batches_seen: list = []  # filled in this process by the single-process engine the DirectRunner falls back to


def _record_batch(result):
    _batches_seen.append(result.inference)


def test_length_buckets_batch_texts_of_one_bucket_together():
    """With length_buckets, every Beam batch holds texts of one token-count bucket (counted as
    BERT's basic tokenizer splits them), and a malformed text a batch of its own."""
    import apache_beam as beam
    from apache_beam.ml.inference.base import PredictionResult, RunInference
    from transformers.models.bert.tokenization_bert import BasicTokenizer

    from tfbert.beam import BertModelHandler

    class BatchRecorder(BertModelHandler):  # the batching only: no model
        def load_model(self):
            return None

        def run_inference(self, batch, model, inference_args=None):
            return [PredictionResult(text, tuple(batch)) for text in batch]

    words = BasicTokenizer(do_lower_case=False)
    texts = ["word " * n + "end." for n in range(1, 60, 3)] * 2 + ["ok", None]
    boundaries = [8, 32]

    def bucket(text):
        if text is None:
            return -1
        count = len(words.tokenize(text)) + 2
        return sum(count >= b for b in boundaries)

    _batches_seen.clear()
    # Stateful batching: the DirectRunner runs it on its single-process engine, where a later
    # GroupByKey (assert_that's) drops the timer-flushed batches — so the batches are recorded
    # as they come out (docs/beam.md).
    with beam.Pipeline(options=_options("in_memory")) as p:
        _ = (p | beam.Create(texts)
             | RunInference(BatchRecorder(texts_per_batch=64, length_buckets=boundaries, max_batch_duration_secs=1))
             | beam.Map(_record_batch))
    batches = set(_batches_seen)
    assert sorted(t for batch in batches for t in batch if t is not None) == sorted(t for t in texts if t)
    assert (None,) in batches
    for batch in batches:
        assert len({bucket(t) for t in batch}) == 1, batch


def test_a_model_the_workers_cannot_load_is_one_line(tmp_path):
    import apache_beam as beam
    from apache_beam.ml.inference.base import RunInference

    from tfbert.beam import BertModelHandler, worker_error

    missing = str(tmp_path / "elsewhere" / "model.tflite")
    with pytest.raises(Exception) as info:
        with beam.Pipeline(options=_options("in_memory")) as p:
            # with_exception_handling, as the CLI's pipeline: a model that cannot load still fails
            # the job (it is not one bad text), and the DirectRunner keeps off Prism (no download)
            _ = p | beam.Create(["a cat"]) | RunInference(BertModelHandler(missing)).with_exception_handling()
    error = worker_error(info.value)
    assert isinstance(error, errors.BadInputError)
    line = str(error)
    assert "\n" not in line and missing in line and "cannot load the model" in line and "fix:" in line


# === python -m tfbert.predict --runner ===
def _cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "tfbert.predict", "--noprogress", *args], capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, PYTHONPATH=os.getcwd()))


def _one_line(done):
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "fix:" in lines[0], done.stderr
    return lines[0]


def test_cli_runner_equals_single_process_predict_and_refuses_a_second_run(tiny_models, tmp_path):
    from tfbert.beam import read_output
    from tfbert.predict import Predictor, TextFile

    (tmp_path / "in").mkdir()
    first, second = tmp_path / "in" / "a.jsonl", tmp_path / "in" / "b.txt"
    lines = [json.dumps({"text": t}) for t in TEXTS]
    lines.insert(5, '{"text": "unterminated')
    first.write_text("\n".join(lines) + "\n", encoding="utf-8")
    second.write_text("\n".join(reversed(TEXTS)) + "\n", encoding="utf-8")
    output = tmp_path / "out"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])  # a job killed before it published
    dead.wait()
    left_over = tmp_path / f".tmp-out+{publish.Owner.me().host}+{dead.pid}+1+abcd"
    left_over.mkdir()
    (left_over / "shard-00000-of-00001.npy").write_bytes(b"half")
    args = ["--runner=DirectRunner", f"--input={tmp_path / 'in' / '*'}", f"--output={output}",
            f"--model={tiny_models['tflite']}", f"--vocab={tiny_models['vocab']}", "--max_length=32",
            "--batch_size=4"]
    done = _cli(*args)
    assert done.returncode == 0, done.stderr

    rows = read_output(str(output))
    predictor = Predictor(tiny_models["tflite"], batch_size=4, max_length=32, vocab_path=tiny_models["vocab"])
    for path in (first, second):
        expected = predictor.predict(TextFile(str(path)))["sentence_embedding"]
        got = np.stack([rows[f"{path}:{i}"] for i in range(len(expected))])
        assert np.abs(got - expected).max() <= 1e-6
    assert len(rows) == 2 * len(TEXTS)
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["rows"] == 2 * len(TEXTS) and manifest["errors"] == 1 and manifest["backend"] == "tflite"
    error_lines = [json.loads(line) for shard in manifest["error_shards"]
                   for line in (output / shard["files"][0]).read_text().splitlines()]
    assert [(e["file"], e["line"]) for e in error_lines] == [(str(first), 6)]
    assert "malformed JSON" in error_lines[0]["reason"]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]

    before = sorted(os.listdir(output))
    refused = _one_line(_cli(*args))
    assert str(output) in refused and "--overwrite" in refused
    assert sorted(os.listdir(output)) == before

    again = _cli(*args, "--overwrite", "--direct_num_workers=1")  # a Beam option passes through
    assert again.returncode == 0, again.stderr
    assert json.loads((output / "manifest.json").read_text())["rows"] == 2 * len(TEXTS)


def test_bad_inputs_are_one_line(tiny_models, tmp_path):
    """A glob that matches nothing, an unreadable (truncated) shard met by a worker, a model the
    workers cannot reach: one line each; from the CLI, exit 2; nothing written."""
    from tfbert.beam import run_job

    settings = {"model_path": tiny_models["tflite"], "vocab_path": tiny_models["vocab"]}
    with pytest.raises(errors.BadInputError) as nothing:
        run_job(str(tmp_path / "none-*.txt"), str(tmp_path / "o1"), **settings)
    assert "matches no file" in str(nothing.value) and "none-*.txt" in str(nothing.value)

    shard = tmp_path / "shard.tfrecord"
    shard.write_bytes(struct.pack("<Q", 100) + b"\0" * 4 + b"cut short")  # a record that ends mid-way
    with pytest.raises(errors.BadInputError) as truncated:
        run_job(str(shard), str(tmp_path / "o2"), **settings)
    line = str(truncated.value)
    assert "\n" not in line and str(shard) in line and "truncated" in line and "fix:" in line

    missing = tmp_path / "nowhere" / "model.tflite"
    text = tmp_path / "t.txt"
    text.write_text("a cat sat\n")
    unreachable = _one_line(_cli("--runner=DirectRunner", f"--model={missing}", f"--input={text}",
                                 f"--output={tmp_path / 'o3'}"))
    assert str(missing) in unreachable
    assert not [p for p in os.listdir(tmp_path) if p.startswith("o")]


def test_run_job_classify_writes_the_single_process_labels(classify_tflite, tmp_path):
    from tfbert.beam import read_output, run_job
    from tfbert.predict import Predictor

    source = tmp_path / "texts.txt"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    result = run_job(str(source), str(tmp_path / "labels"), model_path=classify_tflite, task="classify",
                     batch_size=4, max_length=32)
    rows = read_output(result.output)
    expected = Predictor(classify_tflite, task="classify", batch_size=4, max_length=32).predict(TEXTS)
    assert [rows[f"{source}:{i}"]["label"] for i in range(len(TEXTS))] == list(expected["labels"])
    got = np.array([rows[f"{source}:{i}"]["probabilities"] for i in range(len(TEXTS))])
    assert np.abs(got - expected["probabilities"]).max() <= 1e-6
    assert result.manifest["task"] == "classify" and result.manifest["rows"] == len(TEXTS)


def _maps(process, path: str) -> bool:
    try:
        return any(m.path == path for m in process.memory_maps())
    except psutil.Error:
        return False


def test_a_killed_worker_publishes_nothing(tiny_models, tmp_path):
    """A worker killed while it runs the model (it has the .tflite mapped) fails the job, and
    nothing is published: no output directory, no staging directory left."""
    source = tmp_path / "many.txt"
    source.write_text("\n".join(TEXTS * 500) + "\n", encoding="utf-8")
    output, model = tmp_path / "out", os.path.realpath(tiny_models["tflite"])
    command = [sys.executable, "-m", "tfbert.predict", "--noprogress", "--runner=DirectRunner", f"--input={source}",
               f"--output={output}", f"--model={model}", f"--vocab={tiny_models['vocab']}", "--max_length=32",
               "--batch_size=4", *TWO_WORKERS]
    with own_descendants() as find:
        job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONPATH=os.getcwd()))
        try:
            deadline, running = time.monotonic() + 180, []
            while not running and job.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
                running = [w for w in find("apache_beam.runners.worker.sdk_worker_main")
                           if w.name().startswith("python") and _maps(w, model)]
            assert running and job.poll() is None, "the job ended before a worker could be killed"
            os.kill(running[0].pid, signal.SIGKILL)
            _, stderr = job.communicate(timeout=900)
        finally:
            if job.poll() is None:
                job.kill()
                job.wait()
        assert not living(wait_until_ended(find("sdk_worker_main"), timeout=900))
    assert job.returncode != 0
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].startswith("tfbert: error: --runner=")
    assert not output.exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]


def test_doctor_reports_the_beam_environment():
    from tfbert.diagnose.environment import beam_findings, installed_versions

    here = beam_findings(installed_versions())
    assert [f.status for f in here] == ["ok"] and "protobuf" in here[0].message and "DirectRunner" in here[0].message
    broken = beam_findings({"apache-beam": "2.77.0", "protobuf": "7.36.2"})
    assert broken[0].status == "error" and "protobuf<7" in broken[0].fix
    absent = beam_findings({"apache-beam": None})
    assert absent[0].status == "info" and "tfbert[beam]" in absent[0].fix

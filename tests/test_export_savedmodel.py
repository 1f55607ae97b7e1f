"""SavedModel export: TF Serving layout, parity with Hugging Face, warmup records, atomic versions."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests import tiny
from tfbert import errors


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    reference = tiny.reference_model("classify", seed=7)
    directory = tiny.write_safetensors(str(tmp_path_factory.mktemp("clf") / "ckpt"), reference)
    return reference, directory


def _export(directory, out, **kwargs):
    from tfbert.checkpoint import find_checkpoint
    from tfbert.export import export_saved_model
    from tfbert.model import load
    from tfbert.tokenizer import BertTokenizer

    files = find_checkpoint(directory)
    model = load(directory, task="classify", require_head=True)
    tokenizer = BertTokenizer.from_files(files.vocab, files.tokenizer_config)
    return export_saved_model(model, tokenizer, task="classify", vocab_file=files.vocab, output_dir=str(out),
                              name="tiny", max_seq_length=32, texts=TEXTS, **kwargs)


TEXTS = ["the cat sat on the red mat", "a dog ran", "", "hello world!", "the bird flew " * 20]


def test_savedmodel_serves_raw_text_like_hugging_face(classifier, tmp_path):
    from tensorflow_serving.apis import prediction_log_pb2  # TF Serving's own classes read the records

    from tfbert.tf import import_tensorflow

    reference, directory = classifier
    result = _export(directory, tmp_path)
    version_dir = tmp_path / "tiny" / "1"
    assert result.path == str(version_dir) and result.version == 1
    for name in ("saved_model.pb", "assets/vocab.txt", "assets/labels.txt", "SHA256SUMS",
                 "assets.extra/tf_serving_warmup_requests"):
        assert (version_dir / name).is_file(), name
    assert (version_dir / "assets/labels.txt").read_text().split() == ["negative", "positive", "neutral"]
    tf = import_tensorflow()
    records = tf.data.TFRecordDataset(str(version_dir / "assets.extra/tf_serving_warmup_requests"))
    requests = [prediction_log_pb2.PredictionLog.FromString(r).predict_log.request
                for r in records.as_numpy_iterator()]
    sent = [tf.make_ndarray(r.inputs["text"]).tolist() for r in requests]
    assert [len(texts) for texts in sent] == [1, 2, 4, 8]  # one request per power-of-two batch size
    assert all(texts == sent[-1][:len(texts)] for texts in sent) and sent[-1][:5] == [t.encode() for t in TEXTS]
    assert all(r.model_spec.name == "tiny" and r.model_spec.signature_name == "serving_default" for r in requests)
    loaded = tf.saved_model.load(str(version_dir))
    served = loaded.signatures["serving_default"](text=tf.constant(TEXTS))
    hf_tok = tiny.hf_tokenizer(os.path.join(directory, "vocab.txt"), do_lower_case=True)
    batch = hf_tok(TEXTS, padding="longest", truncation=True, max_length=32, return_tensors="np")
    logits = reference(**{k: v.astype(np.int32) for k, v in batch.items()}).logits.numpy()
    np.testing.assert_allclose(served["logits"].numpy(), logits, atol=1e-5)
    labels = np.array(["negative", "positive", "neutral"])[logits.argmax(-1)]
    assert [s.decode() for s in served["labels"].numpy()] == labels.tolist()
    ids = loaded.signatures["tokenized"](**{k: tf.constant(v.astype(np.int32)) for k, v in batch.items()})
    np.testing.assert_allclose(ids["probabilities"].numpy(), tf.nn.softmax(logits).numpy(), atol=1e-5)


def _hf_batch(directory, texts, pairs=None, max_length=32):
    tok = tiny.hf_tokenizer(os.path.join(directory, "vocab.txt"), do_lower_case=True)
    batch = tok(texts, pairs, padding="longest", truncation=True, max_length=max_length, return_tensors="np")
    return {k: v.astype(np.int32) for k, v in batch.items()}


def _export_task(reference, task, tmp_path, texts):
    from tfbert.checkpoint import find_checkpoint
    from tfbert.export import export_saved_model
    from tfbert.model import load
    from tfbert.tf import import_tensorflow
    from tfbert.tokenizer import BertTokenizer

    directory = tiny.write_safetensors(str(tmp_path / "ckpt"), reference)
    files = find_checkpoint(directory)
    result = export_saved_model(load(directory, task=task, require_head=True),
                                BertTokenizer.from_files(files.vocab, files.tokenizer_config), task=task,
                                vocab_file=files.vocab, output_dir=str(tmp_path / "out"), name=task,
                                max_seq_length=32, texts=texts)
    return directory, import_tensorflow().saved_model.load(result.path)


def test_fill_mask_savedmodel_gives_hugging_faces_top_k(tmp_path):
    from tfbert.tf import import_tensorflow

    tf = import_tensorflow()
    reference = tiny.reference_model("fill_mask", seed=4)
    texts = ["the cat [MASK] on the mat", "a [MASK] dog ran", "hello [MASK]!"]
    directory, loaded = _export_task(reference, "fill_mask", tmp_path, texts)
    served = loaded.signatures["serving_default"](text=tf.constant(texts))
    batch = _hf_batch(directory, texts)
    logits = reference(**batch, training=False).logits.numpy().astype(np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    mask_id = tiny.VOCAB.index("[MASK]")
    for row in range(len(texts)):
        position = int(np.flatnonzero(batch["input_ids"][row] == mask_id)[0])
        expected = np.argsort(-probs[row, position])[:5]
        assert served["top_k_ids"].numpy()[row, position].tolist() == expected.tolist()
        assert [t.decode() for t in served["top_k_tokens"].numpy()[row, position]] == \
            [tiny.VOCAB[i] for i in expected]
        np.testing.assert_allclose(served["top_k_probabilities"].numpy()[row, position], probs[row, position][expected],
                                   atol=1e-5)


def test_embed_savedmodel_token_states_follow_token_types(tmp_path):
    """The tokenized signature looks token types up: sentence pairs equal Hugging Face's states."""
    from tfbert.model import mean_pool
    from tfbert.tf import import_tensorflow

    tf = import_tensorflow()
    reference = tiny.reference_model("embed", seed=5)
    directory, loaded = _export_task(reference, "embed", tmp_path, TEXTS)
    batch = _hf_batch(directory, ["the cat sat", "a dog ran on the red mat"], ["on the mat", "yes"])
    assert batch["token_type_ids"].any()
    served = loaded.signatures["tokenized"](**{k: tf.constant(v) for k, v in batch.items()})
    hidden = reference(**batch, training=False).last_hidden_state
    np.testing.assert_allclose(served["token_embeddings"].numpy(), hidden.numpy(), atol=1e-5)
    np.testing.assert_allclose(served["sentence_embedding"].numpy(),
                               mean_pool(hidden, batch["attention_mask"]).numpy(), atol=1e-5)


def test_versions_are_never_overwritten_by_accident(classifier, tmp_path):
    _, directory = classifier
    assert _export(directory, tmp_path).version == 1
    assert _export(directory, tmp_path).version == 2
    with pytest.raises(errors.BadInputError) as info:
        _export(directory, tmp_path, version=1)
    assert "--overwrite" in str(info.value)
    assert _export(directory, tmp_path, version=1, overwrite=True).version == 1
    assert sorted(os.listdir(tmp_path / "tiny")) == ["1", "2"]


def test_failed_verification_publishes_nothing(classifier, tmp_path, monkeypatch):
    from tfbert.export import verify

    _, directory = classifier

    def broken(*args, **kwargs):
        raise errors.ExportError("simulated verification failure", fix="none")

    monkeypatch.setattr(verify.FreshProcessRun, "result", broken)
    with pytest.raises(errors.ExportError):
        _export(directory, tmp_path)
    assert list(tmp_path.iterdir()) == []  # no version, no staging directory, no empty model directory


def test_export_graph_that_differs_from_keras_is_refused(classifier, tmp_path, monkeypatch):
    """A graph-building bug (here: one LayerNorm weight doubled) stops the export before it writes."""
    from tfbert.export import graph, savedmodel

    _, directory = classifier

    def off(model):
        weights = graph.model_weights(model)
        weights["bert.encoder.layer.1.output.LayerNorm.weight"] *= 2
        return weights

    monkeypatch.setattr(savedmodel, "model_weights", off)
    with pytest.raises(errors.ExportError) as info:
        _export(directory, tmp_path)
    assert "differs from the Keras model" in str(info.value) and "logits" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_killed_export_leaves_no_version_and_is_cleaned_up(classifier, tmp_path):
    import signal
    import time

    _, directory = classifier
    cmd = [sys.executable, "-m", "tfbert.export", f"--model={directory}", "--task=classify",
           f"--output_dir={tmp_path}", "--name=tiny", "--max_seq_length=32"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    model_dir = tmp_path / "tiny"
    def staging() -> bool:
        return model_dir.is_dir() and any(p.startswith(".tmp-") for p in os.listdir(model_dir))

    while time.time() < deadline and not staging():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not [d for d in os.listdir(model_dir) if d.isdigit()]  # nothing half-written was published
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(model_dir)) == ["1"]  # the leftover temporary was removed


def test_killed_export_takes_its_verification_process_with_it(classifier, tmp_path):
    import signal
    import time

    from tests.processes import own_descendants, wait_until_ended

    _, directory = classifier
    cmd = [sys.executable, "-m", "tfbert.export", f"--model={directory}", "--task=classify", "--quantize",
           f"--output_dir={tmp_path}", "--name=tiny", "--max_seq_length=32"]
    with own_descendants() as find:  # an orphaned verifier is re-parented to this test, not to init
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for line in proc.stderr:  # the progress line printed as the verifying process is started
            if "in the background" in line:
                break
        deadline, verifiers = time.time() + 30, []
        while not verifiers and time.time() < deadline:
            verifiers = find("tfbert.export.verify")
            time.sleep(0.01)
        assert len(verifiers) == 1
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # PR_SET_PDEATHSIG ends it at once; an orphan would go on loading TensorFlow for seconds.
        assert not wait_until_ended(verifiers, timeout=3)
        assert not find("tfbert.export.verify")
    assert not [d for d in os.listdir(tmp_path / "tiny") if d.isdigit()]


def test_export_cli_error_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tfbert.export", "--model=/no/such/dir", f"--output_dir={tmp_path}"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "/no/such/dir" in result.stderr
    assert "Traceback" not in result.stderr


def test_doctor_accepts_the_savedmodel(classifier, tmp_path):
    _, directory = classifier
    result = _export(directory, tmp_path)
    out = subprocess.run([sys.executable, "-m", "tfbert.doctor", f"--model={result.path}", "--json"],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    message = next(row["message"] for row in json.loads(out.stdout)["rows"] if row["check"] == "files")
    assert "serving_default(text)" in message and "tokenized(attention_mask, input_ids, token_type_ids)" in message

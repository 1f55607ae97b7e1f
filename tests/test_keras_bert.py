"""tfbert's own Keras BERT (tfbert/keras_bert.py): what tfbert.load builds where Hugging Face's TF classes
are missing. The reference is Hugging Face's TFBertModel / TFBertFor* (transformers 4.x, the test extra)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests import tiny
from tfbert import keras_bert
from tfbert import model as tfbert_model

TOLERANCE = 1e-5
# Hides the packages named in $TFBERT_TEST_HIDE from a Python process as if they were not installed
# (transformers: the transformers 5 / no-transformers environment): the finders answer None for them.
BLOCKER = '''import os, sys
HIDDEN = set(os.environ["TFBERT_TEST_HIDE"].split(","))
class _Hide:
    def __init__(self, finder):
        self.finder = finder
    def find_spec(self, name, path=None, target=None):
        return None if name.split(".")[0] in HIDDEN else self.finder.find_spec(name, path, target)
    def __getattr__(self, attr):
        return getattr(self.finder, attr)
sys.meta_path[:] = [_Hide(f) if hasattr(f, "find_spec") else f for f in sys.meta_path]
'''


def _names(model):
    """Variable names below the model's own scope (Keras numbers a second model of a class: tf_bert_model_1)."""
    return [v.name.split("/", 1)[1] for v in model.weights]


def _batch(vocab_size, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab_size, (3, 11)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 2:] = 0
    types = np.zeros_like(ids)
    types[0, 5:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


@pytest.fixture
def without_hf_classes(monkeypatch):
    """tfbert.load as it runs beside transformers 5: Hugging Face's TF BERT module is missing."""
    monkeypatch.setattr(tfbert_model, "hf_tf_bert", lambda: None)


@pytest.mark.parametrize("task", ["embed", "classify", "fill_mask", "token_classify"])
def test_load_builds_keras_bert_equal_to_hugging_face(task, tmp_path, without_hf_classes):
    reference = tiny.reference_model(task, seed=5)
    directory = tiny.write_safetensors(str(tmp_path / task), reference)
    model = tfbert_model.load(directory, task, require_head=True)
    assert type(model).__module__ == "tfbert.keras_bert"
    assert model.name == keras_bert.MODEL_NAMES[task] and _names(model) == _names(reference)
    batch = _batch(reference.config.vocab_size)
    theirs = reference(**batch, training=False)
    ours = model(**batch, training=False)
    keys = ["last_hidden_state", "pooler_output"] if task == "embed" else ["logits"]
    assert sorted(ours) == keys
    for key in keys:
        np.testing.assert_allclose(ours[key].numpy(), theirs[key].numpy(), atol=TOLERANCE, rtol=0)
    assert model.config.to_dict()["hidden_size"] == reference.config.hidden_size


@pytest.mark.parametrize("backend", ["keras-graph"])
def test_predict_keras_backends_on_keras_bert_give_hugging_faces_embeddings(backend, embed_reference, tiny_safetensors,
                                                                           without_hf_classes, monkeypatch):
    from tests.test_predict import TEXTS, hf_embeddings
    from tfbert.predict import Predictor

    built = []
    monkeypatch.setattr(keras_bert, "build", lambda *a, _build=keras_bert.build, **k: built.append(_build(*a, **k))
                        or built[-1])
    predictor = Predictor(tiny_safetensors, backend=backend, batch_size=4, max_length=32)
    np.testing.assert_allclose(predictor.predict(TEXTS)["sentence_embedding"],
                               hf_embeddings(embed_reference, tiny_safetensors, TEXTS), atol=TOLERANCE, rtol=0)
    assert len(built) == 1


def test_keras_bert_classifier_pooling_and_dropout_follow_hugging_face(tmp_path, without_hf_classes):
    reference = tiny.reference_model("classify", seed=6)
    directory = tiny.write_safetensors(str(tmp_path / "clf"), reference)
    batch = _batch(reference.config.vocab_size, seed=1)
    mean_model = tfbert_model.load(directory, "classify", pooling="mean")
    logits = tfbert_model.task_outputs(mean_model, "classify")(batch)["logits"].numpy()
    hidden = reference.bert(**batch, training=False).last_hidden_state.numpy()
    mask = batch["attention_mask"][:, :, None]
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    kernel, bias = (v.numpy() for v in reference.classifier.weights)
    np.testing.assert_allclose(logits, pooled @ kernel + bias, atol=TOLERANCE, rtol=0)
    # Training mode drops out (fine-tuning needs it); inference does not.
    model = tfbert_model.load(directory, "classify")
    assert not np.allclose(model(**batch, training=True).logits.numpy(), model(**batch, training=False).logits.numpy())


def test_keras_bert_equals_tfbertmodel_on_minilm(minilm_path, without_hf_classes):
    from transformers import BertTokenizerFast

    ours = tfbert_model.load(minilm_path)
    assert type(ours).__module__ == "tfbert.keras_bert"
    texts = ["A man is playing a guitar.", "tfbert builds its own Keras BERT beside transformers 5.", "ok"]
    batch = dict(BertTokenizerFast.from_pretrained(minilm_path)(texts, padding=True, return_tensors="np"))
    theirs = tiny.hf_tf_model(minilm_path)
    assert _names(ours) == _names(theirs)
    a, b = ours(**batch, training=False), theirs(**batch, training=False)
    mask = batch["attention_mask"].astype(bool)
    np.testing.assert_allclose(a.last_hidden_state.numpy()[mask], b.last_hidden_state.numpy()[mask],
                               atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(a.pooler_output.numpy(), b.pooler_output.numpy(), atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("hidden_act", ["relu", "gelu_new", "gelu_fast", "silu"])
def test_keras_bert_activations_equal_hugging_faces(hidden_act):
    reference = tiny.reference_model("embed", {"hidden_act": hidden_act}, seed=7)
    model = keras_bert.build(reference.config.to_dict())
    values = {name: v.numpy() for name, v in zip(_names(reference), reference.weights, strict=True)}
    for name, variable in zip(_names(model), model.weights, strict=True):
        variable.assign(values[name])
    batch = _batch(reference.config.vocab_size, seed=2)
    np.testing.assert_allclose(model(**batch).last_hidden_state.numpy(),
                               reference(**batch, training=False).last_hidden_state.numpy(), atol=TOLERANCE, rtol=0)


def test_build_refuses_an_activation_it_does_not_have():
    from tfbert.errors import ConfigMismatchError

    with pytest.raises(ConfigMismatchError, match="hidden_act"):
        keras_bert.build(dict(tiny.TINY_CONFIG, hidden_act="mish"))


def test_without_transformers_load_export_and_predict_run(tmp_path, embed_reference, tiny_safetensors):
    """The transformers 5 / no-transformers environment, for real: a process that cannot import transformers
    loads the tiny model, exports and verifies a SavedModel and predicts from it."""
    (tmp_path / "blocker").mkdir()
    (tmp_path / "blocker" / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "blocker"), os.getcwd()]),
               TFBERT_TEST_HIDE="transformers")
    texts = ["the cat sat on the red mat", "hello world", "a good movie"]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    script = f"""
import sys, tfbert
model = tfbert.load({tiny_safetensors!r})
print(type(model).__module__, "transformers" in sys.modules)
"""
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.split()[-2:] == ["tfbert.keras_bert", "False"]

    exported = subprocess.run([sys.executable, "-m", "tfbert.export", f"--model={tiny_safetensors}", "--name=tiny",
                               f"--output_dir={tmp_path / 'out'}", "--max_seq_length=32"],
                              capture_output=True, text=True, env=env, timeout=900)
    assert exported.returncode == 0, exported.stdout[-2000:] + exported.stderr[-3000:]
    version = tmp_path / "out" / "tiny" / "1"
    from tests.test_predict import hf_embeddings

    expected = hf_embeddings(embed_reference, tiny_safetensors, texts, max_length=32)
    # Then without tf-keras either (TensorFlow's Keras 3 only): the SavedModel still serves predict.
    keras3 = {k: v for k, v in env.items() if k != "TF_USE_LEGACY_KERAS"}
    for hidden, run_env in (("transformers", env), ("transformers,tf_keras", dict(keras3, TFBERT_TEST_HIDE=
                                                                                   "transformers,tf_keras"))):
        out = tmp_path / f"{hidden}.jsonl"
        predicted = subprocess.run([sys.executable, "-m", "tfbert.predict", f"--model={version}",
                                    f"--input={tmp_path / 'texts.txt'}", f"--output={out}",
                                    "--max_length=32", "--noprogress"],
                                   capture_output=True, text=True, env=run_env, timeout=600)
        assert predicted.returncode == 0, hidden + predicted.stderr[-3000:]
        got = np.array([json.loads(line)["sentence_embedding"] for line in out.read_text().splitlines()])
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_without_tf_keras_tensorflow_text_imports(tmp_path):
    """TF_USE_LEGACY_KERAS=1 without tf-keras made TensorFlow's tf.keras recurse, so even `import
    tensorflow_text` died with a RecursionError; tfbert sets it only where tf-keras is installed (a
    missing tf-keras is then the doctor's error, from the package metadata: tests/test_diagnose.py)."""
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env.update(PYTHONPATH=os.pathsep.join([str(tmp_path), os.getcwd()]), TFBERT_TEST_HIDE="tf_keras")
    script = """
from tfbert.tf import import_tensorflow
tf = import_tensorflow()
tf.keras.layers.Layer
import tensorflow_text
print(tf.keras.__version__)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1].startswith("3."), done.stdout


def test_finetune_on_keras_bert_learns_and_hugging_face_reads_the_result(tmp_path, without_hf_classes):
    from safetensors.numpy import load_file
    from transformers import BertTokenizer, TFBertForSequenceClassification

    from tests.test_finetune import write_marker_data
    from tfbert.finetune import finetune

    base = tiny.write_safetensors(str(tmp_path / "base"), tiny.reference_model("embed", seed=3), bare=True)
    write_marker_data(str(tmp_path / "train.csv"), 400, seed=1)
    rows = write_marker_data(str(tmp_path / "eval.csv"), 100, seed=2)
    result = finetune(base, str(tmp_path / "train.csv"), str(tmp_path / "eval.csv"), str(tmp_path / "out"),
                      text_column="sentence", label_column="topic", freeze="embeddings,encoder:0", epochs=5,
                      batch_size=16, max_length=16, learning_rate=3e-3, seed=0)
    assert result.evaluation.accuracy >= 0.95
    before, after = load_file(os.path.join(base, "model.safetensors")), load_file(str(tmp_path / "out" /
                                                                                    "model.safetensors"))
    frozen = [k for k in before if k.startswith("embeddings.") and k != "embeddings.position_ids"]
    assert len(frozen) == 5 and all(np.array_equal(before[k], after["bert." + k]) for k in frozen)
    assert not np.array_equal(before["encoder.layer.1.output.dense.weight"],
                              after["bert.encoder.layer.1.output.dense.weight"])
    # Hugging Face's own class reads what was trained on tfbert's Keras BERT and agrees with it.
    texts = [text for text, _ in rows]
    batch = dict(BertTokenizer(str(tmp_path / "out" / "vocab.txt"), do_lower_case=True)(
        texts, padding=True, return_tensors="np"))
    theirs = TFBertForSequenceClassification.from_pretrained(str(tmp_path / "out"))(**batch, training=False)
    ours = tfbert_model.load(str(tmp_path / "out"), "classify", require_head=True)(**batch, training=False)
    np.testing.assert_allclose(ours.logits.numpy(), theirs.logits.numpy(), atol=TOLERANCE, rtol=0)
    assert (theirs.logits.numpy().argmax(-1) == [result.labels.index(label) for _, label in rows]).mean() >= 0.95

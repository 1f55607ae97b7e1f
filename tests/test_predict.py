"""predict: tf.data pipeline, input order, every backend against the Hugging Face model, file formats, CLI."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests import tiny
from tfbert import errors

# Lengths deliberately shuffled, so length-sorting inside a window reorders them.
TEXTS = ["the cat sat on the red mat and the dog ran", "a", "hello world!", "the bird flew " * 6, "good movie",
         "bad film was boring", "yes", "no no no", "the happy dog sat on the blue mat", "fun", "sad film",
         "it was a great movie and a fun film", "red", "the green bird", "hello", "terrible"]


@pytest.fixture(scope="module")
def embed_ckpt(tmp_path_factory):
    reference = tiny.reference_model("embed", seed=3)
    return reference, tiny.write_safetensors(str(tmp_path_factory.mktemp("predict") / "ckpt"), reference)


def hf_embeddings(reference, directory, texts, max_length=32):
    """Golden values: Hugging Face's tokenizer and model, one text at a time, mean pooled in numpy."""
    from transformers import BertTokenizerFast

    hf_tok = BertTokenizerFast(vocab_file=os.path.join(directory, "vocab.txt"), do_lower_case=True)
    rows = []
    for text in texts:
        batch = hf_tok([text], truncation=True, max_length=max_length, return_tensors="np")
        hidden = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           token_type_ids=batch["token_type_ids"], training=False).last_hidden_state.numpy()[0]
        mean = hidden.mean(axis=0)
        rows.append(mean / np.linalg.norm(mean))
    return np.stack(rows)


@pytest.fixture(scope="module")
def golden(embed_ckpt):
    return hf_embeddings(*embed_ckpt, TEXTS)


def test_outputs_come_back_in_input_order_and_match_each_text_alone(embed_ckpt, golden):
    from tfbert.predict import Predictor

    _, directory = embed_ckpt
    predictor = Predictor(directory, backend="keras-eager", batch_size=3, max_length=32, window=8)
    seen = [i for indices, _ in predictor.batches(TEXTS) for i in indices]
    assert seen != sorted(seen)  # the pipeline really reordered them
    out = predictor.predict(TEXTS)
    assert out["sentence_embedding"].shape == (len(TEXTS), 32)
    np.testing.assert_allclose(out["sentence_embedding"], golden, atol=1e-5)


def test_keras_eager_and_graph_agree(embed_ckpt, golden):
    from tfbert.predict import Predictor

    _, directory = embed_ckpt
    graph = Predictor(directory, backend="keras-graph", batch_size=4, max_length=32).predict(TEXTS)
    np.testing.assert_allclose(graph["sentence_embedding"], golden, atol=1e-5)


def test_tflite_backend_matches_keras(embed_ckpt, golden, tmp_path):
    from tfbert.checkpoint import find_checkpoint
    from tfbert.export import export_tflite
    from tfbert.model import load
    from tfbert.predict import Predictor
    from tfbert.tokenizer import BertTokenizer

    _, directory = embed_ckpt
    files = find_checkpoint(directory)
    model = load(directory, require_head=True)
    tokenizer = BertTokenizer.from_files(files.vocab, files.tokenizer_config)
    result = export_tflite(model, tokenizer, task="embed", quantization="none", output_dir=str(tmp_path),
                           name="tiny", version=1, max_seq_length=32, calibration_texts=TEXTS,
                           held_out_texts=TEXTS[:8])
    predictor = Predictor(result.path, task="embed", batch_size=5, max_length=32, vocab_path=files.vocab,
                          tokenizer_config=files.tokenizer_config)
    assert predictor.backend == "tflite"
    np.testing.assert_allclose(predictor.predict(TEXTS)["sentence_embedding"], golden, atol=1e-5)


def test_savedmodel_backend_matches_hugging_face(tmp_path):
    from transformers import BertTokenizerFast

    from tfbert.export import export_saved_model
    from tfbert.predict import Predictor

    reference = tiny.reference_model("classify", seed=5)
    model, tokenizer, files = tiny.checkpoint_with_tokenizer(str(tmp_path / "clf"), reference, "classify")
    result = export_saved_model(model, tokenizer, task="classify", vocab_file=files.vocab,
                                output_dir=str(tmp_path / "out"), name="tiny", max_seq_length=32, texts=TEXTS[:4])
    predictor = Predictor(result.path, task="classify", batch_size=4, max_length=32)
    assert predictor.backend == "savedmodel"
    out = predictor.predict(TEXTS)

    hf_tok = BertTokenizerFast(vocab_file=files.vocab, do_lower_case=True)
    batch = hf_tok(TEXTS, padding="longest", truncation=True, max_length=32, return_tensors="np")
    logits = reference(**batch, training=False).logits.numpy()
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(out["probabilities"], expected, atol=1e-5)
    np.testing.assert_array_equal(out["label_ids"], expected.argmax(-1))
    names = np.array(["negative", "positive", "neutral"])
    assert list(out["labels"]) == list(names[expected.argmax(-1)])


def _write_all_formats(directory, texts):
    import tensorflow as tf

    paths = {"txt": os.path.join(directory, "in.txt"), "jsonl": os.path.join(directory, "in.jsonl"),
             "csv": os.path.join(directory, "in.csv"), "tfrecord": os.path.join(directory, "in.tfrecord")}
    with open(paths["txt"], "w", encoding="utf-8") as f:
        f.write("\n".join(texts) + "\n")
    with open(paths["jsonl"], "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"id": i, "body": t}) + "\n" for i, t in enumerate(texts))
    with open(paths["csv"], "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "sentence"])
        writer.writerows([i, t] for i, t in enumerate(texts))
    with tf.io.TFRecordWriter(paths["tfrecord"]) as writer:
        for t in texts:
            feature = {"body": tf.train.Feature(bytes_list=tf.train.BytesList(value=[t.encode("utf-8")]))}
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return paths


def test_every_file_format_gives_the_same_embeddings(embed_ckpt, golden, tmp_path):
    from tfbert.predict import Predictor, text_dataset

    _, directory = embed_ckpt
    texts = [*TEXTS[:-1], 'a "quoted", comma text']
    paths = _write_all_formats(str(tmp_path), texts)
    predictor = Predictor(directory, backend="keras-graph", batch_size=4, max_length=32)
    expected = predictor.predict(texts)["sentence_embedding"]
    np.testing.assert_allclose(expected[:-1], golden[:-1], atol=1e-5)
    for fmt, path in paths.items():
        dataset = text_dataset(path, text_field="body", text_column="sentence")
        got = predictor.predict(dataset)["sentence_embedding"]
        np.testing.assert_allclose(got, expected, atol=1e-6, err_msg=fmt)
        assert dataset.tfbert_stats.texts == len(texts) and not dataset.tfbert_stats.bad_lines


BAD_JSONL = (b'{"text": "the cat sat"}\n'
             b'{"text": "a dog\n'            # line 2: malformed JSON
             b'{"body": "no text field"}\n'  # line 3: missing field
             b'\n'                           # line 4: empty
             b'{"text": "bad \xff byte"}\n'  # line 5: not UTF-8
             b'{"text": "hello world"}\n')


def test_bad_lines_are_skipped_with_their_line_numbers(embed_ckpt, tmp_path, caplog):
    from tfbert.predict import Predictor, text_dataset

    _, directory = embed_ckpt
    path = tmp_path / "bad.jsonl"
    path.write_bytes(BAD_JSONL)
    predictor = Predictor(directory, backend="keras-graph", batch_size=4, max_length=32)
    dataset = text_dataset(str(path))
    with caplog.at_level("WARNING", logger="tfbert"):
        out = predictor.predict(dataset)
    stats = dataset.tfbert_stats
    assert [n for n, _ in stats.bad_lines] == [2, 3, 4, 5]
    assert stats.texts == 2 and out["sentence_embedding"].shape[0] == 2
    for n in (2, 3, 4, 5):
        assert f"bad.jsonl:{n}:" in caplog.text
    np.testing.assert_allclose(out["sentence_embedding"],
                               predictor.predict(["the cat sat", "hello world"])["sentence_embedding"], atol=1e-6)


def test_bad_line_with_error_policy_raises_naming_the_line(embed_ckpt, tmp_path):
    from tfbert.predict import Predictor, text_dataset

    _, directory = embed_ckpt
    path = tmp_path / "bad.jsonl"
    path.write_bytes(BAD_JSONL)
    predictor = Predictor(directory, backend="keras-graph", batch_size=4, max_length=32)
    with pytest.raises(errors.BadInputError) as info:
        predictor.predict(text_dataset(str(path), on_bad_line="error"))
    assert f"{path}:2" in str(info.value) and "malformed JSON" in str(info.value) and "fix:" in str(info.value)


def test_cli_writes_npy_and_fails_in_one_line(embed_ckpt, golden, tmp_path):
    _, directory = embed_ckpt
    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    output = tmp_path / "out.npy"
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    base = [sys.executable, "-m", "tfbert.predict", f"--model={directory}", "--max_length=32", "--batch_size=3"]
    done = subprocess.run([*base, f"--input={source}", f"--output={output}"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(np.load(output), golden, atol=1e-5)
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]

    missing = subprocess.run([*base, f"--input={tmp_path / 'nope.txt'}", f"--output={tmp_path / 'x.npy'}"],
                             capture_output=True, text=True, env=env, timeout=60)
    assert missing.returncode == 2
    lines = missing.stderr.strip().splitlines()
    assert len(lines) == 1 and "nope.txt" in lines[0] and "fix:" in lines[0]
    assert not (tmp_path / "x.npy").exists()

"""predict: tf.data and numpy pipelines, input order, every backend against the Hugging Face model, file
formats, CLI, and the .tflite run where TensorFlow cannot be imported."""

import csv
import itertools
import json
import os
import shutil
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
    hf_tok = tiny.hf_tokenizer(os.path.join(directory, "vocab.txt"), do_lower_case=True)
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


@pytest.fixture(scope="module")
def tiny_models(embed_ckpt, tmp_path_factory):
    """model_path per backend for the tiny embed checkpoint: itself, its SavedModel and fp32 .tflite."""
    from tfbert.checkpoint import find_checkpoint
    from tfbert.model import load
    from tfbert.tokenizer import BertTokenizer

    reference, directory = embed_ckpt
    files = find_checkpoint(directory)
    model = load(directory, require_head=True)
    tokenizer = BertTokenizer.from_files(files.vocab, files.tokenizer_config)
    exports = _exports(model, tokenizer, files.vocab, str(tmp_path_factory.mktemp("tiny_exports")))
    return {"keras-eager": directory, "keras-graph": directory, "keras-xla": directory, **exports,
            "vocab": files.vocab, "reference": reference}


def _exports(model, tokenizer, vocab: str, directory) -> dict[str, str]:
    """A SavedModel and an fp32 .tflite of ``model``, written directly (the export module's own
    verification subprocess is skipped; the parity tests here are the check)."""
    from tfbert.export.graph import EncoderGraph, model_weights
    from tfbert.export.savedmodel import build_serving_module, write_saved_model
    from tfbert.export.tflite import convert

    saved = os.path.join(directory, "sm")
    write_saved_model(build_serving_module(model, tokenizer, "embed"), saved, vocab_file=vocab)
    lite = os.path.join(directory, "model_none.tflite")
    with open(lite, "wb") as f:
        f.write(convert(EncoderGraph(model_weights(model), model.config.to_dict(), "embed").module(), "none"))
    return {"savedmodel": saved, "tflite": lite}


@pytest.mark.parametrize("backend", ["keras-eager", "keras-graph", "keras-xla", "savedmodel", "tflite"])
def test_every_backend_matches_hugging_face_batched_and_one_at_a_time(tiny_models, golden, backend):
    from tfbert.predict import Predictor

    predictor = Predictor(tiny_models[backend], backend=backend, batch_size=5, max_length=32, window=8,
                          vocab_path=tiny_models["vocab"] if backend == "tflite" else None)
    assert predictor.backend == backend
    np.testing.assert_allclose(predictor.predict(TEXTS)["sentence_embedding"], golden, atol=1e-5)
    for text, expected in zip(TEXTS[:4], golden[:4], strict=True):
        np.testing.assert_allclose(predictor.predict_one(text)["sentence_embedding"], expected, atol=1e-5)


def test_tflite_classify_gives_the_labels_of_the_config(tmp_path):
    from tfbert.export.graph import EncoderGraph, model_weights
    from tfbert.export.tflite import convert
    from tfbert.predict import Predictor

    reference = tiny.reference_model("classify", seed=7)
    model, _, files = tiny.checkpoint_with_tokenizer(str(tmp_path / "clf"), reference, "classify")
    lite = tmp_path / "clf.tflite"
    lite.write_bytes(convert(EncoderGraph(model_weights(model), model.config.to_dict(), "classify").module(), "none"))
    predictor = Predictor(str(lite), task="classify", batch_size=4, max_length=32, vocab_path=files.vocab)
    out = predictor.predict(TEXTS)

    hf_tok = tiny.hf_tokenizer(files.vocab, do_lower_case=True)
    logits = reference(**hf_tok(TEXTS, padding="longest", truncation=True, max_length=32, return_tensors="np"),
                       training=False).logits.numpy()
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(out["probabilities"], expected, atol=1e-5)
    names = np.array(["negative", "positive", "neutral"])[expected.argmax(-1)]
    assert list(out["labels"]) == list(names)
    assert predictor.predict_one(TEXTS[3])["labels"] == names[3]


def test_savedmodel_backend_matches_hugging_face(tmp_path):
    from tfbert.export import export_saved_model
    from tfbert.predict import Predictor

    reference = tiny.reference_model("classify", seed=5)
    model, tokenizer, files = tiny.checkpoint_with_tokenizer(str(tmp_path / "clf"), reference, "classify")
    result = export_saved_model(model, tokenizer, task="classify", vocab_file=files.vocab,
                                output_dir=str(tmp_path / "out"), name="tiny", max_seq_length=32, texts=TEXTS[:4])
    predictor = Predictor(result.path, task="classify", batch_size=4, max_length=32)
    assert predictor.backend == "savedmodel"
    out = predictor.predict(TEXTS)

    hf_tok = tiny.hf_tokenizer(files.vocab, do_lower_case=True)
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
                          env=env, timeout=900)
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(np.load(output), golden, atol=1e-5)
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]

    missing = subprocess.run([*base, f"--input={tmp_path / 'nope.txt'}", f"--output={tmp_path / 'x.npy'}"],
                             capture_output=True, text=True, env=env, timeout=900)
    assert missing.returncode == 2
    lines = missing.stderr.strip().splitlines()
    assert len(lines) == 1 and "nope.txt" in lines[0] and "fix:" in lines[0]
    assert not (tmp_path / "x.npy").exists()


def test_cli_round_trip_from_jsonl_csv_and_tfrecord_to_jsonl(tiny_models, golden, tmp_path):
    texts = [*TEXTS[:-1], 'a "quoted", comma text']
    paths = _write_all_formats(str(tmp_path), texts)
    reference = hf_embeddings(*_reference_of(tiny_models), texts)
    np.testing.assert_allclose(reference[:-1], golden[:-1], atol=1e-6)
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    for fmt in ("jsonl", "csv", "tfrecord"):
        output = tmp_path / f"out_{fmt}.jsonl"
        done = subprocess.run([sys.executable, "-m", "tfbert.predict", f"--model={tiny_models['tflite']}",
                               f"--vocab={tiny_models['vocab']}", f"--input={paths[fmt]}", f"--output={output}",
                               "--text_field=body", "--text_column=sentence", "--max_length=32", "--batch_size=3",
                               "--noprogress"], capture_output=True, text=True, env=env, timeout=900)
        assert done.returncode == 0, done.stderr
        rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
        assert [r["index"] for r in rows] == list(range(len(texts))), fmt
        np.testing.assert_allclose(np.array([r["sentence_embedding"] for r in rows]), reference, atol=1e-5,
                                   err_msg=fmt)


def _reference_of(tiny_models):
    # The Hugging Face model the tiny checkpoint was written from, and the checkpoint directory.
    return tiny_models["reference"], tiny_models["keras-graph"]


def test_reorder_buffer_streams_in_order_and_holds_at_most_a_window():
    from tfbert.predict import in_order

    rng = np.random.default_rng(0)
    rows, window, batch = 20_000, 512, 32
    order = np.concatenate([start + rng.permutation(min(window, rows - start)) for start in range(0, rows, window)])
    consumed = emitted = held_most = 0

    def pipeline():  # rows shuffled within each window, as the length sort does
        nonlocal consumed
        for start in range(0, rows, batch):
            indices = order[start:start + batch]
            consumed += len(indices)
            yield indices, {"sentence_embedding": indices[:, None] * np.ones((1, 3), np.float32)}

    for indices, out in in_order(pipeline(), "embed"):
        np.testing.assert_array_equal(indices, np.arange(emitted, emitted + len(indices)))
        np.testing.assert_array_equal(out["sentence_embedding"][:, 0], indices)
        emitted += len(indices)
        held_most = max(held_most, consumed - emitted)
    assert emitted == rows
    assert held_most <= window + batch


def test_writer_streams_rows_to_a_temporary_sibling_until_commit(tmp_path):
    from tfbert.predict import write_rows

    rows, width = 2_000, 64  # chunks of 64 KB: larger than the file buffer, so each reaches the disk
    data = np.random.default_rng(1).normal(size=(rows, width)).astype(np.float32)
    for suffix in (".npy", ".jsonl"):
        path = tmp_path / f"out{suffix}"
        sizes = []

        def chunks(path=path, sizes=sizes):
            for start in range(0, rows, 250):
                yield np.arange(start, start + 250), {"sentence_embedding": data[start:start + 250]}
                # After each chunk: written so far to the sibling, nothing at the final path yet.
                siblings = [p for p in os.listdir(tmp_path) if p.startswith(f".{path.name}.tmp-")]
                assert len(siblings) == 1 and not path.exists()
                sizes.append(os.path.getsize(tmp_path / siblings[0]))

        assert write_rows(str(path), "embed", chunks()) == rows
        assert all(b > a for a, b in itertools.pairwise(sizes)), "rows were not written as they came"
        if suffix == ".npy":
            np.testing.assert_array_equal(np.load(path), data)
        else:
            got = [json.loads(line) for line in path.read_text().splitlines()]
            assert [r["index"] for r in got] == list(range(rows))
            np.testing.assert_allclose(np.array([r["sentence_embedding"] for r in got]), data, rtol=1e-6)
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_writer_leaves_nothing_behind_when_the_input_fails(tmp_path):
    from tfbert.predict import write_rows

    def failing():
        yield np.arange(2), {"sentence_embedding": np.ones((2, 4), np.float32)}
        raise errors.BadInputError("bad input line", where="in.txt:3", fix="fix it")

    with pytest.raises(errors.BadInputError):
        write_rows(str(tmp_path / "out.npy"), "embed", failing())
    assert os.listdir(tmp_path) == []


def test_predictor_streams_a_long_input_in_order(embed_ckpt, tmp_path):
    from tfbert.predict import Predictor, text_dataset, write_rows

    _, directory = embed_ckpt
    texts = [TEXTS[(i * 7) % len(TEXTS)] + f" {i % 3 * 'red '}" for i in range(600)]
    source = tmp_path / "long.txt"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    predictor = Predictor(directory, backend="keras-graph", batch_size=8, max_length=32, window=64)
    expected = predictor.predict(texts)["sentence_embedding"]
    assert write_rows(str(tmp_path / "out.npy"), "embed", predictor.ordered_batches(text_dataset(source))) == 600
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-6)


@pytest.fixture(scope="module")
def minilm_golden(minilm_path):
    """Golden values on the real checkpoint: Hugging Face's TFBertModel, mean pooled in numpy."""
    from transformers import BertTokenizerFast

    hf_tok = BertTokenizerFast.from_pretrained(minilm_path)
    reference = tiny.hf_tf_model(minilm_path)
    rows = []
    for text in TEXTS:
        batch = hf_tok([text], truncation=True, max_length=128, return_tensors="np")
        mean = reference(**batch, training=False).last_hidden_state.numpy()[0].mean(axis=0)
        rows.append(mean / np.linalg.norm(mean))
    return np.stack(rows)


@pytest.fixture(scope="module")
def minilm_models(minilm_path, tmp_path_factory):
    from tfbert.checkpoint import find_checkpoint
    from tfbert.model import load
    from tfbert.tokenizer import BertTokenizer

    files = find_checkpoint(minilm_path)
    model = load(minilm_path, require_head=True)
    tokenizer = BertTokenizer.from_files(files.vocab, files.tokenizer_config)
    exports = _exports(model, tokenizer, files.vocab, str(tmp_path_factory.mktemp("minilm_exports")))
    return {"keras-eager": minilm_path, "keras-graph": minilm_path, "keras-xla": minilm_path, **exports}


@pytest.mark.parametrize("backend", ["keras-eager", "keras-graph", "keras-xla", "savedmodel", "tflite"])
def test_every_backend_matches_hugging_face_on_minilm(minilm_models, minilm_golden, backend):
    from tfbert.predict import Predictor

    predictor = Predictor(minilm_models[backend], backend=backend, batch_size=8)
    np.testing.assert_allclose(predictor.predict(TEXTS)["sentence_embedding"], minilm_golden, atol=2e-5)
    np.testing.assert_allclose(predictor.predict_one(TEXTS[0])["sentence_embedding"], minilm_golden[0], atol=2e-5)


def test_tflite_fp32_matches_hugging_face_on_every_batch_of_real_text(minilm_path, minilm_models):
    # Hundreds of real sentences, length-sorted: consecutive batches share a shape, which is
    # where a repeated invoke under XNNPACK gave wrong fp32 results (see tfbert/litert.py).
    from transformers import BertTokenizerFast

    from tfbert.predict import Predictor
    from tfbert.predict.measure import sample_texts

    texts = sample_texts(512)
    hf_tok = BertTokenizerFast.from_pretrained(minilm_path)
    reference = tiny.hf_tf_model(minilm_path)
    golden = []
    for start in range(0, len(texts), 64):
        batch = hf_tok(texts[start:start + 64], padding="longest", truncation=True, max_length=128,
                       return_tensors="np")
        hidden = reference(**batch, training=False).last_hidden_state.numpy()
        mask = batch["attention_mask"][..., None]
        mean = (hidden * mask).sum(1) / mask.sum(1)
        golden.append(mean / np.linalg.norm(mean, axis=1, keepdims=True))
    predictor = Predictor(minilm_models["tflite"], batch_size=32)
    np.testing.assert_allclose(predictor.predict(texts)["sentence_embedding"], np.concatenate(golden), atol=2e-5)


def test_litert_fp32_minilm_is_right_on_every_invoke_at_an_unchanged_shape(minilm_path, minilm_models):
    # Under XNNPACK, invokes after the first at shape [32, 12] (where the heads transpose
    # [32, 12, 12, 32] keeps its shape) gave cosine 0.78-0.91 to the reference when the heap
    # held freed memory; tfbert.litert.LiteRTRunner re-plans for every batch. The failure
    # depends on the heap layout, so fresh interpreters are tried several times; without the
    # fix this caught it in some runs, not all.
    from tfbert.litert import LiteRTRunner

    rng = np.random.default_rng(0)
    reference = tiny.hf_tf_model(minilm_path)
    batches = []
    for shape in [(32, 10), (32, 11), (32, 12), (32, 12), (32, 12), (32, 14), (32, 12)]:
        ids = rng.integers(1000, 20000, shape).astype(np.int32)
        ids[:, 0], ids[:, -1] = 101, 102
        mask = np.ones(shape, np.int32)
        mask[::3, -2:] = 0
        hidden = reference(input_ids=ids, attention_mask=mask, training=False).last_hidden_state.numpy()
        mean = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        batches.append(({"input_ids": ids, "attention_mask": mask},
                        mean / np.linalg.norm(mean, axis=1, keepdims=True)))
    for attempt in range(6):
        # Freed non-zero memory for the interpreter's allocations to reuse, as after loading a model.
        np.empty(32 << 20, np.uint8)  # a freed large block raises glibc's mmap threshold
        garbage = [np.full(1 << 18, np.nan, np.float32) for _ in range(100 * (attempt + 1))]
        del garbage
        runner = LiteRTRunner(minilm_models["tflite"])
        for n, (inputs, golden) in enumerate(batches):
            np.testing.assert_allclose(runner(inputs)["sentence_embedding"], golden, atol=2e-5,
                                       err_msg=f"attempt {attempt}, batch {n} {inputs['input_ids'].shape}")


# === The .tflite without TensorFlow ===

# A sitecustomize for the subprocess: TensorFlow, tensorflow-text, Keras and transformers
# are not installed, as on a machine with only LiteRT (importing them raises, and
# importlib.util.find_spec finds nothing), and what the process tried to import and imported is
# written to $IMPORT_RECORD at exit.
_NO_TENSORFLOW = '''
import atexit, importlib.util, json, os, sys

BLOCKED = {"tensorflow", "tensorflow_text", "tf_keras", "keras", "transformers"}
attempted = []


class NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            attempted.append(name)
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def find_spec(name, package=None, _find_spec=importlib.util.find_spec):
    return None if name.partition(".")[0] in BLOCKED else _find_spec(name, package)


sys.meta_path.insert(0, NoTensorFlow())
importlib.util.find_spec = find_spec
before = set(sys.modules)


@atexit.register
def record():
    imported = {m.partition(".")[0] for m in set(sys.modules) - before} - set(sys.stdlib_module_names)
    with open(os.environ["IMPORT_RECORD"], "w") as f:
        json.dump({"attempted": attempted, "imported": sorted(imported)}, f)
'''
# What docs/mobile.md tells an edge machine to install (and what they pull in themselves).
EDGE_PACKAGES = {"tfbert", "numpy", "absl", "ai_edge_litert", "tokenizers"}


def _run_without_tensorflow(args: list[str], directory, command: str = "predict"
                            ) -> tuple[subprocess.CompletedProcess, dict]:
    """``python -m tfbert.<command> ARGS`` where TensorFlow cannot be imported; (process, import record)."""
    blocker = directory / "no_tensorflow"
    blocker.mkdir(exist_ok=True)
    (blocker / "sitecustomize.py").write_text(_NO_TENSORFLOW)
    record = directory / "imports.json"
    env = dict(os.environ, PYTHONPATH=f"{blocker}{os.pathsep}{os.getcwd()}", IMPORT_RECORD=str(record))
    flags = ["--noprogress"] if command == "predict" else []
    done = subprocess.run([sys.executable, "-m", f"tfbert.{command}", *flags, *args], capture_output=True,
                          text=True, env=env, timeout=900)
    return done, json.loads(record.read_text())


def _tensorflow_path(model: str, vocab: str, texts: list[str], task: str, batch_size: int, max_length: int) -> dict:
    """What predict computed with TensorFlow before the LiteRT path existed: tf.data batches
    tokenized by the tensorflow-text tokenizer, run by LiteRT, rows put back in input order."""
    from tfbert.litert import LiteRTRunner
    from tfbert.predict import assemble, batched_inputs, texts_dataset
    from tfbert.tokenizer import BertTokenizer

    tokenizer = BertTokenizer.from_files(vocab, os.path.join(os.path.dirname(vocab), "tokenizer_config.json"))
    runner = LiteRTRunner(model)
    chunks = [(index.numpy(), runner({k: v.numpy() for k, v in inputs.items()}))
              for index, inputs in batched_inputs(texts_dataset(texts), tokenizer, batch_size=batch_size,
                                                  max_length=max_length)]
    return assemble(chunks, task)


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    """(int8 .tflite, checkpoint files) of a tiny classifier whose config.json names its labels."""
    from tfbert.export.graph import EncoderGraph, model_weights
    from tfbert.export.tflite import convert

    directory = tmp_path_factory.mktemp("tiny_classifier")
    model, _, files = tiny.checkpoint_with_tokenizer(str(directory / "ckpt"), tiny.reference_model("classify", seed=7),
                                                     "classify")
    lite = directory / "model_int8.tflite"
    lite.write_bytes(convert(EncoderGraph(model_weights(model), model.config.to_dict(), "classify").module(), "int8"))
    return str(lite), files


@pytest.mark.parametrize("batch_size, window, multiple", [(3, 8, 1), (4, 7, 1), (5, None, 1), (2, 1, 1), (3, 8, 4)])
def test_numpy_batches_are_the_tf_data_batches_id_for_id(embed_ckpt, batch_size, window, multiple):
    from tfbert.edge_tokenizer import EdgeTokenizer
    from tfbert.predict import batched_inputs, numpy_batches, texts_dataset
    from tfbert.tokenizer import BertTokenizer

    _, directory = embed_ckpt
    paths = os.path.join(directory, "vocab.txt"), os.path.join(directory, "tokenizer_config.json")
    texts = [*TEXTS, *TEXTS[::-1], "", "HELLO World!!", "the " * 40, "the" * 40]  # empty, truncated, [UNK]
    graph = BertTokenizer.from_files(*paths)
    want = [(index.numpy(), {k: v.numpy() for k, v in inputs.items()})
            for index, inputs in batched_inputs(texts_dataset(texts), graph, batch_size=batch_size, max_length=16,
                                                window=window, pad_to_multiple=multiple)]
    for tokenizer in (graph, EdgeTokenizer.from_files(*paths)):
        got = list(numpy_batches(enumerate(texts), tokenizer, batch_size=batch_size, max_length=16, window=window,
                                 pad_to_multiple=multiple))
        assert len(got) == len(want)
        for (index, inputs), (want_index, want_inputs) in zip(got, want, strict=True):
            np.testing.assert_array_equal(index, want_index)
            assert sorted(inputs) == sorted(want_inputs)
            for key, value in want_inputs.items():
                np.testing.assert_array_equal(inputs[key], value, err_msg=f"{type(tokenizer).__name__} {key}")


@pytest.mark.parametrize("task", ["embed", "classify"])
def test_tflite_predict_runs_where_tensorflow_cannot_be_imported(task, tiny_models, tiny_classifier, golden, tmp_path):
    if task == "embed":
        model, vocab = tiny_models["tflite"], tiny_models["vocab"]
    else:
        model, vocab = tiny_classifier[0], tiny_classifier[1].vocab
    # Three windows of 16 * batch_size texts, each length-sorted.
    texts = [*TEXTS, *(f"{a} {b}" for a, b in itertools.product(TEXTS, TEXTS[:5]))]
    expected = _tensorflow_path(model, vocab, texts, task, batch_size=2, max_length=32)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    for suffix in (".npy", ".jsonl"):
        output = tmp_path / f"out{suffix}"
        done, imports = _run_without_tensorflow(
            [f"--model={model}", f"--vocab={vocab}", f"--task={task}", f"--input={source}", f"--output={output}",
             "--batch_size=2", "--max_length=32"], tmp_path)
        assert done.returncode == 0, done.stderr
        assert imports["attempted"] == [], "the LiteRT path tried to import TensorFlow"
        assert set(imports["imported"]) <= EDGE_PACKAGES, imports["imported"]
        if suffix == ".npy":
            got = np.load(output)
        else:
            rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
            assert [r["index"] for r in rows] == list(range(len(texts)))
        if task == "embed":
            want = expected["sentence_embedding"]
            if suffix == ".jsonl":
                got = np.array([r["sentence_embedding"] for r in rows])
            np.testing.assert_allclose(got[:len(TEXTS)], golden, atol=1e-5)  # and Hugging Face's model
        else:
            want = expected["probabilities"]
            if suffix == ".jsonl":
                names = np.array(["negative", "positive", "neutral"])  # the config's id2label
                assert [r["label"] for r in rows] == list(names[want.argmax(-1)])
                got, want = np.array([r["score"] for r in rows]), want.max(-1)
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-6, suffix


def test_without_tensorflow_what_needs_it_fails_in_one_line(tiny_models, tmp_path):
    records = tmp_path / "in.tfrecord"
    records.write_bytes(b"")
    texts = tmp_path / "in.txt"
    texts.write_text("hello world\n", encoding="utf-8")
    for args, named in (([f"--model={tiny_models['tflite']}", f"--vocab={tiny_models['vocab']}", f"--input={records}"],
                         ("in.tfrecord", "needs TensorFlow")),
                        ([f"--model={tiny_models['keras-graph']}", f"--input={texts}"],
                         ("TensorFlow is not installed", ".tflite"))):
        done, imports = _run_without_tensorflow([*args, f"--output={tmp_path / 'out.npy'}"], tmp_path)
        assert done.returncode == 2
        lines = [line for line in done.stderr.splitlines() if not line.startswith("INFO: ")]  # LiteRT's own log
        assert len(lines) == 1 and all(n in lines[0] for n in named) and "fix:" in lines[0], done.stderr
        assert imports["attempted"] and not (tmp_path / "out.npy").exists()


def test_tflite_predict_names_a_disagreeing_tokenizer_json_once_and_tokenizes_with_vocab_txt(tiny_classifier,
                                                                                            tmp_path):

    model, files = tiny_classifier
    side = tmp_path / "side"
    side.mkdir()
    for path in (files.vocab, files.tokenizer_config, files.config):
        shutil.copy(path, side)
    data = json.loads(tiny.hf_tokenizer(files.vocab).backend_tokenizer.to_str())
    vocab = data["model"]["vocab"]
    vocab["cat"], vocab["dog"] = vocab["dog"], vocab["cat"]
    (side / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    outputs, warnings = {}, {}
    for name, vocab_path in (("side", side / "vocab.txt"), ("checkpoint", files.vocab)):
        outputs[name] = tmp_path / f"{name}.npy"
        done = subprocess.run([sys.executable, "-m", "tfbert.predict", f"--model={model}", f"--vocab={vocab_path}",
                               "--task=classify", f"--input={source}", f"--output={outputs[name]}", "--noprogress"],
                              capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=os.getcwd()),
                              timeout=900)
        assert done.returncode == 0, done.stderr
        warnings[name] = [line for line in done.stderr.splitlines() if "tokenizer.json" in line]
    assert warnings["checkpoint"] == []
    assert len(warnings["side"]) == 1 and "'dog'" in warnings["side"][0] and "fix:" in warnings["side"][0]
    np.testing.assert_array_equal(np.load(outputs["side"]), np.load(outputs["checkpoint"]))


def test_tflite_predictor_takes_a_tf_data_dataset_and_keeps_its_typed_errors(tiny_models, tmp_path):
    from tfbert.predict import Predictor, text_dataset

    predictor = Predictor(tiny_models["tflite"], batch_size=3, max_length=32, vocab_path=tiny_models["vocab"])
    assert not predictor.uses_tensorflow
    path = tmp_path / "bad.jsonl"
    path.write_bytes(BAD_JSONL)
    np.testing.assert_array_equal(predictor.predict(text_dataset(str(path)))["sentence_embedding"],
                                  predictor.predict(["the cat sat", "hello world"])["sentence_embedding"])
    with pytest.raises(errors.BadInputError) as info:
        predictor.predict(text_dataset(str(path), on_bad_line="error"))
    assert f"{path}:2" in str(info.value) and "malformed JSON" in str(info.value)


def test_doctor_checks_a_tflite_on_a_machine_with_only_litert(tiny_classifier, tmp_path):
    lite, _ = tiny_classifier
    done, imports = _run_without_tensorflow([f"--model={lite}", "--json"], tmp_path, command="doctor")
    assert done.returncode in (0, 1), done.stdout + done.stderr  # no error: warnings (no manifest) are fine
    rows = {row["check"]: row for row in json.loads(done.stdout)["rows"]}
    assert rows["environment"]["status"] == "ok" and "needs no TensorFlow" in rows["environment"]["message"]
    assert not imports["attempted"] and set(imports["imported"]) <= EDGE_PACKAGES

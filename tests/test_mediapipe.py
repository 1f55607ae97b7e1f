"""MediaPipe Tasks run the exported model: the real TextEmbedder / TextClassifier against tfbert's predict.

MediaPipe tokenizes for itself, so each comparison first reads MediaPipe's own token ids back
through it (a probe model whose "embedding" is its ids input) and compares outputs only where
they are the same as tfbert's; where they differ, the cause must be one the export names.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests import tiny
from tfbert import errors
from tfbert.samples import EDGE_CASES, read_texts, split_texts

SEQ = 128
LONG = "the quick brown fox jumps over the lazy dog " * 70  # 630 words: past any BERT's positions
# Beyond the sample: capitals outside ASCII, a zero-width space, a control character, mixed CJK.
EXTRA = ["CAFÉ ÉCOLE Ärger", "zero\u200bwidth space", "tab\tand a \x07bell", "東京 Tokyo 2024", LONG]
HELD_OUT = split_texts(read_texts())[1]
TEXTS = HELD_OUT + EDGE_CASES + EXTRA


def _id_probe(vocab: list[str], seq_length: int) -> bytes:
    """A MediaPipe model whose "embedding" is its ``ids`` input (padding -1), with the export's metadata."""
    import tensorflow as tf

    from tfbert.export.mediapipe import with_metadata

    class Probe(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, seq_length], tf.int32, name=n)
                                      for n in ("ids", "mask", "segment_ids")])
        def __call__(self, ids, mask, segment_ids):
            return {"token_ids": tf.cast(ids * mask + mask - 1 + segment_ids, tf.float32)}

    probe = Probe()
    model = tf.lite.TFLiteConverter.from_concrete_functions([probe.__call__.get_concrete_function()], probe).convert()
    return with_metadata(model, name="id-probe", version="1", output="token_ids", vocab=vocab)


def _embedder(path: str):
    from mediapipe.tasks.python import text
    from mediapipe.tasks.python.core.base_options import BaseOptions

    # No L2 normalisation or scalar quantization by MediaPipe: its output is the model's.
    return text.TextEmbedder.create_from_options(text.TextEmbedderOptions(
        base_options=BaseOptions(model_asset_path=path), l2_normalize=False, quantize=False))


def mediapipe_ids(tmp_path, vocab: list[str], texts: list[str], seq_length: int) -> list[list[int]]:
    """The token ids MediaPipe Tasks itself feeds a BERT model for each text."""
    path = str(tmp_path / "id_probe.tflite")
    with open(path, "wb") as f:
        f.write(_id_probe(vocab, seq_length))
    with _embedder(path) as embedder:
        rows = [embedder.embed(t).embeddings[0].embedding for t in texts]
    return [[int(v) for v in row if v >= 0] for row in rows]


def tfbert_ids(tokenizer, texts: list[str], seq_length: int) -> list[list[int]]:
    ids = tokenizer.tokenize_numpy(texts, seq_length)
    return [row[mask.astype(bool)].tolist() for row, mask in zip(ids["input_ids"], ids["attention_mask"], strict=True)]


@pytest.fixture(scope="module")
def minilm(tmp_path_factory, minilm_path):
    """all-MiniLM-L6-v2 exported once, int8: (export result, tokenizer, checkpoint files)."""
    from tfbert.checkpoint import find_checkpoint
    from tfbert.export import export_tflite
    from tfbert.model import load
    from tfbert.tokenizer import BertTokenizer

    files = find_checkpoint(minilm_path)
    model = load(files.root, task="embed", seq_length=SEQ, require_head=True)
    tokenizer = BertTokenizer.from_files(files.vocab, files.tokenizer_config)
    result = export_tflite(model, tokenizer, task="embed", quantization="int8",
                           output_dir=str(tmp_path_factory.mktemp("mp_minilm")), name="minilm", version=1,
                           max_seq_length=SEQ, speed_vs_fp32=False)
    return result, tokenizer, files


@pytest.fixture(scope="module")
def minilm_mediapipe_ids(minilm, tmp_path_factory):
    _, tokenizer, _ = minilm
    return mediapipe_ids(tmp_path_factory.mktemp("probe"), tokenizer.vocab, TEXTS, SEQ)


def test_the_export_measures_mediapipes_own_tokenizer_and_mediapipe_truncates(minilm, minilm_mediapipe_ids):
    from tfbert.export.mediapipe import mediapipe_token_ids

    _, tokenizer, _ = minilm
    # What the export reports as MediaPipe's ids is what MediaPipe feeds the model, text for text.
    assert mediapipe_token_ids(tokenizer.vocab, TEXTS, SEQ) == minilm_mediapipe_ids
    # A 630-word text reaches the model as [CLS], the first 126 wordpieces, [SEP]: as tfbert truncates.
    long_ids = minilm_mediapipe_ids[TEXTS.index(LONG)]
    assert len(long_ids) == SEQ and long_ids == tfbert_ids(tokenizer, [LONG], SEQ)[0]


def test_text_embedder_matches_tfbert_predict(minilm, minilm_mediapipe_ids):
    from tfbert.export.mediapipe import cause_of_difference, run
    from tfbert.litert import LiteRTRunner
    from tfbert.predict import Predictor

    result, tokenizer, files = minilm
    assert result.mediapipe_path == os.path.join(os.path.dirname(result.path), "model_int8_mediapipe.tflite")
    with _embedder(result.mediapipe_path) as embedder:
        embeddings = [embedder.embed(t).embeddings[0] for t in TEXTS]
    assert {e.head_name for e in embeddings} == {"sentence_embedding"}
    got = np.stack([e.embedding for e in embeddings]).astype(np.float64)
    expected = Predictor(result.path, task="embed", max_length=SEQ, vocab_path=files.vocab,
                         tokenizer_config=files.tokenizer_config).predict(TEXTS)["sentence_embedding"]
    cosine = np.sum(got * expected, 1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    same = np.array([m == t for m, t in zip(minilm_mediapipe_ids, tfbert_ids(tokenizer, TEXTS, SEQ), strict=True)])
    assert cosine[same].min() >= 0.99, [(t, c) for t, c, s in zip(TEXTS, cosine, same, strict=True) if s and c < 0.99]
    # MediaPipe hands over the model's own output (no L2 normalisation or quantization of its own):
    # the same file run by LiteRT on the same ids gives the same numbers.
    ids = tokenizer.tokenize_numpy(TEXTS, SEQ)
    lite = run(LiteRTRunner(result.mediapipe_path), ids["input_ids"], ids["attention_mask"], SEQ, "sentence_embedding")
    np.testing.assert_allclose(got[same], lite[same], atol=1e-5)
    differ = [t for t, s in zip(TEXTS, same, strict=True) if not s]
    # Every difference has a cause the export names; on the held-out texts and edge cases the
    # export counted exactly these.
    assert all(cause_of_difference(t, tokenizer) != "for another reason" for t in differ), differ
    counted = result.mediapipe.tokenizer
    assert counted.texts == len(HELD_OUT + EDGE_CASES)
    assert counted.differ == len([t for t in differ if t in HELD_OUT + EDGE_CASES]) >= 1  # café, dakuten
    assert len(differ) <= len(TEXTS) // 10
    with open(result.report_paths[0], encoding="utf-8") as f:
        summary = json.load(f)["summary"]
    assert summary["mediapipe_seq_length"] == SEQ and summary["mediapipe_tokenizer"] == counted.summary()


POSITIVE, NEGATIVE = {"good", "great", "fun", "happy", "yes"}, {"bad", "terrible", "boring", "sad", "no"}


def _sentiment_texts(count: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Random texts of the tiny vocab's words, labelled negative / positive / neutral by their sentiment words."""
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(tiny.WORDS, size=int(rng.integers(1, 12)))) for _ in range(count)]
    score = np.array([sum((w in POSITIVE) - (w in NEGATIVE) for w in t.split()) for t in texts])
    return texts, np.where(score > 0, 1, np.where(score < 0, 0, 2))


def _fine_tuned_classifier(vocab_path: str):
    """The tiny Hugging Face classifier trained on :func:`_sentiment_texts` (about 90 % right; a random one
    gives every text the same label, and a comparison of top labels would then prove nothing)."""
    import tensorflow as tf

    model = tiny.reference_model("classify", seed=21)
    with open(vocab_path, "w", encoding="utf-8") as f:
        f.write("\n".join(tiny.VOCAB) + "\n")
    tf.keras.utils.set_random_seed(21)  # the same model every run (fit shuffles)
    texts, labels = _sentiment_texts(400, seed=1)
    tokenizer = tiny.hf_tokenizer(vocab_path, do_lower_case=True)
    ids = dict(tokenizer(texts, padding="max_length", truncation=True, max_length=32, return_tensors="np"))
    model.compile(optimizer=tf.keras.optimizers.Adam(3e-3),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(ids, labels, epochs=20, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A tiny fine-tuned classifier exported by the CLI with --quantize: (output folder, checkpoint files, stdout)."""
    from tfbert.checkpoint import find_checkpoint

    tmp_path = tmp_path_factory.mktemp("mp_classifier")
    directory = tiny.write_safetensors(str(tmp_path / "ckpt"), _fine_tuned_classifier(str(tmp_path / "vocab.txt")))
    out = tmp_path / "out"
    # Texts of the task, as a user calibrates: the built-in English sentences are mostly [UNK] to the
    # tiny vocab, and the gate's agreement on them fell to 0.974 in one of four unseeded runs.
    (tmp_path / "calibration.txt").write_text("\n".join(_sentiment_texts(300, seed=5)[0]) + "\n")
    cmd = [sys.executable, "-m", "tfbert.export", f"--model={directory}", "--task=classify", "--nosaved_model",
           "--quantize", "--notflite_speed", "--max_seq_length=32", f"--output_dir={out}", "--name=clf",
           f"--calibration_data={tmp_path / 'calibration.txt'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out / "clf-tflite" / "1", find_checkpoint(directory), proc.stdout


def test_cli_writes_the_mediapipe_model_and_prints_it(classifier):
    folder, _, stdout = classifier
    line = next(line for line in stdout.splitlines() if line.startswith("MediaPipe"))
    assert str(folder / "model_int8_mediapipe.tflite") in line and "static length 32" in line
    assert "MediaPipe's tokenizer: ids differ on" in line
    with open(folder / "SHA256SUMS", encoding="utf-8") as f:
        assert "model_int8_mediapipe.tflite" in f.read()


def test_text_classifier_returns_tfbert_predicts_top_label(classifier):
    from mediapipe.tasks.python import text
    from mediapipe.tasks.python.core.base_options import BaseOptions

    from tfbert.model import label_names
    from tfbert.predict import Predictor

    folder, files, _ = classifier
    texts, truth = _sentiment_texts(200, seed=2)
    options = text.TextClassifierOptions(base_options=BaseOptions(model_asset_path=str(folder / "model_int8_mediapipe"
                                                                                                 ".tflite")))
    with text.TextClassifier.create_from_options(options) as classify:
        top = [classify.classify(t).classifications[0].categories[0] for t in texts]
    expected = Predictor(str(folder / "model_int8.tflite"), task="classify", max_length=32, vocab_path=files.vocab,
                         tokenizer_config=files.tokenizer_config).predict(texts)["label_ids"]
    got = np.array([c.index for c in top])
    # It has learnt the task: every label is the top one for many texts, not one constant answer.
    assert np.mean(expected == truth) >= 0.75 and np.bincount(expected, minlength=3).min() >= 0.15 * len(texts)
    assert np.mean(got == expected) >= 0.99
    with open(files.config, encoding="utf-8") as f:
        names = label_names(json.load(f))
    assert [c.category_name for c in top] == [names[i] for i in got]  # labels.txt, in id order


def test_metadata_reads_back_with_mediapipes_own_schema(classifier):
    import zipfile

    from ai_edge_litert.interpreter import Interpreter
    from mediapipe.tasks.metadata import metadata_schema_py_generated as schema

    from tfbert import tflite_metadata

    folder, _, _ = classifier
    content = (folder / "model_int8_mediapipe.tflite").read_bytes()
    metadata = schema.ModelMetadataT.InitFromObj(
        schema.ModelMetadata.GetRootAs(tflite_metadata.metadata_bytes(content), 0))
    assert metadata.minParserVersion == b"1.1.0" and len(metadata.subgraphMetadata) == 1
    subgraph = metadata.subgraphMetadata[0]
    details = Interpreter(model_content=content).get_input_details()
    # Metadata in the model's input order; static [1, 32] int32, as MediaPipe requires.
    assert [t.name.decode() for t in subgraph.inputTensorMetadata] == [
        d["name"].removeprefix("serving_default_").removesuffix(":0") for d in details]
    assert all(d["dtype"] == np.int32 and d["shape_signature"].tolist() == [1, 32] for d in details)
    unit = subgraph.inputProcessUnits[0]
    assert unit.optionsType == schema.ProcessUnitOptions.BertTokenizerOptions
    assert unit.options.vocabFile[0].type == schema.AssociatedFileType.VOCABULARY
    labels_file = subgraph.outputTensorMetadata[0].associatedFiles[0]
    assert labels_file.type == schema.AssociatedFileType.TENSOR_AXIS_LABELS
    with zipfile.ZipFile(folder / "model_int8_mediapipe.tflite") as archive:
        assert archive.read(unit.options.vocabFile[0].name.decode()).decode().split() == tiny.VOCAB
        assert archive.read(labels_file.name.decode()).decode().split() == ["negative", "positive", "neutral"]


def test_doctor_recognises_the_mediapipe_model_and_refuses_one_without_metadata(classifier, tmp_path):
    folder, _, _ = classifier
    doctor = [sys.executable, "-m", "tfbert.doctor", "--json"]
    healthy = subprocess.run([*doctor, f"--model={folder / 'model_int8_mediapipe.tflite'}"], capture_output=True,
                             text=True, timeout=900)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr[-2000:]
    assert "MediaPipe Tasks model: BertTokenizer with vocab.txt" in healthy.stdout
    assert "labels.txt (3 labels)" in healthy.stdout
    bare = tmp_path / "model_int8_mediapipe.tflite"  # the plain model, renamed: no metadata, no tokenizer
    shutil.copy(folder / "model_int8.tflite", bare)
    refused = subprocess.run([*doctor, f"--model={bare}"], capture_output=True, text=True, timeout=900)
    assert refused.returncode == 2
    errors_ = [row for row in json.loads(refused.stdout)["rows"] if row["status"] == "error"]
    assert [row["check"] for row in errors_] == ["mediapipe"]
    assert "no TFLite Metadata: MediaPipe Tasks cannot tokenize text" in errors_[0]["message"]
    assert "\n" not in errors_[0]["message"] and "_mediapipe.tflite from python -m tfbert.export" in errors_[0]["fix"]


def test_predict_names_the_model_to_use_instead_of_the_mediapipe_one(classifier, tmp_path):
    folder, _, _ = classifier
    (tmp_path / "in.txt").write_text("good film\n")
    proc = subprocess.run([sys.executable, "-m", "tfbert.predict", f"--model={folder / 'model_int8_mediapipe.tflite'}",
                           "--task=classify", f"--input={tmp_path / 'in.txt'}", f"--output={tmp_path / 'out.jsonl'}"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "MediaPipe Tasks model" in proc.stderr and "model_<quantization>.tflite next to it" in proc.stderr
    assert not (tmp_path / "out.jsonl").exists()


@pytest.fixture(scope="module")
def tiny_embed(tmp_path_factory):
    reference = tiny.reference_model("embed", seed=22)
    model, tokenizer, _ = tiny.checkpoint_with_tokenizer(str(tmp_path_factory.mktemp("mp_tiny") / "ckpt"),
                                                         reference, "embed")
    return model, tokenizer


def test_a_mediapipe_model_below_the_gate_publishes_nothing(tiny_embed, tmp_path, monkeypatch):
    from tfbert.export import export_tflite
    from tfbert.export import mediapipe as mediapipe_export
    from tfbert.export.graph import EncoderGraph

    model, tokenizer = tiny_embed
    real_convert = mediapipe_export.convert

    def scrambled(graph, quantization, **kwargs):
        # A bug in the static-length graph: its weights shuffled (the main model is untouched).
        rng = np.random.default_rng(0)
        broken = EncoderGraph({k: rng.permutation(v.ravel()).reshape(v.shape) for k, v in graph.w.items()},
                              graph.config, graph.task)
        return real_convert(broken, quantization, **kwargs)

    monkeypatch.setattr(mediapipe_export, "convert", scrambled)
    with pytest.raises(errors.ExportError, match="MediaPipe model falls below the accuracy gate"):
        export_tflite(model, tokenizer, task="embed", quantization="dynamic", output_dir=str(tmp_path), name="tiny",
                      version=1, max_seq_length=32, held_out_texts=_sentiment_texts(16, seed=3)[0], speed_vs_fp32=False)
    folder = tmp_path / "tiny-tflite"
    assert not os.path.exists(folder / "1")
    assert not folder.exists() or [p for p in os.listdir(folder) if not p.startswith(".")] == []


def test_a_cased_model_gets_no_mediapipe_model(tiny_embed, tmp_path):
    from tfbert.export import export_tflite
    from tfbert.tokenizer import BertTokenizer

    model, tokenizer = tiny_embed
    cased = BertTokenizer(tokenizer.vocab, lower_case=False)
    result = export_tflite(model, cased, task="embed", quantization="dynamic", output_dir=str(tmp_path), name="tiny",
                           version=1, max_seq_length=32, held_out_texts=_sentiment_texts(8, seed=3)[0],
                           speed_vs_fp32=False)
    assert result.mediapipe is None and result.mediapipe_path is None
    assert sorted(os.listdir(os.path.dirname(result.path))) == ["SHA256SUMS", "model_dynamic.tflite", "report.json",
                                                                "report.md"]
    with open(result.report_paths[0], encoding="utf-8") as f:
        assert json.load(f)["summary"]["mediapipe_model"].startswith("not written: the model is cased")

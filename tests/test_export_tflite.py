"""TFLite export: every precision against the Keras model, dynamic shapes, the accuracy gate."""

import json
import os

import numpy as np
import pytest

from tests import tiny
from tfbert import errors


@pytest.fixture(scope="module")
def tiny_embed(tmp_path_factory):
    from tfbert.checkpoint import find_checkpoint
    from tfbert.model import load
    from tfbert.tokenizer import BertTokenizer

    reference = tiny.reference_model("embed", seed=11)
    directory = tiny.write_safetensors(str(tmp_path_factory.mktemp("lite") / "ckpt"), reference)
    files = find_checkpoint(directory)
    return load(directory, require_head=True), BertTokenizer.from_files(files.vocab, files.tokenizer_config)


TEXTS = ["the cat sat on the red mat", "a dog ran", "hello world!", "the bird flew " * 5, "good movie",
         "bad film was boring", "yes", "no no no"] * 3


def test_rebuilt_graph_matches_keras_for_each_shape(tiny_embed):
    from tfbert.export import tflite
    from tfbert.export.graph import EncoderGraph, model_weights
    from tfbert.litert import LiteRTRunner
    from tfbert.model import mean_pool

    model, tokenizer = tiny_embed
    graph = EncoderGraph(model_weights(model), model.config.to_dict(), "embed")
    runner = LiteRTRunner(tflite.convert(graph.module(), "none"))
    for texts in (TEXTS[:1], TEXTS[:5], TEXTS):  # batch and sequence length both change
        ids = tokenizer.tokenize_numpy(texts, 32)
        hidden = model(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]).last_hidden_state
        expected = mean_pool(hidden, ids["attention_mask"]).numpy()
        got = runner(ids)["sentence_embedding"]
        np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("quantization", ["fp16", "dynamic", "int8"])
def test_quantized_exports_pass_the_gate_and_are_published(tiny_embed, tmp_path, quantization):
    from tfbert.export import export_tflite

    model, tokenizer = tiny_embed
    result = export_tflite(model, tokenizer, task="embed", quantization=quantization, output_dir=str(tmp_path),
                           name="tiny", version=1, max_seq_length=32, calibration_texts=TEXTS,
                           held_out_texts=TEXTS[:8])
    assert result.path == os.path.join(str(tmp_path), "tiny-tflite", "1", f"model_{quantization}.tflite")
    assert os.path.isfile(result.path)
    assert result.fidelity["cosine_mean"] >= 0.99
    assert result.size_bytes < result.fp32_size_bytes
    folder = os.path.dirname(result.path)
    assert {"report.json", "report.md", "SHA256SUMS"} <= set(os.listdir(folder))
    if quantization != "fp16":
        assert len(result.layer_errors) == model.config.num_hidden_layers


def test_accuracy_gate_refuses_a_broken_quantization(tiny_embed, tmp_path, monkeypatch):
    from tfbert.export import export_tflite, tflite
    from tfbert.export.graph import EncoderGraph, model_weights

    model, tokenizer = tiny_embed
    real_convert = tflite.convert

    def broken(module, quantization):
        # A quantizer bug: weights scrambled before conversion (the float reference is untouched).
        if quantization == "none":
            return real_convert(module, quantization)
        graph = EncoderGraph({k: np.random.default_rng(0).permutation(v.ravel()).reshape(v.shape)
                              for k, v in model_weights(model).items()}, model.config.to_dict(), "embed")
        return real_convert(graph.module(), quantization)

    monkeypatch.setattr(tflite, "convert", broken)
    with pytest.raises(errors.ExportError) as info:
        export_tflite(model, tokenizer, task="embed", quantization="dynamic", output_dir=str(tmp_path),
                      name="tiny", version=1, max_seq_length=32, held_out_texts=TEXTS[:8])
    assert "accuracy gate" in str(info.value) and "--allow_accuracy_drop" in str(info.value)
    assert not os.path.exists(tmp_path / "tiny-tflite" / "1")
    published = export_tflite(model, tokenizer, task="embed", quantization="dynamic", output_dir=str(tmp_path),
                              name="tiny", version=1, max_seq_length=32, held_out_texts=TEXTS[:8],
                              allow_accuracy_drop=True, mediapipe=False)  # `broken` makes token-input graphs only
    assert os.path.isfile(published.path) and published.fidelity["cosine_mean"] < 0.99


def test_classifier_tflite_agrees_with_keras(tmp_path):
    from tfbert.export import export_tflite

    reference = tiny.reference_model("classify", seed=12)
    model, tokenizer, _ = tiny.checkpoint_with_tokenizer(str(tmp_path / "clf"), reference, "classify")
    result = export_tflite(model, tokenizer, task="classify", quantization="none", output_dir=str(tmp_path / "out"),
                           name="clf", version=1, max_seq_length=32, held_out_texts=TEXTS)
    assert result.fidelity["fp32_vs_keras_max_abs_diff"] < 1e-5
    assert result.fidelity["argmax_agreement"] == 1.0


def test_doctor_accepts_the_tflite_and_catches_tampering(tiny_embed, tmp_path):
    import subprocess
    import sys

    from tfbert.export import export_tflite

    model, tokenizer = tiny_embed
    result = export_tflite(model, tokenizer, task="embed", quantization="dynamic", output_dir=str(tmp_path),
                           name="tiny", version=1, max_seq_length=32, held_out_texts=TEXTS[:8])
    doctor = [sys.executable, "-m", "tfbert.doctor", f"--model={result.path}", "--json"]
    healthy = subprocess.run(doctor, capture_output=True, text=True, timeout=900)
    assert healthy.returncode == 0, healthy.stdout
    assert "runs in LiteRT: sentence_embedding [1, 32]" in healthy.stdout
    with open(result.path, "r+b") as f:
        f.seek(os.path.getsize(result.path) // 2)
        f.write(b"\x00" * 64)
    damaged = subprocess.run(doctor, capture_output=True, text=True, timeout=900)
    assert damaged.returncode == 2
    messages = [row["message"] for row in json.loads(damaged.stdout)["rows"] if row["status"] == "error"]
    assert any("model_dynamic.tflite: sha256 differs from the manifest" in m for m in messages)


@pytest.fixture(scope="module")
def tiny_text_export(tmp_path_factory):
    """A tiny embed checkpoint exported with --tflite_text_input: (export result, checkpoint files)."""
    from tfbert.export import export_tflite

    tmp_path = tmp_path_factory.mktemp("lite_text")
    reference = tiny.reference_model("embed", seed=13)
    model, tokenizer, files = tiny.checkpoint_with_tokenizer(str(tmp_path / "ckpt"), reference, "embed")
    result = export_tflite(model, tokenizer, task="embed", quantization="dynamic", output_dir=str(tmp_path / "out"),
                           name="tiny", version=1, max_seq_length=32, calibration_texts=TEXTS,
                           held_out_texts=TEXTS[:8], text_input=True, speed_vs_fp32=False)
    return result, files


def test_raw_text_tflite_takes_what_hugging_face_tokenizes(tiny_text_export):
    from ai_edge_litert.interpreter import Interpreter

    from tfbert.litert import LiteRTRunner

    result, files = tiny_text_export
    assert result.text_path == os.path.join(os.path.dirname(result.path), "model_dynamic_text.tflite")
    assert result.fidelity["text_vs_tokens_max_abs_diff"] <= 1e-4
    # Casing, punctuation, accents, unknown words, emoji, empty, and truncation at 32 tokens.
    texts = ["Hello, World!", "The CAT sat on the MAT.", "", "café naïve zzzq", "happy 😀 dog", "the bird flew " * 30]
    hf = tiny.hf_tokenizer(files.vocab, do_lower_case=True)
    ids = hf(texts, padding="longest", truncation=True, max_length=32, return_tensors="np")
    expected = LiteRTRunner(result.path)(
        {"input_ids": ids["input_ids"], "attention_mask": ids["attention_mask"]})["sentence_embedding"]
    text_runner = LiteRTRunner(result.text_path)  # sees the text input, registers tensorflow-text's kernels
    assert text_runner.input_names == ["text"]
    got = text_runner({"text": texts})["sentence_embedding"]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # Without tensorflow-text's kernels registered, LiteRT cannot run it.
    with pytest.raises(RuntimeError, match=r"FastBertNormalize|FastWordpieceTokenize"):
        Interpreter(model_path=result.text_path).allocate_tensors()


def test_doctor_runs_a_raw_text_tflite(tiny_text_export):
    # The doctor used to feed token ids to every .tflite, a KeyError 'text' on a raw-text one.
    from tfbert.diagnose.artifacts import check_artifact
    from tfbert.litert import LiteRTRunner

    result, _ = tiny_text_export
    findings = check_artifact(result.text_path)
    files = [f for f in findings if f.check == "files"]
    assert [f.status for f in files] == ["ok"], files
    assert "runs in LiteRT: sentence_embedding [1, 32]" in files[0].message
    # Token ids given to the raw-text model: a typed error naming the input it takes.
    ids = np.array([[2, 5, 3]], np.int32)
    with pytest.raises(errors.BadInputError, match="pass text"):
        LiteRTRunner(result.text_path)({"input_ids": ids, "attention_mask": ids})


def test_cli_gates_on_held_out_data_or_a_held_out_share_of_calibration_data(tmp_path):
    import subprocess
    import sys

    directory = tiny.write_safetensors(str(tmp_path / "ckpt"), tiny.reference_model("embed", seed=11))
    calibration, held_out = tmp_path / "calibration.txt", tmp_path / "held_out.txt"
    calibration.write_text("\n".join(f"calibration text number {i}" for i in range(12)) + "\n", encoding="utf-8")
    held_out.write_text("\n".join(TEXTS[:5]) + "\n", encoding="utf-8")

    def export(version: int, *extra: str) -> dict:
        cmd = [sys.executable, "-m", "tfbert.export", f"--model={directory}", "--nosaved_model", "--quantize",
               "--notflite_speed", "--max_seq_length=32", f"--output_dir={tmp_path / 'out'}", "--name=tiny",
               f"--version={version}", f"--calibration_data={calibration}", *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-2000:]
        with open(tmp_path / "out" / "tiny-tflite" / str(version) / "report.json", encoding="utf-8") as f:
            return json.load(f)

    def counts(report: dict) -> tuple[int, int]:
        return report["summary"]["calibration_texts"], report["summary"]["held_out_texts"]

    assert counts(export(1)) == (9, 3)  # every 4th calibration line held out, never calibrated on
    assert counts(export(2, f"--held_out_data={held_out}")) == (12, 5)


def test_cli_verifies_the_savedmodel_while_converting_and_publishes_both_or_neither(tmp_path):
    import subprocess
    import sys

    from tests.processes import own_descendants

    directory = tiny.write_safetensors(str(tmp_path / "ckpt"), tiny.reference_model("embed", seed=11))
    out = tmp_path / "out"

    def export(*extra: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "tfbert.export", f"--model={directory}", "--quantize", "--notflite_speed",
               "--max_seq_length=32", f"--output_dir={out}", "--name=tiny", *extra]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=900)

    # The TFLite model fails its gate while the SavedModel is being verified: nothing is published,
    # no staging directory or verifying process is left, and the error is one line.
    with own_descendants() as find:  # this test's processes only, never another export on the machine
        failed = export("--min_cosine=1.01")
        assert not find("tfbert.export.verify")
    assert failed.returncode == 2
    errors_out = [line for line in failed.stderr.splitlines() if line.startswith("tfbert:")]
    assert len(errors_out) == 1 and "accuracy gate" in errors_out[0], failed.stderr[-2000:]
    assert not [p for p in out.rglob("*") if p.is_dir() and p.name not in ("tiny", "tiny-tflite")]

    done = export()
    assert done.returncode == 0, done.stderr[-2000:]
    assert "verified with TensorFlow's C++ loader" in done.stdout and "cosine vs fp32" in done.stdout
    assert sorted(p.name for p in (out / "tiny").iterdir()) == ["1"]
    assert (out / "tiny" / "1" / "SHA256SUMS").is_file()
    assert (out / "tiny-tflite" / "1" / "model_int8.tflite").is_file()
    # The checkpoint's tokenizer files go beside the .tflite: predict then tokenizes as the checkpoint
    # does, with no --vocab (the fallback would be the embedded MiniLM's vocab, other ids).
    from tfbert.predict import Predictor

    lite_dir = out / "tiny-tflite" / "1"
    assert (lite_dir / "vocab.txt").read_bytes() == (tmp_path / "ckpt" / "vocab.txt").read_bytes()
    assert (lite_dir / "config.json").is_file()
    texts = ["the cat sat on the red mat", "hello world"]
    beside = Predictor(str(lite_dir / "model_int8.tflite")).predict(texts)["sentence_embedding"]
    given = Predictor(str(lite_dir / "model_int8.tflite"),
                      vocab_path=str(tmp_path / "ckpt" / "vocab.txt")).predict(texts)["sentence_embedding"]
    np.testing.assert_array_equal(beside, given)

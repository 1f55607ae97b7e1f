"""Fine-tuning: a tiny random BERT learns a marker-word task, frozen weights stay bit-identical,
and the saved directory is read back by Hugging Face, tfbert.load, predict and doctor alike."""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from tests import tiny
from tfbert import errors
from tfbert import load as tfbert_load

FILLER = "the a is was of and to in it on sat ran flew red blue green".split()


def write_marker_data(path: str, n: int, seed: int, labels=("cat", "dog")) -> list[tuple[str, str]]:
    """Sentences of filler words holding exactly one marker word; the label is the marker."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(labels)
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 9))]
        words.insert(rng.randint(0, len(words)), label)
        rows.append((" ".join(words), label))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["sentence", "topic"])
        writer.writerows(rows)
    return rows


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One fine-tuning run shared by the tests below: base, data, result, output directory.

    Training on CPU is not bit-reproducible run to run, and this random tiny BERT leaves its
    plateau at epoch 3 or 4 (seen once: later, and the 5-epoch run ended at 0.89): 8 epochs
    leave room."""
    from tfbert.finetune import finetune

    root = tmp_path_factory.mktemp("finetune")
    base = tiny.write_safetensors(str(root / "base"), tiny.reference_model("embed", seed=3), bare=True)
    write_marker_data(str(root / "train.csv"), 400, seed=1)
    eval_rows = write_marker_data(str(root / "eval.csv"), 100, seed=2)
    lines = []
    result = finetune(base, str(root / "train.csv"), str(root / "eval.csv"), str(root / "out"),
                      text_column="sentence", label_column="topic", freeze="embeddings,encoder:0", epochs=8,
                      batch_size=16, max_length=16, learning_rate=3e-3, seed=0, progress=lines.append)
    return {"base": base, "result": result, "out": str(root / "out"), "eval": eval_rows, "lines": lines,
            "root": root}


def _hf_tokenize(directory: str, texts: list[str]) -> dict:
    import transformers

    tokenizer = transformers.BertTokenizer(os.path.join(directory, "vocab.txt"), do_lower_case=True)
    return dict(tokenizer(texts, padding=True, return_tensors="np"))


def test_learns_the_task_and_hugging_face_reads_the_result(trained):
    import transformers

    texts = [t for t, _ in trained["eval"]]
    truth = np.array([label for _, label in trained["eval"]])
    model = transformers.TFBertForSequenceClassification.from_pretrained(trained["out"])
    logits = model(**_hf_tokenize(trained["out"], texts), training=False).logits.numpy()
    predicted = np.array([model.config.id2label[i] for i in logits.argmax(-1)])
    assert (predicted == truth).mean() >= 0.95
    assert trained["result"].evaluation.accuracy >= 0.95
    with open(os.path.join(trained["out"], "config.json")) as f:
        config = json.load(f)
    assert config["id2label"] == {"0": "cat", "1": "dog"} and config["label2id"] == {"cat": 0, "dog": 1}


def test_frozen_weights_are_bit_identical_and_the_rest_trained(trained):
    from safetensors.numpy import load_file

    def weights(directory: str) -> dict[str, np.ndarray]:
        state = load_file(os.path.join(directory, "model.safetensors"))
        return {k.removeprefix("bert."): v for k, v in state.items()}

    before, after = weights(trained["base"]), weights(trained["out"])
    frozen = [k for k in after if k.startswith(("embeddings.", "encoder.layer.0."))]
    trainable = [k for k in after if k.startswith(("encoder.layer.1.", "pooler."))]
    assert len(frozen) == 5 + 16 and len(trainable) == 16 + 2
    for name in frozen:
        assert np.array_equal(before[name], after[name]), name
    assert all(not np.array_equal(before[name], after[name]) for name in trainable)
    # Trainable count: the top layer, the pooler and the head, from the shapes on disk.
    expected = sum(after[k].size for k in trainable) + after["classifier.weight"].size + after["classifier.bias"].size
    result = trained["result"]
    assert result.trainable_params == expected
    assert result.total_params == sum(v.size for k, v in after.items() if k != "embeddings.position_ids")


def test_tfbert_load_and_predict_reproduce_hugging_face(trained):
    import transformers

    from tfbert.predict import Predictor

    texts = [t for t, _ in trained["eval"][:20]]
    model = transformers.TFBertForSequenceClassification.from_pretrained(trained["out"])
    reference = tf_softmax(model(**_hf_tokenize(trained["out"], texts), training=False).logits.numpy())
    out = Predictor(trained["out"], task="classify", max_length=16).predict(texts)
    np.testing.assert_allclose(out["probabilities"], reference, atol=1e-5)
    assert list(out["labels"]) == [model.config.id2label[i] for i in reference.argmax(-1)]


def tf_softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_doctor_accepts_the_output_and_the_directory_is_complete(trained):
    run = subprocess.run([sys.executable, "-m", "tfbert.doctor", f"--model={trained['out']}", "--task=classify",
                          "--seq_length=16"], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    names = set(os.listdir(trained["out"]))
    assert {"config.json", "model.safetensors", "vocab.txt", "SHA256SUMS", "eval_report.json",
            "confusion_matrix.txt", "training_history.json"} <= names
    assert not [n for n in os.listdir(trained["root"]) if ".tmp-" in n]  # no staging directory left
    # The modes a plain copy gets (safetensors itself writes model.safetensors 0600).
    with open("/proc/self/status") as f:  # the umask, read without changing it
        umask = int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)
    assert {n: oct(os.stat(os.path.join(trained["out"], n)).st_mode & 0o777) for n in names} \
        == {n: oct(0o666 & ~umask) for n in names}
    assert os.stat(trained["out"]).st_mode & 0o777 == 0o777 & ~umask
    report = json.loads(open(os.path.join(trained["out"], "eval_report.json")).read())
    assert report["summary"]["accuracy"] == pytest.approx(trained["result"].evaluation.accuracy)
    assert any("trainable parameters" in line for line in trained["lines"])
    assert any(line.startswith("epoch 1/8:") for line in trained["lines"])


def test_existing_output_is_refused_without_overwrite(trained):
    from tfbert.finetune import finetune

    root = trained["root"]
    with pytest.raises(errors.BadInputError, match="--overwrite"):
        finetune(trained["base"], str(root / "train.csv"), str(root / "eval.csv"), trained["out"])


def test_memory_preflight_refuses_before_building_a_model(tmp_path, trained):
    from tfbert.finetune import finetune

    root = trained["root"]
    with pytest.raises(errors.InsufficientMemoryError) as info:
        finetune(trained["base"], str(root / "train.csv"), str(root / "eval.csv"), str(tmp_path / "out"),
                 text_column="sentence", label_column="topic", batch_size=2_000_000, max_length=64)
    assert "batch size" in str(info.value) and "training at batch 2000000" in str(info.value)
    assert not os.path.exists(tmp_path / "out")


def test_eval_labels_unknown_to_training_are_refused(tmp_path, trained):
    from tfbert.finetune import finetune

    write_marker_data(str(tmp_path / "eval.csv"), 20, seed=5, labels=("cat", "bird"))
    with pytest.raises(errors.BadInputError, match="bird"):
        finetune(trained["base"], str(trained["root"] / "train.csv"), str(tmp_path / "eval.csv"),
                 str(tmp_path / "out"), text_column="sentence", label_column="topic")


def test_cli_missing_column_is_one_line_and_exit_2(tmp_path, trained):
    root = trained["root"]
    run = subprocess.run([sys.executable, "-m", "tfbert.finetune", f"--model={trained['base']}",
                          f"--train={root / 'train.csv'}", f"--eval={root / 'eval.csv'}",
                          f"--output_dir={tmp_path / 'out'}", "--text_column=sentence", "--label_column=missing"],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "'missing'" in lines[0] and "--label_column" in lines[0]


def test_read_labelled_jsonl_skips_bad_records_and_orders_labels(tmp_path):
    from tfbert.finetune.data import label_names, read_labelled

    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": 10}\n{"text": "b", "label": 2}\nnot json\n'
                    '{"text": "", "label": 1}\n{"text": "c"}\n{"text": "d", "label": 1}\n')
    data = read_labelled(str(path))
    assert data.texts == ["a", "b", "d"] and data.labels == ["10", "2", "1"]
    assert [n for n, _ in data.skipped] == [3, 4, 5]
    assert label_names(data.labels) == ["1", "2", "10"]


def test_read_labelled_csv_skips_bad_rows_by_line_like_predict(tmp_path):
    from tfbert.finetune.data import read_labelled

    path = tmp_path / "d.tsv"
    path.write_bytes(b"topic\tsentence\n"
                     b"pets\ta cat\n"          # line 2
                     b"pets\n"                  # line 3: too few fields
                     b"food\tbad \xff byte\n"  # line 4: not UTF-8
                     b"\tno label\n"           # line 5: empty label
                     b"food\tsoup\n")          # line 6
    data = read_labelled(str(path), text_column="sentence", label_column="topic")
    assert data.texts == ["a cat", "soup"] and data.labels == ["pets", "food"]
    assert [n for n, _ in data.skipped] == [3, 4, 5]
    assert "fields" in data.skipped[0][1] and "UTF-8" in data.skipped[1][1] and "label" in data.skipped[2][1]
    with pytest.raises(errors.BadInputError) as info:
        read_labelled(str(path), text_column="sentence", label_column="topic", on_bad_line="error")
    assert f"{path}:3" in str(info.value)


def test_metrics_and_class_weights_match_hand_computed_values():
    from tfbert.finetune.data import balanced_class_weights
    from tfbert.finetune.evaluate import evaluate

    true = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    pred = np.array([0, 0, 1, 2, 1, 1, 2, 2, 0, 2])
    e = evaluate(true, pred, ["a", "b", "c"])
    # By hand: class a P=2/3 R=2/4, b P=2/3 R=2/2, c P=3/4 R=3/4.
    f1 = [2 * p * r / (p + r) for p, r in ((2 / 3, 1 / 2), (2 / 3, 1), (3 / 4, 3 / 4))]
    assert e.accuracy == pytest.approx(0.7) and e.macro_f1 == pytest.approx(np.mean(f1))
    assert e.confusion.tolist() == [[2, 1, 1], [0, 2, 0], [1, 0, 3]]
    assert e.majority_baseline == pytest.approx(0.4)
    assert e.learned and e.majority_label == "a"
    # 2 points above the majority class is still "learned nothing"; 3 is not.
    pred = np.zeros(100, dtype=np.int64)
    assert not evaluate(np.array([0] * 70 + [1] * 30), pred, ["a", "b"]).learned  # at the baseline
    pred[70:72] = 1
    assert not evaluate(np.array([0] * 70 + [1] * 30), pred, ["a", "b"]).learned  # 0.72 vs 0.70
    pred[72] = 1
    assert evaluate(np.array([0] * 70 + [1] * 30), pred, ["a", "b"]).learned  # 0.73 vs 0.70
    assert "true \\ predicted" in e.confusion_report().to_table()
    np.testing.assert_allclose(balanced_class_weights(true, 3), [10 / 12, 10 / 6, 10 / 12])


def test_freeze_spec_and_mixed_precision_decision():
    from tfbert.finetune.run import mixed_precision_policy
    from tfbert.finetune.train import parse_freeze

    assert parse_freeze("all_but_head", 6).layers == frozenset(range(6))
    assert parse_freeze("embeddings,encoder:0-3", 6).lowest_trainable_layer(6) == 4
    with pytest.raises(errors.BadInputError, match="encoder:0-9"):
        parse_freeze("encoder:0-9", 6)
    with pytest.raises(errors.BadInputError, match="unknown part"):
        parse_freeze("decoder", 6)
    assert mixed_precision_policy(True, has_gpu=True, bf16_cpu=False) == "mixed_float16"
    assert mixed_precision_policy(True, has_gpu=False, bf16_cpu=True) == "mixed_bfloat16"
    assert mixed_precision_policy(False, has_gpu=True, bf16_cpu=True) == "float32"
    with pytest.raises(errors.RuntimeSetupError, match="drop --mixed_precision"):
        mixed_precision_policy(True, has_gpu=False, bf16_cpu=False)


def test_frozen_layers_run_in_inference_mode_and_the_rest_keeps_dropout():
    from tfbert.finetune.train import apply_freeze, parse_freeze

    config = {"hidden_dropout_prob": 0.5, "attention_probs_dropout_prob": 0.5}
    inputs = tiny.sample_inputs()
    model = tiny.reference_model("classify", config=config, seed=3)
    apply_freeze(model, parse_freeze("all_but_head", model.config.num_hidden_layers))
    pooled = [model.bert(**inputs, training=True).pooler_output.numpy() for _ in range(2)]
    # The frozen encoder is deterministic in training mode and equals inference...
    np.testing.assert_array_equal(pooled[0], pooled[1])
    np.testing.assert_allclose(pooled[0], model.bert(**inputs, training=False).pooler_output.numpy(), atol=1e-6)
    # ...while the trainable head keeps its dropout.
    logits = [model(**inputs, training=True).logits.numpy() for _ in range(2)]
    assert not np.allclose(logits[0], logits[1])


def test_fill_mask_with_an_mlm_head_matches_hugging_face(tmp_path):
    from tfbert.predict import Predictor

    reference = tiny.reference_model("fill_mask", seed=4)
    directory = tiny.write_safetensors(str(tmp_path / "mlm"), reference)
    texts = ["the cat [MASK] on the mat", "a [MASK] dog ran"]
    encoded = _hf_tokenize(directory, texts)
    probs = tf_softmax(reference(**encoded, training=False).logits.numpy())
    out = Predictor(directory, task="fill_mask", max_length=16).predict(texts)
    mask_id = tiny.VOCAB.index("[MASK]")
    for row in range(len(texts)):
        position = int(np.flatnonzero(encoded["input_ids"][row] == mask_id)[0])
        assert out["input_ids"][row, position] == mask_id
        expected = np.argsort(-probs[row, position])[:5]
        assert out["top_k_ids"][row, position].tolist() == expected.tolist()
        np.testing.assert_allclose(out["top_k_probabilities"][row, position], probs[row, position][expected],
                                   atol=1e-5)


def test_fill_mask_on_minilm_without_mlm_head_is_one_clear_line(tmp_path, minilm_path):
    (tmp_path / "in.txt").write_text("a [MASK] sat on the mat\n")
    run = subprocess.run([sys.executable, "-m", "tfbert.predict", f"--model={minilm_path}", "--task=fill_mask",
                          f"--input={tmp_path / 'in.txt'}", f"--output={tmp_path / 'out.jsonl'}"],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 2
    lines = [line for line in run.stderr.strip().splitlines() if line.startswith("tfbert:")]
    assert len(lines) == 1 and "no fill_mask head" in lines[0] and "noise" in lines[0]
    assert "Traceback" not in run.stderr and not (tmp_path / "out.jsonl").exists()


def test_cli_mixed_precision_and_class_weights_end_to_end(tmp_path, trained):
    """bfloat16 where the CPU has it (else a one-line refusal); the result loads and predicts in float32."""
    from tfbert.finetune.run import bf16_capable_cpu
    from tfbert.predict import Predictor

    root = trained["root"]
    # Imbalanced training data: 3 cats for every dog.
    rows = write_marker_data(str(tmp_path / "train.csv"), 300, seed=7)
    rows += [r for r in write_marker_data(str(tmp_path / "extra.csv"), 400, seed=8) if r[1] == "cat"]
    with open(tmp_path / "train.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["sentence", "topic"])
        writer.writerows(rows)
    run = subprocess.run([sys.executable, "-m", "tfbert.finetune", f"--model={trained['base']}",
                          f"--train={tmp_path / 'train.csv'}", f"--eval={root / 'eval.csv'}",
                          f"--output_dir={tmp_path / 'out'}", "--text_column=sentence", "--label_column=topic",
                          "--freeze=embeddings,encoder:0", "--epochs=8", "--max_length=16", "--learning_rate=3e-3",
                          "--mixed_precision", "--class_weights"], capture_output=True, text=True, timeout=900)
    if not bf16_capable_cpu():
        assert run.returncode == 2 and "drop --mixed_precision" in run.stderr.strip().splitlines()[-1]
        return
    assert run.returncode == 0, run.stderr[-2000:]
    assert "precision mixed_bfloat16" in run.stderr
    texts = [t for t, _ in trained["eval"]]
    truth = np.array([label for _, label in trained["eval"]])
    out = Predictor(str(tmp_path / "out"), task="classify", max_length=16).predict(texts)
    assert (out["labels"] == truth).mean() >= 0.9


def write_pooling_layout(directory: str, mode: str, dim: int = tiny.TINY_CONFIG["hidden_size"]) -> str:
    """sentence-transformers' files for a Transformer → Pooling(``mode``) → Normalize pipeline,
    written as sentence-transformers' save() lays them out."""
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    with open(os.path.join(directory, "modules.json"), "w") as f:
        json.dump(modules, f)
    os.makedirs(os.path.join(directory, "1_Pooling"), exist_ok=True)
    flags = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens")
    with open(os.path.join(directory, "1_Pooling", "config.json"), "w") as f:
        json.dump({"word_embedding_dimension": dim, **{f"pooling_mode_{k}": k == mode for k in flags}}, f)
    return directory


def test_embed_refuses_a_sentence_transformers_checkpoint_that_does_not_mean_pool(tmp_path, tiny_safetensors,
                                                                                   minilm_path):
    """The embed task mean-pools: a CLS-pooled sentence-transformers model would get embeddings that
    are not its own, so diagnose (and with it load, predict and export) refuses it in one line."""
    from tfbert.diagnose import diagnose

    def pooling_finding(directory):
        with diagnose(directory, task="embed", memory=False) as diagnosis:
            return next(f for f in diagnosis.findings if f.check == "pooling")

    assert pooling_finding(minilm_path).status == "ok"
    assert pooling_finding(tiny_safetensors).status == "ok"  # plain BERT: tfbert's mean pooling
    mean = write_pooling_layout(tiny.copy_checkpoint(tiny_safetensors, str(tmp_path / "mean")), "mean_tokens")
    assert "modules.json declares" in pooling_finding(mean).message
    cls = write_pooling_layout(tiny.copy_checkpoint(tiny_safetensors, str(tmp_path / "cls")), "cls_token")
    finding = pooling_finding(cls)
    assert finding.status == "error" and "modules.json" in finding.message and "cls pooling" in finding.message
    with pytest.raises(errors.ConfigMismatchError):
        tfbert_load(cls, "embed")
    tfbert_load(cls, "classify")  # a classifier reads the CLS pooling the layout declares


def test_pooling_is_read_from_a_sentence_transformers_layout(tmp_path, tiny_safetensors, minilm_path):
    from tfbert.checkpoint import checkpoint_pooling, find_checkpoint

    assert checkpoint_pooling(find_checkpoint(minilm_path)) == "mean"  # its 1_Pooling/config.json
    assert checkpoint_pooling(find_checkpoint(tiny_safetensors)) == "pooler"  # plain Hugging Face BERT
    for mode, expected in (("mean_tokens", "mean"), ("cls_token", "cls"), ("max_tokens", "max")):
        directory = write_pooling_layout(tiny.copy_checkpoint(tiny_safetensors, str(tmp_path / mode)), mode)
        files = find_checkpoint(directory)
        assert checkpoint_pooling(files) == expected
        # A classifier tfbert saved records its own pooling, which wins over the layout; a Hugging
        # Face classifier's head was trained on the pooler.
        assert checkpoint_pooling(files, {"classifier_pooling": "max"}) == "max"
        assert checkpoint_pooling(files, {"architectures": ["BertForSequenceClassification"]}) == "pooler"
    directory = write_pooling_layout(tiny.copy_checkpoint(tiny_safetensors, str(tmp_path / "sqrt")),
                                     "mean_sqrt_len_tokens")
    with pytest.raises(errors.ConfigMismatchError) as info:
        checkpoint_pooling(find_checkpoint(directory))
    message = str(info.value)
    assert "1_Pooling" in message and "mean_sqrt_len_tokens" in message and "--pooling" in message
    assert "\n" not in message


def test_doctor_reports_the_pooling_a_classifier_reads(tmp_path, tiny_safetensors):
    from tfbert.diagnose import diagnose

    def pooling_rows(directory: str) -> list:
        with diagnose(directory, "classify", scan_values=False, memory=False) as diagnosis:
            return [(f.status, f.message) for f in diagnosis.findings if f.check == "pooling"]

    cls = write_pooling_layout(tiny.copy_checkpoint(tiny_safetensors, str(tmp_path / "cls")), "cls_token")
    [(status, message)] = pooling_rows(cls)
    assert status == "ok" and "reads cls pooling" in message and "modules.json" in message
    [(status, message)] = pooling_rows(tiny_safetensors)
    assert status == "ok" and "reads pooler pooling" in message
    sqrt = write_pooling_layout(tiny.copy_checkpoint(tiny_safetensors, str(tmp_path / "sqrt")), "mean_sqrt_len_tokens")
    [(status, message)] = pooling_rows(sqrt)
    assert status == "error" and "mean_sqrt_len_tokens" in message


def _hf_pooled_logits(directory: str, texts: list[str], pooling: str) -> np.ndarray:
    """Logits from Hugging Face's own encoder, pooled in numpy as sentence-transformers pools,
    then the saved ``classifier`` weights: the reference for every tfbert path."""
    import transformers

    model = transformers.TFBertForSequenceClassification.from_pretrained(directory)
    encoded = _hf_tokenize(directory, texts)
    hidden = model.bert(**encoded, training=False).last_hidden_state.numpy()
    mask = encoded["attention_mask"][:, :, None].astype(np.float32)
    pooled = {"mean": (hidden * mask).sum(1) / mask.sum(1), "cls": hidden[:, 0],
              "max": np.where(mask > 0, hidden, -1e9).max(1)}[pooling]
    return pooled @ model.classifier.kernel.numpy() + model.classifier.bias.numpy()


@pytest.fixture(scope="module")
def mean_classifier(tmp_path_factory):
    """A tiny sentence-transformers-style base (mean pooling), fine-tuned on the defaults with a frozen
    encoder."""
    from tfbert.finetune import finetune

    root = tmp_path_factory.mktemp("pooled")
    base = tiny.write_safetensors(str(root / "base"), tiny.reference_model("embed", seed=5), bare=True)
    write_pooling_layout(base, "mean_tokens")
    write_marker_data(str(root / "train.csv"), 300, seed=11)
    eval_rows = write_marker_data(str(root / "eval.csv"), 60, seed=12)
    result = finetune(base, str(root / "train.csv"), str(root / "eval.csv"), str(root / "out"),
                      text_column="sentence", label_column="topic", freeze="all_but_head", max_length=16,
                      progress=lambda line: None)
    return {"base": base, "out": str(root / "out"), "result": result, "texts": [t for t, _ in eval_rows],
            "root": root}


def test_mean_pooling_is_trained_saved_and_reproduced_by_predict_and_both_exports(mean_classifier):
    from safetensors.numpy import load_file

    from tfbert.checkpoint import find_checkpoint
    from tfbert.export import export_saved_model, export_tflite
    from tfbert.model import load
    from tfbert.predict import Predictor
    from tfbert.tokenizer import BertTokenizer

    out, texts, result = mean_classifier["out"], mean_classifier["texts"], mean_classifier["result"]
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["classifier_pooling"] == "mean"
    # Only the classifier trained: the pooler is unused, so frozen and stored as it was.
    hidden, labels = tiny.TINY_CONFIG["hidden_size"], 2
    assert result.pooling == "mean" and result.learning_rate == 3e-3
    assert result.trainable_params == hidden * labels + labels
    before, after = load_file(os.path.join(mean_classifier["base"], "model.safetensors")), \
        load_file(os.path.join(out, "model.safetensors"))
    assert np.array_equal(before["pooler.dense.weight"], after["bert.pooler.dense.weight"])

    reference = tf_softmax(_hf_pooled_logits(out, texts, "mean"))
    keras = Predictor(out, task="classify", max_length=16).predict(texts)["probabilities"]
    np.testing.assert_allclose(keras, reference, atol=1e-5)

    files = find_checkpoint(out)
    model = load(out, "classify", require_head=True)
    tokenizer = BertTokenizer.from_files(files.vocab, files.tokenizer_config)
    exports = str(mean_classifier["root"] / "exports")
    saved = export_saved_model(model, tokenizer, task="classify", vocab_file=files.vocab, output_dir=exports,
                               name="clf", version=1, max_seq_length=16, texts=texts[:8])
    lite = export_tflite(model, tokenizer, task="classify", quantization="none", output_dir=exports, name="clf",
                         version=1, max_seq_length=16, calibration_texts=texts, held_out_texts=texts[:16],
                         speed_vs_fp32=False)
    for path in (saved.path, lite.path):  # TensorFlow's SavedModel loader; LiteRT without TensorFlow
        got = Predictor(path, task="classify", max_length=16, vocab_path=files.vocab,
                        tokenizer_config=files.tokenizer_config).predict(texts)
        np.testing.assert_allclose(got["probabilities"], reference, atol=1e-4, err_msg=path)
        assert list(got["labels"]) == [["cat", "dog"][i] for i in reference.argmax(-1)]


@pytest.mark.parametrize("pooling", ["cls", "max"])
def test_cls_and_max_pooling_match_sentence_transformers_in_keras_and_the_export_graph(tmp_path, pooling):
    from tfbert.export.graph import EncoderGraph, model_weights
    from tfbert.model import load, task_outputs

    reference_model = tiny.reference_model("classify", seed=6, config={"id2label": {0: "a", 1: "b"}})
    directory = tiny.write_safetensors(str(tmp_path / "clf"), reference_model)
    texts = ["the cat sat on the mat", "a dog", "red blue green and the bird flew"]
    expected = _hf_pooled_logits(directory, texts, pooling)
    model = load(directory, "classify", require_head=True, pooling=pooling)
    inputs = _hf_tokenize(directory, texts)
    np.testing.assert_allclose(task_outputs(model, "classify")(inputs)["logits"].numpy(), expected, atol=1e-5)
    graph = EncoderGraph(model_weights(model), model.config.to_dict(), "classify").module()
    got = graph(inputs["input_ids"].astype(np.int32), inputs["attention_mask"].astype(np.int32))["logits"]
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)


def test_learning_rate_follows_what_trains_and_help_states_it():
    from tfbert.finetune.train import default_learning_rate, parse_freeze

    assert default_learning_rate(parse_freeze("all_but_head", 6), 6) == 3e-3
    assert default_learning_rate(parse_freeze("embeddings,encoder", 6), 6) == 3e-3
    assert default_learning_rate(parse_freeze("embeddings,encoder:0-3", 6), 6) == 5e-5
    assert default_learning_rate(parse_freeze(None, 6), 6) == 5e-5
    # all_but_head leaves the head trainable, and with --pooling=pooler the pooler is part of it.
    assert parse_freeze("all_but_head", 6).pooler is False
    run = subprocess.run([sys.executable, "-m", "tfbert.finetune", "--help"], capture_output=True, text=True,
                         timeout=900)
    text = " ".join(run.stdout.split())  # absl wraps the help lines
    assert "Default: 3e-3 when only the head trains" in text and "5e-5 when any encoder layer" in text
    assert "2e-4 for --task=token_classify and question_answering" in text
    assert "--pooling" in text and "--allow_no_learning" in text


def test_random_labels_exit_3_with_one_line_and_pass_with_allow_no_learning(tmp_path, tiny_safetensors):
    rng = random.Random(21)
    for name, n in (("train", 120), ("eval", 100)):
        with open(tmp_path / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            # Labels drawn independently of the text, 4 to 1: nothing to learn but the prior.
            writer.writerows((" ".join(rng.choices(FILLER, k=6)), rng.choice("aaaab")) for _ in range(n))
    command = [sys.executable, "-m", "tfbert.finetune", f"--model={tiny_safetensors}",
               f"--train={tmp_path / 'train.csv'}", f"--eval={tmp_path / 'eval.csv'}", "--freeze=all_but_head",
               "--epochs=1", "--max_length=16"]
    refused = subprocess.run([*command, f"--output_dir={tmp_path / 'refused'}"], capture_output=True, text=True,
                             timeout=900)
    assert refused.returncode == 3, refused.stderr[-2000:]
    lines = [line for line in refused.stderr.splitlines() if line.startswith("tfbert:")]
    assert len(lines) == 1 and "learned nothing" in lines[0] and "--allow_no_learning" in lines[0], lines
    assert "Traceback" not in refused.stderr
    # The checkpoint is saved all the same, its report saying so.
    with open(tmp_path / "refused" / "eval_report.json") as f:
        assert json.load(f)["summary"]["learned"] is False
    # --allow_no_learning is finetune(allow_no_learning=True) (the flag is in --help, tested above):
    # in process, to spare the suite a second TensorFlow start.
    from tfbert.finetune import finetune

    lines = []
    result = finetune(tiny_safetensors, str(tmp_path / "train.csv"), str(tmp_path / "eval.csv"),
                      str(tmp_path / "accepted"), freeze="all_but_head", epochs=1, max_length=16,
                      allow_no_learning=True, progress=lines.append)
    assert not result.learned and os.path.isdir(tmp_path / "accepted")
    assert any(line.startswith("WARNING: --eval=") and "learned nothing" in line for line in lines)

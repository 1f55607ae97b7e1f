"""Token classification (``--task=token_classify``): load, aggregation, fine-tune, export and predict.

References: Hugging Face's ``TFBertForTokenClassification`` for the logits and its
``pipeline("token-classification")`` for the entity spans (transformers 4.x, the test extra);
``seqeval`` for the entity scores.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests import tiny
from tfbert import model as tfbert_model


@pytest.fixture(scope="module")
def token_reference():
    return tiny.reference_model("token_classify", seed=3)


@pytest.fixture(scope="module")
def token_checkpoint(token_reference, tmp_path_factory):
    return tiny.write_safetensors(str(tmp_path_factory.mktemp("token") / "ckpt"), token_reference)


def test_load_gives_hugging_faces_token_logits(token_reference, token_checkpoint):
    model = tfbert_model.load(token_checkpoint, "token_classify", require_head=True)
    batch = tiny.sample_inputs()
    np.testing.assert_allclose(tiny.outputs(model, batch), tiny.outputs(token_reference, batch), atol=1e-5, rtol=0)
    assert tfbert_model.label_names(model.config.to_dict()) == tiny.TAGS
    out = tfbert_model.task_outputs(model, "token_classify")(batch)
    assert out["probabilities"].shape == (3, 9, len(tiny.TAGS))
    np.testing.assert_array_equal(out["label_ids"].numpy(), tiny.outputs(token_reference, batch).argmax(-1))


def test_a_sequence_classifier_is_not_loaded_as_a_token_head(tmp_path):
    from tfbert.errors import TfbertError

    reference = tiny.reference_model("classify", seed=4, config={"id2label": dict(enumerate(tiny.TAGS))})
    directory = tiny.write_safetensors(str(tmp_path / "seq"), reference)
    config = json.load(open(os.path.join(directory, "config.json")))
    config["architectures"] = ["BertForSequenceClassification"]
    json.dump(config, open(os.path.join(directory, "config.json"), "w"))
    with pytest.raises(TfbertError, match="BertForSequenceClassification head"):
        tfbert_model.load(directory, "token_classify", require_head=True)


# Sub-word splits (the tiny vocab has few whole words), punctuation, accents, a [MASK] written in the text.
TEXTS = ["The cats sat on the mat.", "Hello World, the Café naïve dogs ran!", "Élan vital: a bird flew to Zürich.",
         "xyzzy [MASK] ok", "a", "good movie... great FILM, terrible fun?! (happy) sad-bird"]


def _hf_pipeline(model, vocab: str, strategy: str):
    from transformers import BertTokenizerFast, TokenClassificationPipeline

    return TokenClassificationPipeline(model=model, tokenizer=BertTokenizerFast(vocab, do_lower_case=True),
                                       framework="tf", aggregation_strategy=strategy)


def _hf_entities(pipeline, texts):
    return [[(e["entity_group"], int(e["start"]), int(e["end"]), float(e["score"])) for e in pipeline(text)]
            for text in texts]


def _same(ours, theirs, atol=1e-4):
    """Entity lists equal: label, start, end exactly, score to ``atol``."""
    assert [[e[:3] for e in row] for row in ours] == [[e[:3] for e in row] for row in theirs]
    for row_ours, row_theirs in zip(ours, theirs, strict=True):
        np.testing.assert_allclose([e[3] for e in row_ours], [e[3] for e in row_theirs], atol=atol, rtol=0)


def _tuples(entities):
    return [[(e.label, e.start, e.end, e.score) for e in row] for row in entities]


def test_token_offsets_equal_hugging_faces_offset_mapping(minilm_path):
    import tensorflow as tf
    from transformers import BertTokenizerFast

    from tfbert.edge_tokenizer import EdgeTokenizer
    from tfbert.tokenizer import BertTokenizer

    texts = ["Héllo  Wörld, café\u0301 A\u200bB 中文 [MASK] x", "Straße in São Paulo 42nd!", "e\u0301tudes naïve",
             "x" * 120 + " ok", " \x07bell\x00 zero\u200b", "🙂 emoji 😀s", "ﬁnance Ⅻ ㎏", "", "İstanbul",
             "tab\tnew\nline"]
    vocab, config = os.path.join(minilm_path, "vocab.txt"), os.path.join(minilm_path, "tokenizer_config.json")
    hf = BertTokenizerFast(vocab, do_lower_case=True)(texts, padding="longest", return_offsets_mapping=True,
                                                     return_special_tokens_mask=True)
    mapping = np.array(hf["offset_mapping"])
    special = np.array(hf["special_tokens_mask"]) > 0
    expected = {"input_ids": np.array(hf["input_ids"]), "start": np.where(special, 0, mapping[..., 0]),
                "end": np.where(special, 0, mapping[..., 1])}
    graph = BertTokenizer.from_files(vocab, config).tokenize_with_offsets(tf.constant(texts), 512)
    edge = EdgeTokenizer.from_files(vocab, config).tokenize_with_offsets(texts, 512)
    for key, value in expected.items():
        np.testing.assert_array_equal(graph[key].numpy(), value, err_msg=key)
        np.testing.assert_array_equal(edge[key], value, err_msg=key)


@pytest.mark.parametrize("strategy", ["simple", "first", "max"])
def test_entities_equal_hugging_faces_pipeline(strategy, token_reference, token_checkpoint):
    """numpy (predict's .tflite path) and the SavedModel's graph group entities as Hugging Face's pipeline."""
    import tensorflow as tf

    from tfbert.edge_tokenizer import EdgeTokenizer
    from tfbert.export.savedmodel import build_serving_module
    from tfbert.tasks import TagTables, aggregate_batch, entities_from_outputs
    from tfbert.tokenizer import BertTokenizer

    vocab, config = os.path.join(token_checkpoint, "vocab.txt"), os.path.join(token_checkpoint, "tokenizer_config.json")
    theirs = _hf_entities(_hf_pipeline(token_reference, vocab, strategy), TEXTS)
    assert sum(map(len, theirs)) >= 10  # the random tags give entities of every shape
    edge = EdgeTokenizer.from_files(vocab, config)
    tokens = edge.tokenize_with_offsets(TEXTS, 64)
    logits = token_reference(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).logits.numpy()
    _same(_tuples(aggregate_batch(TEXTS, dict(tokens, logits=logits), TagTables.for_tokenizer(tiny.TAGS, edge),
                                  strategy)), theirs)
    model = tfbert_model.load(token_checkpoint, "token_classify", require_head=True)
    module = build_serving_module(model, BertTokenizer.from_files(vocab, config), "token_classify", max_seq_length=64,
                                  aggregation=strategy)
    out = {k: v.numpy() for k, v in module.serve_text(tf.constant(TEXTS)).items()}
    assert out["entity_label"].shape == out["entity_start"].shape == (len(TEXTS), max(map(len, theirs)))
    _same(_tuples(entities_from_outputs(out, row) for row in range(len(TEXTS))), theirs)
    words = [[TEXTS[row][e[1]:e[2]] for e in entities] for row, entities in enumerate(theirs)]
    assert [[w.decode() for w in out["entity_word"][row, :len(ws)]] for row, ws in enumerate(words)] == words


@pytest.fixture(scope="module")
def token_exports(token_checkpoint, tmp_path_factory):
    """The tiny Hugging Face token classifier exported once: SavedModel (aggregation first, verified with
    TensorFlow's C++ loader as every export is) and an fp32 .tflite with its vocab and config beside it."""
    from tfbert.checkpoint import find_checkpoint
    from tfbert.export import export_saved_model, export_tflite
    from tfbert.tokenizer import BertTokenizer

    out = str(tmp_path_factory.mktemp("token_exports"))
    files = find_checkpoint(token_checkpoint)
    model = tfbert_model.load(token_checkpoint, "token_classify", require_head=True)
    tokenizer = BertTokenizer.from_files(files.vocab, files.tokenizer_config)
    saved = export_saved_model(model, tokenizer, task="token_classify", vocab_file=files.vocab, output_dir=out,
                               name="ner", max_seq_length=64)
    lite = export_tflite(model, tokenizer, task="token_classify", quantization="none", output_dir=out, name="ner",
                         max_seq_length=64, speed_vs_fp32=False, checkpoint_files=files)
    return saved, lite


def test_exported_savedmodel_predicts_hugging_faces_entities(token_exports, token_reference, token_checkpoint):
    from tfbert.predict.entities import EntityPredictor

    saved, _ = token_exports
    assert saved.signatures == ["serving_default", "tokenized"] and saved.warmup_requests > 0
    predictor = EntityPredictor(saved.path)
    assert predictor.aggregation == "first"
    theirs = _hf_entities(_hf_pipeline(token_reference, os.path.join(token_checkpoint, "vocab.txt"), "first"), TEXTS)
    _same(_tuples(predictor.predict(TEXTS)), theirs)


def test_a_checkpoint_directory_predicts_hugging_faces_entities(token_reference, token_checkpoint):
    """Predict on the checkpoint itself (fine-tuning's output) runs the SavedModel's graph, built in memory."""
    from tfbert.predict.entities import EntityPredictor

    predictor = EntityPredictor(token_checkpoint, aggregation="max")
    assert predictor.backend == "keras-graph" and predictor.aggregation == "max"
    theirs = _hf_entities(_hf_pipeline(token_reference, os.path.join(token_checkpoint, "vocab.txt"), "max"), TEXTS)
    _same(_tuples(predictor.predict(TEXTS)), theirs)


@pytest.mark.parametrize("strategy", ["simple", "first", "max"])
def test_exported_tflite_predicts_hugging_faces_entities(strategy, token_exports, token_reference, token_checkpoint):
    from tfbert.predict.entities import EntityPredictor

    _, lite = token_exports
    assert lite.fidelity["argmax_agreement"] == 1.0
    theirs = _hf_entities(_hf_pipeline(token_reference, os.path.join(token_checkpoint, "vocab.txt"), strategy), TEXTS)
    _same(_tuples(EntityPredictor(lite.path, max_length=64, aggregation=strategy).predict(TEXTS)), theirs)


def test_a_100000_character_text_is_truncated_to_max_length(token_exports):
    """Truncation (not windowing): the entities of a very long text are those of its first max_length - 2 tokens."""
    from tfbert.predict.entities import EntityPredictor

    saved, lite = token_exports
    text = "the cats sat. " * 7143  # 100,002 characters
    head = text[:14 * 20]  # the first 20 sentences hold more than 62 tokens
    for predictor in (EntityPredictor(saved.path), EntityPredictor(lite.path, max_length=64)):
        long, short = predictor.predict([text, head])
        assert _tuples([long]) == _tuples([short]) and all(e.end <= len(head) for e in long)


def test_seqeval_scores_equal_seqevals():
    from seqeval.metrics import f1_score, precision_score, recall_score

    from tfbert.tasks.tagging_metrics import TaggingEvaluation, chunks

    rng = np.random.default_rng(0)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "E-LOC", "S-PER"]
    true = [[str(t) for t in rng.choice(tags, rng.integers(1, 12))] for _ in range(300)]
    predicted = [[t if rng.random() < 0.7 else str(rng.choice(tags)) for t in row] for row in true]
    evaluation = TaggingEvaluation(true, predicted)
    assert evaluation.precision == pytest.approx(precision_score(true, predicted))
    assert evaluation.recall == pytest.approx(recall_score(true, predicted))
    assert evaluation.f1 == pytest.approx(f1_score(true, predicted))
    assert chunks(["B-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-PER"]) == [("PER", 0, 1), ("LOC", 3, 3), ("LOC", 4, 4),
                                                                        ("PER", 5, 5)]
    everything_outside = TaggingEvaluation(true, [["O"] * len(row) for row in true])
    assert everything_outside.f1 == 0.0 and not everything_outside.learned


def test_conll_and_jsonl_give_the_same_first_sub_token_labels(tmp_path, token_checkpoint):
    from tfbert.edge_tokenizer import EdgeTokenizer
    from tfbert.tasks.tagged_data import IGNORE, read_tagged, tag_names, token_labels

    (tmp_path / "a.conll").write_text("-DOCSTART- -X- O\n\nHello X B-PER\ncats X I-PER\n, X O\nred X B-LOC\n\n"
                                      "a X O\n")
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "Hello cats, red", "spans": [
        {"start": 0, "end": 10, "label": "PER"}, {"start": 12, "end": 15, "label": "LOC"}]}) + "\n"
        + json.dumps({"text": "a", "spans": []}) + "\n")
    conll, jsonl = read_tagged(str(tmp_path / "a.conll")), read_tagged(str(tmp_path / "a.jsonl"))
    assert conll.tags == jsonl.tags == [["B-PER", "I-PER", "O", "B-LOC"], ["O"]]
    names = tag_names(conll.tags)
    assert names == ["O", "B-LOC", "B-PER", "I-PER"]
    edge = EdgeTokenizer.from_files(os.path.join(token_checkpoint, "vocab.txt"))
    for data in (conll, jsonl):
        labels = token_labels(data, edge, names, 32).labels[0]
        # [CLS] hello cat ##s , red [SEP]: the word's tag on its first sub-token only
        assert labels[:7].tolist() == [IGNORE, 2, 3, IGNORE, 0, 1, IGNORE]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=900)


def _write_tagged(directory, sentences: int, seed: int) -> tuple[str, str]:
    """A learnable tagging task in the tiny vocab's words: colours are COLOR, animals (with a plural
    continuing the entity) ANIMAL. Written as CoNLL columns and as JSONL spans."""
    rng = np.random.default_rng(seed)
    other = "the a is was of and to in it on sat ran flew good bad hello world yes no movie film great fun".split()
    conll, jsonl = [], []
    for _ in range(sentences):
        words = []
        for _ in range(rng.integers(3, 9)):
            r = rng.random()
            if r < 0.2:
                words.append((str(rng.choice(["red", "blue", "green"])), "B-COLOR"))
            elif r < 0.4:
                words.append((str(rng.choice(["cat", "dog", "bird"])), "B-ANIMAL"))
                if rng.random() < 0.3:
                    words.append((str(rng.choice(["cats", "dogs", "birds"])), "I-ANIMAL"))
            else:
                words.append((str(rng.choice(other)), "O"))
        conll.append("\n".join(f"{w} NN {t}" for w, t in words) + "\n\n")
        text, spans = "", []
        for w, t in words:
            text += (" " if text else "") + w
            if t.startswith("B-"):
                spans.append({"start": len(text) - len(w), "end": len(text), "label": t[2:]})
            elif t.startswith("I-"):
                spans[-1]["end"] = len(text)
        jsonl.append(json.dumps({"text": text, "spans": spans}) + "\n")
    paths = (os.path.join(directory, f"tags{seed}.conll"), os.path.join(directory, f"tags{seed}.jsonl"))
    for path, lines in zip(paths, (conll, jsonl), strict=True):
        with open(path, "w") as f:
            f.writelines(lines)
    return paths


@pytest.fixture(scope="module")
def cli_run(token_checkpoint, tmp_path_factory):
    """finetune (CoNLL train, JSONL eval) → export --quantize → predict with both artifacts → doctor on each."""
    root = tmp_path_factory.mktemp("token_cli")
    train, _ = _write_tagged(str(root), 200, seed=1)
    _, held_out = _write_tagged(str(root), 40, seed=2)
    runs = {"finetune": _cli("tfbert.finetune", "--task=token_classify", f"--model={token_checkpoint}",
                             f"--train={train}", f"--eval={held_out}", f"--output_dir={root / 'ner'}",
                             "--max_length=32", "--learning_rate=3e-3")}
    runs["export"] = _cli("tfbert.export", "--task=token_classify", f"--model={root / 'ner'}",
                          f"--output_dir={root / 'exported'}", "--max_seq_length=32", "--quantize", "--notflite_speed")
    artifacts = {"savedmodel": root / "exported" / "ner" / "1",
                 "tflite": root / "exported" / "ner-tflite" / "1" / "model_int8.tflite"}
    texts = ["the red cat sat on a dog", "hello world, blue birds flew!", "Café naïve green dogs",
             "the cats sat. " * 7143]
    (root / "texts.txt").write_text("\n".join(texts) + "\n")
    for name, path in artifacts.items():
        runs[f"predict_{name}"] = _cli("tfbert.predict", "--task=token_classify", f"--model={path}",
                                       f"--input={root / 'texts.txt'}", f"--output={root / name}.jsonl",
                                       "--max_length=32")
    runs["predict_checkpoint"] = _cli("tfbert.predict", "--task=token_classify", f"--model={root / 'ner'}",
                                      f"--input={root / 'texts.txt'}", f"--output={root / 'checkpoint'}.jsonl",
                                      "--max_length=32")
    for name, path in {"checkpoint": root / "ner", **artifacts}.items():
        runs[f"doctor_{name}"] = _cli("tfbert.doctor", f"--model={path}", "--task=token_classify")
    return root, texts, runs


def test_cli_finetune_export_predict_doctor(cli_run):
    root, texts, runs = cli_run
    for name, run in runs.items():
        assert run.returncode == 0, f"{name}: {run.stderr[-3000:]}"
        assert "Traceback" not in run.stderr
    summary = json.loads((root / "ner" / "eval_report.json").read_text())["summary"]
    assert summary["f1"] > 0.5 and summary["learned"] and summary["token_accuracy"] > summary[
        "all_outside_token_accuracy"]
    assert json.loads((root / "ner" / "config.json").read_text())["architectures"] == ["BertForTokenClassification"]
    assert "argmax agreement" in runs["export"].stdout
    rows = {name: [json.loads(line) for line in (root / f"{name}.jsonl").read_text().splitlines()]
            for name in ("savedmodel", "tflite")}
    for output in rows.values():
        assert [row["index"] for row in output] == list(range(len(texts)))
        for row in output:
            for entity in row["entities"]:
                assert entity["word"] == texts[row["index"]][entity["start"]:entity["end"]]
                assert entity["label"] in ("ANIMAL", "COLOR") and 0 < entity["score"] <= 1
        assert {(e["word"], e["label"]) for e in output[0]["entities"]} >= {("red", "COLOR"), ("dog", "ANIMAL")}
        assert all(e["end"] <= 14 * 12 for e in output[3]["entities"])  # truncated to 32 tokens
    spans = {name: [[(e["start"], e["end"], e["label"]) for e in row["entities"]] for row in output]
             for name, output in rows.items()}
    assert spans["savedmodel"] == spans["tflite"]
    # The fine-tuned checkpoint predicts what its SavedModel serves.
    assert (root / "checkpoint.jsonl").read_text() == (root / "savedmodel.jsonl").read_text()


def test_finetune_refuses_an_unknown_tag_in_one_line(tmp_path, token_checkpoint):
    train, _ = _write_tagged(str(tmp_path), 20, seed=3)
    held_out = tmp_path / "eval.conll"
    held_out.write_text("the X O\ncat X B-ANIMAL\n\nred X B-COLOUR\n")
    run = _cli("tfbert.finetune", "--task=token_classify", f"--model={token_checkpoint}", f"--train={train}",
               f"--eval={held_out}", f"--output_dir={tmp_path / 'out'}", "--max_length=32")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    line = run.stderr.strip().splitlines()[-1]
    assert f"{held_out}:4" in line and "B-COLOUR" in line and "B-ANIMAL, I-ANIMAL, B-COLOR" in line
    assert not (tmp_path / "out").exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


def test_a_span_past_the_end_of_its_text_is_one_line(tmp_path, token_checkpoint):
    from tfbert.errors import BadInputError
    from tfbert.tasks.tagged_data import read_tagged

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "a cat", "spans": []}) + "\n"
                   + json.dumps({"text": "the red cat", "spans": [{"start": 8, "end": 14, "label": "ANIMAL"}]}) + "\n")
    with pytest.raises(BadInputError, match=r"bad.jsonl:2: spans\[0\].*0 <= start < end <= 11.*start 8, end 14"):
        read_tagged(str(bad))
    run = _cli("tfbert.finetune", "--task=token_classify", f"--model={token_checkpoint}", f"--train={bad}",
               f"--eval={bad}", f"--output_dir={tmp_path / 'out'}")
    assert run.returncode == 2 and "Traceback" not in run.stderr and "past its end" in run.stderr.splitlines()[-1]
    assert not (tmp_path / "out").exists()

"""Extractive question answering (``--task=question_answering``): HF ``TFBertForQuestionAnswering`` weights
loaded by tfbert, the span search, SQuAD metrics, and the CLIs end to end. The references are Hugging Face's
TF model and its ``question-answering`` pipeline on the same weights, and hand-computed SQuAD scores."""

import numpy as np
import pytest

from tests import tiny
from tfbert import model as tfbert_model

TOLERANCE = 1e-5


def deterministic_reference(seed: int = 3):
    """The HF QA model with every weight drawn from numpy's seeded generator (Keras' initializers are not
    repeatable across calls), and sharp start/end logits: on this seed the null score wins on some of
    _pairs() and not on others (handle_impossible_answer), every run."""
    model = tiny.reference_model("question_answering")
    rng = np.random.default_rng(seed)
    for v in model.weights:
        if "gamma" in v.name:
            v.assign(1 + rng.normal(0, 0.1, v.shape).astype(np.float32))
        elif "beta" in v.name or "bias" in v.name:
            v.assign(rng.normal(0, 0.1, v.shape).astype(np.float32))
        else:
            scale = 0.5 if "qa_outputs" in v.name else 0.02
            v.assign(rng.normal(0, scale, v.shape).astype(np.float32))
    return model


@pytest.fixture(scope="module")
def reference():
    return deterministic_reference()


@pytest.fixture(scope="module")
def checkpoint(reference, tmp_path_factory):
    return tiny.write_safetensors(str(tmp_path_factory.mktemp("qa") / "ckpt"), reference)


@pytest.mark.parametrize("hf_classes", [True, False], ids=["hf-classes", "keras-bert"])
def test_load_gives_hugging_face_start_end_logits(reference, checkpoint, hf_classes, monkeypatch):
    if not hf_classes:
        monkeypatch.setattr(tfbert_model, "hf_tf_bert", lambda: None)
    model = tfbert_model.load(checkpoint, "question_answering", require_head=True)
    inputs = tiny.sample_inputs(batch=3, seq=11)
    inputs["token_type_ids"][:, 5:] = 1
    expected = reference(**inputs, training=False)
    got = tfbert_model.task_outputs(model, "question_answering")(inputs)
    for key in ("start_logits", "end_logits"):
        assert got[key].shape == (3, 11)
        np.testing.assert_allclose(got[key].numpy(), getattr(expected, key).numpy(), atol=TOLERANCE)
    assert [v.name.split("/", 1)[1] for v in model.weights] == [v.name.split("/", 1)[1] for v in reference.weights]


def test_base_checkpoint_refused_for_inference_and_fresh_head_for_finetuning(tmp_path):
    from tfbert.errors import CheckpointNotFoundError

    base = tiny.write_safetensors(str(tmp_path / "base"), tiny.reference_model("embed", seed=3))
    with pytest.raises(CheckpointNotFoundError, match="question_answering head"):
        tfbert_model.load(base, "question_answering", require_head=True)
    model = tfbert_model.load(base, "question_answering")
    assert model.qa_outputs.kernel.shape == (32, 2)


MAX_SEQ, STRIDE = 32, 8  # small windows: the long contexts below span several, overlapping by STRIDE


def _pairs():
    rng = np.random.default_rng(0)
    return [("what sat?", "the cat sat on the red dög."), ("who ran", " ".join(rng.choice(tiny.WORDS, 60)) + "."),
            ("is it good", "Hello, World! the movie was great fun"), ("a", "xxx"),
            ("what", " ".join(rng.choice(tiny.WORDS, 150))), ("who", "cat"), ("what ran", "dog ran"), ("is it", "bird")]


@pytest.fixture(scope="module")
def hf_answers(reference, checkpoint):
    """Hugging Face's question-answering pipeline on the reference weights: without and with impossible answers."""
    import os

    from transformers import BertTokenizerFast, pipeline

    vocab = BertTokenizerFast(os.path.join(checkpoint, "vocab.txt"))
    pipe = pipeline("question-answering", model=reference, tokenizer=vocab, framework="tf", torch_dtype=None)
    answers = {handle: [pipe(question=q, context=c, max_seq_len=MAX_SEQ, doc_stride=STRIDE,
                             handle_impossible_answer=handle) for q, c in _pairs()] for handle in (False, True)}
    assert {a["answer"] == "" for a in answers[True]} == {True, False}  # both outcomes are exercised
    return answers


def _assert_same(answers, expected):
    for got, want in zip(answers, expected, strict=True):
        assert (got[0], got[1], got[2]) == (want["answer"], want["start"], want["end"])
        assert got[3] == pytest.approx(want["score"], rel=1e-4)


@pytest.mark.parametrize("null_threshold", [None, 0.0], ids=["never-empty", "impossible-answers"])
def test_numpy_windows_and_span_search_equal_hugging_face_pipeline(reference, checkpoint, hf_answers, null_threshold):
    import os

    from tfbert.edge_tokenizer import EdgeTokenizer
    from tfbert.tasks import question_answering as qa

    tok = EdgeTokenizer.from_files(os.path.join(checkpoint, "vocab.txt"))
    pairs = _pairs()
    questions, contexts = tok.wordpieces([q for q, _ in pairs]), tok.wordpieces([c for _, c in pairs])
    windows = qa.make_windows([q.ids for q in questions], [c.ids for c in contexts], max_seq_length=MAX_SEQ,
                              doc_stride=STRIDE, cls_id=tok.cls_id, sep_id=tok.sep_id, pad_id=tok.pad_id)
    assert np.bincount(windows.example).max() >= 5  # the long contexts really are split
    out = reference(**windows.inputs(), training=False)
    answers = qa.best_answers(out.start_logits.numpy(), out.end_logits.numpy(), windows, [c for _, c in pairs],
                              [(c.word_begin, c.word_end) for c in contexts], null_threshold=null_threshold)
    _assert_same([(a.text, a.start, a.end, a.score) for a in answers], hf_answers[null_threshold is not None])


@pytest.mark.parametrize("null_threshold, chunk", [(None, 32), (0.0, 3)],
                         ids=["never-empty", "impossible-answers-in-chunks-of-3-windows"])
def test_serving_graph_answers_equal_hugging_face_pipeline(checkpoint, hf_answers, null_threshold, chunk,
                                                           monkeypatch):
    """The serving graph encodes a request's windows ``WINDOW_CHUNK`` at a time (here also 3: the
    pairs' 20-odd windows in seven chunks) and answers as HF's pipeline."""
    from tfbert.export import savedmodel
    from tfbert.tokenizer import BertTokenizer

    monkeypatch.setattr(savedmodel, "WINDOW_CHUNK", chunk)
    model = tfbert_model.load(checkpoint, "question_answering", require_head=True)
    tok = BertTokenizer.from_files(f"{checkpoint}/vocab.txt", f"{checkpoint}/tokenizer_config.json")
    module = savedmodel.build_question_answering_module(model, tok, max_seq_length=MAX_SEQ, doc_stride=STRIDE,
                                                        null_threshold=null_threshold)
    pairs = [*_pairs(), ("what", "")]
    out = module.serve_text(np.array([q for q, _ in pairs], object), np.array([c for _, c in pairs], object))
    got = [(out["answer"][i].numpy().decode(), int(out["start"][i]), int(out["end"][i]), float(out["score"][i]))
           for i in range(len(pairs))]
    _assert_same(got[:-1], hf_answers[null_threshold is not None])
    assert got[-1][:3] == ("", 0, 0)  # an empty context: no answer, not an error
    # Five windows in chunks: the padded rows of the last chunk change nothing.
    rng = np.random.default_rng(1)
    ids = rng.integers(5, len(tiny.VOCAB), (5, 12)).astype(np.int32)
    mask, types = np.ones_like(ids), np.repeat([[0] * 4 + [1] * 8], 5, axis=0).astype(np.int32)
    mask[3, 7:] = 0
    chunked, whole = module.encode_windows(ids, mask, types), module.serve_tokenized(ids, mask, types)
    for key in ("start_logits", "end_logits"):
        np.testing.assert_allclose(chunked[key].numpy(), whole[key].numpy(), atol=1e-5)


def test_window_starts_follow_tokenizers_overflow():
    from tfbert.tasks import question_answering as qa

    # tokenizers' only_second overflow with stride: windows of `room` tokens every room - stride tokens.
    assert qa.window_starts(10, 4, 1) == [0, 3, 6]
    assert qa.window_starts(4, 4, 1) == [0]
    assert qa.window_starts(5, 4, 2) == [0, 2]


@pytest.mark.parametrize("prediction, golds, expected", [
    ("The Cat!", ["cat"], (1.0, 1.0)),  # case, punctuation and articles do not count
    ("the cat", ["a cat sat"], (0.0, 2 * 1 * 0.5 / 1.5)),  # 1 common token: precision 1, recall 1/2
    ("dog", ["cat", "a dog"], (1.0, 1.0)),  # the best gold answer counts
    ("", [], (1.0, 1.0)),  # unanswerable, answered with nothing
    ("cat", [], (0.0, 0.0)),  # unanswerable, answered anyway
    ("red red cat", ["red cat cat"], (0.0, 2 / 3)),  # tokens counted with multiplicity: 2 common of 3
])
def test_squad_scores_hand_computed(prediction, golds, expected):
    from tfbert.tasks.question_answering import squad_scores

    assert squad_scores(prediction, golds) == pytest.approx(expected)


def _squad_records(n, seed, unanswerable_every=5):
    """'what follows X?' over random tiny-vocab sentences; every ``unanswerable_every``-th asks about a missing word."""
    rng = np.random.default_rng(seed)
    words = tiny.WORDS[10:]
    records = []
    for i in range(n):
        sentence = [str(w) for w in rng.choice(words, int(rng.integers(8, 40)))]
        context = " ".join(sentence)
        if i % unanswerable_every == 0:
            records.append({"question": "what follows zebra?", "context": context,
                            "answers": {"text": [], "answer_start": []}})
            continue
        k = int(rng.integers(0, len(sentence) - 1))
        start = len(" ".join(sentence[:k + 1])) + 1
        records.append({"question": f"what follows {sentence[k]}?", "context": context,
                        "answers": {"text": [sentence[k + 1]], "answer_start": [start]}})
    return records


def _write_jsonl(path, rows):
    import json

    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return str(path)


def _cli(module, *args, timeout=600):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", f"tfbert.{module}", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    """finetune → export (SavedModel + int8 .tflite, then fp32 .tflite) → predict with each, on the CLIs."""
    import json

    root = tmp_path_factory.mktemp("qa_cli")
    base = tiny.write_safetensors(str(root / "base"), tiny.reference_model("embed", seed=2))
    train = _write_jsonl(root / "train.jsonl", _squad_records(64, 0))
    held_out = _squad_records(12, 1)
    evaluation = _write_jsonl(root / "eval.jsonl", held_out)
    long_context = " ".join(r["context"] for r in held_out)  # several windows
    questions = [{"question": r["question"], "context": r["context"]} for r in held_out]
    huge = (" ".join(tiny.WORDS) + ". ") * (100_000 // (len(" ".join(tiny.WORDS)) + 2) + 1)
    questions += [{"question": "what follows dog?", "context": long_context},
                  {"question": "what follows sad?", "context": huge[:100_000]},  # ~1,200 windows
                  {"question": "what?", "context": ""}]
    inputs = _write_jsonl(root / "qa.jsonl", questions)
    window = ["--max_length=32", "--doc_stride=8"]
    out = {"root": root, "questions": questions, "runs": {}}
    out["runs"]["finetune"] = _cli("finetune", "--task=question_answering", f"--model={base}", f"--train={train}",
                                   f"--eval={evaluation}", f"--output_dir={root / 'ft'}", "--epochs=1", *window,
                                   "--allow_no_learning")  # one epoch of a tiny random model: plumbing only
    export = ["--task=question_answering", f"--model={root / 'ft'}", f"--output_dir={root / 'exported'}", "--name=qa",
              "--max_seq_length=32", "--doc_stride=8", "--notflite_speed"]
    out["runs"]["export"] = _cli("export", *export, "--quantize")
    out["runs"]["export_fp32"] = _cli("export", *export, "--quantize", "--quantization=none", "--nosaved_model",
                                      "--version=2")
    models = {"checkpoint": root / "ft", "savedmodel": root / "exported" / "qa" / "1",
              "int8": root / "exported" / "qa-tflite" / "1" / "model_int8.tflite",
              "fp32": root / "exported" / "qa-tflite" / "2" / "model_none.tflite"}
    out["models"] = models
    for kind, model in models.items():
        output = root / f"{kind}.jsonl"
        # fp32 never answers empty (threshold 1): its spans are compared with HF's; the SavedModel keeps
        # the export's default (0, HF's handle_impossible_answer), which the undertrained model uses.
        never_empty = ["--null_score_threshold=1"] if kind == "fp32" else []
        out["runs"][f"predict_{kind}"] = _cli("predict", "--task=question_answering", f"--model={model}",
                                              f"--input={inputs}", f"--output={output}", *window, *never_empty)
        if output.exists():
            out[kind] = [json.loads(line) for line in output.read_text().splitlines()]
    return out


def test_cli_finetune_export_predict_doctor(pipeline_run):
    for name, run in pipeline_run["runs"].items():
        assert run.returncode == 0, f"{name}: {run.stderr[-2000:]}"
    assert "exact_match" in pipeline_run["runs"]["finetune"].stdout
    assert "learning rate 0.0002" in pipeline_run["runs"]["finetune"].stderr  # the QA default, whole model
    assert "verified with TensorFlow's C++ loader" in pipeline_run["runs"]["export"].stdout
    for kind in ("checkpoint", "savedmodel", "int8", "fp32"):
        answers = pipeline_run[kind]
        assert len(answers) == len(pipeline_run["questions"])
        for row, answer in zip(pipeline_run["questions"], answers, strict=True):
            assert row["context"][answer["start"]:answer["end"]] == answer["answer"]
        assert answers[-1]["answer"] == ""  # the empty context
    # The fine-tuned checkpoint (same windows and threshold as the export) answers as its SavedModel.
    for got, want in zip(pipeline_run["checkpoint"], pipeline_run["savedmodel"], strict=True):
        assert (got["answer"], got["start"], got["end"]) == (want["answer"], want["start"], want["end"])
        assert got["score"] == pytest.approx(want["score"], rel=1e-5, abs=1e-6)
    for model in (pipeline_run["models"]["savedmodel"], pipeline_run["models"]["int8"]):
        run = _cli("doctor", f"--model={model}", "--task=question_answering")
        assert run.returncode == 0 and "exit_code: 0" in run.stdout, run.stdout[-1500:] + run.stderr[-500:]


def test_exported_answers_equal_hugging_face_pipeline(pipeline_run):
    """The SavedModel and the fp32 .tflite predict path answer as HF's pipeline on the fine-tuned weights,
    the long context included: the SavedModel with the export's null threshold 0 (handle_impossible_answer),
    the .tflite with threshold 1 (never empty: HF's default)."""
    import os

    from transformers import BertTokenizerFast, pipeline

    ft = str(pipeline_run["root"] / "ft")
    hf_model = tfbert_model.load(ft, "question_answering", require_head=True)  # HF's own class here
    assert type(hf_model).__module__.startswith("transformers")
    pipe = pipeline("question-answering", model=hf_model, tokenizer=BertTokenizerFast(os.path.join(ft, "vocab.txt")),
                    framework="tf", torch_dtype=None)
    for kind, handle in (("savedmodel", True), ("fp32", False)):
        expected = [pipe(question=r["question"], context=r["context"], max_seq_len=32, doc_stride=8,
                         handle_impossible_answer=handle) for r in pipeline_run["questions"][:-2]]
        assert any(e["answer"] for e in expected)
        got = [(a["answer"], a["start"], a["end"], a["score"]) for a in pipeline_run[kind][:-2]]
        _assert_same(got, expected)


def test_bad_training_and_predict_inputs_are_one_line_and_write_nothing(pipeline_run, tmp_path):
    base = str(pipeline_run["root"] / "base")
    good = _squad_records(3, 2, unanswerable_every=99)
    bad = dict(good[1], answers={"text": [good[1]["answers"]["text"][0]], "answer_start": [0]})
    train = _write_jsonl(tmp_path / "train.jsonl", [good[0], bad, good[2]])
    run = _cli("finetune", "--task=question_answering", f"--model={base}", f"--train={train}", f"--eval={train}",
               f"--output_dir={tmp_path / 'out'}", "--max_length=32")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().count("\n") == 0 and "train.jsonl:2" in run.stderr and "answer_start" in run.stderr
    assert not (tmp_path / "out").exists()
    # A question too long for the window names its file, its number and finetune's own flags.
    fine = _write_jsonl(tmp_path / "fine.jsonl", good)
    run = _cli("finetune", "--task=question_answering", f"--model={base}", f"--train={fine}", f"--eval={fine}",
               f"--output_dir={tmp_path / 'out'}", "--max_length=16", "--doc_stride=8")
    assert run.returncode == 2 and "Traceback" not in run.stderr and run.stderr.strip().count("\n") == 0
    assert "fine.jsonl: question 1" in run.stderr and "--max_length (now 16)" in run.stderr, run.stderr
    assert not (tmp_path / "out").exists()
    questions = _write_jsonl(tmp_path / "q.jsonl", [{"question": "what?", "context": "a cat"}, {"question": "x"}])
    run = _cli("predict", "--task=question_answering", f"--model={pipeline_run['models']['int8']}",
               f"--input={questions}", f"--output={tmp_path / 'answers.jsonl'}")
    assert run.returncode == 2 and "Traceback" not in run.stderr and "q.jsonl:2" in run.stderr
    assert not (tmp_path / "answers.jsonl").exists()
    # A directory that is neither a SavedModel nor a checkpoint: one line, not an unexpected OSError.
    (tmp_path / "empty").mkdir()
    fine = _write_jsonl(tmp_path / "q1.jsonl", [{"question": "what?", "context": "a cat"}])
    run = _cli("predict", "--task=question_answering", f"--model={tmp_path / 'empty'}", f"--input={fine}",
               f"--output={tmp_path / 'answers.jsonl'}")
    assert run.returncode == 2 and run.stderr.strip().count("\n") == 0, run.stderr
    assert "no weights found" in run.stderr and "empty" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "answers.jsonl").exists()


def test_no_learning_rule_is_two_points_above_answering_nothing():
    from tfbert.finetune.question_answering import QAEvaluation

    def evaluation(exact_match, unanswerable):
        return QAEvaluation(exact_match, exact_match, 100, unanswerable, 0.0, [])

    assert evaluation(0.25, 25).no_answer_baseline == 0.25
    assert not evaluation(0.25, 25).learned and not evaluation(0.27, 25).learned
    assert evaluation(0.28, 25).learned
    assert not evaluation(0.02, 0).learned and evaluation(0.03, 0).learned


def test_a_model_that_only_answers_nothing_exits_3_with_one_line_and_keeps_the_checkpoint(pipeline_run, tmp_path):
    """Trained on unanswerable questions only, the model learns to answer "no answer": its exact
    match is the eval set's unanswerable share, which is what learning nothing scores."""
    import json

    base = str(pipeline_run["root"] / "base")
    train = _write_jsonl(tmp_path / "train.jsonl", _squad_records(48, 3, unanswerable_every=1))
    evaluation = _write_jsonl(tmp_path / "eval.jsonl", _squad_records(12, 4, unanswerable_every=3))
    out = tmp_path / "out"
    run = _cli("finetune", "--task=question_answering", f"--model={base}", f"--train={train}", f"--eval={evaluation}",
               f"--output_dir={out}", "--max_length=32", "--doc_stride=8", "--epochs=2", "--learning_rate=1e-3")
    assert run.returncode == 3, run.stderr[-2000:]
    assert "Traceback" not in run.stderr and "learned nothing" in run.stderr
    error = [line for line in run.stderr.splitlines() if "learned nothing" in line]
    assert len(error) == 1 and "--allow_no_learning" in error[0] and "eval.jsonl" in error[0]
    assert "exact_match" in run.stdout  # the eval report is still printed
    report = json.loads((out / "eval_report.json").read_text())  # and the checkpoint saved
    assert report["summary"]["no_answer_baseline_exact_match"] == pytest.approx(4 / 12)

"""Extractive question answering (``--task=question_answering``): HF ``TFBertForQuestionAnswering`` weights
loaded by tfbert, the span search, SQuAD metrics, and the CLIs end to end. The references are Hugging Face's
TF model and its ``question-answering`` pipeline on the same weights, and hand-computed SQuAD scores."""

import numpy as np
import pytest

from tests import tiny
from tfbert import model as tfbert_model

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def reference():
    return tiny.reference_model("question_answering", seed=7)


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
            ("what", " ".join(rng.choice(tiny.WORDS, 150)))]


@pytest.fixture(scope="module")
def hf_answers(reference, checkpoint):
    """Hugging Face's question-answering pipeline on the reference weights: without and with impossible answers."""
    import os

    from transformers import BertTokenizerFast, pipeline

    vocab = BertTokenizerFast(os.path.join(checkpoint, "vocab.txt"))
    pipe = pipeline("question-answering", model=reference, tokenizer=vocab, framework="tf", torch_dtype=None)
    return {handle: [pipe(question=q, context=c, max_seq_len=MAX_SEQ, doc_stride=STRIDE,
                          handle_impossible_answer=handle) for q, c in _pairs()] for handle in (False, True)}


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


@pytest.mark.parametrize("null_threshold", [None, 0.0], ids=["never-empty", "impossible-answers"])
def test_serving_graph_answers_equal_hugging_face_pipeline(checkpoint, hf_answers, null_threshold):
    from tfbert.export import savedmodel
    from tfbert.tokenizer import BertTokenizer

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

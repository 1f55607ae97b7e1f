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

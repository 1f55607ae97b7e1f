"""Token classification (``--task=token_classify``): load, aggregation, fine-tune, export and predict.

References: Hugging Face's ``TFBertForTokenClassification`` for the logits and its
``pipeline("token-classification")`` for the entity spans (transformers 4.x, the test extra);
``seqeval`` for the entity scores.
"""

import json
import os

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

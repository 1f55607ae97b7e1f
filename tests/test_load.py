"""tfbert.load: every supported format gives the reference model's outputs."""

import numpy as np
import pytest

from tests import tiny
from tfbert import errors
from tfbert.model import load

WRITERS = {
    "safetensors": lambda d, m: tiny.write_safetensors(d, m),
    "safetensors-bare-names": lambda d, m: tiny.write_safetensors(d, m, bare=True),
    "safetensors-sharded": lambda d, m: tiny.write_safetensors(d, m, shards=3),
    "safetensors-tf-layout": tiny.write_tf_safetensors,
    "keras-h5": tiny.write_h5,
    "tf1-checkpoint": tiny.write_tf1,
}


# Written by Hugging Face's TF save_pretrained: beside transformers 5 nothing independent writes them.
HF_TF_WRITTEN = ("keras-h5", "safetensors-tf-layout")
# Bare BertModel names (no "bert." prefix) only exist for the headless model.
CASES = [pytest.param(fmt, task, marks=[tiny.requires_hf_tf_classes] if fmt in HF_TF_WRITTEN else [])
         for fmt in sorted(WRITERS) for task in ("embed", "classify", "fill_mask")
         if not (fmt == "safetensors-bare-names" and task != "embed")]


@pytest.mark.parametrize(("fmt", "task"), CASES)
def test_every_format_and_task_matches_the_reference(tmp_path, fmt, task):
    reference = tiny.reference_model(task, seed=3)
    directory = WRITERS[fmt](str(tmp_path / fmt), reference)
    model = load(directory, task=task)
    inputs = tiny.sample_inputs()
    np.testing.assert_allclose(tiny.outputs(model, inputs), tiny.outputs(reference, inputs), atol=1e-5)
    if task == "classify":
        assert model.config.id2label == reference.config.id2label


def test_tf1_checkpoint_by_prefix(tmp_path):
    reference = tiny.reference_model("embed", seed=4)
    directory = tiny.write_tf1(str(tmp_path / "tf1"), reference)
    model = load(f"{directory}/bert_model.ckpt")
    inputs = tiny.sample_inputs()
    np.testing.assert_allclose(tiny.outputs(model, inputs), tiny.outputs(reference, inputs), atol=1e-5)


def test_head_missing_from_a_base_checkpoint_starts_random_not_zero(tiny_safetensors, embed_reference):
    model = load(tiny_safetensors, task="classify")
    kernel = next(v for v in model.weights if "classifier/kernel" in v.name).numpy()
    assert kernel.std() > 0.005  # a zero head would give every class the same score
    inputs = tiny.sample_inputs()
    pooled = embed_reference(**inputs).pooler_output.numpy()
    # The encoder underneath is the checkpoint's, bit for bit.
    np.testing.assert_allclose(model.bert(**inputs).pooler_output.numpy(), pooled, atol=1e-6)


def test_pytorch_pickle_is_refused_without_opt_in(tmp_path):
    directory = tmp_path / "pt"
    directory.mkdir()
    tiny.write_side_files(str(directory), tiny.reference_model("embed"))
    evil = directory / "pytorch_model.bin"
    evil.write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(errors.UnsafeFileError) as info:
        load(str(directory))
    message = str(info.value)
    assert "pytorch_model.bin" in message and "allow_pickle" in message and "safetensors" in message


@tiny.requires_hf_tf_classes
def test_minilm_matches_hugging_face_loader(minilm_path):
    from transformers import BertTokenizerFast

    texts = ["A man is playing a guitar.", "Café au lait, s'il vous plaît!", "short"]
    batch = BertTokenizerFast.from_pretrained(minilm_path)(texts, padding=True, return_tensors="np")
    batch = {k: v.astype(np.int32) for k, v in batch.items()}
    ours = load(minilm_path)(**batch).last_hidden_state.numpy()
    theirs = tiny.hf_tf_model(minilm_path)(**batch).last_hidden_state.numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_pytorch_pickle_loads_weights_only_with_opt_in(tmp_path):
    reference = tiny.reference_model("classify", seed=5)
    directory = tmp_path / "pt"
    tiny.write_side_files(str(directory), reference)
    tiny.write_torch_zip(str(directory / "pytorch_model.bin"), tiny.pt_state_dict(reference))
    model = load(str(directory), task="classify", allow_pickle=True)
    inputs = tiny.sample_inputs()
    np.testing.assert_allclose(tiny.outputs(model, inputs), tiny.outputs(reference, inputs), atol=1e-5)


def test_pickle_naming_other_code_is_refused_even_with_opt_in(tmp_path):
    directory = tmp_path / "evil"
    reference = tiny.reference_model("embed")
    tiny.write_side_files(str(directory), reference)
    tiny.write_torch_zip(str(directory / "pytorch_model.bin"), tiny.pt_state_dict(reference),
                         extra_global=("os", "system"))
    with pytest.raises(errors.UnsafeFileError) as info:
        load(str(directory), allow_pickle=True)
    assert "os.system" in str(info.value)


@pytest.mark.parametrize("task", ["fill_mask", "classify"])
def test_missing_head_is_an_error_when_required(tiny_safetensors, task):
    with pytest.raises(errors.CheckpointNotFoundError) as info:
        load(tiny_safetensors, task=task, require_head=True)
    message = str(info.value)
    assert f"no {task} head" in message and "noise" in message

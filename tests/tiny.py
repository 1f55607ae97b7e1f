"""Tiny random-weight BERT checkpoints, made by the tests in every format tfbert reads.

The reference for every parity test is the Hugging Face TF model the checkpoint was
written from; PyTorch-layout names come from Hugging Face's own
``convert_tf_weight_name_to_pt_weight_name``, so the writers share no code with tfbert.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil

import numpy as np
import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ("the a is was of and to in it on cat dog bird sat ran flew red blue green good bad "
         "hello world yes no movie film great terrible fun boring happy sad").split()
VOCAB = list(dict.fromkeys(SPECIALS + WORDS + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
                           + list("abcdefghijklmnopqrstuvwxyz.,!?")))

TINY_CONFIG = {
    "model_type": "bert", "vocab_size": len(VOCAB), "hidden_size": 32, "num_hidden_layers": 2,
    "num_attention_heads": 4, "intermediate_size": 37, "max_position_embeddings": 64,
    "type_vocab_size": 2, "hidden_act": "gelu", "initializer_range": 0.02, "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
}
HF_CLASSES = {"embed": "TFBertModel", "classify": "TFBertForSequenceClassification",
              "fill_mask": "TFBertForMaskedLM", "token_classify": "TFBertForTokenClassification",
              "question_answering": "TFBertForQuestionAnswering"}
# IOB2 tags of the tiny token classifiers.
TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "MISC"]


def hf_tf_classes():
    """transformers, where it has its TF classes (4.x); None beside transformers 5 or without it."""
    try:
        import transformers
    except ImportError:
        return None
    return transformers if hasattr(transformers, "TFBertModel") else None


def _transformers_version() -> str:
    try:
        return importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        return ""


# Hugging Face's TF classes (TFBertModel, the TF save_pretrained) were removed in transformers 5.0: a
# test whose reference is one of them cannot run beside transformers 5 (the version matrix's hf5
# cells). CI's stack (the test extra, transformers 4.x) has them, so there these tests always run.
TRANSFORMERS_VERSION = _transformers_version()
requires_hf_tf_classes = pytest.mark.skipif(
    TRANSFORMERS_VERSION.split(".")[0].isdigit() and int(TRANSFORMERS_VERSION.split(".")[0]) >= 5,
    reason=f"the reference is Hugging Face's TF classes (TFBertModel, TF save_pretrained); transformers "
           f"{TRANSFORMERS_VERSION} has none (removed in 5.0)")


def hf_tokenizer(vocab_path: str, **settings):
    """Hugging Face's BertTokenizerFast over a vocab.txt, the tokenizer reference.

    The path goes positionally: transformers 4 calls that argument ``vocab_file``, transformers 5
    ``vocab``, and 5 ignores ``vocab_file=`` without a word (a vocabulary of the five special tokens,
    every word [UNK]).
    """
    from transformers import BertTokenizerFast

    return BertTokenizerFast(vocab_path, **settings)


def hf_tf_model(directory: str, class_name: str = "TFBertModel"):
    """Hugging Face's TF model holding the weights of the PyTorch-layout ``model.safetensors`` in
    ``directory``, each mapped by Hugging Face's own converter.

    It is what ``from_pretrained`` does, but from transformers 4.55 ``from_pretrained`` hands that
    converter an open safetensors file it cannot iterate (``TypeError: 'builtins.safe_open' object
    is not iterable``), so the file is read into a dict first.
    """
    import transformers
    from safetensors.numpy import load_file
    from transformers.modeling_tf_pytorch_utils import load_pytorch_state_dict_in_tf2_model

    model = getattr(transformers, class_name)(transformers.BertConfig.from_pretrained(directory))
    load_pytorch_state_dict_in_tf2_model(model, load_file(os.path.join(directory, "model.safetensors")))
    return model


def reference_model(task: str = "embed", config: dict | None = None, seed: int = 0):
    """A Hugging Face TF model with random weights (the independent reference).

    Where transformers has no TF classes (the version matrix's transformers 5 cells) it is tfbert's
    own Keras BERT instead, whose equality with Hugging Face's is tested where both exist
    (tests/test_keras_bert.py); CI's environment has transformers 4.x.
    """
    import tensorflow as tf

    tf.random.set_seed(seed)
    cfg = dict(TINY_CONFIG, **(config or {}))
    if task == "classify":
        cfg.setdefault("id2label", {0: "negative", 1: "positive", 2: "neutral"})
    elif task == "token_classify":
        cfg.setdefault("id2label", dict(enumerate(TAGS)))
    transformers = hf_tf_classes()
    if transformers is None:
        from tfbert import keras_bert

        model = keras_bert.build(cfg, task)
    else:
        model = getattr(transformers, HF_CLASSES[task])(transformers.BertConfig(**cfg))
        model(model.dummy_inputs)
    # Non-trivial biases and LayerNorm parameters, so a missed mapping shows in the outputs.
    rng = np.random.default_rng(seed)
    for v in model.weights:
        if "bias" in v.name or "beta" in v.name or "gamma" in v.name:
            v.assign(v.numpy() + rng.normal(0, 0.1, v.shape).astype(np.float32))
    return model


def pt_state_dict(model) -> dict[str, np.ndarray]:
    """The model's weights as a PyTorch-layout state dict, named by Hugging Face's converter (by
    tfbert's own where transformers has no TF classes)."""
    if hf_tf_classes() is None:
        from tfbert.checkpoint.write import state_dict

        return state_dict(model)
    from transformers.modeling_tf_pytorch_utils import TransposeType, convert_tf_weight_name_to_pt_weight_name

    out = {}
    for v in model.weights:
        name, transpose = convert_tf_weight_name_to_pt_weight_name(v.name, tf_weight_shape=v.shape)
        array = v.numpy()
        out[name] = np.ascontiguousarray(array.T if transpose == TransposeType.SIMPLE else array)
    return out


def write_side_files(directory: str, model, config_name: str = "config.json") -> None:
    os.makedirs(directory, exist_ok=True)
    cfg = model.config.to_dict()
    with open(os.path.join(directory, config_name), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(directory, "vocab.txt"), "w") as f:
        f.write("\n".join(VOCAB) + "\n")
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump({"do_lower_case": True, "tokenizer_class": "BertTokenizer"}, f)


def write_safetensors(directory: str, model, *, bare: bool = False, shards: int = 1) -> str:
    """PyTorch-layout model.safetensors (``bare``: BertModel names without ``bert.``), optionally sharded."""
    from safetensors.numpy import save_file

    write_side_files(directory, model)
    state = pt_state_dict(model)
    if bare:
        state = {k.removeprefix("bert."): v for k, v in state.items()}
    state["embeddings.position_ids" if bare else "bert.embeddings.position_ids"] = (
        np.arange(model.config.max_position_embeddings, dtype=np.int64)[None])
    if shards == 1:
        save_file(state, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
        return directory
    names = sorted(state)
    weight_map = {}
    for i in range(shards):
        part = names[i::shards]
        shard = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: state[k] for k in part}, os.path.join(directory, shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, shard))
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    return directory


def write_h5(directory: str, model) -> str:
    """tf_model.h5 as Hugging Face's own save_pretrained writes it."""
    model.save_pretrained(directory, safe_serialization=False)
    write_side_files(directory, model)
    return directory


def write_tf_safetensors(directory: str, model) -> str:
    """TF-layout model.safetensors as Hugging Face's TF save_pretrained writes it."""
    model.save_pretrained(directory, safe_serialization=True)
    write_side_files(directory, model)
    return directory


def _google_name(pt_name: str) -> tuple[str, bool]:
    """The variable name the original google-research/bert code uses, and whether it is transposed."""
    special = {"cls.predictions.bias": "cls/predictions/output_bias", "classifier.weight": "output_weights",
               "classifier.bias": "output_bias"}
    if pt_name in special:
        return special[pt_name], False
    parts = pt_name.replace("encoder.layer.", "encoder.layer_").split(".")
    leaf = parts[-1]
    if parts[-2].endswith("_embeddings"):
        return "/".join(parts[:-1]), False
    if parts[-2] == "LayerNorm":
        return "/".join([*parts[:-1], "gamma" if leaf == "weight" else "beta"]), False
    if leaf == "weight":
        return "/".join([*parts[:-1], "kernel"]), True
    return "/".join(parts), False


def write_tf1(directory: str, model) -> str:
    """An original Google BERT TF1 checkpoint: bert_config.json, vocab.txt, bert_model.ckpt.*."""
    import tensorflow as tf

    write_side_files(directory, model, config_name="bert_config.json")
    names, tensors = [], []
    for pt_name, array in pt_state_dict(model).items():
        name, transpose = _google_name(pt_name)
        names.append(name)
        tensors.append(tf.constant(array.T if transpose else array))
    names.append("global_step")
    tensors.append(tf.constant(1000, tf.int64))
    prefix = os.path.join(directory, "bert_model.ckpt")
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names), tensors=tensors)
    return directory


def copy_checkpoint(src: str, dst: str) -> str:
    shutil.copytree(src, dst)
    return dst


def sample_inputs(batch: int = 3, seq: int = 9, seed: int = 1) -> dict[str, np.ndarray]:
    """Token ids with [CLS] ... [SEP] and right padding of varying length."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, len(VOCAB), size=(batch, seq)).astype(np.int32)
    mask = np.ones_like(ids)
    for row in range(batch):
        length = seq - row  # rows get shorter: padding is exercised
        ids[row, 0], ids[row, length - 1] = 2, 3
        ids[row, length:], mask[row, length:] = 0, 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def outputs(model, inputs) -> np.ndarray:
    """The model's main output as numpy (last hidden state or logits)."""
    out = model(**inputs, training=False)
    return (out.last_hidden_state if hasattr(out, "last_hidden_state") else out.logits).numpy()


class _Global:
    """Pickled as a bare GLOBAL reference to ``module.name`` (torch is not installed here)."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle requires reduce functions to be callable
        raise NotImplementedError


class _Storage:
    def __init__(self, key: str, array: np.ndarray) -> None:
        self.key, self.array = key, array


class _Tensor:
    def __init__(self, storage: _Storage) -> None:
        self.storage = storage

    def __reduce__(self):
        import collections

        shape = self.storage.array.shape
        stride = tuple(s // self.storage.array.itemsize for s in self.storage.array.strides)
        return (_Global("torch._utils", "_rebuild_tensor_v2"),
                (self.storage, 0, shape, stride, False, collections.OrderedDict()))


def write_torch_zip(path: str, state: dict[str, np.ndarray], extra_global: tuple[str, str] | None = None) -> None:
    """A pytorch_model.bin in torch's zip format, written the way ``torch.save`` lays it out.

    ``extra_global`` adds a reference to an arbitrary callable (what a malicious pickle does).
    """
    import collections
    import io
    import pickle
    import zipfile

    storage_names = {np.dtype(np.float32): "FloatStorage", np.dtype(np.int64): "LongStorage"}

    class Writer(pickle._Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                return ("storage", _Global("torch", storage_names[obj.array.dtype]), obj.key, "cpu",
                        obj.array.size)
            return None

        def save(self, obj, save_persistent_id=True):
            if isinstance(obj, _Global):
                self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
                return
            super().save(obj, save_persistent_id)

    tensors = collections.OrderedDict()
    storages = {}
    for i, (name, array) in enumerate(state.items()):
        storages[str(i)] = _Storage(str(i), np.ascontiguousarray(array))
        tensors[name] = _Tensor(storages[str(i)])
    payload = tensors if extra_global is None else (_Global(*extra_global), tensors)
    buffer = io.BytesIO()
    Writer(buffer, protocol=2).dump(payload)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
        archive.writestr("archive/version", "3\n")
        for key, storage in storages.items():
            archive.writestr(f"archive/data/{key}", storage.array.tobytes())


def checkpoint_with_tokenizer(directory: str, reference, task: str):
    """Write ``reference`` as safetensors, then ``(model, tokenizer, files)`` as tfbert loads them."""
    from tfbert.checkpoint import find_checkpoint
    from tfbert.model import load
    from tfbert.tokenizer import BertTokenizer

    write_safetensors(directory, reference)
    files = find_checkpoint(directory)
    model = load(directory, task=task, require_head=True)
    return model, BertTokenizer.from_files(files.vocab, files.tokenizer_config), files

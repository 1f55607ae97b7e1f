"""Tensor names: every checkpoint format is mapped onto one canonical naming.

The canonical names are those of the Hugging Face PyTorch ``BertFor*`` classes
(``bert.encoder.layer.0.attention.self.query.weight``) and the canonical layout is
PyTorch's (a dense ``weight`` is ``[out, in]``). Keras variables, TF1 checkpoint
variables and bare ``BertModel`` names are translated to and from it here, so the
diagnosis and the loader share one table of what a config implies.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

TASKS = ("embed", "classify", "fill_mask", "token_classify", "question_answering")

# Tensors a checkpoint may carry that no tfbert model uses; they are ignored silently.
IGNORED = re.compile(
    r"^(bert\.embeddings\.position_ids|cls\.seq_relationship\..*|cls\.predictions\.decoder\..*)$")
_BARE_PREFIXES = ("embeddings.", "encoder.", "pooler.")


def canonical_from_hf(name: str) -> str:
    """A Hugging Face PyTorch-layout name (``BertModel`` or ``BertFor*``) in canonical form."""
    if name.startswith(_BARE_PREFIXES):
        name = "bert." + name
    # Checkpoints saved by old versions of pytorch-pretrained-bert use gamma/beta.
    return re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name))


def canonical_from_keras(variable_name: str) -> tuple[str, bool]:
    """Map an HF Keras variable name to (canonical name, needs transpose).

    Example:
        >>> canonical_from_keras("tf_bert_model/bert/encoder/layer_._0/attention/self/query/kernel:0")
        ('bert.encoder.layer.0.attention.self.query.weight', True)
    """
    parts = variable_name.split(":")[0].split("/")[1:]  # drop the model's own scope
    out: list[str] = []
    for part in parts:
        if part.startswith("layer_._"):
            out += ["layer", part[len("layer_._"):]]
        elif "___" in part:  # e.g. mlm___cls: the layer name carries its PyTorch module name
            out.append(part.split("___")[-1])
        else:
            out.append(part)
    leaf = out[-1]
    transpose = leaf == "kernel"
    out[-1] = {"kernel": "weight", "gamma": "weight", "beta": "bias", "embeddings": "weight"}.get(leaf, leaf)
    return ".".join(out), transpose


def canonical_from_tf1(name: str) -> tuple[str, bool] | None:
    """Map an original Google BERT (TF1) variable to (canonical name, transpose), or None to skip.

    Example:
        >>> canonical_from_tf1("bert/encoder/layer_3/output/dense/kernel")
        ('bert.encoder.layer.3.output.dense.weight', True)
        >>> canonical_from_tf1("cls/predictions/output_bias")
        ('cls.predictions.bias', False)
    """
    if name == "global_step" or name.endswith(("adam_m", "adam_v")) or "/Adam" in name:
        return None
    special = {
        "cls/predictions/output_bias": ("cls.predictions.bias", False),
        "cls/seq_relationship/output_weights": ("cls.seq_relationship.weight", False),
        "cls/seq_relationship/output_bias": ("cls.seq_relationship.bias", False),
        "output_weights": ("classifier.weight", False),  # run_classifier.py's head
        "output_bias": ("classifier.bias", False),
    }
    if name in special:
        return special[name]
    parts = re.sub(r"layer_(\d+)", r"layer/\1", name).split("/")
    leaf = parts[-1]
    transpose = leaf == "kernel"
    if leaf.endswith("_embeddings"):  # TF1 embedding tables are bare variables
        parts.append("weight")
    else:
        parts[-1] = {"kernel": "weight", "gamma": "weight", "beta": "bias"}.get(leaf, leaf)
    return ".".join(parts), transpose


def expected_tensors(config: Mapping, task: str = "embed") -> dict[str, tuple[int, ...]]:
    """Canonical names and PyTorch-layout shapes that ``config`` implies for ``task``.

    ``embed`` is ``TFBertModel`` (with pooler), ``classify`` adds ``classifier.*``
    (one row per label), ``fill_mask`` is ``TFBertForMaskedLM`` (no pooler, MLM head),
    ``token_classify`` is ``TFBertForTokenClassification`` (no pooler, ``classifier.*``),
    ``question_answering`` is ``TFBertForQuestionAnswering`` (no pooler, ``qa_outputs.*``: start
    and end logit per token).

    Example:
        >>> shapes = expected_tensors({"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
        ...     "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 32,
        ...     "type_vocab_size": 2})
        >>> shapes["bert.encoder.layer.0.intermediate.dense.weight"]
        (16, 8)
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    h, i = config["hidden_size"], config["intermediate_size"]
    v, p, t = config["vocab_size"], config["max_position_embeddings"], config.get("type_vocab_size", 2)
    out: dict[str, tuple[int, ...]] = {
        "bert.embeddings.word_embeddings.weight": (v, h),
        "bert.embeddings.position_embeddings.weight": (p, h),
        "bert.embeddings.token_type_embeddings.weight": (t, h),
        "bert.embeddings.LayerNorm.weight": (h,),
        "bert.embeddings.LayerNorm.bias": (h,),
    }
    for n in range(config["num_hidden_layers"]):
        layer = f"bert.encoder.layer.{n}."
        for proj in ("attention.self.query", "attention.self.key", "attention.self.value",
                     "attention.output.dense"):
            out[f"{layer}{proj}.weight"] = (h, h)
            out[f"{layer}{proj}.bias"] = (h,)
        out[f"{layer}intermediate.dense.weight"] = (i, h)
        out[f"{layer}intermediate.dense.bias"] = (i,)
        out[f"{layer}output.dense.weight"] = (h, i)
        out[f"{layer}output.dense.bias"] = (h,)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            out[f"{layer}{norm}.weight"] = (h,)
            out[f"{layer}{norm}.bias"] = (h,)
    if task == "fill_mask":
        out.update({
            "cls.predictions.transform.dense.weight": (h, h),
            "cls.predictions.transform.dense.bias": (h,),
            "cls.predictions.transform.LayerNorm.weight": (h,),
            "cls.predictions.transform.LayerNorm.bias": (h,),
            "cls.predictions.bias": (v,),
        })
    elif task == "question_answering":
        out["qa_outputs.weight"] = (2, h)
        out["qa_outputs.bias"] = (2,)
    elif task != "token_classify":
        out["bert.pooler.dense.weight"] = (h, h)
        out["bert.pooler.dense.bias"] = (h,)
    if task in ("classify", "token_classify"):
        labels = num_labels(config)
        out["classifier.weight"] = (labels, h)
        out["classifier.bias"] = (labels,)
    return out


def head_tensors(task: str) -> tuple[str, ...]:
    """Name prefixes of a task's head: absent from a base checkpoint, initialised fresh."""
    return {"classify": ("classifier.",), "token_classify": ("classifier.",), "fill_mask": ("cls.",),
            "question_answering": ("qa_outputs.",)}.get(task, ())


# The checkpoint architectures whose ``classifier.*`` is a task's head: sequence and token
# classifiers name their heads alike, so only config.json's ``architectures`` tells them apart.
HEAD_ARCHITECTURES = {"classify": "ForSequenceClassification", "token_classify": "ForTokenClassification"}


def foreign_head(config: Mapping, task: str) -> str | None:
    """The architecture whose ``classifier.*`` a checkpoint holds when it is another task's head, else None.

    A sequence classifier's ``classifier.*`` loaded as a token classifier (or the reverse)
    would run without any error and compute nonsense; such a head is treated as absent.

    Example:
        >>> foreign_head({"architectures": ["BertForSequenceClassification"]}, "token_classify")
        'BertForSequenceClassification'
        >>> foreign_head({"architectures": ["BertForTokenClassification"]}, "token_classify") is None
        True
    """
    if task not in HEAD_ARCHITECTURES:
        return None
    others = [suffix for other, suffix in HEAD_ARCHITECTURES.items() if other != task]
    for name in config.get("architectures") or ():
        if isinstance(name, str) and name.endswith(tuple(others)):
            return name
    return None


def num_labels(config: Mapping) -> int:
    """Number of classes a config declares (``id2label`` wins over ``num_labels``; default 2)."""
    if config.get("id2label"):
        return len(config["id2label"])
    return int(config.get("num_labels", 2))

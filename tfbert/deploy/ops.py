"""Which ops TF Serving links, since which release, and the audit of a SavedModel's ops against them.

A ``tensorflow_model_server`` binary links core TensorFlow and tensorflow-text's ``ops_lib``
(``tensorflow_serving/model_servers/BUILD``). :func:`audit_ops` sorts every op of a
SavedModel's ``serve`` graph and function library into core TensorFlow — decided by the C++
op registry and kernels of a process without TensorFlow's Python package or tensorflow-text
(:mod:`tfbert.deploy.serving` gathers them) — or the tensorflow-text op library that
registers it, refuses any other, and computes the oldest TF Serving release that has them all.
"""

from __future__ import annotations

import dataclasses
import os
import types

from tfbert.errors import ExportError

# The first TF Serving release whose bundled tensorflow-text ``ops_lib`` links each op library
# (tensorflow_serving/workspace.bzl's org_tensorflow_text at each release tag, and that TF
# Text version's tensorflow_text/BUILD). Keys are the library names of the pip package's
# tensorflow_text/python/ops/_<name>.so.
TEXT_LIBRARY_SINCE = {
    "constrained_sequence_op": "2.0", "normalize_ops": "2.0", "sentence_breaking_ops": "2.0",
    "unicode_script_tokenizer": "2.0", "whitespace_tokenizer": "2.0", "wordpiece_tokenizer": "2.0",
    "mst_ops": "2.2", "regex_split_ops": "2.2", "sentencepiece_tokenizer": "2.2", "split_merge_tokenizer": "2.2",
    "split_merge_from_logits_tokenizer": "2.5", "state_based_sentence_breaker_op": "2.5",
    "fast_wordpiece_tokenizer": "2.10", "whitespace_tokenizer_v2": "2.10",
    "boise_offset_converter": "2.12", "byte_splitter": "2.12", "fast_bert_normalizer": "2.12",
    "fast_sentencepiece_tokenizer": "2.12", "ngrams_op": "2.12", "phrase_tokenizer": "2.12",
    "trimmer_ops": "2.20", "utf8_binarize_op": "2.20",
}
# Kernel fixes a graph of that library needs, and the first TF Serving release with them.
TEXT_LIBRARY_FIXES = {
    "fast_wordpiece_tokenizer": ("2.20", "TF Text 2.19's FastWordpiece fixes (no endless loop, an [UNK] for a "
                                         "separator the kernel's Unicode tables do not share with the model's; "
                                         "tensorflow/text 534859c, 70bd094), bundled from TF Serving 2.20"),
}


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


@dataclasses.dataclass
class OpAudit:
    """Every op of a SavedModel and where a model server gets it.

    ``ops`` maps each op to ``"core"`` or the tensorflow-text op library that registers it;
    ``min_tf_serving`` is the oldest TF Serving release with all of them (None: core ops
    only, any release built on a TensorFlow that has them), and ``reasons`` says why.
    """

    ops: dict[str, str]
    min_tf_serving: str | None
    reasons: list[str]

    def summary(self) -> str:
        text = sorted(op for op, where in self.ops.items() if where != "core")
        version = f"TF Serving >= {self.min_tf_serving}" if self.min_tf_serving else "any TF Serving"
        return (f"{len(self.ops)} ops, {len(self.ops) - len(text)} core TensorFlow"
                + (f" + tensorflow-text {', '.join(text)}" if text else "") + f": needs {version}")


def audit_ops(used: list[str], core: set[str], without_kernel: set[str], text_ops: dict[str, str],
              where: str) -> OpAudit:
    """Sort ``used`` ops into core TensorFlow and tensorflow-text libraries; the TF Serving they need.

    Args:
        used: the ops of the SavedModel's ``serve`` graph and function library.
        core: the ops TensorFlow's C++ library registers (without tensorflow-text or Python).
        without_kernel: ops of ``core`` that have no CPU kernel there (``EagerPyFunc``: a
            ``tf.py_function``, whose kernel only TensorFlow's Python package registers).
        text_ops: op name -> tensorflow-text library (``fast_wordpiece_tokenizer``).
        where: the SavedModel, for the error.

    Raises:
        ExportError: an op no TF Serving can run, named.

    Example:
        >>> audit_ops(["MatMul", "FastBertNormalize"], {"MatMul"}, set(),
        ...           {"FastBertNormalize": "fast_bert_normalizer"}, "m/1").min_tf_serving
        '2.12'
    """
    ops, reasons, minimum = {}, [], None
    for op in sorted(set(used)):
        if op in core and op not in without_kernel:
            ops[op] = "core"
            continue
        library = text_ops.get(op)
        if library not in TEXT_LIBRARY_SINCE:
            why = ("has no kernel outside TensorFlow's Python runtime (tf.py_function / tf.numpy_function)"
                   if op in without_kernel else
                   f"is registered by tensorflow-text's {library} library, which TF Serving does not link"
                   if library else "is neither a core TensorFlow op nor a tensorflow-text op TF Serving links")
            raise ExportError(f"op {op} {why}: TF Serving cannot run this SavedModel", where=where,
                              fix="build the serving graph from core TensorFlow and tensorflow-text ops only; "
                                  "nothing was published")
        ops[op] = library
        since = TEXT_LIBRARY_SINCE[library]
        reason = f"{op} ({library}) is in TF Serving since {since}"
        if library in TEXT_LIBRARY_FIXES:
            since, fix = TEXT_LIBRARY_FIXES[library]
            reason += f"; needs {fix}"
        reasons.append(reason)
        if minimum is None or _version_key(since) > _version_key(minimum):
            minimum = since
    return OpAudit(ops, minimum, reasons)


def serve_meta_graph(directory: str, protos: types.SimpleNamespace):
    """The MetaGraphDef tagged ``serve`` in ``directory/saved_model.pb`` (the one TF Serving loads).

    Raises:
        ExportError: there is none.
    """
    with open(os.path.join(directory, "saved_model.pb"), "rb") as f:
        saved = protos.saved_model_pb2.SavedModel.FromString(f.read())
    for meta in saved.meta_graphs:
        if "serve" in meta.meta_info_def.tags:
            return meta
    tags = [list(m.meta_info_def.tags) for m in saved.meta_graphs]
    raise ExportError("no MetaGraphDef is tagged 'serve', the tag TF Serving loads",
                      where=os.path.join(directory, "saved_model.pb"), expected="tags ['serve']", actual=tags,
                      fix="save with tf.saved_model.save (tag serve)")


def graph_ops(meta_graph) -> list[str]:
    """Every op type in a MetaGraphDef's graph and its function library, sorted."""
    graph = meta_graph.graph_def
    ops = {node.op for node in graph.node}
    for function in graph.library.function:
        ops.update(node.op for node in function.node_def)
    return sorted(ops)

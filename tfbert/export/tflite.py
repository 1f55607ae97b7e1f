"""TFLite export: four precisions of tfbert's rebuilt BERT graph, and the int8 recipe that keeps accuracy.

The graph is :class:`tfbert.export.graph.EncoderGraph` (plain TF ops that convert to builtin
TFLite ops; the Hugging Face Keras graph needs Flex). Inputs are ``input_ids`` and ``attention_mask``
(int32, batch and sequence both dynamic: resize them in the interpreter) or, for the
raw-text variant, ``text`` (string [batch]) tokenized in the model by tensorflow-text's
TFLite kernels (custom ops ``FastBertNormalize``, ``FastWordpieceTokenizeWithOffsets``).

Quantizations:
    none     fp32.
    fp16     float16 weights.
    dynamic  int8 weights; activations quantized to int8 per row at run time.
    int8     as ``dynamic``, after SmoothQuant (alpha 0.5) calibrated on real text: the
             per-channel outliers of the inputs to the Q/K/V and FFN-in matmuls are moved
             into the weights. Measured on all-MiniLM-L6-v2: sentence cosine 0.999 vs fp32
             and 4x the fp32 throughput. Fixed-scale full-integer int8 was measured too and
             cannot keep cosine 0.99 on this model (the FFN output has channels 200x the
             median, which no single per-tensor scale covers); see the README.
"""

from __future__ import annotations

import time

import numpy as np

from tfbert.errors import BadInputError
from tfbert.export.graph import EncoderGraph
from tfbert.tf import import_tensorflow

QUANTIZATIONS = ("none", "fp16", "dynamic", "int8")
MATMULS = ("qkv", "out", "ffn_in", "ffn_out")
SMOOTHED = ("qkv", "ffn_in")


def smoothquant_scales(graph: EncoderGraph, batches: list[dict[str, np.ndarray]], alpha: float = 0.5) -> dict:
    """SmoothQuant per-channel scales s = a^alpha / w^(1-alpha) from calibration activations.

    ``batches`` should look like inference: real text, padded to each batch's longest.
    """
    peaks: dict[str, np.ndarray] = {}
    for inputs in matmul_inputs(graph, batches):
        for key, value in inputs.items():
            if key.startswith(SMOOTHED):
                peaks[key] = np.maximum(peaks.get(key, 0), np.abs(value).max(0))
    scales = {}
    for i in range(graph.layers):
        layer = graph._layer(i)
        for kind in SMOOTHED:
            a = np.maximum(peaks[f"{kind}{i}"].astype(np.float64), 1e-5)
            wmax = np.maximum(np.abs(layer[kind][0]).max(1).astype(np.float64), 1e-5)
            s = a ** alpha / wmax ** (1 - alpha)
            scales[f"{kind}{i}"] = (s / np.exp(np.mean(np.log(s)))).astype(np.float32)
    return scales


def convert(module, quantization: str, text_input: bool = False) -> bytes:
    """Convert a :class:`EncoderGraph` module to a TFLite flatbuffer (``text_input``: a module
    made with a tokenizer, whose tensorflow-text ops become custom ops)."""
    tf = import_tensorflow()
    if quantization not in QUANTIZATIONS:
        raise BadInputError("unknown quantization", where="--quantization", expected="/".join(QUANTIZATIONS),
                            actual=quantization, fix="pick one of those")
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.__call__.get_concrete_function()], module)
    if text_input:
        # Builtins plus tensorflow-text's own TFLite kernels (registered at run time, see
        # tfbert.tokenizer.tflite_op_registerers), never Flex.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.allow_custom_ops = True
    if quantization in ("dynamic", "int8", "fp16"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


class GraphRunner:
    """Runs an :meth:`EncoderGraph.module` (token input) in TensorFlow, with the interface of
    :class:`tfbert.litert.LiteRTRunner`."""

    def __init__(self, module) -> None:
        self.module = module

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in call_module(self.module, inputs).items()}


def main_rows(output: np.ndarray, batch: dict[str, np.ndarray]) -> np.ndarray:
    """The rows fidelity compares: a text's (``[batch, ...]``) or, for per-token outputs
    (``[batch, seq, labels]``), each real token's (padding dropped, since batches differ in length)."""
    return output[np.asarray(batch["attention_mask"]) > 0] if output.ndim == 3 else output


def run_batches(runner, batches: list[dict[str, np.ndarray]], key: str) -> np.ndarray:
    """``runner``'s output ``key`` over ``batches``, concatenated (:func:`main_rows` of each)."""
    return np.concatenate([main_rows(runner(b)[key], b) for b in batches])


def time_runners(runners: dict, batches: list[dict[str, np.ndarray]], repeats: int = 5) -> dict[str, float]:
    """Median seconds per pass over ``batches``, runners alternated so drift hits all alike."""
    for runner in runners.values():
        runner(batches[0])
    times: dict[str, list[float]] = {k: [] for k in runners}
    for rep in range(repeats):
        order = list(runners) if rep % 2 == 0 else list(runners)[::-1]
        for key in order:
            start = time.perf_counter()
            for batch in batches:
                runners[key](batch)
            times[key].append(time.perf_counter() - start)
    return {k: float(np.median(v)) for k, v in times.items()}


def matmul_inputs(graph: EncoderGraph, batches: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Every matmul's float input (``qkv<i>``, ``out<i>``, ``ffn_in<i>``, ``ffn_out<i>``: [tokens, features]),
    per batch, from the graph itself run unsmoothed in collect mode."""
    probe = graph.collector()
    keys = {f"{kind}{i}" for kind in MATMULS for i in range(graph.layers)}
    return [{k: v.numpy() for k, v in call_module(probe, b).items() if k in keys} for b in batches]


def call_module(module, inputs: dict[str, np.ndarray]) -> dict:
    """A token-input :meth:`EncoderGraph.module` on ``inputs``: ids and mask, and token types where it
    takes them (question answering)."""
    names = [spec.name for spec in module.__call__.input_signature]
    return module(*(np.asarray(inputs[name], dtype=np.int32) for name in names))


def matmul_errors(graph: EncoderGraph, batch: dict[str, np.ndarray]) -> list[dict[str, float]]:
    """Per-layer relative error of each int8 matmul (activations int8 per row with a zero point,
    weights symmetric int8 per output channel, as XNNPACK's dynamically quantized kernels compute
    them), simulated in numpy on one batch."""
    rows = []
    inputs = matmul_inputs(graph, [batch])[0]
    for i in range(graph.layers):
        layer = graph._layer(i)
        row = {"layer": i}
        for kind in MATMULS:
            x = inputs[f"{kind}{i}"]
            weight = layer[kind][0]
            s = graph.smooth.get(f"{kind}{i}")
            if s is not None:
                x, weight = x / s, weight * s[:, None]
            exact = x @ weight
            low, high = np.minimum(x.min(1, keepdims=True), 0), np.maximum(x.max(1, keepdims=True), 0)
            xs = (high - low) / 255 + 1e-12
            zero = np.round(-128 - low / xs)
            ws = np.abs(weight).max(0, keepdims=True) / 127 + 1e-12
            approx = ((np.clip(np.round(x / xs) + zero, -128, 127) - zero) * xs) @ (np.round(weight / ws) * ws)
            row[kind] = float(np.linalg.norm(approx - exact) / (np.linalg.norm(exact) + 1e-12))
        rows.append(row)
    return rows

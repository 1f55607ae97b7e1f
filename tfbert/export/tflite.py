"""TFLite export: a clean BERT graph, four precisions, and the int8 recipe that keeps accuracy.

The Hugging Face Keras graph does not convert to builtin TFLite ops (a StridedSlice needs
Flex), so the encoder is rebuilt here from the model's own weights as plain TF ops:
Q/K/V fused into one matmul with 1/sqrt(d) folded into Q, token type 0 folded into the
position table, a small additive attention mask (-30, so no activation range is blown up)
and float LayerNorm / softmax / GELU. Inputs are ``input_ids`` and ``attention_mask``
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

from tfbert.checkpoint.names import canonical_from_keras
from tfbert.errors import BadInputError
from tfbert.tf import import_tensorflow

QUANTIZATIONS = ("none", "fp16", "dynamic", "int8")
MATMULS = ("qkv", "out", "ffn_in", "ffn_out")
SMOOTHED = ("qkv", "ffn_in")
_ACTIVATIONS = {"gelu": False, "gelu_new": True, "gelu_fast": True, "gelu_pytorch_tanh": True}


def model_weights(model) -> dict[str, np.ndarray]:
    """The Keras model's variables as canonical (PyTorch-layout) numpy arrays."""
    out = {}
    for variable in model.weights:
        name, transpose = canonical_from_keras(variable.name)
        value = variable.numpy()
        out[name] = value.T if transpose else value
    return out


class EncoderGraph:
    """The BERT forward as plain TF ops over numpy weights, for TFLite conversion.

    Args:
        weights: canonical weights (:func:`model_weights`).
        config: the checkpoint config dict.
        task: ``embed`` (``sentence_embedding``) or ``classify`` (``logits``, ``probabilities``).
        smooth: SmoothQuant scales per matmul input (``qkv<i>``, ``ffn_in<i>``), or None.
    """

    def __init__(self, weights: dict[str, np.ndarray], config: dict, task: str, smooth: dict | None = None):
        if task not in ("embed", "classify"):
            raise BadInputError("TFLite export supports the embed and classify tasks", where="--task",
                                actual=task, fix="export fill_mask as a SavedModel (pass --noquantize)")
        act = config.get("hidden_act", "gelu")
        if act not in _ACTIVATIONS and act != "relu":
            raise BadInputError("activation not supported by the TFLite graph", where="config.json: hidden_act",
                                expected="gelu, gelu_new or relu", actual=act, fix="export a SavedModel instead")
        self.w, self.config, self.task, self.smooth = weights, config, task, smooth or {}
        self.act = act
        self.layers = config["num_hidden_layers"]
        self.heads = config["num_attention_heads"]
        self.eps = config.get("layer_norm_eps", 1e-12)

    def _layer(self, i: int) -> dict:
        g = lambda n: self.w[f"bert.encoder.layer.{i}.{n}"]  # noqa: E731
        scale = 1.0 / np.sqrt(self.config["hidden_size"] // self.heads)
        qkv_w = np.concatenate([g("attention.self.query.weight") * scale, g("attention.self.key.weight"),
                                g("attention.self.value.weight")], 0).T
        qkv_b = np.concatenate([g("attention.self.query.bias") * scale, g("attention.self.key.bias"),
                                g("attention.self.value.bias")])
        return {"qkv": (qkv_w, qkv_b), "out": (g("attention.output.dense.weight").T, g("attention.output.dense.bias")),
                "ffn_in": (g("intermediate.dense.weight").T, g("intermediate.dense.bias")),
                "ffn_out": (g("output.dense.weight").T, g("output.dense.bias")),
                "ln1": (g("attention.output.LayerNorm.weight"), g("attention.output.LayerNorm.bias")),
                "ln2": (g("output.LayerNorm.weight"), g("output.LayerNorm.bias"))}

    def module(self, collect: bool = False, tokenizer=None, max_seq_length: int = 128):
        """A tf.Module whose ``__call__`` is the graph.

        Args:
            collect: also return each matmul's input (before smoothing), keyed
                ``<kind><layer>`` (see :data:`MATMULS`).
            tokenizer: a :class:`tfbert.tokenizer.BertTokenizer`: the input is then ``text``
                (string [batch]), tokenized in the graph with tensorflow-text's TFLite
                kernels (truncated to ``max_seq_length``) instead of ``input_ids`` /
                ``attention_mask``.
            max_seq_length: truncation length of the in-graph tokenizer.
        """
        tf = import_tensorflow()
        w, eps, heads = self.w, self.eps, self.heads
        hidden = self.config["hidden_size"]
        type0 = w["bert.embeddings.token_type_embeddings.weight"][0]
        positions = w["bert.embeddings.position_embeddings.weight"] + type0
        layers = [self._layer(i) for i in range(self.layers)]
        smooth, task, act = self.smooth, self.task, self.act

        def norm(x, gamma, beta):
            mean = tf.reduce_mean(x, -1, keepdims=True)
            centred = x - mean
            return centred * tf.math.rsqrt(tf.reduce_mean(centred * centred, -1, keepdims=True) + eps) * gamma + beta

        def activation(x):
            return tf.nn.relu(x) if act == "relu" else tf.nn.gelu(x, approximate=_ACTIVATIONS[act])

        class Graph(tf.Module):
            def __init__(self):
                super().__init__(name="tfbert_encoder")
                self.weights: list = []
                self._used = 0

            def const(self, array):
                # Weights are variables, not graph constants: the converter's SavedModel round trip
                # then writes and reads them once as a checkpoint instead of copying a graph full of
                # constants several times (measured: about half the conversion's memory and time).
                # tf.function traces twice on the first call; the second trace reuses, in order,
                # the variables the first one made.
                if self._used == len(self.weights):
                    with tf.init_scope():
                        self.weights.append(tf.Variable(np.ascontiguousarray(array, dtype=np.float32),
                                                        trainable=False, name=f"w{self._used}"))
                self._used += 1
                return self.weights[self._used - 1]

            def forward(self, input_ids, attention_mask):
                self._used = 0
                const = self.const
                batch, seq = tf.shape(input_ids)[0], tf.shape(input_ids)[1]
                # A run-time 1.0: multiplying the smoothing constants by it stops the converter
                # from folding them back into the matmul weights (which would undo the smoothing).
                one = tf.cast(tf.minimum(batch, 1), tf.float32)
                stats = {}

                def dense(x, name, weight_bias):
                    weight, bias = weight_bias
                    if collect:
                        stats[name] = x
                    if name in smooth:
                        x = x * (const(1.0 / smooth[name]) * one)
                        weight = weight * smooth[name][:, None]
                    # Stored [out, in], the layout of TFLite's FULLY_CONNECTED: the converter then
                    # has no transpose of every weight matrix to fold (time and a copy of the weights).
                    return tf.matmul(x, const(weight.T), transpose_b=True) + const(bias)

                def split_heads(x):
                    return tf.transpose(tf.reshape(x, [batch, seq, heads, hidden // heads]), [0, 2, 1, 3])

                x = tf.gather(const(w["bert.embeddings.word_embeddings.weight"]), input_ids) \
                    + tf.expand_dims(tf.slice(const(positions), [0, 0], [seq, hidden]), 0)
                x = norm(tf.reshape(x, [batch * seq, hidden]), const(w["bert.embeddings.LayerNorm.weight"]),
                         const(w["bert.embeddings.LayerNorm.bias"]))
                mask = tf.cast(attention_mask, tf.float32)
                mask_bias = tf.reshape((1.0 - mask) * -30.0, [batch, 1, 1, seq])
                for i, p in enumerate(layers):
                    q, k, v = tf.split(dense(x, f"qkv{i}", p["qkv"]), 3, axis=-1)
                    probs = tf.nn.softmax(tf.matmul(split_heads(q), split_heads(k), transpose_b=True) + mask_bias, -1)
                    context = tf.reshape(tf.transpose(tf.matmul(probs, split_heads(v)), [0, 2, 1, 3]),
                                         [batch * seq, hidden])
                    x = norm(dense(context, f"out{i}", p["out"]) + x, *map(const, p["ln1"]))
                    x = norm(dense(activation(dense(x, f"ffn_in{i}", p["ffn_in"])), f"ffn_out{i}", p["ffn_out"]) + x,
                             *map(const, p["ln2"]))
                x = tf.reshape(x, [batch, seq, hidden])
                if task == "embed":
                    # Mean pooling's 1/count cancels in the L2 normalisation, and dropping the
                    # division keeps a quantization-hostile op out of the graph.
                    summed = tf.reduce_sum(x * tf.expand_dims(mask, -1), 1)
                    out = {"sentence_embedding": summed * tf.math.rsqrt(
                        tf.maximum(tf.reduce_sum(summed * summed, -1, keepdims=True), 1e-12))}
                else:
                    pooled = tf.tanh(tf.matmul(x[:, 0], const(w["bert.pooler.dense.weight"].T))
                                     + const(w["bert.pooler.dense.bias"]))
                    logits = tf.matmul(pooled, const(w["classifier.weight"].T)) + const(w["classifier.bias"])
                    out = {"logits": logits, "probabilities": tf.nn.softmax(logits, -1)}
                return {**out, **stats} if collect else out

        class TokenGraph(Graph):
            @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="input_ids"),
                                          tf.TensorSpec([None, None], tf.int32, name="attention_mask")])
            def __call__(self, input_ids, attention_mask):
                return self.forward(input_ids, attention_mask)

        class TextGraph(Graph):
            @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
            def __call__(self, text):
                ids = tokenizer.tokenize(text, max_seq_length)
                return self.forward(ids["input_ids"], ids["attention_mask"])

        return TokenGraph() if tokenizer is None else TextGraph()


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
        ids, mask = (np.asarray(inputs[k], dtype=np.int32) for k in ("input_ids", "attention_mask"))
        return {k: v.numpy() for k, v in self.module(ids, mask).items()}


def run_batches(runner, batches: list[dict[str, np.ndarray]], key: str) -> np.ndarray:
    """``runner``'s output ``key`` over ``batches``, concatenated."""
    return np.concatenate([runner(b)[key] for b in batches])


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
    probe = EncoderGraph(graph.w, graph.config, graph.task).module(collect=True)
    keys = {f"{kind}{i}" for kind in MATMULS for i in range(graph.layers)}
    return [{k: v.numpy() for k, v in probe(b["input_ids"], b["attention_mask"]).items() if k in keys}
            for b in batches]


def matmul_errors(graph: EncoderGraph, batch: dict[str, np.ndarray]) -> list[dict[str, float]]:
    """Per-layer relative error of each int8 matmul (per-row int8 activations, per-channel int8
    weights, as the runtime computes them), simulated in numpy on one batch."""
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
            xs = np.abs(x).max(1, keepdims=True) / 127 + 1e-12
            ws = np.abs(weight).max(0, keepdims=True) / 127 + 1e-12
            approx = (np.round(x / xs) * xs) @ (np.round(weight / ws) * ws)
            row[kind] = float(np.linalg.norm(approx - exact) / (np.linalg.norm(exact) + 1e-12))
        rows.append(row)
    return rows

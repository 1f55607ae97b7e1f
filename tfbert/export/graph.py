"""The BERT forward rebuilt as plain TensorFlow ops from the model's own weights: what every export runs.

Both exports are made from this graph, not from the Hugging Face Keras one:

* **TFLite**: the Keras graph does not convert to builtin TFLite ops (a StridedSlice needs
  Flex). Here Q/K/V are fused into one matmul with 1/sqrt(d) folded into Q, token type 0 is
  folded into the position table, the attention mask is a small additive bias (-30, so no
  activation range is blown up), LayerNorm / softmax / GELU stay float, and the int8 recipe
  (:mod:`tfbert.export.tflite`) can smooth the matmul inputs.
* **SavedModel** (``serving=True``): token types are looked up, the mask bias is Hugging
  Face's -10000, and the outputs are the serving ones (token states, label ids, fill-mask
  top-k). It takes a third of the Keras model's time to trace, run and save (measured on
  MiniLM: 3.1 s instead of 9.4 s) and two thirds to reload in a fresh process (5.8 s instead
  of 8.9 s); the export checks it against the Keras model on held-out text before it writes
  anything.

The tf.functions are traced without AutoGraph: the forward has no data-dependent Python
control flow, and AutoGraph's source conversion was most of the tracing time.
"""

from __future__ import annotations

import numpy as np

from tfbert.checkpoint.names import canonical_from_keras
from tfbert.checkpoint.pooling import CONFIG_FIELD
from tfbert.errors import BadInputError
from tfbert.keras_bert import ACTIVATIONS, HF_MASK_BIAS
from tfbert.keras_bert import activation as bert_activation
from tfbert.tf import import_tensorflow

TASKS = ("embed", "classify", "fill_mask", "token_classify", "question_answering")
LITE_MASK_BIAS = -30.0


def model_weights(model) -> dict[str, np.ndarray]:
    """The Keras model's variables as canonical (PyTorch-layout) numpy arrays."""
    out = {}
    for variable in model.weights:
        name, transpose = canonical_from_keras(variable.name)
        value = variable.numpy()
        out[name] = value.T if transpose else value
    return out


class EncoderGraph:
    """The BERT forward as plain TF ops over numpy weights.

    Args:
        weights: canonical weights (:func:`model_weights`).
        config: the checkpoint config dict.
        task: ``embed``, ``classify``, ``token_classify`` or (``serving`` only) ``fill_mask``.
        smooth: SmoothQuant scales per matmul input (``qkv<i>``, ``ffn_in<i>``), or None.
        serving: the SavedModel's outputs and Hugging Face's mask bias (see the module
            docstring); otherwise the TFLite graph.
        top_k: fill-mask candidates per position.

    Outputs of the forward:
        embed: ``sentence_embedding`` [batch, hidden] (mean-pooled, L2-normalised);
            serving adds ``token_embeddings`` [batch, seq, hidden].
        classify: ``logits``, ``probabilities`` [batch, labels]; serving adds ``label_ids``.
            The head reads the pooling in ``config["classifier_pooling"]`` (default ``pooler``).
        fill_mask: ``top_k_ids``, ``top_k_probabilities`` [batch, seq, top_k].
        token_classify: ``logits`` [batch, seq, labels]; serving adds ``probabilities`` and
            ``label_ids`` [batch, seq].
        question_answering: ``start_logits``, ``end_logits`` [batch, seq]; its TFLite entry point
            also takes ``token_type_ids`` (question 0, context 1).

    Raises:
        BadInputError: a task, activation or position-embedding type the graph does not build.
    """

    def __init__(self, weights: dict[str, np.ndarray], config: dict, task: str, smooth: dict | None = None,
                 *, serving: bool = False, top_k: int = 5):
        if task not in TASKS or (task == "fill_mask" and not serving):
            raise BadInputError("TFLite export supports the embed, classify, token_classify and question_answering "
                                "tasks", where="--task",
                                actual=task, fix="export fill_mask as a SavedModel (pass --noquantize)")
        act = config.get("hidden_act", "gelu")
        if act not in ACTIVATIONS:
            raise BadInputError("activation not supported by tfbert's export graph", where="config.json: hidden_act",
                                expected=", ".join(ACTIVATIONS), actual=act,
                                fix="retrain or convert the model with one of those activations")
        positions = config.get("position_embedding_type", "absolute")
        if positions != "absolute":
            raise BadInputError("position embeddings not supported by tfbert's export graph",
                                where="config.json: position_embedding_type", expected="absolute", actual=positions,
                                fix="export only BERTs with absolute position embeddings")
        self.w, self.config, self.task, self.smooth = weights, config, task, smooth or {}
        self.serving, self.top_k = serving, top_k
        self.act = act
        self.layers = config["num_hidden_layers"]
        self.heads = config["num_attention_heads"]
        self.eps = config.get("layer_norm_eps", 1e-12)
        self._collector = None

    def collector(self):
        """The unsmoothed graph in collect mode (see :meth:`module`), made once: calibration
        and the per-layer error table run it without a copy of the weights each."""
        if self._collector is None:
            self._collector = EncoderGraph(self.w, self.config, self.task, serving=self.serving,
                                           top_k=self.top_k).module(collect=True)
        return self._collector

    def _layer(self, i: int) -> dict:
        """Layer ``i``'s matmuls as ``(weight [in, out], bias)`` and its LayerNorms' ``(gamma, beta)``.

        The Q/K/V and FFN-in matmuls read the LayerNorm before them *normalised but before its
        gamma and beta*: ``(n * gamma + beta) @ W + b = n @ (gamma[:, None] * W) + (beta @ W + b)``,
        so their weights and biases here have that LayerNorm's affine folded in. The residual
        stream carries ``n * gamma`` without beta, which joins the bias of the matmul whose output
        is added to it (attention-out, FFN-out). Both are exact in float, and take an add per
        LayerNorm out of the graph (SmoothQuant's per-channel multiply, when smoothing, stays:
        the residual needs the unsmoothed values).
        """
        g = lambda n: self.w[f"bert.encoder.layer.{i}.{n}"]  # noqa: E731
        scale = 1.0 / np.sqrt(self.config["hidden_size"] // self.heads)
        qkv_w = np.concatenate([g("attention.self.query.weight") * scale, g("attention.self.key.weight"),
                                g("attention.self.value.weight")], 0).T
        qkv_b = np.concatenate([g("attention.self.query.bias") * scale, g("attention.self.key.bias"),
                                g("attention.self.value.bias")])
        before = ("bert.embeddings.LayerNorm" if i == 0 else f"bert.encoder.layer.{i - 1}.output.LayerNorm")
        ln0 = (self.w[f"{before}.weight"], self.w[f"{before}.bias"])
        ln1 = (g("attention.output.LayerNorm.weight"), g("attention.output.LayerNorm.bias"))
        return {"qkv": _fold_affine(ln0, qkv_w, qkv_b),
                "out": (g("attention.output.dense.weight").T, g("attention.output.dense.bias") + ln0[1]),
                "ffn_in": _fold_affine(ln1, g("intermediate.dense.weight").T, g("intermediate.dense.bias")),
                "ffn_out": (g("output.dense.weight").T, g("output.dense.bias") + ln1[1]),
                "ln1": ln1, "ln2": (g("output.LayerNorm.weight"), g("output.LayerNorm.bias"))}

    def module(self, collect: bool = False, tokenizer=None, max_seq_length: int = 128,
               fixed_length: int | None = None, output: str | None = None):
        """A tf.Module: ``forward(input_ids, attention_mask, token_type_ids=None)`` is the graph,
        and its ``__call__`` the TFLite entry point.

        Args:
            collect: also return each matmul's input (before smoothing), keyed
                ``<kind><layer>`` (see :data:`tfbert.export.tflite.MATMULS`).
            tokenizer: a :class:`tfbert.tokenizer.BertTokenizer`: ``__call__`` then takes
                ``text`` (string [batch]), tokenized in the graph with tensorflow-text's
                TFLite kernels (truncated to ``max_seq_length``) instead of ``input_ids`` /
                ``attention_mask``.
            max_seq_length: truncation length of the in-graph tokenizer.
            fixed_length: ``__call__`` then takes MediaPipe Tasks' BERT inputs instead: ``ids``,
                ``mask`` and ``segment_ids``, int32 [1, fixed_length] (static), and returns only
                ``output``.
            output: the one output of a ``fixed_length`` module (e.g. ``sentence_embedding``).
        """
        tf = import_tensorflow()
        w, eps, heads = self.w, self.eps, self.heads
        hidden = self.config["hidden_size"]
        head_size = hidden // heads
        serving, top_k = self.serving, self.top_k
        type0 = w["bert.embeddings.token_type_embeddings.weight"][0]
        # Serving looks token types up; TFLite's inputs have none, so type 0 joins the positions.
        positions = w["bert.embeddings.position_embeddings.weight"] + (0 if serving else type0)
        layers = [self._layer(i) for i in range(self.layers)]
        smooth, task, act = self.smooth, self.task, self.act
        pooling = self.config.get(CONFIG_FIELD, "pooler")
        mask_value = HF_MASK_BIAS if serving else LITE_MASK_BIAS

        def normalized(x):  # LayerNorm before its gamma and beta
            centred = x - tf.reduce_mean(x, -1, keepdims=True)
            return centred * tf.math.rsqrt(tf.reduce_mean(centred * centred, -1, keepdims=True) + eps)

        def norm(x, gamma, beta):
            return normalized(x) * gamma + beta

        def activation(x):
            return bert_activation(x, act)  # the model's own (tfbert.keras_bert)

        class Graph(tf.Module):
            def __init__(self):
                super().__init__(name="tfbert_encoder")
                self.weights: list = []
                self._used = 0

            def const(self, array):
                # Weights are variables, not graph constants: the converter's SavedModel round trip
                # then writes and reads them once as a checkpoint instead of copying a graph full of
                # constants several times (measured: about half the conversion's memory and time).
                # Every trace reuses, in order, the variables the first one made.
                if self._used == len(self.weights):
                    with tf.init_scope():
                        self.weights.append(tf.Variable(np.ascontiguousarray(array, dtype=np.float32),
                                                        trainable=False, name=f"w{self._used}"))
                self._used += 1
                return self.weights[self._used - 1]

            def forward(self, input_ids, attention_mask, token_type_ids=None):
                self._used = 0
                const = self.const
                batch, seq = tf.shape(input_ids)[0], tf.shape(input_ids)[1]
                # A run-time 1.0: multiplying the smoothing constants by it stops the converter
                # from folding them back into the matmul weights (which would undo the smoothing).
                # With a static batch (``fixed_length``) the batch size is a constant too: the mask's
                # largest value is the run-time 1 there ([CLS] is never masked).
                one = tf.cast(tf.minimum(batch if input_ids.shape[0] is None else tf.reduce_max(attention_mask), 1),
                              tf.float32)
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

                word_table = const(w["bert.embeddings.word_embeddings.weight"])
                x = tf.gather(word_table, input_ids) \
                    + tf.expand_dims(tf.slice(const(positions), [0, 0], [seq, hidden]), 0)
                if serving:
                    types = tf.zeros_like(input_ids) if token_type_ids is None else token_type_ids
                    x += tf.gather(const(w["bert.embeddings.token_type_embeddings.weight"]), types)
                elif token_type_ids is not None:  # type 0 is in the positions already
                    x += tf.gather(const(w["bert.embeddings.token_type_embeddings.weight"] - type0), token_type_ids)
                # n: the last LayerNorm's output before its gamma and beta; x: the residual stream,
                # n * gamma (both betas and this gamma are folded into matmuls: see _layer).
                n = normalized(tf.reshape(x, [batch * seq, hidden]))
                x = n * const(w["bert.embeddings.LayerNorm.weight"])
                mask = tf.cast(attention_mask, tf.float32)
                mask_bias = tf.reshape((1.0 - mask) * mask_value, [batch, 1, 1, seq])
                for i, p in enumerate(layers):
                    # One transpose of the fused Q/K/V output to [batch, 3 * heads, seq, head_size], then
                    # one split: the graph had a split, three reshapes and three transposes, each a copy.
                    qkv = tf.transpose(tf.reshape(dense(n, f"qkv{i}", p["qkv"]), [batch, seq, 3 * heads, head_size]),
                                       [0, 2, 1, 3])
                    q, k, v = tf.split(qkv, 3, axis=1)
                    probs = tf.nn.softmax(tf.matmul(q, k, transpose_b=True) + mask_bias, -1)
                    context = tf.reshape(tf.transpose(tf.matmul(probs, v), [0, 2, 1, 3]), [batch * seq, hidden])
                    n = normalized(dense(context, f"out{i}", p["out"]) + x)
                    x = n * const(p["ln1"][0])
                    h = activation(dense(n, f"ffn_in{i}", p["ffn_in"]))
                    n = normalized(dense(h, f"ffn_out{i}", p["ffn_out"]) + x)
                    x = n * const(p["ln2"][0])
                x += const(layers[-1]["ln2"][1])  # the last beta: no matmul after it to take it
                states = tf.reshape(x, [batch, seq, hidden])
                if task == "embed":
                    # Mean pooling's 1/count cancels in the L2 normalisation, and dropping the
                    # division keeps a quantization-hostile op out of the graph.
                    summed = tf.reduce_sum(states * tf.expand_dims(mask, -1), 1)
                    out = {"sentence_embedding": summed * tf.math.rsqrt(
                        tf.maximum(tf.reduce_sum(summed * summed, -1, keepdims=True), 1e-12))}
                    if serving:
                        out["token_embeddings"] = states
                elif task == "token_classify":
                    logits = tf.reshape(tf.matmul(x, const(w["classifier.weight"].T)) + const(w["classifier.bias"]),
                                        [batch, seq, -1])
                    out = {"logits": logits}
                    if serving:
                        out.update(probabilities=tf.nn.softmax(logits, -1),
                                   label_ids=tf.argmax(logits, -1, output_type=tf.int32))
                elif task == "classify":
                    # The pooling the classifier was trained with (tfbert.model.classifier_logits).
                    if pooling == "pooler":
                        pooled = tf.tanh(tf.matmul(states[:, 0], const(w["bert.pooler.dense.weight"].T))
                                         + const(w["bert.pooler.dense.bias"]))
                    elif pooling == "cls":
                        pooled = states[:, 0]
                    elif pooling == "mean":
                        summed = tf.reduce_sum(states * tf.expand_dims(mask, -1), 1)
                        pooled = summed / tf.maximum(tf.reduce_sum(mask, 1, keepdims=True), 1.0)
                    else:  # max, padding at -1e9 as sentence-transformers sets it
                        pooled = tf.reduce_max(states * tf.expand_dims(mask, -1)
                                               + tf.expand_dims(mask - 1.0, -1) * 1e9, 1)
                    logits = tf.matmul(pooled, const(w["classifier.weight"].T)) + const(w["classifier.bias"])
                    out = {"logits": logits, "probabilities": tf.nn.softmax(logits, -1)}
                    if serving:
                        out["label_ids"] = tf.argmax(logits, -1, output_type=tf.int32)
                elif task == "question_answering":
                    logits = tf.reshape(tf.matmul(x, const(w["qa_outputs.weight"].T)) + const(w["qa_outputs.bias"]),
                                        [batch, seq, 2])
                    out = {"start_logits": logits[:, :, 0], "end_logits": logits[:, :, 1]}
                else:  # fill_mask: Hugging Face's MLM head, decoder tied to the word embeddings
                    h = activation(tf.matmul(x, const(w["cls.predictions.transform.dense.weight"].T))
                                   + const(w["cls.predictions.transform.dense.bias"]))
                    h = norm(h, const(w["cls.predictions.transform.LayerNorm.weight"]),
                             const(w["cls.predictions.transform.LayerNorm.bias"]))
                    logits = tf.matmul(h, word_table, transpose_b=True) \
                        + const(w["cls.predictions.bias"])
                    probs = tf.reshape(tf.nn.softmax(logits, -1), [batch, seq, -1])
                    top = tf.math.top_k(probs, k=top_k)
                    out = {"top_k_ids": top.indices, "top_k_probabilities": top.values}
                return {**out, **stats} if collect else out

        class TokenGraph(Graph):
            @tf.function(autograph=False, input_signature=[tf.TensorSpec([None, None], tf.int32, name="input_ids"),
                                                           tf.TensorSpec([None, None], tf.int32,
                                                                         name="attention_mask")])
            def __call__(self, input_ids, attention_mask):
                return self.forward(input_ids, attention_mask)

        class TextGraph(Graph):
            @tf.function(autograph=False, input_signature=[tf.TensorSpec([None], tf.string, name="text")])
            def __call__(self, text):
                ids = tokenizer.tokenize(text, max_seq_length)
                return self.forward(ids["input_ids"], ids["attention_mask"])

        class FixedGraph(Graph):
            @tf.function(autograph=False, input_signature=[tf.TensorSpec([1, fixed_length], tf.int32, name=name)
                                                           for name in ("ids", "mask", "segment_ids")])
            def __call__(self, ids, mask, segment_ids):
                return {output: self.forward(ids, mask, segment_ids)[output]}

        class PairGraph(Graph):
            @tf.function(autograph=False, input_signature=[tf.TensorSpec([None, None], tf.int32, name=name)
                                                           for name in ("input_ids", "attention_mask",
                                                                        "token_type_ids")])
            def __call__(self, input_ids, attention_mask, token_type_ids):
                return self.forward(input_ids, attention_mask, token_type_ids)

        if fixed_length is not None:
            return FixedGraph()
        if task == "question_answering" and tokenizer is None:
            return PairGraph()
        return TokenGraph() if tokenizer is None else TextGraph()


def _fold_affine(gamma_beta: tuple[np.ndarray, np.ndarray], weight: np.ndarray, bias: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``(weight, bias)`` [in, out] of a matmul reading ``n * gamma + beta``, as one reading ``n``."""
    gamma, beta = (a.astype(np.float64) for a in gamma_beta)
    w64 = weight.astype(np.float64)
    return (gamma[:, None] * w64).astype(np.float32), (beta @ w64 + bias).astype(np.float32)

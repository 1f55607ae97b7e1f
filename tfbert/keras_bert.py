"""Stage 4 — model: tfbert's own Keras BERT, for environments without Hugging Face's TF classes.

transformers 5 dropped its TensorFlow classes, and a user may not have transformers at all.
:func:`build` then gives the model :func:`tfbert.model.load` would have built from
``TFBertModel`` / ``TFBertForSequenceClassification`` / ``TFBertForMaskedLM`` /
``TFBertForTokenClassification`` / ``TFBertForQuestionAnswering``: the same layers
under the same names (``tf_bert_model/bert/encoder/layer_._0/attention/self/query/kernel:0``),
so :mod:`tfbert.checkpoint.names` maps it, :func:`tfbert.model.assign_weights` fills it, and
export, predict and fine-tuning read it as they read Hugging Face's; the same forward (mask
bias -10000, exact-erf GELU, tied MLM decoder), equal to Hugging Face's to 1e-5 (tests/test_keras_bert.py);
the same attributes (``.config``, ``.bert.embeddings``, ``.bert.encoder.layer``, ``.bert.pooler``,
``.dropout``, ``.classifier``, ``.qa_outputs``) and outputs (``last_hidden_state``, ``pooler_output``,
``logits``, ``start_logits`` / ``end_logits``).

It is written on tf-keras, the Keras the Hugging Face classes use, so mixed precision, the
optimizers and the callbacks of :mod:`tfbert.finetune` are the same objects on both paths, and one
process can hold both models (Keras 2 or 3 is chosen once per process, before TensorFlow starts).
On Keras 3 the same layers build and run, but variables are named by layer path only
(``tf_bert_model/bert/embeddings/embeddings`` for both the position and token-type tables:
``tf.name_scope`` is ignored), so a Keras 3 model needs the tables in sublayers of their own and
:mod:`tfbert.checkpoint.names` reading ``variable.path``; the runtime's mixed precision, the loader's
in-place slice assignment (``variable.handle``) and fine-tuning's tf-keras optimizer and checkpoints
would move too. The SavedModel and TFLite paths already run without tf-keras (tests/test_keras_bert.py).
"""

from __future__ import annotations

import math

from tfbert.errors import ConfigMismatchError
from tfbert.tf import import_tensorflow

# BertConfig's defaults, for a config.json that leaves fields out.
DEFAULTS = {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
            "intermediate_size": 3072, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 512, "type_vocab_size": 2,
            "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0,
            "position_embedding_type": "absolute", "classifier_dropout": None, "model_type": "bert"}
# Keras names of the three task models, as Hugging Face's classes name themselves.
MODEL_NAMES = {"embed": "tf_bert_model", "classify": "tf_bert_for_sequence_classification",
               "fill_mask": "tf_bert_for_masked_lm", "token_classify": "tf_bert_for_token_classification",
               "question_answering": "tf_bert_for_question_answering"}
HF_MASK_BIAS = -10000.0  # what Hugging Face's TF BERT adds to the attention scores of padding
# The hidden_act values :func:`activation` builds (tfbert's export graph builds the same).
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu", "silu", "swish", "tanh")


class BertConfig:
    """A config dict with attribute access, the part of ``transformers.BertConfig`` tfbert reads.

    Args:
        config: the checkpoint's config.json fields; BERT's defaults fill the missing ones, and
            ``id2label`` keys become ints (``num_labels`` follows it).

    Example:
        >>> BertConfig({"hidden_size": 384, "id2label": {"0": "neg", "1": "pos"}}).num_labels
        2
    """

    def __init__(self, config: dict):
        values = dict(DEFAULTS, **config)
        if isinstance(values.get("id2label"), dict):
            values["id2label"] = {int(k): v for k, v in values["id2label"].items()}
            values["label2id"] = values.get("label2id") or {v: k for k, v in values["id2label"].items()}
        values["num_labels"] = len(values["id2label"]) if values.get("id2label") else int(values.get("num_labels", 2))
        self.__dict__.update(values)

    def to_dict(self) -> dict:
        """The fields as a plain dict (what ``BertConfig.to_dict`` gives tfbert's writers)."""
        return dict(self.__dict__)


class BertOutput(dict):
    """Outputs by name, readable as attributes (``out.last_hidden_state``) like a Hugging Face ModelOutput."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def activation(x, name: str):
    """Hugging Face's TF activation ``name`` (transformers.activations_tf) applied to ``x``.

    Raises:
        ConfigMismatchError: an activation tfbert's Keras BERT does not build.
    """
    tf = import_tensorflow()
    if name == "gelu":
        return tf.nn.gelu(x, approximate=False)
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):  # gelu_fast is the tanh form factored
        return tf.nn.gelu(x, approximate=True)
    if name == "relu":
        return tf.nn.relu(x)
    if name in ("silu", "swish"):
        return tf.nn.silu(x)
    if name == "tanh":
        return tf.tanh(x)
    raise ConfigMismatchError("activation not supported by tfbert's Keras BERT", where="config.json: hidden_act",
                              expected=", ".join(ACTIVATIONS), actual=name,
                              fix="install transformers>=4.44,<5 (its TFBertModel builds the others)")


def build(config: dict, task: str = "embed", *, initializer=None):
    """tfbert's Keras BERT for ``task`` with every variable created (no forward pass).

    Args:
        config: the checkpoint's config.json fields.
        task: ``embed`` (as ``TFBertModel``), ``classify`` (``TFBertForSequenceClassification``),
            ``fill_mask`` (``TFBertForMaskedLM``), ``token_classify`` (``TFBertForTokenClassification``)
            or ``question_answering`` (``TFBertForQuestionAnswering``).
        initializer: for kernels and embedding tables (e.g. zeros, for a caller that fills them
            at once); default Hugging Face's truncated normal with the config's ``initializer_range``.

    Returns:
        A tf-keras model; call it with ``input_ids``, ``attention_mask``, ``token_type_ids``
        (int [batch, seq]) and ``training``.

    Raises:
        ConfigMismatchError: an activation or position embedding type it does not build.

    Example:
        >>> model = build({"vocab_size": 30, "hidden_size": 8, "num_hidden_layers": 1,
        ...                "num_attention_heads": 2, "intermediate_size": 16})
        >>> model.weights[0].name
        'tf_bert_model/bert/embeddings/word_embeddings/weight:0'
    """
    tf = import_tensorflow()
    import tf_keras as keras

    cfg = BertConfig(config)
    activation(tf.zeros([1]), cfg.hidden_act)  # refuse an unknown activation before building
    if cfg.position_embedding_type != "absolute":
        raise ConfigMismatchError("position embeddings not supported by tfbert's Keras BERT",
                                  where="config.json: position_embedding_type", expected="absolute",
                                  actual=cfg.position_embedding_type,
                                  fix="install transformers>=4.44,<5 for this model")

    def init():  # a new instance per weight: one unseeded instance would repeat its values
        return initializer or keras.initializers.TruncatedNormal(stddev=cfg.initializer_range)

    hidden, heads = cfg.hidden_size, cfg.num_attention_heads
    head_size = hidden // heads

    def dense(units, name, act=None):
        return keras.layers.Dense(units, kernel_initializer=init(), activation=act, name=name)

    def layer_norm(name="LayerNorm"):
        return keras.layers.LayerNormalization(epsilon=cfg.layer_norm_eps, name=name)

    def build_in(layer, shape):
        with tf.name_scope(layer.name):
            layer.build(shape)

    class Embeddings(keras.layers.Layer):
        def __init__(self):
            super().__init__(name="embeddings")
            self.LayerNorm = layer_norm()
            self.dropout = keras.layers.Dropout(cfg.hidden_dropout_prob)

        def build(self, input_shape=None):
            if self.built:
                return
            for scope, attr, name, rows in (("word_embeddings", "weight", "weight", cfg.vocab_size),
                                            ("token_type_embeddings", "token_type_embeddings", "embeddings",
                                             cfg.type_vocab_size),
                                            ("position_embeddings", "position_embeddings", "embeddings",
                                             cfg.max_position_embeddings)):
                with tf.name_scope(scope):
                    setattr(self, attr, self.add_weight(name=name, shape=[rows, hidden], initializer=init()))
            build_in(self.LayerNorm, [None, None, hidden])
            self.built = True

        def call(self, input_ids, token_type_ids, training=False):
            tf.debugging.assert_less(input_ids, tf.cast(cfg.vocab_size, input_ids.dtype),
                                     message="input_ids must be smaller than the vocab size")
            seq = tf.shape(input_ids)[1]
            x = tf.gather(self.weight, input_ids) + tf.gather(self.position_embeddings, tf.range(seq)[None]) \
                + tf.gather(self.token_type_embeddings, token_type_ids)
            return self.dropout(self.LayerNorm(x), training=training)

    class SelfAttention(keras.layers.Layer):
        def __init__(self):
            super().__init__(name="self")
            self.query, self.key, self.value = dense(hidden, "query"), dense(hidden, "key"), dense(hidden, "value")
            self.dropout = keras.layers.Dropout(cfg.attention_probs_dropout_prob)

        def build(self, input_shape=None):
            if not self.built:
                for layer in (self.query, self.key, self.value):
                    build_in(layer, [None, None, hidden])
                self.built = True

        def call(self, x, mask_bias, training=False):
            batch = tf.shape(x)[0]

            def split(t):
                return tf.transpose(tf.reshape(t, [batch, -1, heads, head_size]), [0, 2, 1, 3])

            scores = tf.matmul(split(self.query(x)), split(self.key(x)), transpose_b=True)
            scores = scores / tf.cast(math.sqrt(head_size), scores.dtype) + mask_bias
            probs = self.dropout(tf.nn.softmax(scores + 1e-9, -1), training=training)
            context = tf.transpose(tf.matmul(probs, split(self.value(x))), [0, 2, 1, 3])
            return tf.reshape(context, [batch, -1, hidden])

    class DenseNorm(keras.layers.Layer):
        """dense → dropout → LayerNorm(· + residual): BERT's attention output and layer output."""

        def __init__(self, name, input_size):
            super().__init__(name=name)
            self.input_size = input_size
            self.dense, self.LayerNorm = dense(hidden, "dense"), layer_norm()
            self.dropout = keras.layers.Dropout(cfg.hidden_dropout_prob)

        def build(self, input_shape=None):
            if not self.built:
                build_in(self.dense, [None, None, self.input_size])
                build_in(self.LayerNorm, [None, None, hidden])
                self.built = True

        def call(self, x, residual, training=False):
            return self.LayerNorm(self.dropout(self.dense(x), training=training) + residual)

    class Attention(keras.layers.Layer):
        def __init__(self):
            super().__init__(name="attention")
            self.self_attention, self.dense_output = SelfAttention(), DenseNorm("output", hidden)

        def build(self, input_shape=None):
            if not self.built:
                build_in(self.self_attention, None)
                build_in(self.dense_output, None)
                self.built = True

        def call(self, x, mask_bias, training=False):
            return self.dense_output(self.self_attention(x, mask_bias, training=training), x, training=training)

    class Intermediate(keras.layers.Layer):
        def __init__(self):
            super().__init__(name="intermediate")
            self.dense = dense(cfg.intermediate_size, "dense")

        def build(self, input_shape=None):
            if not self.built:
                build_in(self.dense, [None, None, hidden])
                self.built = True

        def call(self, x):
            return activation(self.dense(x), cfg.hidden_act)

    class Layer(keras.layers.Layer):
        def __init__(self, index):
            super().__init__(name=f"layer_._{index}")
            self.attention, self.intermediate = Attention(), Intermediate()
            self.bert_output = DenseNorm("output", cfg.intermediate_size)

        def build(self, input_shape=None):
            if not self.built:
                for layer in (self.attention, self.intermediate, self.bert_output):
                    build_in(layer, None)
                self.built = True

        def call(self, x, mask_bias, training=False):
            x = self.attention(x, mask_bias, training=training)
            return self.bert_output(self.intermediate(x), x, training=training)

    class Encoder(keras.layers.Layer):
        def __init__(self):
            super().__init__(name="encoder")
            self.layer = [Layer(i) for i in range(cfg.num_hidden_layers)]

        def build(self, input_shape=None):
            if not self.built:
                for layer in self.layer:
                    build_in(layer, None)
                self.built = True

        def call(self, x, mask_bias, training=False):
            for layer in self.layer:
                x = layer(x, mask_bias, training=training)
            return x

    class Pooler(keras.layers.Layer):
        def __init__(self):
            super().__init__(name="pooler")
            self.dense = dense(hidden, "dense", "tanh")

        def build(self, input_shape=None):
            if not self.built:
                build_in(self.dense, [None, None, hidden])
                self.built = True

        def call(self, x):
            return self.dense(x[:, 0])

    class MainLayer(keras.layers.Layer):
        def __init__(self, pooler: bool):
            super().__init__(name="bert")
            self.config = cfg
            self.embeddings, self.encoder = Embeddings(), Encoder()
            self.pooler = Pooler() if pooler else None

        def build(self, input_shape=None):
            if not self.built:
                for layer in (self.embeddings, self.encoder, self.pooler):
                    if layer is not None:
                        build_in(layer, None)
                self.built = True

        def call(self, input_ids=None, attention_mask=None, token_type_ids=None, training=False):
            if attention_mask is None:
                attention_mask = tf.ones_like(input_ids)
            if token_type_ids is None:
                token_type_ids = tf.zeros_like(input_ids)
            x = self.embeddings(input_ids, token_type_ids, training=training)
            mask = tf.cast(attention_mask, x.dtype)[:, None, None, :]
            x = self.encoder(x, (1.0 - mask) * tf.cast(HF_MASK_BIAS, x.dtype), training=training)
            out = BertOutput(last_hidden_state=x)
            if self.pooler is not None:
                out["pooler_output"] = self.pooler(x)
            return out

    class MLMHead(keras.layers.Layer):
        """Hugging Face's ``mlm___cls/predictions``: transform, then the word embeddings (tied) + bias."""

        def __init__(self, embeddings):
            super().__init__(name="mlm___cls")
            self.embeddings = embeddings
            self.dense, self.LayerNorm = dense(hidden, "dense"), layer_norm()

        def build(self, input_shape=None):
            if self.built:
                return
            with tf.name_scope("predictions"):
                self.bias = self.add_weight(name="bias", shape=[cfg.vocab_size], initializer="zeros")
                with tf.name_scope("transform"):
                    build_in(self.dense, [None, None, hidden])
                    build_in(self.LayerNorm, [None, None, hidden])
            self.built = True

        def call(self, x):
            h = self.LayerNorm(activation(self.dense(x), cfg.hidden_act))
            logits = tf.matmul(tf.reshape(h, [-1, hidden]), self.embeddings.weight, transpose_b=True)
            return tf.nn.bias_add(tf.reshape(logits, [tf.shape(x)[0], -1, cfg.vocab_size]), self.bias)

    class Model(keras.Model):
        def __init__(self):
            super().__init__(name=MODEL_NAMES[task])
            self.config = cfg
            self.bert = MainLayer(pooler=task not in ("fill_mask", "token_classify", "question_answering"))
            if task in ("classify", "token_classify"):
                rate = cfg.classifier_dropout if cfg.classifier_dropout is not None else cfg.hidden_dropout_prob
                self.dropout = keras.layers.Dropout(rate)
                self.classifier = dense(cfg.num_labels, "classifier")
            elif task == "fill_mask":
                self.mlm = MLMHead(self.bert.embeddings)
            elif task == "question_answering":
                self.qa_outputs = dense(cfg.num_labels, "qa_outputs")

        def build(self, input_shape=None):
            if self.built:
                return
            build_in(self.bert, None)
            if task in ("classify", "token_classify"):
                build_in(self.classifier, [None, None, hidden])
            elif task == "fill_mask":
                build_in(self.mlm, None)
            elif task == "question_answering":
                build_in(self.qa_outputs, [None, None, hidden])
            self.built = True

        def call(self, input_ids=None, attention_mask=None, token_type_ids=None, training=False):
            out = self.bert(input_ids, attention_mask, token_type_ids, training=training)
            if task == "classify":
                return BertOutput(logits=self.classifier(self.dropout(out.pooler_output, training=training)))
            if task == "token_classify":
                return BertOutput(logits=self.classifier(self.dropout(out.last_hidden_state, training=training)))
            if task == "fill_mask":
                return BertOutput(logits=self.mlm(out.last_hidden_state))
            if task == "question_answering":
                start, end = tf.unstack(self.qa_outputs(out.last_hidden_state), 2, axis=-1)
                return BertOutput(start_logits=start, end_logits=end)
            return out

    model = Model()
    with tf.name_scope(model.name):
        model.build()
    return model

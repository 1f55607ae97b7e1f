"""TF Serving without the server: its C++ loader, op set, REST codec and batching (tfbert.deploy.serving).

The references are Hugging Face's tokenizer and TF model (tests/tiny.py) and TF Serving's own
rules as its source states them; the server side runs in a fresh process through TensorFlow's
C API (tfbert.deploy.serving.ServerProcess), never through TensorFlow's Python loader.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests import tiny
from tfbert import errors

TEXTS = ["the cat sat on the red mat", "a dog ran", "", "hello world!", "the bird flew " * 20]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    reference = tiny.reference_model("classify", seed=11)
    directory = tiny.write_safetensors(str(tmp_path_factory.mktemp("clf") / "ckpt"), reference)
    return reference, directory


def _export(directory, out, task="classify"):
    from tfbert.checkpoint import find_checkpoint
    from tfbert.export import export_saved_model
    from tfbert.model import load
    from tfbert.tokenizer import BertTokenizer

    files = find_checkpoint(directory)
    return export_saved_model(load(directory, task=task, require_head=True),
                              BertTokenizer.from_files(files.vocab, files.tokenizer_config), task=task,
                              vocab_file=files.vocab, output_dir=str(out), name="tiny", max_seq_length=32,
                              texts=TEXTS)


@pytest.fixture(scope="module")
def exported(classifier, tmp_path_factory):
    return _export(classifier[1], tmp_path_factory.mktemp("exported"))


def _hf(directory, texts, max_length=32):
    tok = tiny.hf_tokenizer(os.path.join(directory, "vocab.txt"), do_lower_case=True)
    batch = tok(texts, padding="longest", truncation=True, max_length=max_length, return_tensors="np")
    return {k: v.astype(np.int32) for k, v in batch.items()}


def _hf_logits(reference, directory, texts):
    return reference(**_hf(directory, texts), training=False).logits.numpy()


def test_cpp_loader_replays_warmup_and_runs_signatures_like_hugging_face(classifier, exported):
    """The version as TF Serving loads it (C++ loader, tensorflow-text via TF_LoadLibrary): every warmup
    record and a request per signature give Hugging Face's logits and labels."""
    from tfbert.deploy.serving import ServerProcess
    from tfbert.deploy.warmup import warmup_inputs

    reference, directory = classifier
    assert exported.warmup_requests == 4 and exported.warmup_max_abs_diff <= 1e-5  # checked during the export
    assert exported.op_audit.min_tf_serving == "2.20"
    hf = _hf(directory, TEXTS)
    check = ServerProcess(exported.path, {"tokenized": hf}).result()
    records = warmup_inputs(exported.path)
    assert len(check.warmup_outputs) == len(records) == 4  # batch sizes 1, 2, 4, 8
    names = np.array(["negative", "positive", "neutral"])
    for (signature, inputs), outputs in zip(records, check.warmup_outputs, strict=True):
        assert signature == "serving_default"
        texts = [t.decode() for t in inputs["text"]]
        logits = _hf_logits(reference, directory, texts)
        np.testing.assert_allclose(outputs["logits"], logits, atol=1e-5)
        assert [s.decode() for s in outputs["labels"]] == names[logits.argmax(-1)].tolist()
    np.testing.assert_allclose(check.outputs["tokenized"]["logits"], _hf_logits(reference, directory, TEXTS),
                               atol=1e-5)


def test_op_audit_names_every_op_and_the_oldest_tf_serving(exported):
    ops = exported.op_audit.ops
    assert ops["FastWordpieceTokenizeWithOffsets"] == "fast_wordpiece_tokenizer"
    assert ops["FastBertNormalize"] == "fast_bert_normalizer"
    assert ops["MatMul"] == ops["StatefulPartitionedCall"] == ops["Softmax"] == "core"
    assert set(ops.values()) == {"core", "fast_wordpiece_tokenizer", "fast_bert_normalizer"}
    assert "needs TF Serving >= 2.20" in exported.op_audit.summary()


def test_op_audit_min_version_follows_tf_serving_releases():
    """TF Serving's bundled tensorflow-text: FastWordpiece since 2.10, FastBertNormalize since 2.12, the
    FastWordpiece fixes of TF Text 2.19 since 2.20 (tensorflow/serving#2064, workspace.bzl)."""
    from tfbert.deploy.ops import audit_ops

    core = {"MatMul", "Const"}
    text = {"FastBertNormalize": "fast_bert_normalizer", "WhitespaceTokenizeWithOffsets": "whitespace_tokenizer",
            "TFText>Utf8Binarize": "utf8_binarize_op"}
    assert audit_ops(["MatMul", "Const"], core, set(), text, "m").min_tf_serving is None
    assert audit_ops(["MatMul", "WhitespaceTokenizeWithOffsets"], core, set(), text, "m").min_tf_serving == "2.0"
    assert audit_ops(["FastBertNormalize", "WhitespaceTokenizeWithOffsets"], core, set(), text, "m") \
        .min_tf_serving == "2.12"
    assert audit_ops(["TFText>Utf8Binarize", "FastBertNormalize"], core, set(), text, "m").min_tf_serving == "2.20"


def _saved_model_with_py_function(directory: str) -> str:
    """A SavedModel whose signature calls tf.py_function (op EagerPyFunc)."""
    from tfbert.tf import import_tensorflow

    tf = import_tensorflow()

    class WithPyFunction(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def double(self, x):
            return {"y": tf.py_function(lambda v: v * 2, [x], tf.float32)}

    module = WithPyFunction()
    tf.saved_model.save(module, directory, signatures={"serving_default": module.double})
    return directory


def test_op_audit_refuses_an_op_tf_serving_lacks(tmp_path):
    """tf.py_function's EagerPyFunc is registered by TensorFlow, but its kernel only by TensorFlow's Python:
    a model server cannot run it. One line, naming the op."""
    from tfbert.deploy.serving import ServerProcess
    from tfbert.tf import import_tensorflow

    tf = import_tensorflow()
    directory = _saved_model_with_py_function(str(tmp_path / "1"))
    assert tf.saved_model.load(directory).signatures["serving_default"] is not None  # Python loads it
    with pytest.raises(errors.ExportError) as info:
        ServerProcess(directory).result()
    message = str(info.value)
    assert "op EagerPyFunc" in message and "no kernel outside TensorFlow's Python runtime" in message
    assert "\n" not in message


def test_export_with_an_op_tf_serving_lacks_publishes_nothing(classifier, tmp_path, monkeypatch):
    """A serving graph with a tf.py_function (here in the text signature) runs in memory, but the export
    is refused before anything is published."""
    from tfbert.tf import import_tensorflow
    from tfbert.tokenizer import BertTokenizer

    tf = import_tensorflow()
    tokenize = BertTokenizer.tokenize

    def through_python(self, texts, max_length, text_pairs=None):
        texts = tf.py_function(lambda t: t, [texts], tf.string)
        texts.set_shape([None])
        return tokenize(self, texts, max_length, text_pairs)

    monkeypatch.setattr(BertTokenizer, "tokenize", through_python)
    with pytest.raises(errors.ExportError) as info:
        _export(classifier[1], tmp_path)
    assert "op EagerPyFunc" in str(info.value) and "\n" not in str(info.value)
    assert not [d for d in (os.listdir(tmp_path / "tiny") if (tmp_path / "tiny").is_dir() else []) if d.isdigit()]


def _append_warmup_record(path, signature):
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    from tfbert.tf import import_tensorflow

    tf = import_tensorflow()
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = "tiny", signature
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(["a cat"], dtype=tf.string))
    records = [r.numpy() for r in tf.data.TFRecordDataset(path)]
    records.append(prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)).SerializeToString())
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)


def test_warmup_record_for_a_missing_signature_is_one_line(exported, tmp_path):
    """TF Serving fails to load a version whose warmup names a signature it lacks; so does the replay."""
    from tfbert.deploy.serving import ServerProcess
    from tfbert.deploy.warmup import WARMUP_FILE

    broken = str(tmp_path / "1")
    shutil.copytree(exported.path, broken)
    _append_warmup_record(os.path.join(broken, WARMUP_FILE), "classify_v2")
    with pytest.raises(errors.ExportError) as info:
        ServerProcess(broken).result()
    message = str(info.value)
    assert "record 4" in message and "classify_v2" in message and "serving_default" in message
    assert "\n" not in message


def test_export_cli_refuses_a_warmup_record_for_a_missing_signature(classifier, tmp_path):
    """The CLI: one line on stderr, exit 2, no version published."""
    script = ("import os, sys\n"
              "from tfbert.deploy import serving, warmup\n"
              "from tests.test_serving import _append_warmup_record\n"
              "start = serving.ServerProcess.__init__\n"
              "def with_bad_record(self, directory, *args, **kwargs):\n"
              "    _append_warmup_record(os.path.join(directory, warmup.WARMUP_FILE), 'classify_v2')\n"
              "    start(self, directory, *args, **kwargs)\n"
              "serving.ServerProcess.__init__ = with_bad_record\n"
              "from tfbert.cli import export\n"
              "sys.argv = ['tfbert.export'] + sys.argv[1:]\n"
              "export.run()\n")
    result = subprocess.run([sys.executable, "-c", script, f"--model={classifier[1]}", "--task=classify",
                             f"--output_dir={tmp_path}", "--name=tiny", "--max_seq_length=32"],
                            capture_output=True, text=True, timeout=900, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "classify_v2" in line and "warmup" in line and "Traceback" not in result.stderr
    assert not [d for d in os.listdir(tmp_path / "tiny") if d.isdigit()] if (tmp_path / "tiny").is_dir() else True


def test_cpp_loader_refuses_what_the_python_reload_accepts(exported, tmp_path):
    """A SavedModel without the ``serve`` tag: tf.saved_model.load takes its only MetaGraph and runs it,
    TF Serving's C++ loader (here: TF_LoadSessionFromSavedModel) refuses it."""
    from tensorflow.core.protobuf import saved_model_pb2

    from tfbert.deploy.serving import ServerProcess
    from tfbert.tf import import_tensorflow

    tf = import_tensorflow()
    untagged = str(tmp_path / "1")
    shutil.copytree(exported.path, untagged)
    pb = os.path.join(untagged, "saved_model.pb")
    with open(pb, "rb") as f:
        saved = saved_model_pb2.SavedModel.FromString(f.read())
    del saved.meta_graphs[0].meta_info_def.tags[:]
    saved.meta_graphs[0].meta_info_def.tags.append("train")
    with open(pb, "wb") as f:
        f.write(saved.SerializeToString())
    import tensorflow_text  # noqa: F401

    loaded = tf.saved_model.load(untagged)
    assert loaded.signatures["serving_default"](text=tf.constant(["a cat"]))["logits"].shape == (1, 3)
    with pytest.raises(errors.ExportError) as info:
        ServerProcess(untagged).result()
    assert "tagged 'serve'" in str(info.value)
    loader = subprocess.run([sys.executable, "-c", "import sys; from tfbert.deploy import c_api; "
                             "c_api.SavedModelSession(sys.argv[1])", untagged],
                            capture_output=True, text=True, timeout=900)
    assert loader.returncode != 0 and "matching supplied tags" in loader.stderr


def test_text_requests_batched_together_equal_each_alone(classifier, tmp_path):
    """serving_default merged with longer and shorter texts (TF Serving concatenates text [batch]): each
    text's sentence embedding equals Hugging Face's for it alone; token states too, on its own positions."""
    from tfbert.deploy.batching import merge_requests
    from tfbert.deploy.serving import ServerProcess
    from tfbert.model import mean_pool

    reference = tiny.reference_model("embed", seed=12)
    directory = tiny.write_safetensors(str(tmp_path / "ckpt"), reference)
    result = _export(directory, tmp_path / "out", task="embed")
    requests = [{"text": np.array([t.encode()], dtype=object)} for t in ["a dog", "the bird flew " * 9, "yes"]]
    merged = merge_requests(requests, pad_variable_length_inputs=True)
    check = ServerProcess(result.path, {"serving_default": merged}).result()
    outputs = check.outputs["serving_default"]
    assert check.batching_max_abs_diff["serving_default"] <= 1e-5
    for row, request in enumerate(requests):
        batch = _hf(directory, [request["text"][0].decode()])
        hidden = reference(**batch, training=False).last_hidden_state.numpy()
        np.testing.assert_allclose(outputs["token_embeddings"][row, :hidden.shape[1]], hidden[0], atol=1e-5)
        pooled = mean_pool(hidden, batch["attention_mask"]).numpy()
        np.testing.assert_allclose(outputs["sentence_embedding"][row], pooled[0], atol=1e-5)


def test_tokenized_requests_need_client_side_padding(classifier, exported):
    """TF Serving pads with a tensor's first element ([CLS], mask 1): merged that way, a short tokenized
    request's logits change — hence pad_variable_length_inputs: false. Padded by the client (mask 0), as
    Hugging Face pads, requests batch without padding and equal each alone."""
    from tfbert.deploy.batching import merge_requests
    from tfbert.deploy.config import batching_parameters
    from tfbert.tf import import_tensorflow

    tf = import_tensorflow()
    import tensorflow_text  # noqa: F401

    reference, directory = classifier
    run = tf.saved_model.load(exported.path).signatures["tokenized"]
    short, long = _hf(directory, ["a dog"]), _hf(directory, ["the bird flew over the red mat"])
    alone = _hf_logits(reference, directory, ["a dog"])[0]
    server_padded = merge_requests([short, long], pad_variable_length_inputs=True)
    assert server_padded["attention_mask"][0].all()  # the padding counts as text
    logits = run(**{k: tf.constant(v) for k, v in server_padded.items()})["logits"].numpy()
    assert not np.allclose(logits[0], alone, atol=1e-5)  # the tolerance the client-padded batch meets below
    with pytest.raises(errors.ExportError):
        merge_requests([short, long], pad_variable_length_inputs=False)
    client_padded = _hf(directory, ["a dog", "the bird flew over the red mat"])
    requests = [{k: v[i:i + 1] for k, v in client_padded.items()} for i in range(2)]
    merged = merge_requests(requests, pad_variable_length_inputs=False)
    logits = run(**{k: tf.constant(v) for k, v in merged.items()})["logits"].numpy()
    np.testing.assert_allclose(logits[0], alone, atol=1e-5)
    assert "pad_variable_length_inputs: false" in batching_parameters()


def test_batching_parameters_and_models_config_parse_as_tf_servings_protos():
    from google.protobuf import (
        descriptor_pb2,
        descriptor_pool,
        message_factory,
        text_format,
        wrappers_pb2,  # noqa: F401  (registers wrappers.proto in the pool)
    )
    from tensorflow_serving.config import model_server_config_pb2

    from tfbert.deploy.config import batching_parameters, models_config

    config = text_format.Parse(models_config("minilm", "/models/minilm", [1, 2], {"stable": 1, "canary": 2}),
                               model_server_config_pb2.ModelServerConfig())
    model = config.model_config_list.config[0]
    assert model.name == "minilm" and list(model.model_version_policy.specific.versions) == [1, 2]
    assert dict(model.version_labels) == {"stable": 1, "canary": 2}
    # BatchingParameters as tensorflow_serving/servables/tensorflow/session_bundle_config.proto declares it
    # (tensorflow-serving-api does not ship that module).
    proto = descriptor_pb2.FileDescriptorProto(name="batching_test.proto", package="tfs",
                                               dependency=["google/protobuf/wrappers.proto"])
    message = proto.message_type.add(name="BatchingParameters")
    i64, string, boolean = ".google.protobuf.Int64Value", ".google.protobuf.StringValue", ".google.protobuf.BoolValue"
    for name, number, kind in [("max_batch_size", 1, i64), ("batch_timeout_micros", 2, i64),
                               ("max_enqueued_batches", 3, i64), ("num_batch_threads", 4, i64),
                               ("thread_pool_name", 5, string), ("enable_large_batch_splitting", 8, boolean),
                               ("max_execution_batch_size", 9, i64)]:
        message.field.add(name=name, number=number, type=11, type_name=kind, label=1)
    message.field.add(name="allowed_batch_sizes", number=6, type=3, label=3)
    message.field.add(name="pad_variable_length_inputs", number=7, type=8, label=1)
    pool = descriptor_pool.Default()
    pool.Add(proto)
    parameters = text_format.Parse(batching_parameters(max_batch_size=32), message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tfs.BatchingParameters"))())
    assert parameters.max_batch_size.value == 32 and list(parameters.allowed_batch_sizes)[-1] == 32
    assert parameters.pad_variable_length_inputs is False


def test_rest_row_format_round_trip_and_rules(exported):
    """instances in, predictions out, as TF Serving's JSON codec: strings as plain JSON strings, every output
    with the batch as its first dimension; an output without one refuses the row format."""
    from tfbert.deploy.rest import row_request, row_response, tensors_from_row_request
    from tfbert.tf import import_tensorflow

    tf = import_tensorflow()
    import tensorflow_text  # noqa: F401

    texts = ["a cat sat", "héllo wörld"]
    body = json.loads(json.dumps(row_request("serving_default", {"text": np.array([t.encode() for t in texts],
                                                                                    dtype=object)})))
    assert body == {"signature_name": "serving_default", "instances": [{"text": "a cat sat"},
                                                                       {"text": "héllo wörld"}]}
    assert tensors_from_row_request({"instances": texts}, {"text": {"dtype": object}})["text"].tolist() == \
        [t.encode() for t in texts]  # a single input may also be sent as plain values
    tensors = tensors_from_row_request(body, {"text": {"dtype": object}})
    outputs = {k: v.numpy() for k, v in
               tf.saved_model.load(exported.path).signatures["serving_default"](text=tf.constant(tensors["text"]))
               .items()}
    predictions = json.loads(json.dumps(row_response(outputs, 2)))["predictions"]
    assert len(predictions) == 2 and set(predictions[0]) == set(outputs)
    assert predictions[0]["labels"] in ("negative", "positive", "neutral")
    np.testing.assert_allclose(predictions[1]["probabilities"], outputs["probabilities"][1], rtol=1e-6)
    with pytest.raises(errors.ExportError) as info:
        row_response({**outputs, "temperature": np.float32(1.0).reshape(())}, 2)
    assert "temperature" in str(info.value) and "first dimension" in str(info.value)
    with pytest.raises(errors.ExportError):
        tensors_from_row_request({"instances": [{"input_ids": [1, 2], "attention_mask": [1, 1]}]},
                                 {k: {"dtype": np.int32} for k in ("input_ids", "attention_mask", "token_type_ids")})


def test_generated_curl_and_grpc_examples_fit_the_signature():
    """The examples come from serving_examples: the curl line, run by bash, sends a valid row-format request
    for the signature (quotes and non-ASCII text included); the gRPC client compiles and names the model,
    signature and input."""
    from tfbert.deploy.rest import serving_examples, tensors_from_row_request

    texts = ["A man's guitar.", "Café 中文"]
    examples = serving_examples("tiny", "serving_default", {"text": texts})
    curl = examples["shell"][examples["shell"].index("curl "):]
    sent = subprocess.run(["bash", "-c", 'curl() { printf "%s" "$2"; }\n' + curl], capture_output=True, text=True,
                          check=True).stdout
    body = json.loads(sent)
    assert body["signature_name"] == "serving_default"
    assert tensors_from_row_request(body, {"text": {"dtype": object}})["text"].tolist() == [t.encode() for t in texts]
    assert "/v1/models/tiny:predict" in curl and "MODEL_NAME=tiny" in examples["shell"]
    compile(examples["python"], "grpc_example", "exec")
    assert "'tiny', 'serving_default'" in examples["python"] and "request.inputs['text']" in examples["python"]


def test_docs_serving_examples_are_the_generated_ones():
    """docs/serving.md's examples and configuration files are the generated, tested ones."""
    from tfbert.deploy.config import batching_parameters, models_config
    from tfbert.deploy.rest import serving_examples

    with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs", "serving.md"), encoding="utf-8") as f:
        page = f.read()
    examples = serving_examples("minilm", "serving_default", {"text": ["A man is playing a guitar."]},
                                model_dir="exported/all-minilm-l6-v2")
    for block in (examples["shell"], examples["python"], batching_parameters(),
                  models_config("minilm", "/models/minilm", [1, 2], {"stable": 1, "canary": 2})):
        assert any(f"```{kind}\n{block}```" in page for kind in ("", "bash", "python"))


def test_doctor_states_the_op_audit_and_minimum_tf_serving(exported, tmp_path):
    """doctor on a version directory: the serving row names the tensorflow-text ops and TF Serving >= 2.20;
    on a SavedModel with an op TF Serving lacks, an error row naming it, exit 2."""

    def serving_row(path):
        out = subprocess.run([sys.executable, "-m", "tfbert.doctor", f"--model={path}", "--json"],
                             capture_output=True, text=True, timeout=900)
        return out.returncode, next(r for r in json.loads(out.stdout)["rows"] if r["check"] == "serving")

    code, row = serving_row(exported.path)
    assert code == 0 and row["status"] == "ok"
    assert "FastBertNormalize, FastWordpieceTokenizeWithOffsets: needs TF Serving >= 2.20" in row["message"]
    assert "replays its 4 warmup requests" in row["message"]
    code, row = serving_row(_saved_model_with_py_function(str(tmp_path / "1")))
    assert code == 2 and row["status"] == "error" and "op EagerPyFunc" in row["message"]

"""Every way a checkpoint breaks becomes one typed error naming the file, the field and the fix."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tfbert import errors
from tfbert.checkpoint.manifest import write_manifest
from tfbert.diagnose import diagnose
from tfbert.diagnose.environment import check_environment
from tfbert.diagnose.memory import check_memory, estimate_memory
from tfbert.model import load


def _edit_config(directory, **changes):
    path = os.path.join(directory, "config.json")
    with open(path) as f:
        config = json.load(f)
    config.update(changes)
    with open(path, "w") as f:
        json.dump(config, f)


def _header(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return n, json.loads(f.read(n))


def flip_bytes(path: str, tensor: str, count: int = 4096) -> None:
    """Invert ``count`` bytes in the middle of ``tensor``'s data in a .safetensors file, in place."""
    n, header = _header(path)
    begin, end = header[tensor]["data_offsets"]
    offset = 8 + n + (begin + end) // 2
    offset -= offset % 4
    with open(path, "r+b") as f:
        f.seek(offset)
        data = np.frombuffer(f.read(count), np.uint8)
        f.seek(offset)
        f.write((data ^ 0xFF).tobytes())


def _load_error(directory, error_type, **kwargs):
    with pytest.raises(error_type) as info:
        load(directory, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert "fix:" in message
    return message


def test_healthy_checkpoint_has_no_errors(tiny_safetensors):
    with diagnose(tiny_safetensors) as d:
        assert d.exit_code == 0, d.report().to_table()


def test_truncated_weights(broken):
    path = os.path.join(broken, "model.safetensors")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    message = _load_error(broken, errors.CorruptCheckpointError)
    assert "model.safetensors" in message and "truncated" in message
    assert f"expected {size} bytes, got {size // 2} bytes" in message


def test_truncated_inside_the_header(broken):
    path = os.path.join(broken, "model.safetensors")
    with open(path, "r+b") as f:
        f.truncate(100)
    message = _load_error(broken, errors.CorruptCheckpointError)
    assert "header length runs past the end of the file" in message


def test_header_offsets_disagreeing_with_shape_are_caught_before_reading(broken):
    path = os.path.join(broken, "model.safetensors")
    n, header = _header(path)
    name = "encoder.layer.0.attention.self.query.weight"
    begin, end = header[name]["data_offsets"]
    header[name]["data_offsets"] = [begin, end - 4]  # the header gets no longer: it still fits
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (n - len(raw))
    with open(path, "r+b") as f:
        f.seek(8)
        f.write(raw[:n])
    message = _load_error(broken, errors.CorruptCheckpointError)
    assert name in message and "byte range does not match shape" in message


def test_flipped_bytes_are_caught(broken, embed_reference):
    flip_bytes(os.path.join(broken, "model.safetensors"), "encoder.layer.1.intermediate.dense.weight")
    message = _load_error(broken, errors.CorruptCheckpointError)
    assert "encoder.layer.1.intermediate.dense.weight" in message
    assert "damaged" in message


def test_nan_weights_are_caught(broken):
    from safetensors.numpy import load_file, save_file

    path = os.path.join(broken, "model.safetensors")
    state = load_file(path)
    state["pooler.dense.bias"][3] = np.nan
    save_file(state, path, metadata={"format": "pt"})
    message = _load_error(broken, errors.CorruptCheckpointError)
    assert "pooler.dense.bias: NaN/Inf" in message


@pytest.mark.parametrize(("field", "value"), [("vocab_size", 120), ("hidden_size", 48),
                                              ("intermediate_size", 40), ("num_hidden_layers", 3)])
def test_config_that_does_not_match_the_weights(broken, field, value):
    _edit_config(broken, **{field: value})
    message = _load_error(broken, errors.ConfigMismatchError)
    assert "config.json" in message and field in message
    others = {"vocab_size", "hidden_size", "intermediate_size"} - {field}
    assert not [name for name in others if f"{name}:" in message], message  # blames the field that changed


def test_all_shape_mismatches_are_listed_at_once(broken):
    _edit_config(broken, vocab_size=120, intermediate_size=40)
    with diagnose(broken) as d:
        weight_errors = [f.message for f in d.errors if f.check == "weights"]
    assert len(weight_errors) == 1
    assert "vocab_size" in weight_errors[0] and "intermediate_size" in weight_errors[0]


def test_hidden_size_not_divisible_by_heads(broken):
    _edit_config(broken, num_attention_heads=5)
    message = _load_error(broken, errors.ConfigMismatchError)
    assert "num_attention_heads" in message and "not divisible" in message


def test_unknown_activation(broken):
    _edit_config(broken, hidden_act="gelu_magic")
    message = _load_error(broken, errors.ConfigMismatchError)
    assert "hidden_act" in message and "gelu_magic" in message


def test_sequence_longer_than_position_table(broken):
    message = _load_error(broken, errors.ConfigMismatchError, seq_length=65)
    assert "max_position_embeddings" in message and "expected <= 64, got 65" in message


def test_missing_vocab(broken):
    os.remove(os.path.join(broken, "vocab.txt"))
    message = _load_error(broken, errors.CheckpointNotFoundError)
    assert "vocab.txt is missing" in message


def test_missing_config(broken):
    os.remove(os.path.join(broken, "config.json"))
    message = _load_error(broken, errors.CheckpointNotFoundError)
    assert "config.json is missing" in message


def test_vocab_longer_than_embedding_table(broken):
    with open(os.path.join(broken, "vocab.txt"), "a") as f:
        f.write("extra1\nextra2\n")
    message = _load_error(broken, errors.ConfigMismatchError)
    assert "vocab.txt" in message and "vocab_size" in message


@pytest.fixture
def minilm_with_vocab(tmp_path, minilm_path):
    """The real MiniLM's files (weights linked, not copied) with a vocab.txt the test writes."""
    directory = tmp_path / "minilm"
    directory.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
        os.symlink(os.path.join(minilm_path, name), directory / name)
    with open(os.path.join(minilm_path, "vocab.txt"), "rb") as f:
        lines = f.read().splitlines(keepends=True)
    assert len(lines) == 30522

    def write(data: bytes) -> str:
        (directory / "vocab.txt").write_bytes(data)
        return str(directory)

    return lines, write


def _vocab_finding(directory):
    with diagnose(directory) as d:
        return next(f for f in d.findings if f.check == "vocab"), d.exit_code


def test_vocab_much_shorter_than_the_embedding_table_is_a_warning(minilm_with_vocab):
    lines, write = minilm_with_vocab
    finding, code = _vocab_finding(write(b"".join(lines[:20000])))
    assert finding.status == "warn" and code == 1
    assert "10,522 trained tokens are missing" in finding.message and "30,522" in finding.fix
    finding, code = _vocab_finding(write(b"".join(lines[:-6])))  # a table padded past its vocab
    assert finding.status == "info" and "padding" in finding.message and code == 0


def test_vocab_cut_mid_token_is_an_error(minilm_with_vocab):
    lines, write = minilm_with_vocab
    cut = b"".join(lines[:20000]) + lines[20000][:3]  # an interrupted copy
    finding, code = _vocab_finding(write(cut))
    assert finding.status == "error" and code == 2
    assert "truncated" in finding.message and "line 20001" in finding.message and "newline" in finding.message


def test_vocab_without_special_tokens(broken):
    path = os.path.join(broken, "vocab.txt")
    with open(path) as f:
        tokens = [t for t in f.read().splitlines() if t != "[CLS]"]
    with open(path, "w") as f:
        f.write("\n".join(tokens) + "\n")
    message = _load_error(broken, errors.ConfigMismatchError)
    assert "[CLS]" in message


def test_manifest_catches_a_plausible_edit(broken):
    write_manifest(broken)
    # Change one LayerNorm weight slightly: no value scan can see this, the checksum does.
    from safetensors.numpy import load_file, save_file

    path = os.path.join(broken, "model.safetensors")
    state = load_file(path)
    state["encoder.layer.0.output.LayerNorm.weight"][0] *= 1.01
    save_file(state, path, metadata={"format": "pt"})
    message = _load_error(broken, errors.CorruptCheckpointError)
    assert "model.safetensors" in message and "sha256 differs from the manifest" in message


def test_missing_shard(tmp_path, embed_reference):
    from tests import tiny

    directory = tiny.write_safetensors(str(tmp_path / "sharded"), embed_reference, shards=2)
    os.remove(os.path.join(directory, "model-00002-of-00002.safetensors"))
    message = _load_error(directory, errors.CheckpointNotFoundError)
    assert "model-00002-of-00002.safetensors" in message


def test_missing_path():
    message = _load_error("/no/such/model", errors.CheckpointNotFoundError)
    assert "/no/such/model" in message


def test_memory_refusal_names_what_fits(tiny_safetensors):
    config = json.load(open(os.path.join(tiny_safetensors, "config.json")))
    [finding] = check_memory(config, "embed", batch_size=4096, seq_length=64, host_bytes=50 * 2**20,
                             gpu_bytes=0, tf_loaded=True)
    assert finding.status == "error"
    assert isinstance(finding.error, errors.InsufficientMemoryError)
    assert "batch size" in finding.fix


def test_memory_refusal_in_load(broken):
    # An absurd batch cannot fit in this machine's RAM: load refuses before building anything.
    message = _load_error(broken, errors.InsufficientMemoryError, batch_size=10**7, seq_length=64)
    assert "host RAM" in message or "GPU" in message


def test_memory_estimate_grows_with_batch_and_training(minilm_path):
    config = json.load(open(os.path.join(minilm_path, "config.json")))
    small = estimate_memory(config, batch_size=8, seq_length=128)
    large = estimate_memory(config, batch_size=64, seq_length=128)
    assert large.activation_bytes == 8 * small.activation_bytes
    assert small.parameter_bytes == 22_713_216 * 4  # MiniLM with pooler, float32
    training = estimate_memory(config, batch_size=8, seq_length=128, training=True)
    frozen = estimate_memory(config, batch_size=8, seq_length=128, training=True, trainable_layers=0)
    assert training.total > frozen.total > small.total


GOOD = {"tensorflow": "2.21.0", "tf-keras": "2.21.0", "tensorflow-text": "2.21.1", "transformers": "4.54.1",
        "safetensors": "0.8.0", "numpy": "2.4.6", "keras": "3.15.1", "ai-edge-litert": "2.3.0"}


@pytest.mark.parametrize(("change", "package", "fix"), [
    ({"tf-keras": None}, "tf-keras", "tf-keras==2.21.*"),
    ({"tf-keras": "2.19.0"}, "tf-keras", "tf-keras==2.21.*"),
    ({"tensorflow-text": "2.20.0"}, "tensorflow-text", "tensorflow-text==2.21.*"),
    ({"tensorflow": None}, "tensorflow", "tensorflow>=2.18"),
    ({"tensorflow": "2.16.1", "tf-keras": "2.16.0", "tensorflow-text": "2.16.1"}, "numpy", "numpy<2"),
])
def test_known_broken_environments(change, package, fix):
    findings = check_environment({**GOOD, **change}, env={})
    errs = [f for f in findings if f.status == "error"]
    assert errs, findings
    assert any(f.error.where == package and fix in f.fix for f in errs)


@pytest.mark.parametrize("transformers", ["5.24.0", None])
def test_without_hugging_face_tf_classes_the_doctor_names_tfberts_keras_bert(transformers):
    findings = check_environment({**GOOD, "transformers": transformers}, env={})
    assert not [f for f in findings if f.status == "error"], findings
    assert "model class: tfbert's Keras BERT" in findings[0].message and findings[0].status == "ok"
    note = next(f for f in findings if f.status == "info")
    assert "tfbert.keras_bert" in note.message and "transformers>=4.44,<5" in note.fix
    assert "model class: Hugging Face's TFBertModel" in check_environment(GOOD, env={})[0].message


def test_tensorflow_below_the_218_floor_is_an_error_naming_what_breaks():
    # The version matrix's TF 2.16 cell: per-tensor int8 weights (cosine 0.9645) and a LiteRT segfault.
    stack = {**GOOD, "tensorflow": "2.16.2", "tf-keras": "2.16.0", "tensorflow-text": "2.16.1", "numpy": "1.26.4"}
    errs = [f for f in check_environment(stack, env={}) if f.status == "error"]
    assert len(errs) == 1 and errs[0].error.where == "tensorflow" and "0.9645" in errs[0].message
    assert "tensorflow==2.21.*" in errs[0].fix
    on_218 = check_environment({**stack, "tensorflow": "2.18.1", "tf-keras": "2.18.0", "tensorflow-text": "2.18.1"},
                               env={})
    assert not [f for f in on_218 if f.status == "error"]
    # The matrix's TF 2.18 cells: the core tests pass, the int8 .tflite is 40 MiB at 0.3x fp32 speed. A
    # note, not a warning: the doctor of a healthy checkpoint on the supported floor exits 0.
    assert not [f for f in on_218 if f.status == "warn"]
    note = [f for f in on_218 if "40 MiB" in f.message]
    assert len(note) == 1 and note[0].status == "info" and "0.3x" in note[0].message and "dynamic" in note[0].fix


def test_transformers_455_is_reported_but_not_an_error():
    findings = check_environment({**GOOD, "transformers": "4.57.1"}, env={})
    assert not [f for f in findings if f.status == "error"]
    assert any("safe_open" in f.message for f in findings)
    assert not [f for f in check_environment(GOOD, env={}) if f.status != "ok"]


def _doctor(*args):
    return subprocess.run([sys.executable, "-m", "tfbert.doctor", *args], capture_output=True, text=True,
                          timeout=900)


def test_doctor_exit_codes_and_json(broken, tiny_safetensors):
    healthy = _doctor(f"--model={tiny_safetensors}", "--json")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    statuses = {row["check"]: row["status"] for row in json.loads(healthy.stdout)["rows"]}
    assert statuses["weights"] == "ok" and statuses["integrity"] == "ok"

    with open(os.path.join(broken, "model.safetensors"), "r+b") as f:
        f.truncate(1000)
    os.remove(os.path.join(broken, "vocab.txt"))
    damaged = _doctor(f"--model={broken}")
    assert damaged.returncode == 2
    assert "Traceback" not in damaged.stdout + damaged.stderr
    lines = [line for line in damaged.stdout.splitlines() if " error " in line]
    assert any("vocab.txt is missing" in line for line in lines)
    assert any("model.safetensors" in line for line in damaged.stdout.splitlines())


def test_doctor_warns_with_exit_1(broken):
    from safetensors.numpy import load_file, save_file

    path = os.path.join(broken, "model.safetensors")
    state = load_file(path)
    state["some.extra.tensor"] = np.zeros(3, np.float32)
    save_file(state, path, metadata={"format": "pt"})
    result = _doctor(f"--model={broken}")
    assert result.returncode == 1, result.stdout
    assert "some.extra.tensor" in result.stdout


def test_doctor_bad_flag_is_one_line_exit_2():
    result = _doctor("--batch_size=-3")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "batch_size" in result.stderr


def test_doctor_help_does_not_import_tensorflow():
    code = ("import sys, runpy; sys.argv=['doctor', '--help'];\n"
            "try:\n    runpy.run_module('tfbert.doctor', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print('TF_LOADED' if 'tensorflow' in sys.modules else 'TF_NOT_LOADED')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert "TF_NOT_LOADED" in result.stdout and "--model" in result.stdout

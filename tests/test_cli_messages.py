"""What a user sees on stderr from a default run is tfbert's own lines only: no TensorFlow C++ logs,
no transformers deprecation banner, no LiteRT delegate line, no converter chatter (``--verbose``
shows them)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests import tiny
from tests.test_finetune import write_marker_data

# "[tfbert.export] ..." progress, "tfbert: error: ..." one-line failures, "WARNING tfbert: ..." from the
# "tfbert" logger (tfbert.cli.common.run configures it).
OWN_LINE = re.compile(r"^(\[tfbert\.\w+\] |tfbert(\.\w+)?: |(WARNING|ERROR) tfbert(\.\w+)*: )")


def _run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m tfbert.<cmd>`` as a user runs it: none of the suite's quieting variables (conftest sets
    TF_CPP_MIN_LOG_LEVEL) are inherited, so what stays quiet is what the command itself silences."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "TRANSFORMERS_VERBOSITY", "TFBERT_VERBOSE", "TF_USE_LEGACY_KERAS")}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout, env=env)


def _foreign_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and not OWN_LINE.match(line)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("messages")
    model = tiny.write_safetensors(str(root / "ckpt"), tiny.reference_model("embed", seed=3), bare=True)
    (root / "texts.txt").write_text("the cat sat on the mat\na great film\nhello world\n")
    write_marker_data(str(root / "train.csv"), 48, seed=1)
    write_marker_data(str(root / "eval.csv"), 16, seed=2)
    return {"root": root, "model": model}


@pytest.fixture(scope="module")
def exported(files):
    """A default ``export --quantize`` of the tiny model (no fp32 speed conversion, to keep it short)."""
    run = _run("tfbert.export", f"--model={files['model']}", f"--output_dir={files['root'] / 'exported'}",
               "--max_seq_length=16", "--quantize", "--notflite_speed")
    return run, files["root"] / "exported" / "ckpt-tflite" / "1" / "model_int8.tflite"


def test_export_quantize_prints_only_tfbert_lines(exported):
    run, tflite = exported
    assert run.returncode == 0, run.stderr[-3000:]
    assert tflite.exists()
    assert _foreign_lines(run.stderr) == []
    assert "[tfbert.export] converting int8" in run.stderr


@pytest.mark.parametrize("source", ["checkpoint", "tflite"])
def test_predict_prints_only_tfbert_lines(files, exported, source):
    """keras-graph on the checkpoint (TensorFlow, transformers) and LiteRT on the .tflite (XNNPACK)."""
    model = str(files["model"]) if source == "checkpoint" else str(exported[1])
    output = files["root"] / f"{source}.npy"
    run = _run("tfbert.predict", f"--model={model}", f"--vocab={files['model']}/vocab.txt",
               f"--input={files['root'] / 'texts.txt'}", f"--output={output}", "--max_length=16")
    assert run.returncode == 0, run.stderr[-3000:]
    assert output.exists()
    assert _foreign_lines(run.stderr) == []
    assert "[tfbert.predict] wrote 3 rows" in run.stderr


def test_predict_verbose_shows_the_libraries_lines(exported, files):
    """The other side: --verbose lets LiteRT's own delegate line through, so the check above can see it."""
    run = _run("tfbert.predict", f"--model={exported[1]}", f"--vocab={files['model']}/vocab.txt",
               f"--input={files['root'] / 'texts.txt'}", f"--output={files['root'] / 'verbose.npy'}",
               "--max_length=16", "--verbose")
    assert run.returncode == 0, run.stderr[-3000:]
    assert any("XNNPACK" in line for line in _foreign_lines(run.stderr))


def test_finetune_prints_only_tfbert_lines(files):
    root = files["root"]
    run = _run("tfbert.finetune", f"--model={files['model']}", f"--train={root / 'train.csv'}",
               f"--eval={root / 'eval.csv'}", f"--output_dir={root / 'classifier'}", "--text_column=sentence",
               "--label_column=topic", "--epochs=1", "--max_length=16", "--allow_no_learning")
    assert run.returncode == 0, run.stderr[-3000:]
    assert (root / "classifier" / "model.safetensors").exists()
    assert _foreign_lines(run.stderr) == []
    assert "[tfbert.finetune] epoch 1/1" in run.stderr


def test_an_error_line_says_only_what_it_knows():
    from tfbert.errors import BadInputError

    assert BadInputError("bad", where="f", expected="x", actual="y", fix="z").render() == \
        "f: bad — expected x, got y — fix: z"
    assert BadInputError("bad", where="f", expected="x", fix="z").render() == "f: bad — expected x — fix: z"
    assert BadInputError("bad", where="f", actual=0).render() == "f: bad — got 0"

"""python -m tfbert.benchmark on a tiny random BERT: files written, rows that make sense.

Golden values come from elsewhere: token counts from Hugging Face's tokenizer, FLOPs from the
checkpoint's own weight shapes (read with safetensors), fidelity from a second backend.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = ["keras-eager-longest", "keras-eager-sorted", "keras-eager", "keras-graph", "tflite-fp32",
        "onnxruntime-int8-shipped", "onnxruntime-int8-dynamic", "process-onnxruntime"]
RUN_ROWS = ROWS[:5]  # the ONNX Runtime peers run all-MiniLM-L6-v2 only: skipped on the tiny model
TEXTS = ["the cat sat on the mat.", "hello world!", "a dog ran", "the bird flew to the blue sky and sang",
         "great film, fun and happy", "terrible boring movie", "Unknownword xyz", "yes", "no no no no no no"]
NUM_TEXTS = 40
MAX_LENGTH = 16  # short enough that some texts are truncated


def _run(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", HF_HUB_OFFLINE="1", PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "tfbert.benchmark", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def run(tmp_path_factory, embed_reference):
    root = tmp_path_factory.mktemp("bench")
    model = tiny.write_safetensors(str(root / "tiny"), embed_reference)
    texts = root / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    out = root / "results"
    proc = _run(f"--model={model}", f"--input={texts}", f"--num_texts={NUM_TEXTS}", "--batch_size=8",
                f"--max_length={MAX_LENGTH}", f"--backends={','.join(ROWS)}", "--latency_samples=5", "--repeats=2",
                f"--output_dir={out}", f"--work_dir={root / 'work'}", timeout=900)  # generous: shared machine
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "benchmark.json", encoding="utf-8") as f:
        result = json.load(f)
    return {"proc": proc, "out": out, "model": model, "json": result,
            "rows": {r["backend"]: r for r in result["rows"]}}


def test_writes_json_markdown_and_png_and_no_temporaries(run):
    out = run["out"]
    assert sorted(os.listdir(out)) == ["benchmark.json", "benchmark.md", "benchmark.png"]
    with open(out / "benchmark.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "benchmark.md").read_text(encoding="utf-8")
    for row in ROWS:
        assert f"| {row} |" in markdown
    assert "real_tokens_per_s" in markdown and "gemm_peak_gflops" in markdown
    assert [r["backend"] for r in run["json"]["rows"]] == ROWS
    assert "[tfbert.benchmark] keras-graph: timing" in run["proc"].stderr  # progress on stderr
    assert ("[tfbert.benchmark] round 2 of 2: GEMM peak again, then one more timed pass of tflite-fp32, keras-graph, "
            "keras-eager, keras-eager-sorted, keras-eager-longest" in run["proc"].stderr)


def test_real_token_counts_match_hugging_face_tokenizer(run):
    hf = tiny.hf_tokenizer(os.path.join(run["model"], "vocab.txt"), do_lower_case=True)
    texts = [TEXTS[i % len(TEXTS)] for i in range(NUM_TEXTS)]
    expected = sum(len(ids) for ids in hf(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"])
    assert expected < NUM_TEXTS * MAX_LENGTH  # padding would inflate the count
    for name in RUN_ROWS:
        row = run["rows"][name]
        assert row["real_tokens"] == expected, name
        assert len(row["pass_seconds"]) == 2 and row["seconds"] == min(row["pass_seconds"])
        assert row["real_tokens_per_s"] == pytest.approx(expected / row["seconds"])
        assert row["texts_per_s"] == pytest.approx(NUM_TEXTS / row["seconds"])


def test_fidelity_against_the_fp32_reference(run):
    assert run["json"]["summary"]["fidelity_reference"] == "keras-eager-longest"
    for name in ("keras-eager-sorted", "keras-eager", "keras-graph", "tflite-fp32"):
        row = run["rows"][name]
        assert row["status"] == "ok"
        assert row["cosine_min"] > 0.99999 and row["cosine_mean"] > 0.99999, name
        assert row["max_abs_diff"] < 1e-4, name


def test_latency_memory_and_compute_limit_are_sensible(run):
    summary = run["json"]["summary"]
    assert 1 < summary["gemm_peak_gflops"] < 100_000
    measured = summary["gemm_measurements_gflops"]
    assert len(measured) == 2 and summary["gemm_peak_gflops"] == max(m["peak"] for m in measured)
    # FLOPs per token from the checkpoint's own matrices: 2 per weight of every encoder
    # projection, plus attention (scores and weighted sum) over the mean real length.
    from safetensors.numpy import load_file

    weights = load_file(os.path.join(run["model"], "model.safetensors"))
    dense = sum(v.size for k, v in weights.items() if ".encoder.layer." in k and k.endswith(".weight")
                and v.ndim == 2)
    mean_length = run["rows"]["keras-graph"]["real_tokens"] / NUM_TEXTS
    flops = 2 * dense + 2 * 2 * tiny.TINY_CONFIG["num_hidden_layers"] * tiny.TINY_CONFIG["hidden_size"] * mean_length
    assert summary["mflop_per_token"] == pytest.approx(flops / 1e6)
    for name in RUN_ROWS:
        row = run["rows"][name]
        assert 0 < row["latency_p50_ms"] <= row["latency_p95_ms"], name
        assert row["latency_samples"] == 5
        assert row["peak_rss_mib"] > 200 and row["rss_growth_mib"] >= 0, name  # TensorFlow alone is more
        limit = summary["gemm_peak_gflops"] * 1e9 / flops
        assert row["pct_of_compute_limit"] == pytest.approx(100 * row["real_tokens_per_s"] / limit), name


def test_rows_say_whether_they_are_a_tutorial_baseline_a_peer_tfbert_or_a_whole_process(run):
    roles = {name: row["role"] for name, row in run["rows"].items()}
    assert roles == {"keras-eager-longest": "tutorial baseline", "keras-eager-sorted": "peer", "keras-eager": "tfbert",
                     "keras-graph": "tfbert", "tflite-fp32": "tfbert", "onnxruntime-int8-shipped": "tutorial baseline",
                     "onnxruntime-int8-dynamic": "peer", "process-onnxruntime": "whole process"}
    markdown = (run["out"] / "benchmark.md").read_text(encoding="utf-8")
    assert "| keras-eager-longest | tutorial baseline |" in markdown
    assert "| onnxruntime-int8-shipped | tutorial baseline |" in markdown
    assert "sorted by length" in run["rows"]["onnxruntime-int8-dynamic"]["description"]


def test_onnx_peer_rows_say_why_they_did_not_run(run):
    for name in ROWS[5:]:
        status = run["rows"][name]["status"]
        assert status.startswith(("skipped", "not installed")), (name, status)
        assert "real_tokens_per_s" not in run["rows"][name]


def _token_table_onnx(path: str, table: np.ndarray) -> None:
    """An ONNX model whose token states are rows of ``table`` (padding included: pooling must mask it)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["last_hidden_state"])], "tokens",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
         for n in ("input_ids", "attention_mask")],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", table.shape[1]])],
        [numpy_helper.from_array(table, "table")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_onnx_runtime_peer_sorted_and_input_order_give_the_numpy_embeddings_in_input_order(tmp_path):
    from tokenizers import BertWordPieceTokenizer
    from tokenizers.models import WordPiece

    from tfbert.benchmark.runners import OnnxRuntimeRunner, embed_file

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(tiny.VOCAB) + "\n", encoding="utf-8")
    wordpieces = WordPiece.read_file(str(vocab))
    table = np.random.default_rng(0).standard_normal((len(tiny.VOCAB), 8)).astype(np.float32)
    table[0] = 1e3  # [PAD]: any padded position that leaks into the pooling shows
    _token_table_onnx(str(tmp_path / "tokens.onnx"), table)
    texts = [TEXTS[(i * 5) % len(TEXTS)] for i in range(23)]
    ids = tiny.hf_tokenizer(str(vocab), do_lower_case=True)(texts, truncation=True,
                                                                        max_length=MAX_LENGTH)["input_ids"]
    expected = np.stack([table[x].mean(axis=0) for x in ids])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    outputs = {}
    for sort in (True, False):
        runner = OnnxRuntimeRunner("peer", str(tmp_path / "tokens.onnx"), BertWordPieceTokenizer(wordpieces),
                                   batch_size=4, max_length=MAX_LENGTH, num_threads=1, sort_by_length=sort)
        outputs[sort] = runner.embed(texts)
        np.testing.assert_allclose(outputs[sort], expected, atol=1e-5, err_msg=f"sort_by_length={sort}")
        assert runner.count_tokens(texts) == sum(len(x) for x in ids)
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    tokenizer_json = tmp_path / "tokenizer.json"
    BertWordPieceTokenizer(wordpieces).save(str(tokenizer_json))
    embed_file(str(tmp_path / "texts.txt"), str(tmp_path / "out.npy"), str(tmp_path / "tokens.onnx"),
               str(tokenizer_json), batch_size=4, max_length=MAX_LENGTH, num_threads=1)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-5)


def test_exports_are_cached_across_runs(run):
    from tfbert.benchmark.exports import ensure_exports, find_exports

    work = os.path.join(os.path.dirname(run["out"]), "work")
    found = find_exports(work)  # only the rows that ran were exported
    assert list(found) == ["tflite-fp32"] and os.path.basename(found["tflite-fp32"]) == "model_none.tflite"
    lines: list[str] = []
    paths, errors = ensure_exports(["tflite-fp32"], model_path=run["model"], max_length=MAX_LENGTH, work_dir=work,
                                   progress=lines.append)
    assert paths == found and not errors
    assert lines == [f"tflite-fp32: cached {found['tflite-fp32']}"]


def test_help_imports_no_tensorflow():
    code = ("import runpy, sys\nsys.argv = ['tfbert.benchmark', '--help']\n"
            "try:\n    runpy.run_module('tfbert.benchmark', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('TF_LOADED' if 'tensorflow' in sys.modules else 'NO_TF')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=900,
                          env=dict(os.environ, PYTHONPATH=REPO))
    assert "--backends" in proc.stdout
    assert proc.stdout.strip().endswith("NO_TF")


def test_bad_backends_value_exits_2_with_one_line():
    proc = _run("--backends=keras-graph,tflite-int4", timeout=900)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "--backends" in lines[0] and "tflite-int4" in lines[0] and "tflite-int8" in lines[0]


def test_parse_rows_keeps_the_canonical_order():
    from tfbert.benchmark import ROWS as ALL
    from tfbert.benchmark import parse_rows
    from tfbert.errors import BadInputError

    assert parse_rows(None) == list(ALL) == parse_rows("all")
    assert parse_rows(" tflite-int8, keras-eager-padded ") == ["keras-eager-padded", "tflite-int8"]
    with pytest.raises(BadInputError, match="keras-gpu"):
        parse_rows("keras-gpu")


def test_rss_sampler_sees_an_allocation():
    from tfbert.benchmark.measure import RssSampler

    with RssSampler(interval=0.001) as rss:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        block.sum()
    assert rss.growth_mib > 48

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
ROWS = ["keras-eager-longest", "keras-eager", "keras-graph", "tflite-fp32", "onnxruntime-int8"]
TEXTS = ["the cat sat on the mat.", "hello world!", "a dog ran", "the bird flew to the blue sky and sang",
         "great film, fun and happy", "terrible boring movie", "Unknownword xyz", "yes", "no no no no no no"]
NUM_TEXTS = 40
MAX_LENGTH = 16  # short enough that some texts are truncated


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
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
                f"--output_dir={out}", f"--work_dir={root / 'work'}")
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
    assert ("[tfbert.benchmark] round 2 of 2: GEMM peak again, then one more timed pass of tflite-fp32, keras-graph"
            in run["proc"].stderr)


def test_real_token_counts_match_hugging_face_tokenizer(run):
    from transformers import BertTokenizerFast

    hf = BertTokenizerFast(vocab_file=os.path.join(run["model"], "vocab.txt"), do_lower_case=True)
    texts = [TEXTS[i % len(TEXTS)] for i in range(NUM_TEXTS)]
    expected = sum(len(ids) for ids in hf(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"])
    assert expected < NUM_TEXTS * MAX_LENGTH  # padding would inflate the count
    for name in ROWS[:-1]:
        row = run["rows"][name]
        assert row["real_tokens"] == expected, name
        assert len(row["pass_seconds"]) == 2 and row["seconds"] == min(row["pass_seconds"])
        assert row["real_tokens_per_s"] == pytest.approx(expected / row["seconds"])
        assert row["texts_per_s"] == pytest.approx(NUM_TEXTS / row["seconds"])


def test_fidelity_against_the_fp32_reference(run):
    assert run["json"]["summary"]["fidelity_reference"] == "keras-eager-longest"
    for name in ("keras-eager", "keras-graph", "tflite-fp32"):
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
    for name in ROWS[:-1]:
        row = run["rows"][name]
        assert 0 < row["latency_p50_ms"] <= row["latency_p95_ms"], name
        assert row["latency_samples"] == 5
        assert row["peak_rss_mib"] > 200 and row["rss_growth_mib"] >= 0, name  # TensorFlow alone is more
        limit = summary["gemm_peak_gflops"] * 1e9 / flops
        assert row["pct_of_compute_limit"] == pytest.approx(100 * row["real_tokens_per_s"] / limit), name


def test_onnx_peer_row_says_why_it_did_not_run(run):
    status = run["rows"]["onnxruntime-int8"]["status"]
    assert status.startswith(("skipped", "not installed")), status
    assert "real_tokens_per_s" not in run["rows"]["onnxruntime-int8"]


def test_exports_are_cached_across_runs(run):
    work = os.path.join(os.path.dirname(run["out"]), "work")
    found = [os.path.join(d, f) for d, _, files in os.walk(work) for f in files if f.endswith(".tflite")]
    assert [os.path.basename(p) for p in found] == ["model_none.tflite"]
    from tfbert.benchmark.exports import ensure_exports

    lines: list[str] = []
    paths, errors = ensure_exports(["tflite-fp32"], model_path=run["model"], max_length=MAX_LENGTH, work_dir=work,
                                   progress=lines.append)
    assert paths == {"tflite-fp32": found[0]} and not errors
    assert lines == [f"tflite-fp32: cached {found[0]}"]


def test_help_imports_no_tensorflow():
    code = ("import runpy, sys\nsys.argv = ['tfbert.benchmark', '--help']\n"
            "try:\n    runpy.run_module('tfbert.benchmark', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('TF_LOADED' if 'tensorflow' in sys.modules else 'NO_TF')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60,
                          env=dict(os.environ, PYTHONPATH=REPO))
    assert "--backends" in proc.stdout
    assert proc.stdout.strip().endswith("NO_TF")


def test_bad_backends_value_exits_2_with_one_line():
    proc = _run("--backends=keras-graph,tflite-int4", timeout=60)
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

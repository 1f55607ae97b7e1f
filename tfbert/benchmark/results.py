"""Benchmark results: one :class:`~tfbert.report.Report` written as JSON, Markdown and a PNG plot.

Every file goes through a temporary sibling renamed into place, so a reader (or a run killed
half-way) never sees half a file; the suite rewrites all three after each row.
"""

from __future__ import annotations

import math
import os

from tfbert.report import Report

COLUMNS = ["backend", "role", "seconds", "texts_per_s", "real_tokens_per_s", "pct_of_compute_limit", "latency_p50_ms",
           "latency_p95_ms", "peak_rss_mib", "rss_growth_mib", "cosine_mean", "cosine_min", "max_abs_diff",
           "status"]
STEMS = ("benchmark.json", "benchmark.md", "benchmark.png")
# How the Markdown and text tables show a number (the JSON keeps full precision).
FORMATS = {"seconds": "{:.2f}", "texts_per_s": "{:.1f}", "real_tokens_per_s": "{:,.0f}",
           "pct_of_compute_limit": "{:.1f}", "latency_p50_ms": "{:.2f}", "latency_p95_ms": "{:.2f}",
           "peak_rss_mib": "{:,.0f}",
           "rss_growth_mib": "{:,.0f}", "cosine_mean": "{:.5f}", "cosine_min": "{:.5f}", "max_abs_diff": "{:.1e}"}
SUMMARY_FORMATS = {"gemm_peak_gflops": "{:.1f}", "mean_real_tokens_per_text": "{:.2f}", "mflop_per_token": "{:.2f}",
                   "compute_limit_tokens_per_s": "{:,.0f}", "load_average_1min": "{:.2f}",
                   "load_average_1min_end": "{:.2f}"}


def display(report: Report) -> Report:
    """A copy of ``report`` with numbers rounded for reading (see :data:`FORMATS`)."""
    def fmt(formats: dict[str, str], key: str, value):
        return formats[key].format(value) if key in formats and isinstance(value, (int, float)) else value

    rows = [{k: fmt(FORMATS, k, v) for k, v in row.items()} for row in report.rows]
    summary = {k: fmt(SUMMARY_FORMATS, k, v) for k, v in report.summary.items() if k != "gemm_measurements_gflops"}
    return Report(report.title, report.columns, rows, summary)


def _replace(path: str, write) -> None:
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _write_text(text: str):
    def write(path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    return write


def write_results(report: Report, output_dir: str) -> list[str]:
    """Write ``benchmark.json``, ``benchmark.md`` and ``benchmark.png`` into ``output_dir``."""
    os.makedirs(output_dir, exist_ok=True)
    json_path, md_path, png_path = (os.path.join(output_dir, s) for s in STEMS)
    _replace(json_path, _write_text(report.to_json()))
    _replace(md_path, _write_text(display(report).to_markdown()))
    _replace(png_path, lambda path: plot(report, path))
    return [json_path, md_path, png_path]


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not math.isnan(value) else None


def plot(report: Report, path: str) -> None:
    """Real tokens/s per row against the fp32 compute limit, and batch-1 latency p50 (bar) / p95 (tick)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = [r for r in report.rows if _number(r.get("real_tokens_per_s")) is not None]
    names = [r["backend"] for r in rows][::-1]
    speed = [r["real_tokens_per_s"] for r in rows][::-1]
    p50 = [_number(r.get("latency_p50_ms")) or 0.0 for r in rows][::-1]
    p95 = [_number(r.get("latency_p95_ms")) or 0.0 for r in rows][::-1]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 1.2 + 0.45 * max(len(rows), 1)), sharey=True)
    y = list(range(len(rows)))
    left.barh(y, speed, color="tab:blue")
    limit = _number(report.summary.get("compute_limit_tokens_per_s"))
    if limit:
        left.axvline(limit, color="tab:red", linestyle="--",
                     label=f"fp32 compute limit {limit:,.0f} tokens/s "
                           f"({report.summary.get('gemm_peak_gflops', 0):.0f} GFLOP/s GEMM)")
        left.legend(loc="lower right", fontsize=8)
    left.set_xlabel(f"real (non-padding) tokens/s, batch {report.summary.get('batch_size', '?')}")
    left.set_yticks(y, names)
    right.barh(y, p50, color="tab:green", label="p50")
    right.scatter(p95, y, color="black", marker="|", s=200, label="p95")
    right.set_xlabel("batch-1 latency incl. tokenization (ms)")
    right.legend(loc="lower right", fontsize=8)
    fig.suptitle(report.title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)

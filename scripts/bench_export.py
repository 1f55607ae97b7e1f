"""Benchmark ``python -m tfbert.export``: wall time and peak memory, per phase, of the whole process tree.

The export prints a ``[tfbert.export] <step>`` progress line on stderr before each slow
step; this script timestamps those lines as they arrive, so each phase runs from one line
to the next (``import`` is process start to the first line). While the export runs, the
RSS of every process in its tree (the export and its verification / conversion children)
is sampled every ``--interval`` seconds:

* ``tree_peak_rss``: the largest *sum* of RSS over the tree at one sample, and
  ``tree_peak_pss``: the same with PSS, which counts the pages processes share (TensorFlow's
  libraries) once — what the machine must actually hold;
* ``max_process_rss``: the largest single process's peak, exact, from the kernel's
  ``ru_maxrss`` of the waited-for descendants (what ``/usr/bin/time -v`` calls
  "Maximum resident set size");
* ``cpu_s``: user + system CPU seconds of the whole tree (wall time on a shared machine is noisy);
* per phase: seconds, CPU seconds of the tree, and the sampled tree peak and parent peak within it.

Candidates are run alternately (A B A B ...) so that load from other jobs on the machine hits
them alike; compare the ratios. ``--tree=LABEL=PATH`` adds a candidate that runs the same
command from another checkout (e.g. ``git archive HEAD~3 | tar -x -C /tmp/before``);
``--variant=LABEL=FLAGS`` one that runs this checkout with extra flags; ``--command=LABEL=CMD``
any command line (``{out}`` becomes a fresh output directory), e.g. Optimum's exporter:

    --command="optimum=python -m optimum.exporters.tflite --model=MODEL --task=feature-extraction
               --sequence_length=128 --batch_size=1 {out}"

Usage:
    python scripts/bench_export.py [--repeat=1] [--tree=before=/tmp/before] \
        [--variant=nospeed=--notflite_speed] [--output=FILE] [-- --quantize --task=embed ...]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import psutil

PREFIX = "[tfbert.export] "
# Runs the export as its child and records, for its descendants, ru_maxrss (the largest
# single-process peak in KiB, what /usr/bin/time -v reports) and user+system CPU seconds
# (less sensitive than wall time to other jobs on the machine).
WRAPPER = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as f:
    f.write(f"{usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}")
sys.exit(code)
"""


def _tree_sample(wrapper: psutil.Process) -> tuple[int, int, float, int]:
    """(sum of RSS over the export's process tree, RSS of the export process itself) in bytes,
    the tree's CPU seconds so far (live processes plus the children they have waited for), and
    the sum of PSS over the tree (shared library pages counted once, not once per process)."""
    total = parent = pss = 0
    cpu = 0.0
    try:
        procs = wrapper.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0, 0, 0.0, 0
    for proc in procs:
        try:
            info = proc.memory_full_info()
            times = proc.cpu_times()
            is_export = proc.ppid() == wrapper.pid
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total += info.rss
        pss += info.pss
        cpu += times.user + times.system + times.children_user + times.children_system
        if is_export:
            parent = info.rss
    return total, parent, cpu, pss


def run_once(command: list[str], cwd: str, env: dict, interval: float) -> dict:
    """Run one export; returns wall time, peaks and per-phase figures."""
    fd, maxrss_file = tempfile.mkstemp(prefix="bench-export-maxrss-")
    os.close(fd)
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", WRAPPER, maxrss_file, *command], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    marks: list[tuple[float, str]] = [(0.0, "import")]
    stderr_tail: list[str] = []

    def read_stderr() -> None:
        for line in proc.stderr:
            if line.startswith(PREFIX):
                marks.append((time.perf_counter() - start, line[len(PREFIX):].strip()))
            else:
                stderr_tail[:] = [*stderr_tail[-20:], line.rstrip()]

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    root = psutil.Process(proc.pid)
    samples: list[tuple[float, int, int, float, int]] = []
    while proc.poll() is None:
        samples.append((time.perf_counter() - start, *_tree_sample(root)))
        time.sleep(interval)
    wall = time.perf_counter() - start
    stdout = proc.stdout.read()
    reader.join(timeout=5)
    with open(maxrss_file) as f:
        maxrss_kib, cpu_s = f.read().split()
    os.unlink(maxrss_file)
    if proc.returncode != 0:
        raise SystemExit(f"export failed (exit {proc.returncode}):\n" + "\n".join(stderr_tail) + stdout)
    phases = []
    bounds = [*marks, (wall, "end")]
    for (t0, name), (t1, _) in itertools.pairwise(bounds):
        inside = [s for s in samples if t0 <= s[0] < t1] or [(t0, 0, 0, 0.0, 0)]
        # CPU: from the last sample before the phase to its last sample (the final phase ends
        # at the total, which also counts what the last samples missed).
        cpu_start = max([s[3] for s in samples if s[0] < t0] or [0.0])
        cpu_end = float(cpu_s) if name == bounds[-2][1] else max(s[3] for s in inside)
        phases.append({"phase": name, "seconds": round(t1 - t0, 2), "cpu_s": round(cpu_end - cpu_start, 2),
                       "tree_peak_mib": round(max(s[1] for s in inside) / 2**20),
                       "tree_peak_pss_mib": round(max(s[4] for s in inside) / 2**20),
                       "parent_peak_mib": round(max(s[2] for s in inside) / 2**20)})
    return {"wall_s": round(wall, 2), "tree_peak_rss_mib": round(max(s[1] for s in samples) / 2**20),
            "tree_peak_pss_mib": round(max(s[4] for s in samples) / 2**20),
            "max_process_rss_mib": round(int(maxrss_kib) / 1024), "cpu_s": round(float(cpu_s), 1),
            "phases": phases, "stdout": stdout.strip().splitlines()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--interval", type=float, default=0.02, help="RSS sampling period, seconds")
    parser.add_argument("--tree", action="append", default=[], metavar="LABEL=PATH",
                        help="also run the export from another checkout (alternated with this one)")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL=FLAGS",
                        help="also run this checkout with extra export flags, e.g. 'nospeed=--notflite_speed'")
    parser.add_argument("--command", action="append", default=[], metavar="LABEL=COMMAND",
                        help="also run another exporter's command line as given (e.g. Optimum's), same measures")
    parser.add_argument("--label", default="this", help="label of this checkout's candidate")
    parser.add_argument("--cold_cache", action="store_true",
                        help="run every export with an empty tfbert cache (default: the user's, warm after one run)")
    parser.add_argument("--output", help="also write the JSON here")
    parser.add_argument("export_args", nargs="*", help="flags for python -m tfbert.export (after --)")
    args = parser.parse_args()
    export_args = args.export_args or ["--quantize"]
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    candidates = [(args.label, here, [])] + [(*t.split("=", 1), []) for t in args.tree] \
        + [(label, here, flags.split()) for label, flags in (v.split("=", 1) for v in args.variant)]
    candidates += [(label, None, shlex.split(line)) for label, line in (c.split("=", 1) for c in args.command)]
    results: dict[str, list[dict]] = {label: [] for label, _, _ in candidates}
    for rep in range(args.repeat):
        order = candidates if rep % 2 == 0 else candidates[::-1]
        for label, tree, extra in order:
            out = tempfile.mkdtemp(prefix="bench-export-")
            if tree is None:  # another exporter: its own command line, writing under {out}
                env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
                command, tree = [word.replace("{out}", out) for word in extra], out
            else:
                env = dict(os.environ, PYTHONPATH=tree, TF_USE_LEGACY_KERAS="1")
                command = [sys.executable, "-m", "tfbert.export", f"--output_dir={out}", *export_args, *extra]
            if args.cold_cache:
                env["TFBERT_CACHE"] = os.path.join(out, "cache")
            try:
                result = run_once(command, tree, env, args.interval)
            finally:
                shutil.rmtree(out, ignore_errors=True)
            result["repeat"] = rep
            results[label].append(result)
            sys.stderr.write(f"{label} #{rep}: {result['wall_s']} s, tree peak {result['tree_peak_rss_mib']} MiB "
                             f"(PSS {result['tree_peak_pss_mib']} MiB), "
                             f"max process {result['max_process_rss_mib']} MiB, cpu {result['cpu_s']} s\n")
    report = {"command": ["python", "-m", "tfbert.export", *export_args], "cpus": os.cpu_count(),
              "python": platform.python_version(), "candidates": results}
    text = json.dumps(report, indent=1)
    print(text)
    if args.output:
        tmp = args.output + ".tmp"
        with open(tmp, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, args.output)


if __name__ == "__main__":
    main()

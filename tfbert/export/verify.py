"""Verification of exports against the in-memory model, and the fidelity metrics every report uses.

A SavedModel is verified in a *fresh process* (``python -m tfbert.export.verify``), which
loads only the files on disk, the way a model server will: nothing in the exporting
process's memory can mask a missing asset or an untraced function.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from tfbert.errors import ExportError

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Outputs compared for fidelity, per task: the main output and how to score it.
MAIN_OUTPUT = {"embed": "sentence_embedding", "classify": "probabilities", "fill_mask": "top_k_probabilities"}


def compare_outputs(expected: dict[str, dict[str, np.ndarray]], actual: dict[str, dict[str, np.ndarray]],
                    where: str, atol: float = 1e-4) -> dict[str, float]:
    """Every signature's every output must match; returns the largest numeric difference per signature.

    Raises:
        ExportError: a signature or output is missing, or differs beyond ``atol`` (strings: exactly).
    """
    worst = {}
    for signature, outputs in expected.items():
        if signature not in actual:
            raise ExportError("signature missing after reload", where=f"{where}: {signature}",
                              fix="report this as a bug: the export did not save every signature")
        worst[signature] = 0.0
        for key, value in outputs.items():
            got = actual[signature].get(key)
            if got is None or got.shape != value.shape:
                raise ExportError("output missing or of another shape after reload",
                                  where=f"{where}: {signature}/{key}", expected=value.shape,
                                  actual=None if got is None else got.shape, fix="report this as a bug")
            if value.dtype.kind in "OSU":
                if not np.array_equal(value, got):
                    raise ExportError("string output differs after reload", where=f"{where}: {signature}/{key}",
                                      fix="report this as a bug")
                continue
            diff = float(np.abs(value.astype(np.float64) - got.astype(np.float64)).max()) if value.size else 0.0
            if diff > atol:
                raise ExportError("output differs from the in-memory model after reload",
                                  where=f"{where}: {signature}/{key}", expected=f"max abs diff <= {atol}",
                                  actual=f"{diff:.3g}", fix="report this as a bug; nothing was published")
            worst[signature] = max(worst[signature], diff)
    return worst


def _save_nested(path: str, nested: dict[str, dict[str, np.ndarray]]) -> None:
    flat = {f"{sig}/{key}": value for sig, values in nested.items() for key, value in values.items()}
    np.savez(path, **flat)


def _load_nested(path: str) -> dict[str, dict[str, np.ndarray]]:
    nested: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path, allow_pickle=True) as data:  # our own file, written a moment ago
        for name in data.files:
            sig, key = name.split("/", 1)
            nested.setdefault(sig, {})[key] = data[name]
    return nested


class FreshProcessRun:
    """The SavedModel at ``directory`` loaded and run on ``inputs`` in a new Python process, started now.

    The process runs while the caller goes on (the export converts its TFLite model
    meanwhile); :meth:`result` waits for it. Its output goes to files, not pipes, so a
    chatty TensorFlow can never block it on a full pipe. On Linux it is killed when the
    thread that started it ends (``PR_SET_PDEATHSIG``), so a killed export leaves no orphan:
    start it from the thread that waits for it.
    """

    def __init__(self, directory: str, inputs: dict[str, dict[str, np.ndarray]], timeout: float = 600) -> None:
        self.directory, self.timeout = directory, timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="tfbert-verify-")
        in_path = os.path.join(self._tmp.name, "inputs.npz")
        self._out_path = os.path.join(self._tmp.name, "outputs.npz")
        _save_nested(in_path, inputs)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_USE_LEGACY_KERAS="1")
        self._log = open(os.path.join(self._tmp.name, "log.txt"), "w+")  # closed by close()
        self._process = subprocess.Popen([sys.executable, "-m", "tfbert.export.verify", directory, in_path,
                                          self._out_path, str(os.getpid())],
                                         stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def running(self) -> bool:
        return self._process.poll() is None

    def result(self) -> dict[str, dict[str, np.ndarray]]:
        """Wait for the process; every signature's outputs.

        Raises:
            ExportError: the SavedModel did not load or run (the process's last line says why).
        """
        try:
            code = self._process.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise ExportError("the SavedModel did not load and run in a fresh process in time",
                              where=self.directory, expected=f"<= {self.timeout:.0f} s",
                              fix="report this as a bug; nothing was published") from None
        try:
            if code != 0:
                self._log.seek(0)
                last = ([line for line in self._log.read().strip().splitlines() if line.strip()] or ["no output"])[-1]
                raise ExportError(f"the SavedModel does not load or run in a fresh process ({last.strip()})",
                                  where=self.directory, fix="report this as a bug; nothing was published")
            return _load_nested(self._out_path)
        finally:
            self.close()

    def close(self) -> None:
        """Stop the process if it still runs, and delete its files."""
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._log.close()
        self._tmp.cleanup()


def _die_with(parent: int) -> None:
    """End this process when the export that started it dies (Linux), instead of running on as an
    orphan that reads a staging directory the next export will delete."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the process ends after its run, as before
        return
    if os.getppid() != parent:  # the export died before the line above
        sys.exit(1)


def _child(directory: str, in_path: str, out_path: str, parent: str) -> None:
    _die_with(int(parent))
    from tfbert.tf import import_tensorflow

    tf = import_tensorflow()
    import tensorflow_text  # noqa: F401  (registers the tokenizer ops the graph uses)

    loaded = tf.saved_model.load(directory)
    outputs = {}
    for signature, args in _load_nested(in_path).items():
        fn = loaded.signatures[signature]
        tensors = {k: tf.constant(v.tolist() if v.dtype == object else v) for k, v in args.items()}
        outputs[signature] = {k: v.numpy() for k, v in fn(**tensors).items()}
    _save_nested(out_path, outputs)
    print(json.dumps({"signatures": sorted(outputs)}))


if __name__ == "__main__":
    _child(*sys.argv[1:5])

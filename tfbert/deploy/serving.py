"""TF Serving, proven with the pieces the server is made of, on a machine without the server.

No ``tensorflow_model_server`` binary is installable here, so a SavedModel version is checked
against what TF Serving is built from (tensorflow/serving, read at its 2.20.0 tag), by
:func:`check_like_the_server` in a process of its own (:class:`ServerProcess`):

* **Ops** (:mod:`tfbert.deploy.ops`): every op of ``saved_model.pb`` is core TensorFlow — by
  the C++ op registry and kernels of this process, before tensorflow-text is loaded — or in
  a tensorflow-text op library TF Serving links; the oldest TF Serving with them all.
* **Loader** (:mod:`tfbert.deploy.c_api`): TensorFlow's C++ SavedModel loader, tag ``serve``,
  with tensorflow-text's op libraries loaded by ``TF_LoadLibrary``; every record of the
  warmup file replayed as the server does on load (:mod:`tfbert.deploy.warmup`).
* **REST** (:mod:`tfbert.deploy.rest`): each signature's request goes through TF Serving's
  row-format JSON codec and its outputs must make a row-format response.
* **Batching** (:mod:`tfbert.deploy.batching`): a request's outputs are the same alone and in
  the merged batch; :mod:`tfbert.deploy.config` writes the server's configuration files.

What cannot be proved here: the server binary itself (its gRPC/HTTP front end, its
threading, its TensorFlow build), and core ops against TensorFlow versions other than the
installed one.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import subprocess
import sys
import tempfile
import types

import numpy as np

from tfbert.deploy.batching import compare_batched
from tfbert.deploy.ops import OpAudit, audit_ops, graph_ops, serve_meta_graph
from tfbert.deploy.protos import import_protos
from tfbert.deploy.rest import row_request, row_response, tensors_from_row_request
from tfbert.deploy.warmup import warmup_inputs
from tfbert.errors import ExportError

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _signature_specs(meta_graph) -> dict[str, dict]:
    from tfbert.deploy.c_api import TensorSpec

    def spec(info):
        shape = None if info.tensor_shape.unknown_rank else [d.size for d in info.tensor_shape.dim]
        return TensorSpec(info.name, info.dtype, shape)

    return {name: {"inputs": {k: spec(v) for k, v in sig.inputs.items()},
                   "outputs": {k: spec(v) for k, v in sig.outputs.items()}}
            for name, sig in meta_graph.signature_def.items() if not name.startswith("__")}


def _op_audit(directory: str, protos) -> OpAudit:
    from tfbert.deploy import c_api

    used = graph_ops(serve_meta_graph(directory, protos))
    # The registry before tensorflow-text is loaded: core TensorFlow as the C++ library has it.
    core = {op.name for op in protos.op_def_pb2.OpList.FromString(c_api.registered_ops()).op}
    without_kernel = {op for op in used if op in core and not any(
        k.device_type in ("CPU", "DEFAULT")
        for k in protos.kernel_def_pb2.KernelList.FromString(c_api.registered_kernels(op)).kernel)}
    text_ops = {}
    for path in c_api.text_op_libraries():
        library = os.path.basename(path)[1:-3]
        for op in protos.op_def_pb2.OpList.FromString(c_api.load_op_library(path)).op:
            text_ops[op.name] = library
    return audit_ops(used, core, without_kernel, text_ops, where=directory)


def check_like_the_server(directory: str, inputs: dict[str, dict[str, np.ndarray]] | None = None,
                          protos: types.SimpleNamespace | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """Audit the ops, load ``directory`` with TF's C++ loader, replay the warmup file, run ``inputs``.

    Run it in a fresh process (:class:`ServerProcess`). Each signature's ``inputs`` go through
    the REST row codec first (:func:`row_request` → :func:`tensors_from_row_request`), its
    outputs through :func:`row_response`; its first example and the next three also run as
    requests of their own, to compare with their rows of the merged batch (:func:`compare_batched`).

    Returns:
        A JSON-able report (``audit``, ``signatures``, ``warmup_requests``,
        ``batching_max_abs_diff``) and the outputs, keyed ``signature/<name>/<output>`` and
        ``warmup/<record>/<output>``.

    Raises:
        ExportError: any check TF Serving would fail, on one line.
    """
    from tfbert.deploy import c_api

    protos = protos or import_protos()
    audit = _op_audit(directory, protos)
    session = c_api.SavedModelSession(directory)
    try:
        meta = protos.meta_graph_pb2.MetaGraphDef.FromString(session.meta_graph_def)
        specs = _signature_specs(meta)
        described = {name: {part: {k: {"dtype": s.dtype, "shape": s.shape} for k, s in sig[part].items()}
                            for part in ("inputs", "outputs")} for name, sig in specs.items()}
        outputs: dict[str, np.ndarray] = {}

        def run(name: str, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return session.run(specs[name]["inputs"], values, specs[name]["outputs"])

        replayed = warmup_inputs(directory, described, protos)
        for i, (name, values) in enumerate(replayed):
            for key, value in run(name, values).items():
                outputs[f"warmup/{i}/{key}"] = value
        batching = {}
        for name, values in (inputs or {}).items():
            if name not in specs:
                raise ExportError("signature missing from the loaded SavedModel", where=directory, expected=name,
                                  actual=sorted(specs), fix="report this as a bug")
            dtypes = {k: c_api.NUMPY_DTYPES[s.dtype] for k, s in specs[name]["inputs"].items()}
            body = json.loads(json.dumps(row_request(name, values)))
            result = run(name, tensors_from_row_request(body, {k: {"dtype": d} for k, d in dtypes.items()}))
            batch = len(next(iter(values.values())))
            row_response(result, batch)
            outputs.update({f"signature/{name}/{key}": value for key, value in result.items()})
            if batch >= 2:
                # Its first text, then the next three, each as a request of its own; in the batch
                # above they were merged with longer and shorter texts.
                batching[name] = max(compare_batched(run(name, {k: v[a:b] for k, v in values.items()}),
                                                     {k: v[a:b] for k, v in result.items()},
                                                     where=f"{directory}: {name}")
                                     for a, b in itertools.pairwise([0, 1, min(batch, 4)]))
        report = {"audit": dataclasses.asdict(audit), "signatures": {
            name: {part: sorted(sig[part]) for part in ("inputs", "outputs")} for name, sig in specs.items()},
            "warmup_requests": len(replayed), "batching_max_abs_diff": batching}
        return report, outputs
    finally:
        session.close()


@dataclasses.dataclass
class ServerCheck:
    """What :func:`check_like_the_server` found, read back by the process that started it."""

    audit: OpAudit
    signatures: dict[str, dict[str, list[str]]]
    warmup_requests: int
    batching_max_abs_diff: dict[str, float]
    outputs: dict[str, dict[str, np.ndarray]]
    warmup_outputs: list[dict[str, np.ndarray]]
    warmup_max_abs_diff: float | None = None  # set by whoever compares the replay with a reference


class ServerProcess:
    """:func:`check_like_the_server` on ``directory`` in a new Python process, started now.

    The process imports no TensorFlow Python and no tensorflow-text Python: only TF's C
    library and tensorflow-text's op libraries, as a model server. It runs while the caller
    goes on; :meth:`result` waits for it. Its output goes to files, not pipes, so a chatty
    TensorFlow can never block it on a full pipe. On Linux it is killed when the thread that
    started it ends (``PR_SET_PDEATHSIG``), so a killed export leaves no orphan: start it
    from the thread that waits for it.

    Args:
        directory: the SavedModel version directory.
        inputs: signature -> input name -> array, run through every signature (optional).
        timeout: seconds :meth:`result` waits.
    """

    entry = "tfbert.deploy.serving"  # the ``python -m`` module that runs :func:`main`

    def __init__(self, directory: str, inputs: dict[str, dict[str, np.ndarray]] | None = None,
                 timeout: float = 600) -> None:
        self.directory, self.timeout = directory, timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="tfbert-serving-")
        args = [directory, self._tmp.name, str(os.getpid())]
        if inputs:
            np.savez(os.path.join(self._tmp.name, "inputs.npz"),
                     **{f"{sig}/{k}": v for sig, values in inputs.items() for k, v in values.items()})
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        self._log = open(os.path.join(self._tmp.name, "log.txt"), "w+")  # closed by close()
        self._process = subprocess.Popen([sys.executable, "-m", self.entry, *args], stdout=self._log,
                                         stderr=subprocess.STDOUT, env=env)

    def running(self) -> bool:
        return self._process.poll() is None

    def result(self) -> ServerCheck:
        """Wait for the process; what it found.

        Raises:
            ExportError: a check failed (its one line), or the process did not finish.
        """
        try:
            code = self._process.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise ExportError("the SavedModel did not load and run in TensorFlow's C++ loader in time",
                              where=self.directory, expected=f"<= {self.timeout:.0f} s",
                              fix="report this as a bug; nothing was published") from None
        try:
            error_path = os.path.join(self._tmp.name, "error.json")
            if os.path.isfile(error_path):
                with open(error_path, encoding="utf-8") as f:
                    raise ExportError(**json.load(f))
            if code != 0:
                self._log.seek(0)
                last = ([line for line in self._log.read().strip().splitlines() if line.strip()] or ["no output"])[-1]
                raise ExportError(f"the SavedModel does not load or run in TensorFlow's C++ loader ({last.strip()})",
                                  where=self.directory, fix="report this as a bug; nothing was published")
            with open(os.path.join(self._tmp.name, "report.json"), encoding="utf-8") as f:
                report = json.load(f)
            nested: dict[str, dict[str, dict[str, np.ndarray]]] = {"signature": {}, "warmup": {}}
            # allow_pickle: string outputs, in a file the child wrote a moment ago
            with np.load(os.path.join(self._tmp.name, "outputs.npz"), allow_pickle=True) as data:
                for key in data.files:
                    kind, group, name = key.split("/", 2)
                    nested[kind].setdefault(group, {})[name] = data[key]
            return ServerCheck(OpAudit(**report["audit"]), report["signatures"], report["warmup_requests"],
                               report["batching_max_abs_diff"], nested["signature"],
                               [nested["warmup"][str(i)] for i in range(report["warmup_requests"])])
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
    """End this process when the one that started it dies (Linux), instead of running on as an
    orphan that reads a staging directory the next export will delete."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the process ends after its run, as before
        return
    if os.getppid() != parent:  # the parent died before the line above
        sys.exit(1)


def main(argv: list[str]) -> None:
    """The process :class:`ServerProcess` starts: ``directory out_dir parent_pid``."""
    directory, out_dir, parent = argv
    _die_with(int(parent))
    protos = import_protos(without_tensorflow=True)
    inputs: dict[str, dict[str, np.ndarray]] = {}
    in_path = os.path.join(out_dir, "inputs.npz")
    if os.path.isfile(in_path):
        with np.load(in_path, allow_pickle=True) as data:  # written by the parent a moment ago
            for key in data.files:
                signature, name = key.split("/", 1)
                inputs.setdefault(signature, {})[name] = data[key]
    try:
        report, outputs = check_like_the_server(directory, inputs, protos)
    except ExportError as e:
        with open(os.path.join(out_dir, "error.json"), "w", encoding="utf-8") as f:
            json.dump({"message": e.message, "where": e.where, "expected": _plain(e.expected),
                       "actual": _plain(e.actual), "fix": e.fix}, f)
        return
    np.savez(os.path.join(out_dir, "outputs.npz"), **outputs)
    with open(os.path.join(out_dir, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f)


def _plain(value):
    return value if value is None or isinstance(value, (str, int, float, list)) else str(value)


if __name__ == "__main__":
    main(sys.argv[1:])

"""Verification of exports against the in-memory model, and the fidelity metrics every report uses.

A SavedModel is verified in a *fresh process* (``python -m tfbert.export.verify``) the way
TF Serving loads it (:mod:`tfbert.deploy.serving`): TensorFlow's C++ SavedModel loader through
the C API, with tensorflow-text's op libraries and no TensorFlow Python, after an audit of its
ops — nothing in the exporting process's memory can mask a missing asset, an untraced function
or an op the server lacks.
"""

from __future__ import annotations

import sys

import numpy as np

from tfbert.deploy.serving import ServerCheck, ServerProcess, main
from tfbert.deploy.warmup import warmup_inputs
from tfbert.errors import ExportError
from tfbert.export import savedmodel

# Outputs compared for fidelity, per task: the main output and how to score it.
MAIN_OUTPUT = {"embed": "sentence_embedding", "classify": "probabilities", "fill_mask": "top_k_probabilities",
               "token_classify": "logits", "question_answering": "start_logits"}


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


class FreshProcessRun(ServerProcess):
    """The written SavedModel checked as TF Serving would load it, in a new process started now.

    :class:`tfbert.deploy.serving.ServerProcess` (the op audit, TensorFlow's C++ loader, the
    warmup replay, the REST and batching rules) run as ``python -m tfbert.export.verify``;
    meanwhile this process runs every warmup record through the in-memory ``module``, and
    :meth:`result` compares those outputs with the replayed ones.

    Args:
        directory: the staged version directory.
        inputs: signature -> input name -> array, run through each signature (and every
            signature a warmup record may name).
        module: the in-memory serving module (:func:`tfbert.export.savedmodel.build_serving_module`).
        timeout: seconds :meth:`result` waits.
    """

    entry = "tfbert.export.verify"

    def __init__(self, directory: str, inputs: dict[str, dict[str, np.ndarray]], module,
                 timeout: float = 600) -> None:
        super().__init__(directory, inputs, timeout)
        try:
            known = {signature: {"inputs": args} for signature, args in inputs.items()}
            self._warmup_expected = [savedmodel.run_signatures(module, {signature: args})
                                     for signature, args in warmup_inputs(directory, known)]
        except BaseException:
            self.close()
            raise

    def result(self) -> ServerCheck:
        """Wait for the process; what it found, its warmup replay compared with the in-memory model.

        Raises:
            ExportError: a check failed, or a replayed warmup request differs.
        """
        check = super().result()
        if len(check.warmup_outputs) != len(self._warmup_expected):
            raise ExportError("the C++ loader replayed another number of warmup records", where=self.directory,
                              expected=len(self._warmup_expected), actual=len(check.warmup_outputs),
                              fix="report this as a bug")
        diffs = [compare_outputs(expected, {next(iter(expected)): actual},
                                 where=f"{self.directory}: warmup record {i}")
                 for i, (expected, actual) in enumerate(zip(self._warmup_expected, check.warmup_outputs, strict=True))]
        check.warmup_max_abs_diff = max((max(d.values()) for d in diffs), default=0.0)
        return check


if __name__ == "__main__":
    main(sys.argv[1:])

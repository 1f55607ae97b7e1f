"""TF Serving's server-side batching: requests merged before the graph runs, outputs split after.

The batching session (``tensorflow_serving/batching/batching_session.cc``) concatenates the
requests' tensors along dimension 0 and, with ``pad_variable_length_inputs``, pads every other
dimension with the tensor's *first element* (``batching_util.cc``); it splits every output
along dimension 0, which must therefore be the merged batch. :func:`merge_requests` reproduces
the merge; :func:`compare_batched` shows a request's outputs do not depend on what it was
batched with.
"""

from __future__ import annotations

import numpy as np

from tfbert.errors import ExportError


def merge_requests(requests: list[dict[str, np.ndarray]], pad_variable_length_inputs: bool) -> dict[str, np.ndarray]:
    """The inputs TF Serving's batching session runs for ``requests`` (batching_session.cc).

    Tensors are concatenated along dimension 0. With ``pad_variable_length_inputs`` every
    other dimension is padded to the largest, *with the tensor's first element*; without it,
    those dimensions must already be equal.

    Raises:
        ExportError: shapes differ and padding is off (TF Serving's FailedPrecondition).
    """
    merged = {}
    for name in requests[0]:
        tensors = [np.asarray(r[name]) for r in requests]
        largest = np.max([t.shape for t in tensors], axis=0)
        if pad_variable_length_inputs:
            tensors = [np.pad(t, [(0, 0)] + [(0, int(m - s)) for s, m in zip(t.shape[1:], largest[1:], strict=True)],
                              constant_values=t.reshape(-1)[0]) if t.dtype != object else t for t in tensors]
        elif any(t.shape[1:] != tensors[0].shape[1:] for t in tensors):
            raise ExportError("requests with different shapes cannot be batched while padding is off", where=name,
                              actual=[list(t.shape) for t in tensors],
                              fix="pad every request to the same length, or set pad_variable_length_inputs")
        merged[name] = np.concatenate(tensors)
    return merged


def compare_batched(alone: dict[str, np.ndarray], merged: dict[str, np.ndarray], where: str,
                    atol: float = 1e-4) -> float:
    """A request's outputs alone vs its rows of a merged batch: equal, up to padding.

    An output whose dimensions past the first differ (token-level outputs padded to the
    merged batch's longest text) is compared on the request's own positions.

    Returns:
        The largest numeric difference.

    Raises:
        ExportError: a difference beyond ``atol`` (strings and integers: any difference).
    """
    worst = 0.0
    for name, value in alone.items():
        got = merged[name]
        if got.ndim != value.ndim or any(g < v for g, v in zip(got.shape, value.shape, strict=True)):
            raise ExportError("batched output has another shape", where=f"{where}: {name}",
                              expected=list(value.shape), actual=list(got.shape), fix="report this as a bug")
        got = got[tuple(slice(0, n) for n in value.shape)]
        if value.dtype.kind in "f":
            diff = float(np.abs(value.astype(np.float64) - got).max()) if value.size else 0.0
            same = diff <= atol
            worst = max(worst, diff)
        else:
            same = np.array_equal(value, got)
        if not same:
            raise ExportError("a request's outputs change when TF Serving batches it with other requests",
                              where=f"{where}: {name}", fix="report this as a bug")
    return worst

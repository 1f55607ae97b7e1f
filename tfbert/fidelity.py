"""How close a model's outputs are to a reference's: the one measure export, predict and benchmark report."""

from __future__ import annotations

import numpy as np


def fidelity(reference: np.ndarray, candidate: np.ndarray, task: str = "embed") -> dict[str, float]:
    """Cosine (mean and min over rows), max abs diff and, for classify and token_classify, argmax agreement.

    Rows are compared flattened, so ``[N, d]`` embeddings and ``[N, seq, k]`` outputs both work.

    Example:
        >>> a = np.array([[1.0, 0.0], [0.0, 1.0]])
        >>> fidelity(a, a)["cosine_min"]
        1.0
    """
    ref = reference.reshape(reference.shape[0], -1).astype(np.float64)
    cand = candidate.reshape(candidate.shape[0], -1).astype(np.float64)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    cosine = np.sum(ref * cand, axis=1) / np.maximum(norms, 1e-30)
    out = {"cosine_mean": float(cosine.mean()), "cosine_min": float(cosine.min()),
           "max_abs_diff": float(np.abs(ref - cand).max())}
    if task in ("classify", "token_classify"):  # token_classify: rows are tokens
        out["argmax_agreement"] = float(np.mean(reference.argmax(-1) == candidate.argmax(-1)))
    return out

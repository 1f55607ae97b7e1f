"""tfbert: load, diagnose, run and export pretrained BERT models with TensorFlow.

The data flows one way — checkpoint → diagnose → runtime → model → export / predict —
and the CLIs (``python -m tfbert.doctor`` and friends) sit on top. Importing ``tfbert``
does not import TensorFlow; the names below load their stage on first use.

Example:
    >>> import tfbert
    >>> model = tfbert.load()             # the embedded all-MiniLM-L6-v2, diagnosed first
    >>> tfbert.diagnose().exit_code       # 0 healthy, 1 warnings, 2 errors
    0
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "load": "tfbert.model",
    "build_model": "tfbert.model",
    "diagnose": "tfbert.diagnose",
    "Diagnosis": "tfbert.diagnose",
    "configure_runtime": "tfbert.runtime",
    "find_checkpoint": "tfbert.checkpoint",
    "default_model_path": "tfbert.checkpoint",
    "errors": "tfbert.errors",
}


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        return module if name == "errors" else getattr(module, name)
    raise AttributeError(f"module 'tfbert' has no attribute {name!r}")


__all__ = sorted(_LAZY)

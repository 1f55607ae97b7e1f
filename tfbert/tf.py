"""Importing TensorFlow the way tfbert needs it: Keras 2, and quiet.

Nothing in tfbert imports TensorFlow at module level; the stages that need it call
:func:`import_tensorflow`, so ``python -m tfbert.doctor --help`` starts in a fraction of a second.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile

from tfbert.errors import IncompatibleEnvironmentError


def import_tensorflow(quiet: bool = True):
    """Import and return ``tensorflow`` with Keras 2 (tf-keras) selected.

    tfbert's Keras models (Hugging Face's TF classes, :mod:`tfbert.keras_bert`) need Keras 2,
    which TensorFlow >= 2.16 only uses when ``TF_USE_LEGACY_KERAS=1`` is set before its first
    import. It is set only where tf-keras is installed: with it set and tf-keras missing,
    TensorFlow's ``tf.keras`` fails once and then recurses on every later use (RecursionError),
    which breaks even ``import tensorflow_text``; unset, the SavedModel and TFLite paths still
    run on Keras 3, and loading a Keras model says tf-keras is missing (the doctor's finding).
    With ``quiet`` the C++ log lines TensorFlow prints while it starts (oneDNN, CUDA probing)
    are swallowed; if the import fails they are replayed so nothing is hidden.

    Raises:
        IncompatibleEnvironmentError: TensorFlow is not installed (a LiteRT-only machine).
    """
    if "tensorflow" not in sys.modules and importlib.util.find_spec("tf_keras") is not None:
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    if not quiet:
        return _import()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            tf = _import()
            tf.get_logger().setLevel("ERROR")
            tf.config.list_physical_devices()  # probes CUDA now, while stderr is captured
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return tf


def _import():
    try:
        import tensorflow
    except ModuleNotFoundError as e:
        if e.name != "tensorflow":
            raise
        # An edge install (docs/mobile.md) has only LiteRT: say what still runs there.
        raise IncompatibleEnvironmentError("TensorFlow is not installed", where="tensorflow",
                                           fix="pip install tensorflow (pip install -e . installs everything); "
                                           "without it only a token-input .tflite runs (docs/mobile.md)") from None
    return tensorflow

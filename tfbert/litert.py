"""Running a tfbert .tflite under LiteRT (ai-edge-litert): one runner for export, diagnose and predict.

Importing this module imports neither TensorFlow nor LiteRT; :class:`LiteRTRunner` imports
LiteRT when it is built, and tensorflow-text's kernels only for a raw-text model.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

import numpy as np

from tfbert.errors import BadInputError


class LiteRTRunner:
    """A tfbert .tflite under LiteRT, every op prepared for each batch's shapes.

    Token models take ``input_ids`` and ``attention_mask`` (int32 [batch, seq]); a raw-text
    model (``model_<q>_text.tflite``) takes ``text`` (strings [batch]) and is detected here,
    and tensorflow-text's TFLite kernels are then registered for it. ``input_names`` says
    which inputs the model takes.

    Every call re-plans the interpreter (inputs resized away and back, then allocated, so
    LiteRT prepares every op and XNNPACK reshapes its runtime), because a second invoke at an
    unchanged shape is not safe with the XNNPACK delegate (on by default) in ai-edge-litert
    2.3: on the fp32 all-MiniLM-L6-v2 export, invokes after the first at shape [32, 12] gave
    wrong embeddings (cosine 0.80-0.91 to the reference) in processes whose heap held freed
    memory (e.g. after loading the Keras model), while the first invoke after a shape change
    was always right. Neither the signature runner (which re-allocates at the same shape) nor
    resizing only on a shape change avoided it. Re-planning measured no slower (63 MiniLM
    batches of 32: fp32 2.15 s vs 2.18 s, int8 0.72 s vs 0.71 s; batch 1 int8 +0.05 ms).

    Args:
        model: a .tflite path, or the flatbuffer's bytes.
        num_threads: interpreter threads.

    Raises:
        ValueError, RuntimeError: LiteRT cannot load the model (callers turn these into
            typed errors naming the file).

    Example:
        >>> runner = LiteRTRunner("model_int8.tflite")  # doctest: +SKIP
        >>> runner({"input_ids": ids, "attention_mask": mask})["sentence_embedding"].shape  # doctest: +SKIP
        (2, 384)
        >>> LiteRTRunner("model_int8_text.tflite")({"text": ["a sentence"]})  # doctest: +SKIP
    """

    def __init__(self, model: str | os.PathLike | bytes, num_threads: int = 2) -> None:
        from ai_edge_litert.interpreter import Interpreter, InterpreterWithCustomOps

        if isinstance(model, (bytes, bytearray)):
            kwargs, self.where = {"model_content": bytes(model)}, "the .tflite model"
        else:
            kwargs, self.where = {"model_path": os.fspath(model)}, os.fspath(model)
        self.interpreter = Interpreter(num_threads=num_threads, **kwargs)
        inputs = self.interpreter.get_signature_runner().get_input_details()
        if "text" in inputs:
            # A raw-text model: tensorflow-text's kernels must be registered before allocation
            # (only then, so token models never import tensorflow-text).
            from tfbert.tokenizer import tflite_op_registerers

            self.interpreter = InterpreterWithCustomOps(num_threads=num_threads,
                                                        custom_op_registerers=tflite_op_registerers(), **kwargs)
        with _without_delegate_banner():  # the first allocation in a process creates the delegate
            self.interpreter.allocate_tensors()
        signature = self.interpreter.get_signature_runner()
        self._inputs = {name: d["index"] for name, d in signature.get_input_details().items()}
        self._outputs = {name: d["index"] for name, d in signature.get_output_details().items()}
        # The signature runner holds the interpreter's tensors, and the interpreter refuses a
        # resize while anything does.
        del signature
        self.input_names = sorted(self._inputs)
        self.output_names = sorted(self._outputs)

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model's outputs (numpy copies) for one batch; extra keys in ``inputs`` are ignored.

        Raises:
            BadInputError: an input the model takes is missing (e.g. token ids given to a
                raw-text model).
        """
        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise BadInputError("the model takes other inputs", where=self.where, expected=self.input_names,
                                actual=sorted(inputs), fix=f"pass {', '.join(missing)}")
        arrays = {name: _as_input(inputs[name]) for name in self._inputs}
        # Away to another shape and back: LiteRT then prepares every op again on allocation
        # (a resize to the current shape is a no-op). See the class docstring for why.
        for name, index in self._inputs.items():
            self.interpreter.resize_tensor_input(index, [d + 1 for d in arrays[name].shape], strict=False)
            self.interpreter.resize_tensor_input(index, arrays[name].shape, strict=False)
        self.interpreter.allocate_tensors()
        for name, index in self._inputs.items():
            self.interpreter.set_tensor(index, arrays[name])
        self.interpreter.invoke()
        return {name: self.interpreter.get_tensor(index) for name, index in self._outputs.items()}


_BANNER = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"


@contextlib.contextmanager
def _without_delegate_banner() -> Iterator[None]:
    """Drop LiteRT's ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`` line (unless
    ``--verbose``), and pass everything else the block writes to stderr through.

    LiteRT's C++ logger writes it straight to file descriptor 2 when the first interpreter of a
    process allocates its tensors, and has no Python switch (only C++'s
    ``LoggerOptions::SetMinimumLogSeverity``), so the descriptor is pointed at a temporary
    file for the block, and what it caught is written back without that line.
    """
    if os.environ.get("TFBERT_VERBOSE") == "1":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as caught:
            os.dup2(caught.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                caught.seek(0)
                rest = caught.read().replace(_BANNER, b"")
                if rest:
                    os.write(2, rest)
    finally:
        os.close(saved)


def _as_input(value) -> np.ndarray:
    """int32 ids as they are; text (str or bytes) as the UTF-8 byte strings LiteRT's string tensors take."""
    array = np.asarray(value)
    if array.dtype.kind in "OSU":
        return np.array([t.encode("utf-8") if isinstance(t, str) else bytes(t) for t in array.ravel()],
                        dtype=object).reshape(array.shape)
    return np.ascontiguousarray(array, dtype=np.int32)

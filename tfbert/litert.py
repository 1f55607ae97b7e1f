"""Running a tfbert .tflite under LiteRT (ai-edge-litert): one runner for export, diagnose and predict.

Importing this module imports neither TensorFlow nor LiteRT; :class:`LiteRTRunner` imports
LiteRT when it is built, and tensorflow-text's kernels only for a raw-text model.
"""

from __future__ import annotations

import os

import numpy as np

from tfbert.errors import BadInputError


class LiteRTRunner:
    """A tfbert .tflite under LiteRT, its inputs resized only when their shapes change.

    Token models take ``input_ids`` and ``attention_mask`` (int32 [batch, seq]); a raw-text
    model (``model_<q>_text.tflite``) takes ``text`` (strings [batch]) and is detected here,
    and tensorflow-text's TFLite kernels are then registered for it. ``input_names`` says
    which inputs the model takes.

    Inputs are resized and tensors re-allocated only on a shape change: LiteRT's signature
    runner re-allocates on every call, which is wasted time, and with the XNNPACK delegate
    (on by default) runs of the fp32 all-MiniLM-L6-v2 export gave wrong results for some
    batches that follow a batch of the same shape (see the README's note on fp32 TFLite).

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
        signature = self.interpreter.get_signature_runner()
        self._inputs = {name: d["index"] for name, d in signature.get_input_details().items()}
        self._outputs = {name: d["index"] for name, d in signature.get_output_details().items()}
        # The signature runner holds the interpreter's tensors, and the interpreter refuses a
        # resize while anything does.
        del signature
        self.input_names = sorted(self._inputs)
        self.output_names = sorted(self._outputs)
        self._shapes: dict[str, tuple[int, ...]] | None = None

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
        shapes = {name: array.shape for name, array in arrays.items()}
        if shapes != self._shapes:
            for name, index in self._inputs.items():
                self.interpreter.resize_tensor_input(index, shapes[name], strict=False)
            self.interpreter.allocate_tensors()
            self._shapes = shapes
        for name, index in self._inputs.items():
            self.interpreter.set_tensor(index, arrays[name])
        self.interpreter.invoke()
        return {name: self.interpreter.get_tensor(index) for name, index in self._outputs.items()}


def _as_input(value) -> np.ndarray:
    """int32 ids as they are; text (str or bytes) as the UTF-8 byte strings LiteRT's string tensors take."""
    array = np.asarray(value)
    if array.dtype.kind in "OSU":
        return np.array([t.encode("utf-8") if isinstance(t, str) else bytes(t) for t in array.ravel()],
                        dtype=object).reshape(array.shape)
    return np.ascontiguousarray(array, dtype=np.int32)

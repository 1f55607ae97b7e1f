"""The one error hierarchy of tfbert.

Every error a user can meet is a :class:`TfbertError`. Each carries the thing that is
wrong (``where``: a file, field or value), what was expected and what was found, and the
``fix``; ``str(error)`` renders all of it on one line, which is what the CLIs print
before exiting with the error's ``exit_code``: 2, except :class:`NoLearningError` (3).
"""

from __future__ import annotations


class TfbertError(Exception):
    """Base class: one line naming where, expected vs actual, and the fix.

    Args:
        message: what is wrong, in a few words.
        where: the file, field or value concerned (``"config.json: hidden_size"``).
        expected: what tfbert expected there.
        actual: what it found.
        fix: what the user should do about it.

    Example:
        >>> err = ConfigMismatchError("hidden_size does not match the weights",
        ...     where="config.json: hidden_size", expected=384, actual=768,
        ...     fix="use the config.json that came with model.safetensors")
        >>> str(err).startswith("config.json: hidden_size: hidden_size does not match")
        True
    """

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        where: str | None = None,
        expected: object = None,
        actual: object = None,
        fix: str | None = None,
    ) -> None:
        self.message = message
        self.where = where
        self.expected = expected
        self.actual = actual
        self.fix = fix
        super().__init__(self.render())

    def render(self, with_fix: bool = True) -> str:
        """The one-line form; ``with_fix=False`` leaves the fix out (reports show it in a column)."""
        parts = [f"{self.where}: {self.message}" if self.where else self.message]
        if self.expected is not None and self.actual is not None:
            parts.append(f"expected {self.expected}, got {self.actual}")
        elif self.expected is not None:
            parts.append(f"expected {self.expected}")
        elif self.actual is not None:
            parts.append(f"got {self.actual}")
        if self.fix and with_fix:
            parts.append(f"fix: {self.fix}")
        return " — ".join(parts).replace("\n", " ")

    # Keras and absl sometimes reconstruct exceptions from args; keep that working.
    def __reduce__(self):  # pragma: no cover - exercised only through pickling
        return (_rebuild, (type(self), self.message, self.where, self.expected, self.actual, self.fix))


def _rebuild(cls, message, where, expected, actual, fix):  # pragma: no cover
    return cls(message, where=where, expected=expected, actual=actual, fix=fix)


class CheckpointNotFoundError(TfbertError):
    """The path holds no checkpoint tfbert can read (or a required file is missing)."""


class CorruptCheckpointError(TfbertError):
    """A weight file is truncated, has a bad header, a wrong checksum or implausible values."""


class ConfigMismatchError(TfbertError):
    """config.json (or the vocab) is invalid or disagrees with the weights."""


class IncompatibleEnvironmentError(TfbertError):
    """Installed package versions are known not to work together."""


class InsufficientMemoryError(TfbertError):
    """The requested model, batch and sequence length do not fit in the memory available."""


class UnsafeFileError(TfbertError):
    """The file would run code when read (a pickle) and was not explicitly allowed."""


class BadInputError(TfbertError):
    """An argument or input record is invalid."""


class RuntimeSetupError(TfbertError):
    """The TensorFlow runtime cannot be configured as asked (e.g. GPUs already initialized)."""


class ExportError(TfbertError):
    """An export failed verification or its accuracy gate; nothing was published."""


class PipelineError(TfbertError):
    """A Beam job failed outside tfbert's code (a worker died, the runner gave up); nothing was published."""


class NoLearningError(TfbertError):
    """Fine-tuning ran, but the classifier scores no more than 2 points above always predicting the
    most frequent class. The checkpoint was still saved (``result`` holds the
    :class:`tfbert.finetune.FinetuneResult`); CLIs exit with code 3, so a script can tell this
    apart from a refused run (2, nothing written)."""

    exit_code = 3
    result: object = None

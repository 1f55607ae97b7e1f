"""Task logic beyond the encoder's outputs: extractive question answering's windows and span search.

Example:
    >>> from tfbert.tasks import question_answering
    >>> question_answering.window_starts(10, 4, 1)
    [0, 3, 6]
"""

from tfbert.tasks import question_answering

__all__ = ["question_answering"]

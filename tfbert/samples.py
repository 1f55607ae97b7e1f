"""Real sentences shipped with tfbert: calibration, held-out verification and benchmark text."""

from __future__ import annotations

import os

from tfbert.errors import BadInputError

_BUILTIN = os.path.join(os.path.dirname(__file__), "data", "sentences.txt")

# Edge cases every verification includes: empty, whitespace, accents, CJK, emoji, long.
EDGE_CASES = ["", "   ", "Café naïve Ångström", "中文字符 日本語", "emoji 😀👍🏽!", "word " * 200]


def read_texts(path: str | None = None) -> list[str]:
    """Non-empty lines of ``path`` (default: the built-in sample of real sentences)."""
    path = path or _BUILTIN
    try:
        with open(path, encoding="utf-8") as f:
            texts = [line.strip() for line in f if line.strip()]
    except FileNotFoundError:
        raise BadInputError("no such file", where=path, fix="pass an existing text file, one text per line") from None
    except UnicodeDecodeError as e:
        raise BadInputError(f"not UTF-8 text ({e.reason} at byte {e.start})", where=path,
                            fix="save the file as UTF-8") from None
    if not texts:
        raise BadInputError("the file has no text lines", where=path, fix="put one text per line")
    return texts


def split_texts(texts: list[str], held_out_every: int = 4) -> tuple[list[str], list[str]]:
    """(calibration, held-out): every ``held_out_every``-th text is held out, never calibrated on."""
    held = texts[::held_out_every]
    calibration = [t for i, t in enumerate(texts) if i % held_out_every]
    return calibration, held


def repeat_texts(texts: list[str], count: int) -> list[str]:
    """``count`` texts: ``texts`` repeated in order as often as needed (or cut).

    Example:
        >>> repeat_texts(["a", "b"], 5)
        ['a', 'b', 'a', 'b', 'a']
    """
    if count < 1 or not texts:
        raise BadInputError("need at least one text", where="text count", expected=">= 1",
                            actual=f"{count} of {len(texts)} texts",
                            fix="ask for 1 or more texts from a non-empty file")
    return [texts[i % len(texts)] for i in range(count)]

"""What every tfbert command shares: flag parsing, one-line errors with exit code 2, logging."""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable

from absl import app, flags
from absl import logging as absl_logging

from tfbert.errors import TfbertError

FLAGS = flags.FLAGS

flags.DEFINE_boolean("verbose", False, "Show tracebacks and TensorFlow's own log messages.")


def _parse(argv: list[str]) -> list[str]:
    try:
        return FLAGS(argv)
    except flags.Error as e:
        prog = argv[0].rsplit("/", 1)[-1] if argv else "tfbert"
        sys.stderr.write(f"{prog}: error: {e} — fix: run with --help to see the flags\n")
        sys.exit(2)


def progress_writer(command: str) -> Callable[[str], None]:
    """A function writing ``[tfbert.<command>] <line>`` progress lines to stderr."""

    def write(line: str) -> None:
        sys.stderr.write(f"[tfbert.{command}] {line}\n")
        sys.stderr.flush()

    return write


def run(main: Callable[[list[str]], int | None], command: str) -> None:
    """Run ``main`` as the absl app ``python -m tfbert.<command>``.

    A :class:`TfbertError` becomes one line on stderr and its ``exit_code`` (2; 3 for
    :class:`tfbert.errors.NoLearningError`); with ``--verbose`` the
    traceback is printed too. Unexpected exceptions and positional arguments are reported the
    same way (one line, exit 2), so a user never sees a bare traceback by default.
    """

    def wrapped(argv: list[str]) -> int | None:
        logging.basicConfig(level=logging.INFO if FLAGS.verbose else logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")
        absl_logging.set_verbosity(absl_logging.INFO if FLAGS.verbose else absl_logging.WARNING)
        quiet_tensorflow()
        if len(argv) > 1:
            sys.stderr.write(f"tfbert.{command}: error: unexpected arguments {argv[1:]} — fix: pass options as "
                             "--flags (see --help)\n")
            return 2
        try:
            return main(argv)
        except TfbertError as e:
            return _fail(f"error: {e}", e.exit_code)
        except KeyboardInterrupt:
            return _fail("interrupted")
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            return _fail(f"unexpected {type(e).__name__}: {first} — fix: rerun with --verbose "
                         "and report the traceback")

    app.run(wrapped, flags_parser=_parse)


def _fail(line: str, code: int = 2) -> int:
    if FLAGS.verbose:
        traceback.print_exc()
    sys.stderr.write(f"tfbert: {line}\n")
    return code


def quiet_tensorflow() -> None:
    """Keep the libraries' own chatter out of the output unless --verbose: TensorFlow's C++ logs,
    transformers' deprecation banner, LiteRT's delegate line (:mod:`tfbert.litert` reads
    ``TFBERT_VERBOSE``). Must run before they are imported."""
    import os

    if FLAGS.verbose:
        os.environ["TFBERT_VERBOSE"] = "1"
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

"""Where exports go, and how a version gets there whole, beside other exports into the same model.

TF Serving watches ``<output_dir>/<name>/`` and loads every all-digit subdirectory as a
version; the TFLite models of that version go to ``<output_dir>/<name>-tflite/<version>/``.
A :class:`VersionPublication` reserves one version number for both when the export starts
(an owned staging directory, ``.tmp-<version>+<owner>``, which a model server ignores),
and renames the verified staging directories into place when it ends — see
:mod:`tfbert.publish` for the lock, the owner record and the no-replace rename, and what each
assumes of the filesystem. Two exports into one model at once therefore publish two
versions; an explicit ``--version`` another export is writing is refused; a version is
replaced only with ``overwrite``, and then whole.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence

from tfbert import publish
from tfbert.errors import BadInputError, ExportError


def tflite_dir(name: str) -> str:
    """The model directory of a model's TFLite files."""
    return f"{name}-tflite"


def existing_versions(model_dir: str) -> list[int]:
    """The published versions under ``model_dir`` (all-digit subdirectories), ascending."""
    if not os.path.isdir(model_dir):
        return []
    return sorted(int(d) for d in os.listdir(model_dir)
                  if d.isdigit() and os.path.isdir(os.path.join(model_dir, d)))


class VersionPublication:
    """One version of a model, reserved in its model directories until published or discarded.

    Build it with :func:`reserve`. ``subdirs`` are the model directories the version has
    artifacts in (``<name>`` for the SavedModel, ``<name>-tflite`` for TFLite); they share one
    version number space, so a SavedModel and its TFLite models always carry the same number.

    Attributes:
        version: the reserved version (it changes at :meth:`publish` only if another program
            published that number meanwhile and no version was asked for).
    """

    def __init__(self, output_dir: str, subdirs: Sequence[str], version: int | None, overwrite: bool,
                 progress: Callable[[str], None]) -> None:
        self.output_dir, self.subdirs, self.overwrite = output_dir, tuple(subdirs), overwrite
        self._explicit = version is not None
        self._staging: dict[str, str] = {}
        with publish.locked(output_dir):
            for subdir in self.subdirs:
                model_dir = os.path.join(output_dir, subdir)
                for line in publish.remove_stale(model_dir):
                    progress(f"{line} ({model_dir})")
                if os.path.isdir(model_dir):
                    publish.check_readable_by_others(model_dir)
            self.version = self._choose(version)
            for subdir in self.subdirs:
                model_dir = os.path.join(output_dir, subdir)
                os.makedirs(model_dir, exist_ok=True)
                os.chmod(model_dir, os.stat(model_dir).st_mode | 0o755)
                self._staging[subdir] = publish.make_staging(model_dir, str(self.version))

    def _others(self) -> dict[int, publish.Staging]:
        """Versions other live exports have reserved in these model directories."""
        mine = set(self._staging.values())
        return {int(s.label): s for subdir in self.subdirs
                for s in publish.stagings(os.path.join(self.output_dir, subdir))
                if s.label.isdigit() and s.path not in mine and not s.stale()}

    def _published(self) -> set[int]:
        return {v for subdir in self.subdirs for v in existing_versions(os.path.join(self.output_dir, subdir))}

    def _choose(self, version: int | None) -> int:
        published, reserved = self._published(), self._others()
        if version is None:
            return max(published | set(reserved), default=0) + 1
        if version < 1:
            raise BadInputError("version must be a positive integer", where="--version", actual=version,
                                fix="pass --version=1 or higher, or leave it out for the next free version")
        where = os.path.join(self.output_dir, self.subdirs[0], str(version))
        if version in reserved:
            raise BadInputError(f"another export ({reserved[version].owner or 'an older tfbert'}) is writing "
                                "this version", where=where,
                                fix="wait for it to finish, or leave --version out for the next free one")
        if version in published and not self.overwrite:
            raise BadInputError("this version is already published", where=where,
                                fix="pass --overwrite to replace it, or leave --version out for the next free one")
        return version

    def staging(self, subdir: str) -> str:
        """The staging directory of ``subdir``'s artifact: write the files here."""
        return self._staging[subdir]

    def target(self, subdir: str) -> str:
        """Where ``subdir``'s artifact is published (``<output_dir>/<subdir>/<version>``)."""
        return os.path.join(self.output_dir, subdir, str(self.version))

    def publish(self) -> None:
        """Rename every staging directory into place, under the lock, each tree mode 0755/0644.

        Raises:
            BadInputError: the asked-for version was published by another program meanwhile
                (without ``overwrite``); nothing was published.
            ExportError: a rename failed.
        """
        with publish.locked(self.output_dir):
            taken = [self.target(s) for s in self.subdirs if os.path.lexists(self.target(s))]
            if taken and not self.overwrite:
                if self._explicit:
                    self._discard()
                    raise BadInputError("this version was published by another program while the export ran; "
                                        "nothing was published", where=taken[0],
                                        fix="pass --overwrite to replace it, or leave --version out")
                self.version = max(self._published() | set(self._others()), default=0) + 1
            for subdir in self.subdirs:
                publish.make_readable(self._staging[subdir])
                try:
                    publish.publish(self._staging[subdir], self.target(subdir), overwrite=self.overwrite)
                except OSError as e:
                    self._discard()
                    raise ExportError(f"could not publish ({e.strerror or e})", where=self.target(subdir),
                                      fix="check the directory's permissions and free space") from None
                del self._staging[subdir]

    def discard(self) -> None:
        """Delete what was staged and not published, and a model directory left empty by it."""
        with publish.locked(self.output_dir):
            self._discard()

    def _discard(self) -> None:  # with the lock held
        for subdir, path in self._staging.items():
            shutil.rmtree(path, ignore_errors=True)
            with contextlib.suppress(OSError):  # not empty: other versions or exports live there
                os.rmdir(os.path.join(self.output_dir, subdir))
        self._staging.clear()


@contextlib.contextmanager
def reserve(output_dir: str, subdirs: Sequence[str], version: int | None = None, overwrite: bool = False,
            progress: Callable[[str], None] = lambda line: None) -> Iterator[VersionPublication]:
    """Reserve a version in ``subdirs`` of ``output_dir``; publish it when the block ends, or
    discard it if the block raises.

    Example:
        >>> with reserve("exported", ["minilm", "minilm-tflite"]) as version:  # doctest: +SKIP
        ...     write_saved_model(..., version.staging("minilm"))
        ...     write_tflite(..., version.staging("minilm-tflite"))
        >>> version.target("minilm")  # doctest: +SKIP
        'exported/minilm/3'
    """
    publication = VersionPublication(output_dir, subdirs, version, overwrite, progress)
    try:
        yield publication
    except BaseException:
        publication.discard()
        raise
    publication.publish()


def safe_name(name: str) -> str:
    """A model name usable as a directory name and a TF Serving model name."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name or ""):
        raise BadInputError("model name must be letters, digits, '_', '.' or '-'", where="--name", actual=name,
                            fix="pass e.g. --name=minilm")
    return name

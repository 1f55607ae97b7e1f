"""Several exports into one model repository: each keeps its version, none destroys another's work.

The version allocation and publication of :mod:`tfbert.export.layout` / :mod:`tfbert.publish`,
with real concurrent ``python -m tfbert.export`` processes and with reservations held open in
this process while another writer acts.
"""

import os
import stat
import subprocess
import sys

import pytest

from tests import tiny
from tfbert import errors, publish
from tfbert.export import layout


def _write(directory: str, content: str) -> None:
    with open(os.path.join(directory, "model.txt"), "w") as f:
        f.write(content)


def _read(version_dir) -> str:
    with open(os.path.join(version_dir, "model.txt")) as f:
        return f.read()


def _export_cmd(checkpoint: str, out, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tfbert.export", f"--model={checkpoint}", "--max_seq_length=16",
            f"--output_dir={out}", "--name=tiny", *extra]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny.write_safetensors(str(tmp_path_factory.mktemp("pub") / "ckpt"), tiny.reference_model("embed", seed=5))


def test_two_exports_started_together_publish_two_whole_versions(checkpoint, tmp_path):
    procs = [subprocess.Popen(_export_cmd(checkpoint, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    assert sorted(os.listdir(tmp_path / "tiny")) == ["1", "2"]  # nothing else: no staging left
    said = sorted(next(line.split()[1] for line in out.splitlines() if line.startswith("SavedModel"))
                  for out, _ in outs)
    assert said == [str(tmp_path / "tiny" / "1"), str(tmp_path / "tiny" / "2")]  # each names its own
    for version in ("1", "2"):
        assert (tmp_path / "tiny" / version / "saved_model.pb").is_file()
        assert (tmp_path / "tiny" / version / "SHA256SUMS").is_file()


def test_an_export_leaves_a_running_exports_staging_alone(tmp_path):
    with layout.reserve(str(tmp_path), ["m"]) as first:
        _write(first.staging("m"), "first")
        with layout.reserve(str(tmp_path), ["m"]) as second:  # started while the first one writes
            assert second.version == first.version + 1
            assert os.path.isdir(first.staging("m"))
            _write(second.staging("m"), "second")
    assert _read(tmp_path / "m" / "1") == "first" and _read(tmp_path / "m" / "2") == "second"
    assert sorted(os.listdir(tmp_path / "m")) == ["1", "2"]


def test_staging_of_a_killed_export_is_removed_and_a_live_ones_kept(tmp_path):
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        owners = {}
        for name, proc in (("live", live), ("dead", dead)):
            owners[name] = publish.Owner(publish.Owner.me().host, proc.pid, publish._start_time(proc.pid) or 0)
        dead.wait()
        for name, label in (("live", "7"), ("dead", "8")):
            o = owners[name]
            (model_dir / f".tmp-{label}+{o.host}+{o.pid}+{o.start}+abcd").mkdir()
        lines = []
        with layout.reserve(str(tmp_path), ["m"], progress=lines.append) as publication:
            assert publication.version == 8  # 7 is reserved by the live export; 8 was the dead one's
        assert len(lines) == 1 and f"pid {dead.pid}" in lines[0] and "ended" in lines[0]
        left = sorted(os.listdir(model_dir))
        assert left == [f".tmp-7+{owners['live'].host}+{live.pid}+{owners['live'].start}+abcd", "8"]
    finally:
        live.kill()
        live.wait()


def test_an_explicit_version_another_export_is_writing_is_refused_even_with_overwrite(tmp_path):
    with layout.reserve(str(tmp_path), ["m"]) as plain:
        with pytest.raises(errors.BadInputError) as info:
            layout.reserve(str(tmp_path), ["m"], version=plain.version, overwrite=True).__enter__()
        assert f"pid {os.getpid()}" in str(info.value) and "writing this version" in str(info.value)
        _write(plain.staging("m"), "plain")
    assert _read(tmp_path / "m" / "1") == "plain"


def test_overwrite_racing_a_plain_export_replaces_whole_and_loses_nothing(tmp_path):
    with layout.reserve(str(tmp_path), ["m", "m-tflite"]) as v1:
        for subdir in ("m", "m-tflite"):
            _write(v1.staging(subdir), "old")
            open(os.path.join(v1.staging(subdir), "only-in-old"), "w").close()
    with layout.reserve(str(tmp_path), ["m", "m-tflite"]) as plain:
        with layout.reserve(str(tmp_path), ["m", "m-tflite"], version=1, overwrite=True) as again:
            for subdir in ("m", "m-tflite"):
                _write(again.staging(subdir), "new")
        for subdir in ("m", "m-tflite"):
            _write(plain.staging(subdir), "plain")
    for subdir in ("m", "m-tflite"):
        assert sorted(os.listdir(tmp_path / subdir)) == ["1", "2"]
        assert sorted(os.listdir(tmp_path / subdir / "1")) == ["model.txt"]  # the new version whole, no mix
        assert _read(tmp_path / subdir / "1") == "new" and _read(tmp_path / subdir / "2") == "plain"


def test_a_version_another_program_publishes_meanwhile_is_never_replaced(tmp_path):
    with layout.reserve(str(tmp_path), ["m"]) as mine:
        os.makedirs(tmp_path / "m" / "1")  # e.g. a copy made by hand while the export ran
        _write(str(tmp_path / "m" / "1"), "theirs")
        _write(mine.staging("m"), "mine")
    assert mine.version == 2 and mine.target("m") == str(tmp_path / "m" / "2")
    assert _read(tmp_path / "m" / "1") == "theirs" and _read(tmp_path / "m" / "2") == "mine"
    with pytest.raises(errors.BadInputError):  # asked for version 3 explicitly: refused, not moved
        with layout.reserve(str(tmp_path), ["m"], version=3) as explicit:
            os.makedirs(tmp_path / "m" / "3")
            _write(explicit.staging("m"), "mine")
    assert sorted(os.listdir(tmp_path / "m")) == ["1", "2", "3"] and os.listdir(tmp_path / "m" / "3") == []


def test_published_files_are_readable_by_a_server_running_as_another_user(tmp_path):
    old = os.umask(0o077)
    try:
        with layout.reserve(str(tmp_path), ["m"]) as publication:
            os.makedirs(os.path.join(publication.staging("m"), "variables"))
            _write(publication.staging("m"), "x")
    finally:
        os.umask(old)
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in tmp_path.rglob("*")}
    assert modes == {"m": 0o755, "m/1": 0o755, "m/1/variables": 0o755, "m/1/model.txt": 0o644}


def test_a_model_directory_others_cannot_read_is_refused_before_anything_is_written(checkpoint, tmp_path):
    (tmp_path / "tiny").mkdir(mode=0o700)
    os.chmod(tmp_path / "tiny", 0o700)
    result = subprocess.run(_export_cmd(checkpoint, tmp_path), capture_output=True, text=True, timeout=900)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("tfbert:")]
    assert len(lines) == 1 and "0700" in lines[0] and "chmod 755" in lines[0], result.stderr[-2000:]
    assert os.listdir(tmp_path / "tiny") == []

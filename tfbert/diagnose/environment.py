"""Environment check: installed versions against known-good and known-broken combinations.

Versions come from package metadata, so nothing heavy is imported.
"""

from __future__ import annotations

import importlib.metadata
import os
import re

from tfbert.diagnose.config_checks import _error
from tfbert.errors import IncompatibleEnvironmentError
from tfbert.report import INFO, OK, WARN, Finding

PACKAGES = ("tensorflow", "tf-keras", "tensorflow-text", "transformers", "safetensors", "numpy",
            "keras", "ai-edge-litert", "apache-beam", "protobuf", "google-apitools", "tokenizers")
# The range tfbert is tested on; the bounds match setup.cfg.
TESTED_TRANSFORMERS = ((4, 44), (4, 57))


def installed_versions() -> dict[str, str | None]:
    """Package name → installed version (None when missing)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    if versions["tensorflow"] is None:  # the CPU-only wheel has its own name
        for alt in ("tensorflow-cpu", "tf-nightly"):
            try:
                versions["tensorflow"] = importlib.metadata.version(alt)
                break
            except importlib.metadata.PackageNotFoundError:
                pass
    return versions


def _minor(version: str | None) -> tuple[int, int] | None:
    if version is None:
        return None
    m = re.match(r"(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else None


def check_environment(versions: dict[str, str | None] | None = None,
                      env: dict[str, str] | None = None) -> list[Finding]:
    """Findings for the installed stack (``versions``/``env`` default to this machine's).

    Example:
        >>> bad = check_environment({"tensorflow": "2.21.0", "tf-keras": "2.21.0",
        ...     "tensorflow-text": "2.20.1", "transformers": "5.0.0", "safetensors": "0.8",
        ...     "numpy": "2.4", "keras": None, "ai-edge-litert": None}, env={})
        >>> [f.status for f in bad if f.check == "environment"][0]
        'error'
    """
    v = installed_versions() if versions is None else versions
    env = dict(os.environ) if env is None else env
    tf, tfk, text, hf = (_minor(v.get(n)) for n in ("tensorflow", "tf-keras", "tensorflow-text", "transformers"))
    findings: list[Finding] = []

    def error(package: str, message: str, expected: str, fix: str) -> None:
        findings.append(_error("environment", IncompatibleEnvironmentError(
            message, where=package, expected=expected, actual=v.get(package) or "not installed", fix=fix)))

    if tf is None:
        error("tensorflow", "TensorFlow is not installed", "tensorflow 2.18-2.21",
              'pip install "tensorflow>=2.18,<2.22"')
    else:
        tf_pin = f"{tf[0]}.{tf[1]}.*"
        if tf >= (2, 16):
            if tfk is None:
                error("tf-keras", f"TensorFlow {v['tensorflow']} ships Keras 3, and tfbert's models "
                      "(Hugging Face's TF classes, tfbert.keras_bert) need Keras 2", f"tf-keras {tf_pin}",
                      f'pip install "tf-keras=={tf_pin}"')
            elif tfk != tf:
                error("tf-keras", f"tf-keras must match TensorFlow's minor version ({v['tensorflow']})",
                      f"tf-keras {tf_pin}", f'pip install "tf-keras=={tf_pin}"')
            if env.get("TF_USE_LEGACY_KERAS", "1") in ("0", "false", "False"):
                error("tf-keras", "TF_USE_LEGACY_KERAS is set to 0, which makes TensorFlow use Keras 3",
                      "TF_USE_LEGACY_KERAS unset or 1", "unset TF_USE_LEGACY_KERAS (tfbert sets it to 1)")
        if text is None:
            findings.append(Finding("environment", WARN, "tensorflow-text is not installed: in-graph "
                                    "tokenization (export, predict) is unavailable",
                                    f'pip install "tensorflow-text=={tf_pin}"'))
        elif text != tf:
            error("tensorflow-text", f"tensorflow-text must match TensorFlow's minor version "
                  f"({v['tensorflow']}); its ops fail to load otherwise", f"tensorflow-text {tf_pin}",
                  f'pip install "tensorflow-text=={tf_pin}"')
        if tf < (2, 18):
            # Measured by scripts/version_matrix.py (docs/version_matrix.md) on TensorFlow 2.16.2.
            error("tensorflow", f"TensorFlow {v['tensorflow']} is below tfbert's floor: its TFLite converter "
                  "quantizes dense weights per tensor, so export --quantize's int8 falls below the accuracy gate "
                  "(MiniLM cosine 0.9645), and tensorflow-text's TFLite kernels of this version crash "
                  "ai-edge-litert (raw-text .tflite)", "tensorflow 2.18-2.21",
                  'pip install "tensorflow==2.21.*" "tf-keras==2.21.*" "tensorflow-text==2.21.*" (2.18 or newer)')
        elif tf == (2, 18):
            # Measured by scripts/version_matrix.py (docs/version_matrix.md) on TensorFlow 2.18.1: the core
            # tests pass (raw-text .tflite included), so it is supported; only the int8 artifact costs more.
            # Info, not a warning: the doctor of every healthy checkpoint on the floor would exit 1.
            findings.append(Finding(
                "environment", INFO, f"TensorFlow {v['tensorflow']}: export --quantize's int8 .tflite passes the "
                "accuracy gate but is 40 MiB and runs at 0.3x the fp32 model's speed (MiniLM; 22.5 MiB and faster "
                "than fp32 on 2.21)",
                'pip install "tensorflow==2.21.*" "tf-keras==2.21.*" "tensorflow-text==2.21.*", or export '
                "--quantization=dynamic"))
        numpy = _minor(v.get("numpy"))
        if numpy and numpy[0] >= 2 and tf < (2, 18):
            error("numpy", f"TensorFlow {v['tensorflow']} was built against NumPy 1", "numpy<2",
                  'pip install "numpy<2"')
    if hf is None or hf[0] >= 5:
        missing = "transformers is not installed" if hf is None else \
            f"transformers {v['transformers']} has no TensorFlow classes"
        findings.append(Finding("environment", INFO, f"{missing}: models are tfbert's own Keras BERT "
                                "(tfbert.keras_bert: Hugging Face's names, weights and outputs)",
                                'nothing to do; pip install "transformers>=4.44,<5" to use TFBertModel instead'))
    elif hf >= (4, 55):
        findings.append(Finding("environment", INFO, f"transformers {v['transformers']}: its own "
                                "from_pretrained cannot load safetensors into TF models "
                                "('safe_open' object is not iterable); tfbert's loader is not affected",
                                "load through tfbert.load, not TFBertModel.from_pretrained"))
    elif hf < TESTED_TRANSFORMERS[0]:
        findings.append(Finding("environment", WARN, f"transformers {v['transformers']} is older than "
                                "tfbert is tested with", 'pip install "transformers>=4.44,<5"'))
    if v.get("safetensors") is None:
        error("safetensors", "safetensors is not installed", "safetensors", "pip install safetensors")
    if v.get("ai-edge-litert") is None:
        findings.append(Finding("environment", INFO, "ai-edge-litert is not installed: .tflite models "
                                "cannot be run or verified", "pip install ai-edge-litert"))
    if "apache-beam" in v:  # a caller's own version table may leave Beam out
        findings += beam_findings(v)
    if not any(f.status == "error" for f in findings):
        stack = ", ".join(f"{n} {v[n]}" for n in ("tensorflow", "tf-keras", "tensorflow-text", "transformers")
                          if v.get(n))
        model_class = "tfbert's Keras BERT" if hf is None or hf[0] >= 5 else "Hugging Face's TFBertModel"
        findings.insert(0, Finding("environment", OK, f"{stack}; model class: {model_class}"))
    return findings


def check_edge_environment(versions: dict[str, str | None] | None = None) -> list[Finding]:
    """Findings for running a token-input .tflite: LiteRT, NumPy and tokenizers — TensorFlow is not needed
    (docs/mobile.md's LiteRT-only install); a raw-text .tflite's tensorflow-text kernels are the
    artifact check's concern.

    Example:
        >>> [f.status for f in check_edge_environment({"ai-edge-litert": "2.3.0", "numpy": "2.4.6",
        ...                                            "tokenizers": "0.22.1"})]
        ['ok']
    """
    v = installed_versions() if versions is None else versions
    missing = [name for name in ("ai-edge-litert", "numpy", "tokenizers") if v.get(name) is None]
    if missing:
        return [_error("environment", IncompatibleEnvironmentError(
            "a .tflite needs LiteRT, NumPy and tokenizers", where=", ".join(missing), actual="not installed",
            fix=f"pip install {' '.join(missing)}"))]
    return [Finding("environment", OK, f"ai-edge-litert {v['ai-edge-litert']}, numpy {v['numpy']}, tokenizers "
                    f"{v['tokenizers']} (a .tflite needs no TensorFlow)")]


def beam_findings(versions: dict[str, str | None]) -> list[Finding]:
    """The Beam environment of ``python -m tfbert.predict --runner``: Beam's protobuf pin and
    which runners can start here (from package metadata and ``java`` on PATH; nothing imported).

    Example:
        >>> [f.status for f in beam_findings({"apache-beam": "2.77.0", "protobuf": "7.34.0"})]
        ['error']
    """
    import shutil

    beam, protobuf = versions.get("apache-beam"), _minor(versions.get("protobuf"))
    if beam is None:
        return [Finding("beam", INFO, "apache-beam is not installed: python -m tfbert.predict --runner and "
                        "tfbert.beam are unavailable (one process still works)", 'pip install "tfbert[beam]"')]
    if protobuf is not None and protobuf[0] >= 7:
        return [_error("beam", IncompatibleEnvironmentError(
            f"apache-beam {beam} requires protobuf < 7", where="protobuf", expected="protobuf 6.x",
            actual=versions.get("protobuf"), fix='pip install "protobuf<7" (TensorFlow 2.21 accepts 6.31 and later)'))]
    runners = ["DirectRunner (in-process, or --direct_running_mode=multi_processing --direct_num_workers=N)"]
    runners.append("DataflowRunner" if versions.get("google-apitools") else
                   'DataflowRunner needs pip install "apache-beam[gcp]"')
    runners.append("FlinkRunner / SparkRunner (job server: Java found)" if shutil.which("java") else
                   "FlinkRunner / SparkRunner need Java for their job server, or --job_endpoint of a running one")
    return [Finding("beam", OK, f"apache-beam {beam}, protobuf {versions.get('protobuf')} (Beam needs < 7); "
                    + "; ".join(runners))]

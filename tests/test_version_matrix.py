"""scripts/version_matrix.py: the support table in docs/version_matrix.md is rewritten from the stored
results without losing the findings written above it."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "version_matrix.py")


def test_render_rewrites_the_table_from_the_json_and_keeps_the_summary(tmp_path):
    row = {"cell": "tf2.21-hf5-np2", "pins": [], "source": "abc1234",
           "installed": {"tensorflow": "2.21.0", "transformers": "5.24.0"}, "install": "ok",
           "changed_by_tfbert": {}, "tests": "95 passed, 2 skipped", "failed_tests": [], "export": "ok",
           "int8_mib": 22.46, "int8_cosine_mean": 0.99902, "int8_speed_vs_fp32": 3.861, "seconds": 900,
           "log": "log.txt", "machine": "some CPU"}
    out = tmp_path / "version_matrix"
    (tmp_path / "version_matrix.json").write_text(json.dumps({"machine": "some CPU", "rows": [row]}))
    summary = "<!-- summary (kept by scripts/version_matrix.py) -->\nEvery cell passes.\n<!-- /summary -->"
    (tmp_path / "version_matrix.md").write_text(f"# Old\n\n{summary}\n\n| stale | row |\n")

    subprocess.run([sys.executable, SCRIPT, "--render", f"--out={out}"], check=True)

    text = (tmp_path / "version_matrix.md").read_text()
    assert summary in text and "stale" not in text and "on some CPU." in text
    assert ("| tf2.21-hf5-np2 | tensorflow 2.21.0, transformers 5.24.0 | ok | 95 passed, 2 skipped | ok | 22.5 "
            "| 0.9990 | 3.86x | abc1234 |") in text
    # The table comes after the summary, so the findings are read first.
    assert text.index(summary) < text.index("| cell |")


def test_a_refused_install_names_the_held_pin_and_what_tfbert_needs():
    import importlib.util

    spec = importlib.util.spec_from_file_location("version_matrix", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    # pip 23's output on the tf2.16-hf4.57-np1 cell.
    output = ("INFO: pip is looking at multiple versions of tfbert to determine which version is compatible\n"
              "ERROR: Cannot install tfbert==0.1.0 because these package versions have conflicting dependencies.\n\n"
              "The conflict is caused by:\n    tfbert 0.1.0 depends on tensorflow<2.22 and >=2.18\n"
              "    The user requested (constraint) tensorflow==2.16.*\n\nTo fix this you could try to:\n")
    assert module.pip_conflict(output) == ("tfbert 0.1.0 depends on tensorflow<2.22 and >=2.18; "
                                           "The user requested (constraint) tensorflow==2.16.*")
    assert module.pip_conflict("ERROR: No matching distribution found for tensorflow==2.99.*") == ""

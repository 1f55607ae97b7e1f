"""The question/statement task of issue 12: does fine-tuning with a frozen encoder learn on its defaults?

Data: the English dialog lines of the ChatterBot corpus (Gunther Cox, BSD licence), shipped by the pip
package ``chatterbot-corpus`` (``pip install chatterbot-corpus==1.3.3 pyyaml``): every distinct line of
``chatterbot_corpus/data/english/*.yml``, labelled ``question`` when it ends with ``?`` and
``statement`` otherwise; the final ``?`` is removed from the text, and lines with another ``?``
inside are dropped, so only the wording tells. 1,880 lines (27 % questions), shuffled with seed 0:
the first 1,200 train, the next 400 are held out.

Figures, all on the held-out 400:
    majority   always the training set's most frequent label.
    logistic   logistic regression (L2, C=1: scikit-learn's defaults, solved here with Newton's
               method in numpy) on the frozen all-MiniLM-L6-v2 embeddings, computed by Hugging Face's
               TFBertModel and pooled in numpy: the mean over real tokens, L2-normalised (what
               sentence-transformers' encode() returns) and raw.
    tfbert     ``python -m tfbert.finetune --train=... --eval=... --freeze=all_but_head --epochs=3``
               with every other flag on its default, once per ``--seeds``.

Results go to ``<work_dir>/question_task.json`` and a table on stdout.

Usage: python scripts/question_task.py [--work_dir=/tmp/tfbert-question-task] [--seeds=0]
       [--issue_settings]  (also the issue's run: --pooling=pooler, pooler frozen, --learning_rate=5e-5)
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import os
import random
import subprocess
import sys
import time

import numpy as np
from finetune_example import write_csv  # scripts/ is on the path when this runs as a script

TRAIN, HELD_OUT = 1200, 400


def dialog_rows() -> list[tuple[str, str]]:
    """``(text, label)`` for each distinct English ChatterBot line, in file order."""
    try:
        import yaml

        root = importlib.resources.files("chatterbot_corpus") / "data" / "english"
    except ModuleNotFoundError:
        sys.exit("question_task: the data comes from the chatterbot-corpus package — fix: "
                 "pip install chatterbot-corpus==1.3.3 pyyaml")
    rows, seen = [], set()
    for path in sorted((p for p in root.iterdir() if p.name.endswith(".yml")), key=lambda p: p.name):
        for conversation in yaml.safe_load(path.read_text(encoding="utf-8")).get("conversations", []):
            for line in conversation:
                line = " ".join(str(line).split())
                if line in seen:
                    continue
                seen.add(line)
                question = line.endswith("?")
                text = line.rstrip("?").rstrip() if question else line
                if text and "?" not in text:
                    rows.append((text, "question" if question else "statement"))
    return rows


def scores(true: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 over the classes present in ``true``."""
    f1 = []
    for c in np.unique(true):
        tp = np.sum((predicted == c) & (true == c))
        precision, recall = tp / max(np.sum(predicted == c), 1), tp / max(np.sum(true == c), 1)
        f1.append(0.0 if tp == 0 else 2 * precision * recall / (precision + recall))
    return {"accuracy": float(np.mean(predicted == true)), "macro_f1": float(np.mean(f1))}


def embeddings(texts: list[str], model_dir: str) -> np.ndarray:
    """Mean-pooled last hidden states (not normalised) from Hugging Face's TFBertModel."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import transformers

    tokenizer = transformers.BertTokenizer(os.path.join(model_dir, "vocab.txt"), do_lower_case=True)
    model = transformers.TFBertModel.from_pretrained(model_dir)
    out = []
    for start in range(0, len(texts), 64):
        encoded = tokenizer(texts[start:start + 64], padding=True, truncation=True, max_length=128,
                            return_tensors="np")
        hidden = model(**encoded, training=False).last_hidden_state.numpy()
        mask = encoded["attention_mask"][:, :, None].astype(np.float64)
        out.append((hidden * mask).sum(1) / mask.sum(1))
    return np.concatenate(out)


def logistic_regression(x: np.ndarray, y: np.ndarray, c: float = 1.0, steps: int = 50) -> np.ndarray:
    """Weights (bias last) minimising C * sum(log-loss) + |w|^2 / 2 (bias unpenalised), by Newton's method."""
    x = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(x.shape[1])
    penalty = np.eye(x.shape[1])
    penalty[-1, -1] = 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-x @ w))
        gradient = c * x.T @ (p - y) + penalty @ w
        hessian = c * (x * (p * (1 - p))[:, None]).T @ x + penalty
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return w


def run_finetune(train_csv: str, eval_csv: str, output_dir: str, extra: list[str]) -> dict:
    command = [sys.executable, "-m", "tfbert.finetune", f"--train={train_csv}", f"--eval={eval_csv}", *extra,
               "--epochs=3", f"--output_dir={output_dir}", "--overwrite"]
    print("$ " + " ".join(command), flush=True)
    start = time.monotonic()
    code = subprocess.run(command).returncode
    seconds = time.monotonic() - start
    with open(os.path.join(output_dir, "eval_report.json"), encoding="utf-8") as f:
        summary = json.load(f)["summary"]
    with open(os.path.join(output_dir, "config.json"), encoding="utf-8") as f:
        pooling = json.load(f).get("classifier_pooling")
    return {"command": " ".join(command[1:]), "exit_code": code, "seconds": round(seconds, 1),
            "pooling": pooling, "accuracy": summary["accuracy"], "macro_f1": summary["macro_f1"],
            "learned": summary["learned"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work_dir", default="/tmp/tfbert-question-task")
    parser.add_argument("--seeds", default="0", help="comma-separated --seed values for the tfbert runs")
    parser.add_argument("--issue_settings", action="store_true",
                        help="also run the issue's settings (pooler pooling, pooler frozen, learning rate 5e-5)")
    args = parser.parse_args()

    from tfbert.checkpoint import default_model_path

    work = os.path.abspath(args.work_dir)
    os.makedirs(work, exist_ok=True)
    rows = dialog_rows()
    random.Random(0).shuffle(rows)
    train_rows, eval_rows = rows[:TRAIN], rows[TRAIN:TRAIN + HELD_OUT]
    train_csv, eval_csv = os.path.join(work, "train.csv"), os.path.join(work, "eval.csv")
    write_csv(train_csv, train_rows)
    write_csv(eval_csv, eval_rows)
    y_train = np.array([label == "question" for _, label in train_rows], dtype=np.float64)
    y_eval = np.array([label == "question" for _, label in eval_rows], dtype=np.int64)
    results = {"data": {"lines": len(rows), "train": len(train_rows), "eval": len(eval_rows),
                        "eval_questions": int(y_eval.sum()), "source": "chatterbot-corpus 1.3.3, english/*.yml"}}
    majority = int(y_train.mean() > 0.5)
    results["majority"] = scores(y_eval, np.full(len(y_eval), majority))

    model_dir = default_model_path()
    x_train, x_eval = embeddings([t for t, _ in train_rows], model_dir), embeddings([t for t, _ in eval_rows],
                                                                                    model_dir)
    for name, normalise in (("logistic_normalised", True), ("logistic_raw", False)):
        a, b = x_train, x_eval
        if normalise:
            a, b = a / np.linalg.norm(a, axis=1, keepdims=True), b / np.linalg.norm(b, axis=1, keepdims=True)
        w = logistic_regression(a, y_train)
        results[name] = scores(y_eval, (np.hstack([b, np.ones((len(b), 1))]) @ w > 0).astype(np.int64))

    for seed in [int(s) for s in args.seeds.split(",")]:
        results[f"tfbert_seed{seed}"] = run_finetune(train_csv, eval_csv, os.path.join(work, f"ft-seed{seed}"),
                                                     ["--freeze=all_but_head", f"--seed={seed}"])
    if args.issue_settings:
        results["tfbert_issue_settings"] = run_finetune(
            train_csv, eval_csv, os.path.join(work, "ft-issue"),
            ["--freeze=embeddings,encoder,pooler", "--pooling=pooler", "--learning_rate=5e-5", "--allow_no_learning"])
    with open(os.path.join(work, "question_task.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    print(f"\n{'':24} accuracy  macro-F1")
    for name, value in results.items():
        if name != "data":
            print(f"{name:24} {value['accuracy']:.4f}    {value['macro_f1']:.4f}")
    print(f"written {os.path.join(work, 'question_task.json')}")


if __name__ == "__main__":
    main()

"""Extractive question answering on real text with the embedded all-MiniLM-L6-v2 (issue 12, part 3).

Data: tfbert's built-in real English sentences (tfbert/data/sentences.txt), split by sentence: the
first 75 % give the training contexts, the rest the eval contexts. A context is 2 or 3 consecutive
sentences, or 10 (longer than a 128-token window: several windows with doc_stride); each question
is ``Which word follows "X"?`` for a word X that occurs once in the context, answered by the word
after it (SQuAD-style ``answers`` with its character offset). One question in six asks about a
word the context does not contain: unanswerable (empty answers, SQuAD 2.0).

Steps, each the CLI a user runs, on their defaults unless stated:
    finetune  python -m tfbert.finetune --task=question_answering --train --eval --output_dir
    export    python -m tfbert.export --task=question_answering --model=<ft> --quantize  (int8)
    predict   python -m tfbert.predict --task=question_answering on the SavedModel and on the int8 .tflite
    doctor    python -m tfbert.doctor --task=question_answering on the checkpoint and each artifact
    long      one question over a 100,000-character context, predicted with each artifact (seconds,
              peak RSS of the predict process)

Reported: SQuAD exact match and F1 of each artifact on the eval questions and on every question
over the held-out contexts (each word that occurs once, one in six swapped for an unanswerable
question), and the share of int8 answers identical to the SavedModel's (float32) on both. Results
go to ``<work_dir>/qa_task.json``.

Usage: python scripts/qa_task.py [--work_dir=/tmp/tfbert-qa-task] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time

from tfbert.report import write_json
from tfbert.samples import read_texts
from tfbert.tasks.question_answering import squad_scores

WORD = re.compile(r"[A-Za-z]+")


def questions_for(context: str, others: list[str], rng: random.Random, per_context: int) -> list[dict]:
    """'Which word follows X?' records over ``context``; ``others``: words for unanswerable questions."""
    words = [(m.group(), m.start()) for m in WORD.finditer(context)]
    counts: dict[str, int] = {}
    for word, _ in words:
        counts[word.lower()] = counts.get(word.lower(), 0) + 1
    candidates = [i for i in range(len(words) - 1) if counts[words[i][0].lower()] == 1]
    rng.shuffle(candidates)
    records = []
    for i in candidates[:per_context]:
        if rng.random() < 1 / 6:
            missing = [w for w in others if w.lower() not in counts]
            records.append({"question": f'Which word follows "{rng.choice(missing)}"?', "context": context,
                            "answers": {"text": [], "answer_start": []}})
            continue
        follower, start = words[i + 1]
        records.append({"question": f'Which word follows "{words[i][0]}"?', "context": context,
                        "answers": {"text": [follower], "answer_start": [start]}})
    return records


def build_data(sentences: list[str], seed: int = 0) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    cut = int(len(sentences) * 0.75)
    vocabulary = sorted({w for s in sentences for w in WORD.findall(s) if len(w) > 3})

    def records(part: list[str], per_context: int) -> list[dict]:
        out = []
        for i in range(len(part)):
            for size in (2, 3, 10):
                if i + size <= len(part) and (size != 10 or i % 5 == 0):
                    out += questions_for(" ".join(part[i:i + size]), vocabulary, rng, per_context)
        return out

    return records(sentences[:cut], 6), records(sentences[cut:], 2)


def every_question(sentences: list[str], seed: int = 2) -> list[dict]:
    """Every "Which word follows X?" question over the held-out contexts of :func:`build_data` (one in
    six of them unanswerable): the population the int8 vs float32 agreement is measured on."""
    rng = random.Random(seed)
    cut = int(len(sentences) * 0.75)
    vocabulary = sorted({w for s in sentences for w in WORD.findall(s) if len(w) > 3})
    part, out = sentences[cut:], []
    for i in range(len(part)):
        for size in (2, 3, 10):
            if i + size <= len(part) and (size != 10 or i % 5 == 0):
                out += questions_for(" ".join(part[i:i + size]), vocabulary, rng, 10_000)
    return out


def run(*args: str) -> tuple[subprocess.CompletedProcess, float, int]:
    """The command, its wall seconds and its peak RSS in MiB (measured in a wrapper process of its own)."""
    wrapper = ("import resource, subprocess, sys, json, time; t = time.perf_counter(); "
               "p = subprocess.run(sys.argv[1:]); "
               "print(json.dumps([p.returncode, time.perf_counter() - t, "
               "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))")
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", wrapper, sys.executable, *args], capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    returncode, seconds, rss = json.loads(lines[-1]) if lines else (proc.returncode, time.perf_counter() - started, 0)
    proc = subprocess.CompletedProcess(proc.args, returncode, "\n".join(lines[:-1]), proc.stderr)
    if returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        sys.exit(f"qa_task: {' '.join(args[:3])} failed (exit {returncode})")
    return proc, seconds, rss // 1024


def write_jsonl(path: str, rows: list[dict]) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--work_dir", default="/tmp/tfbert-qa-task")
    parser.add_argument("--keep", action="store_true", help="keep the work directory's models")
    args = parser.parse_args()
    work = args.work_dir
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    train, held_out = build_data(read_texts())
    train_file, eval_file = write_jsonl(f"{work}/train.jsonl", train), write_jsonl(f"{work}/eval.jsonl", held_out)
    population = every_question(read_texts())
    questions = write_jsonl(f"{work}/questions.jsonl", [{"question": r["question"], "context": r["context"]}
                                                         for r in held_out + population])
    long_context = " ".join(read_texts())
    long_context = (long_context + " ") * (100_000 // len(long_context) + 1)
    long_context = long_context[:100_000]
    long_file = write_jsonl(f"{work}/long.jsonl", [{"question": 'Which word follows "platform"?',
                                                    "context": long_context}])
    result: dict = {"data": {"train_questions": len(train), "eval_questions": len(held_out),
                             "eval_unanswerable": sum(not r["answers"]["text"] for r in held_out),
                             "every_question": len(population),
                             "every_question_unanswerable": sum(not r["answers"]["text"] for r in population)},
                    "machine": subprocess.run(["sh", "-c", "lscpu | grep 'Model name'"], capture_output=True,
                                              text=True).stdout.strip()}
    print(f"{len(train)} training and {len(held_out)} eval questions", file=sys.stderr)

    ft = f"{work}/ft"
    proc, seconds, _ = run("-m", "tfbert.finetune", "--task=question_answering", f"--train={train_file}",
                           f"--eval={eval_file}", f"--output_dir={ft}")
    with open(f"{ft}/eval_report.json", encoding="utf-8") as f:
        result["finetune"] = {"seconds": seconds, "eval_report": json.load(f)}
    proc, seconds, _ = run("-m", "tfbert.export", "--task=question_answering", f"--model={ft}",
                           f"--output_dir={work}/exported", "--name=qa", "--quantize")
    result["export"] = {"seconds": seconds, "stdout": proc.stdout.splitlines()}
    artifacts = {"savedmodel": f"{work}/exported/qa/1", "int8": f"{work}/exported/qa-tflite/1/model_int8.tflite"}
    answers = {}
    for kind, model in artifacts.items():
        out = f"{work}/{kind}.jsonl"
        _, seconds, rss = run("-m", "tfbert.predict", "--task=question_answering", f"--model={model}",
                              f"--input={questions}", f"--output={out}")
        answers[kind] = read_jsonl(out)
        scores = [squad_scores(a["answer"], r["answers"]["text"])
                  for a, r in zip(answers[kind], held_out + population, strict=True)]
        every = scores[len(held_out):]
        scores = scores[:len(held_out)]
        long_out = f"{work}/{kind}-long.jsonl"
        _, long_seconds, long_rss = run("-m", "tfbert.predict", "--task=question_answering", f"--model={model}",
                                        f"--input={long_file}", f"--output={long_out}")
        long_answer = read_jsonl(long_out)[0]
        doctor, _, _ = run("-m", "tfbert.doctor", f"--model={model}", "--task=question_answering")
        result[kind] = {"exact_match": sum(s[0] for s in scores) / len(scores),
                        "f1": sum(s[1] for s in scores) / len(scores),
                        "every_question": {"exact_match": sum(s[0] for s in every) / len(every),
                                           "f1": sum(s[1] for s in every) / len(every)},
                        "predict_seconds": seconds,
                        "predict_peak_rss_mib": rss,
                        "long_context": {"characters": len(long_context), "seconds": long_seconds,
                                         "peak_rss_mib": long_rss, "answer": long_answer,
                                         "answer_in_context": long_context[long_answer["start"]:long_answer["end"]]
                                         == long_answer["answer"]},
                        "doctor": doctor.stdout.strip().splitlines()[-1]}
    doctor, _, _ = run("-m", "tfbert.doctor", f"--model={ft}", "--task=question_answering")
    result["doctor_checkpoint"] = doctor.stdout.strip().splitlines()[-1]
    same = [a["answer"] == b["answer"] for a, b in zip(answers["savedmodel"], answers["int8"], strict=True)]
    result["int8_vs_fp32_answer_agreement"] = sum(same[:len(held_out)]) / len(held_out)
    result["int8_vs_fp32_answer_agreement_every_question"] = sum(same[len(held_out):]) / len(population)
    result["int8_vs_fp32_differences_every_question"] = [
        {"question": r["question"], "fp32": a, "int8": b}
        for r, a, b, equal in zip(population, answers["savedmodel"][len(held_out):], answers["int8"][len(held_out):],
                                  same[len(held_out):], strict=True) if not equal]
    print(write_json(result, f"{work}/qa_task.json"))
    if not args.keep:
        for path in (ft, f"{work}/exported"):
            shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()

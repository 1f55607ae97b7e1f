"""A tagging task on real English text, end to end on the CLIs: finetune → export --quantize → predict → doctor.

Data: the English dialog lines of the ChatterBot corpus (as scripts/question_task.py reads them:
``pip install chatterbot-corpus==1.3.3 pyyaml``) plus tfbert's built-in sample sentences. Each
line is split into words as BERT's pre-tokenizer splits it; a word is tagged

    NUM   digits ("42") or an English number word ("seven", "hundred"),
    NAME  a capitalised word that does not start the line or a sentence in it, other than "I"
          ("Boston", "Python", "Monday"),

adjacent words of one type form one entity (IOB2: "New York" is B-NAME I-NAME), written as
JSONL character spans. all-MiniLM-L6-v2 is uncased, so capitalisation is invisible to it: it must
learn which words are names. Lines are shuffled with seed 0; 1,500 train, the rest are held out.

Steps, every one a ``python -m tfbert.*`` command with default flags:
    finetune --task=token_classify                 (entity F1 and token accuracy: its eval report)
    export --task=token_classify --quantize        (SavedModel + int8 .tflite)
    predict --task=token_classify, SavedModel and int8 .tflite on the held-out texts
                                                   (entity F1 of each against the true spans, exact
                                                   start, end and label; texts whose entities agree)
    doctor on the checkpoint, the SavedModel and the .tflite
Then int8 vs fp32 per-token label agreement on the held-out texts: the int8 .tflite's logits
against the SavedModel's ``tokenized`` signature (float32), every real token; and the share of
texts whose entities (start, end, label) are the same from both predict runs.

Results go to ``<work_dir>/token_task.json``.

Usage: python scripts/token_task.py [--work_dir=/tmp/tfbert-token-task]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time

from question_task import dialog_rows  # scripts/ is on the path when this runs as a script

TRAIN = 1500
NUMBER_WORDS = set("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
                   "sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred "
                   "thousand million billion".split())


def tagged(text: str) -> dict:
    """``{"text", "spans"}`` for one line (see the module docstring)."""
    from tokenizers.pre_tokenizers import BertPreTokenizer

    words = BertPreTokenizer().pre_tokenize_str(text)
    spans: list[dict] = []
    previous = None
    for i, (word, (start, end)) in enumerate(words):
        initial = i == 0 or words[i - 1][0] in (".", "!", "?")
        kind = ("NUM" if word.isdigit() or word.lower() in NUMBER_WORDS
                else "NAME" if word[:1].isupper() and not initial and word != "I" else None)
        if kind and kind == previous and text[spans[-1]["end"]:start].strip() == "":
            spans[-1]["end"] = end
        elif kind:
            spans.append({"start": start, "end": end, "label": kind})
        previous = kind
    return {"text": text, "spans": spans}


def write_jsonl(path: str, records: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def run(*args: str) -> float:
    """Run ``python -m tfbert.<args>``; its seconds. Exits on failure."""
    start = time.monotonic()
    code = subprocess.run([sys.executable, "-m", *args]).returncode
    if code != 0:
        sys.exit(f"token_task: {' '.join(args[:2])} exited {code}")
    return time.monotonic() - start


def span_scores(true: list[dict], predicted_file: str) -> dict:
    """Entity precision / recall / F1 of a predict output against the true spans (exact start, end, label)."""
    with open(predicted_file, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    gold = {(i, s["start"], s["end"], s["label"]) for i, r in enumerate(true) for s in r["spans"]}
    got = {(r["index"], e["start"], e["end"], e["label"]) for r in rows for e in r["entities"]}
    precision = len(gold & got) / max(len(got), 1)
    recall = len(gold & got) / max(len(gold), 1)
    return {"precision": precision, "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "true_entities": len(gold), "predicted_entities": len(got)}


def label_agreement(saved_model: str, tflite: str, texts: list[str]) -> dict:
    """int8 .tflite vs the SavedModel's float32 ``tokenized`` signature: per-token argmax agreement."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401

    from tfbert.edge_tokenizer import EdgeTokenizer
    from tfbert.litert import LiteRTRunner

    signature = tf.saved_model.load(saved_model).signatures["tokenized"]
    runner = LiteRTRunner(tflite)
    tokenizer = EdgeTokenizer.from_files(os.path.join(os.path.dirname(tflite), "vocab.txt"),
                                         os.path.join(os.path.dirname(tflite), "tokenizer_config.json"))
    same = total = 0
    for i in range(0, len(texts), 32):
        ids = tokenizer.tokenize_numpy(texts[i:i + 32], 128)
        fp32 = signature(**{k: tf.constant(v) for k, v in ids.items()})["logits"].numpy().argmax(-1)
        int8 = runner({"input_ids": ids["input_ids"], "attention_mask": ids["attention_mask"]})["logits"].argmax(-1)
        real = ids["attention_mask"] > 0
        same += int((fp32 == int8)[real].sum())
        total += int(real.sum())
    return {"tokens": total, "agreement": same / total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work_dir", default="/tmp/tfbert-token-task")
    args = parser.parse_args()
    from tfbert.report import write_json
    from tfbert.samples import read_texts

    os.makedirs(args.work_dir, exist_ok=True)
    lines = list(dict.fromkeys([text.strip() for text, _ in dialog_rows()] + read_texts()))
    random.Random(0).shuffle(lines)
    records = [tagged(line) for line in lines if line]
    train, held_out = records[:TRAIN], records[TRAIN:]
    paths = {name: os.path.join(args.work_dir, f"{name}.jsonl") for name in ("train", "eval")}
    write_jsonl(paths["train"], train)
    write_jsonl(paths["eval"], held_out)
    with open(os.path.join(args.work_dir, "eval.txt"), "w", encoding="utf-8") as f:
        f.write("".join(r["text"] + "\n" for r in held_out))
    ckpt, exported = os.path.join(args.work_dir, "ner"), os.path.join(args.work_dir, "exported")
    seconds = {"finetune": run("tfbert.finetune", "--task=token_classify", f"--train={paths['train']}",
                               f"--eval={paths['eval']}", f"--output_dir={ckpt}", "--overwrite")}
    with open(os.path.join(ckpt, "eval_report.json"), encoding="utf-8") as f:
        report = json.load(f)
    seconds["export"] = run("tfbert.export", "--task=token_classify", f"--model={ckpt}", f"--output_dir={exported}",
                            "--quantize", "--overwrite", "--version=1")
    saved_model, tflite = os.path.join(exported, "ner", "1"), os.path.join(exported, "ner-tflite", "1",
                                                                           "model_int8.tflite")
    predicted, doctor = {}, {}
    for name, model in (("savedmodel", saved_model), ("int8_tflite", tflite)):
        out = os.path.join(args.work_dir, f"predict_{name}.jsonl")
        seconds[f"predict_{name}"] = run("tfbert.predict", "--task=token_classify", f"--model={model}",
                                         f"--input={os.path.join(args.work_dir, 'eval.txt')}", f"--output={out}")
        predicted[name] = span_scores(held_out, out)
    rows = {}
    for name in predicted:
        with open(os.path.join(args.work_dir, f"predict_{name}.jsonl"), encoding="utf-8") as f:
            rows[name] = [{(e["start"], e["end"], e["label"]) for e in json.loads(line)["entities"]} for line in f]
    same_texts = sum(a == b for a, b in zip(rows["savedmodel"], rows["int8_tflite"], strict=True))
    fp32_entities = sum(map(len, rows["savedmodel"]))
    same_entities = sum(len(a & b) for a, b in zip(rows["savedmodel"], rows["int8_tflite"], strict=True))
    for name, model in (("checkpoint", ckpt), ("savedmodel", saved_model), ("int8_tflite", tflite)):
        doctor[name] = subprocess.run([sys.executable, "-m", "tfbert.doctor", f"--model={model}",
                                       "--task=token_classify"], capture_output=True).returncode
    with open(os.path.join(exported, "ner-tflite", "1", "report.json"), encoding="utf-8") as f:
        export_report = json.load(f)
    result = {
        "data": {"train_sentences": len(train), "eval_sentences": len(held_out),
                 "train_entities": sum(len(r["spans"]) for r in train),
                 "eval_entities": sum(len(r["spans"]) for r in held_out)},
        "finetune_eval": report["summary"],
        "predict_entity_scores": predicted,
        "int8_vs_fp32": dict(label_agreement(saved_model, tflite, [r["text"] for r in held_out]),
                             texts_with_identical_entities=same_texts / len(held_out),
                             fp32_entities_int8_also_finds=same_entities / max(fp32_entities, 1),
                             export_gate=export_report["summary"].get("argmax_agreement")),
        "doctor_exit_codes": doctor,
        "seconds": seconds,
        "machine": subprocess.run(["sh", "-c", "lscpu | grep 'Model name'"], capture_output=True,
                                  text=True).stdout.strip(),
    }
    print(write_json(result, os.path.join(args.work_dir, "token_task.json")))


if __name__ == "__main__":
    main()

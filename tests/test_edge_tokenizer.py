"""The TensorFlow-free tokenizer gives the ids of tfbert's in-graph tokenizer and of Hugging Face.

The cases are tests/test_tokenizer.py's (which also runs its special-token, long-word and
tokenizer_config cases on this tokenizer); the expected ids come from Hugging Face's
BertTokenizerFast (from the checkpoint's tokenizer.json) and from tfbert's tensorflow-text
tokenizer, never from the tokenizer under test.
"""

import json
import logging
import os
import shutil

import numpy as np
import pytest

from tests import test_tokenizer, tiny
from tests.test_tokenizer import assert_same_ids, single_texts, varied_sentences

# test_tokenizer.py's fixtures: the MiniLM checkpoint's files, Hugging Face's tokenizer of it
# (from its tokenizer.json), and tfbert's tensorflow-text tokenizer ("ours" there).
files, hf, ours = test_tokenizer.files, test_tokenizer.hf, test_tokenizer.ours


@pytest.fixture(scope="module")
def edge(files):
    from tfbert.edge_tokenizer import EdgeTokenizer

    return EdgeTokenizer.from_files(files.vocab, files.tokenizer_config)


@pytest.mark.parametrize("max_length", [512, 128, 16, 5, 2])
def test_single_texts_match_hugging_face_and_the_ours(edge, hf, ours, max_length):
    texts = single_texts()
    got = edge.tokenize_numpy(texts, max_length)
    assert_same_ids(got, hf(texts, padding="longest", truncation=True, max_length=max_length, return_tensors="np"),
                    texts)
    assert_same_ids(got, ours.tokenize_numpy(texts, max_length), texts)


@pytest.mark.parametrize("max_length", [512, 16, 9, 4, 3])
def test_pairs_match_longest_first_truncation(edge, hf, ours, max_length):
    varied = varied_sentences(300, seed=1)
    a = [*varied[:150], "one two", "", "short", "", "a much longer first text " * 6]
    b = [*varied[150:], "three four", "", "a much longer second text " * 6, "x", "short"]
    got = edge.tokenize_numpy(a, max_length, text_pairs=b)
    want = hf(a, b, padding="longest", truncation="longest_first", max_length=max_length, return_tensors="np")
    assert_same_ids(got, want, a, b)
    assert_same_ids(got, ours.tokenize_numpy(a, max_length, text_pairs=b), a, b)


def test_code_points_between_letters_match_hugging_face(edge, hf):
    # Every code point of planes 0 and 1 (every script and symbol block), every 16th above
    # (CJK extensions, tags, private use): the whole range costs ~10 s for the same verdict.
    code_points = [c for c in range(0x20000) if not 0xD800 <= c <= 0xDFFF] + list(range(0x20000, 0x110000, 16))
    per_text = 64
    texts = [" ".join(f"a{chr(c)}b" for c in code_points[i:i + per_text])
             for i in range(0, len(code_points), per_text)]
    want = hf(texts, add_special_tokens=False)["input_ids"]
    got = edge.tokenize_numpy(texts, 100_000)
    lengths = got["attention_mask"].sum(1)
    bad = [i for i, ids in enumerate(want) if got["input_ids"][i, 1:lengths[i] - 1].tolist() != ids]
    assert not bad, f"{len(bad)} chunks of code points differ, first starting at {hex(code_points[bad[0] * per_text])}"


def test_the_documented_ours_difference_follows_hugging_face(tmp_path):
    """With a vocabulary holding U+2E5D (punctuation to ICU only) the graph tokenizer splits the
    word and Hugging Face does not (tfbert/tokenizer.py); the edge tokenizer is Hugging Face's."""

    from tfbert.edge_tokenizer import EdgeTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "##b", "\u2e5d", "##\u2e5d"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    got = EdgeTokenizer.from_files(str(tmp_path / "vocab.txt")).tokenize_numpy(["a\u2e5db"], 16)["input_ids"][0]
    assert got.tolist() == tiny.hf_tokenizer(str(tmp_path / "vocab.txt"))("a\u2e5db")["input_ids"]
    assert [vocab[i] for i in got[1:-1]] == ["a", "##\u2e5d", "##b"]


def _checkpoint_copy(files, directory) -> dict:
    """vocab.txt and tokenizer_config.json copied to ``directory``; the checkpoint's tokenizer.json, parsed."""
    for path in (files.vocab, files.tokenizer_config):
        shutil.copy(path, directory)
    with open(os.path.join(os.path.dirname(files.vocab), "tokenizer.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.parametrize("damage, named", [
    (lambda t: t["model"]["vocab"].update({"cat": t["model"]["vocab"]["dog"], "dog": t["model"]["vocab"]["cat"]}),
     "id 3899: vocab.txt has 'dog', tokenizer.json 'cat'"),
    (lambda t: t["normalizer"].update({"lowercase": False}), "lower-casing"),
    (lambda t: t["added_tokens"].append({"id": 30522, "content": "<new>", "special": False}), "id 30522"),
], ids=["swapped_ids", "casing", "added_token"])
def test_a_tokenizer_json_that_disagrees_is_named_in_one_warning_and_vocab_txt_wins(files, edge, tmp_path, caplog,
                                                                                    damage, named):
    from tfbert.edge_tokenizer import EdgeTokenizer

    data = _checkpoint_copy(files, tmp_path)
    damage(data)
    (tmp_path / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="tfbert"):
        tok = EdgeTokenizer.from_files(str(tmp_path / "vocab.txt"), str(tmp_path / "tokenizer_config.json"),
                                       str(tmp_path / "tokenizer.json"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings
    assert named in warnings[0] and "tokenizer.json" in warnings[0] and "fix:" in warnings[0]
    texts = ["the cat and the dog", "Café [MASK]"]
    np.testing.assert_array_equal(tok.tokenize_numpy(texts, 16)["input_ids"],
                                  edge.tokenize_numpy(texts, 16)["input_ids"])


def test_the_checkpoints_own_tokenizer_json_agrees(files, tmp_path, caplog):
    from tfbert.edge_tokenizer import EdgeTokenizer, sibling_tokenizer_json

    with caplog.at_level(logging.WARNING, logger="tfbert"):
        EdgeTokenizer.from_files(files.vocab, files.tokenizer_config, sibling_tokenizer_json(files.vocab))
    assert sibling_tokenizer_json(files.vocab) and not caplog.records


def test_bad_files_and_arguments_are_refused(tmp_path):
    from tfbert.edge_tokenizer import EdgeTokenizer
    from tfbert.errors import BadInputError, ConfigMismatchError

    with pytest.raises(BadInputError, match=r"vocab\.txt does not exist"):
        EdgeTokenizer.from_files(str(tmp_path / "missing.txt"))
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n[UNK]\nhello\n")
    with pytest.raises(ConfigMismatchError, match=r"\[CLS\]"):
        EdgeTokenizer.from_files(str(vocab))
    vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n")
    tok = EdgeTokenizer.from_files(str(vocab))
    with pytest.raises(BadInputError, match="max_length"):
        tok.tokenize_numpy(["a"], 1)
    with pytest.raises(BadInputError, match="max_length"):
        tok.tokenize_numpy(["a"], 2, text_pairs=["b"])
    with pytest.raises(BadInputError, match="differ in length"):
        tok.tokenize_numpy(["a", "b"], 8, text_pairs=["c"])
    assert tok.tokenize_numpy([], 8)["input_ids"].shape == (0, 0)

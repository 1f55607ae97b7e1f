"""tfbert's in-graph tokenizer gives exactly the ids of Hugging Face's BertTokenizerFast.

Every expected id comes from Hugging Face (the independent reference), never from tfbert.
"""

import json
import random
import shutil

import numpy as np
import pytest

from tests import tiny
from tfbert.samples import read_texts

KEYS = ("input_ids", "attention_mask", "token_type_ids")

HARD = [
    # accents
    "café", "naïve", "Ångström", "Straße", "ẞ İstanbul ǅ ﬁ ﬃ", "e\u0301 a\u0300\u0301b \u0301",
    # CJK
    "中文字符", "日本語のテキスト", "한국어", "中文字符 日本語 한국어 mixed中文text",
    # emoji
    "😀👍🏽", "family 👨‍👩‍👧 flags 🇫🇷 ok",
    # punctuation and symbols
    "hello,world!!", "$100.00", "e-mail", "«quotes»", "a—b", "C++ #hashtag @mention ¿Qué? ¡Hola!",
    "https://example.com/a?b=c&d=e user@example.org", "☃☃☃ ⁂ ™ © ½ x² ①② Ⅻ … ’ “ ”",
    # control characters and whitespace
    "\t", "\u200b", "\xa0", "a\tb\u200bc\xa0d\ne\r\nf", "\x00\x01\x7f\x85\ufeff\ufffd", "\ue000 \U0010fffd \U000e0001",
    # empty and blank
    "", " ", "   ", "\n\t \xa0 ",
    # case
    "MiXeD CaSe", "HELLO World", "Ｆｕｌｌｗｉｄｔｈ",
    # long text and long words
    "word " * 200, "The quick brown fox jumps over the lazy dog. " * 20, "x" * 100, "x" * 101, "é" * 60,
    "ü" * 120, "supercalifragilisticexpialidocious" * 4,
    # repeated unknown characters
    "☃" * 50, "\U0001f9ff" * 10 + " ok", "𝅥𝅭 ᠎ \u2e5d\u2e5d \u166d",
    # numbers
    "12,345.67", "3rd 1st 2nd", "1/2 3.14159 -42 1e10 0x1F", "٣٤٥ ४५६",
    # other scripts
    "Ωμέγα ΑΒΓ", "Привет, мир", "مرحبا بالعالم", "שלום", "नमस्ते दुनिया", "สวัสดีครับ",
]
SPECIAL_CASES = [
    "Paris is the [MASK] of France.", "[MASK]", "[mask]", "x[MASK]y", "[MASK][MASK]", "[[MASK]]", "[ MASK ]",
    "[MA\u200bSK]", "[MASK]\u0301", "[MASK]\U000e0001", "\u200b[MASK]", "[MÁSK]", "[CLS] a [SEP] b [PAD] [UNK]",
    "[CLS][SEP][PAD][UNK][MASK]", "[MASKS]", "[MAS]", "[Mask]", "MASK", "[", "]", "[]", "[[", "text ]",
]
FRAGMENTS = [
    "the", "Cat", "sat", "on", "mat", "café", "naïve", "Ångström", "Straße", "中文", "日本語", "한국어", "😀", "👍🏽",
    "hello,world!!", "$100.00", "e-mail", "«quotes»", "a—b", "\t", "\u200b", "\xa0", "", "MiXeD", "12,345",
    "[MASK]", "[mask]", "[CLS]", "[MA\u200bSK]", "x" * 101, "é" * 40, "Ωμέγα", "Привет", "مرحبا", "नमस्ते",
    "™", "…", "’", "ﬁ", "İ", "\u0301", "\x00", "\U0010fffd", "☃", "\u2e5d", "\u166d", "don't", "U.S.A.", "3.14", "#1",
]


def varied_sentences(n: int = 400, seed: int = 0) -> list[str]:
    """Sentences mixing words, scripts, symbols, specials and odd whitespace."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(FRAGMENTS) for _ in range(rng.randint(0, 30))]
        out.append("".join(w + rng.choice([" ", " ", "", "  ", "\t", "\n"]) for w in words))
    return out


@pytest.fixture(scope="module")
def files(minilm_path):
    from tfbert.checkpoint import find_checkpoint

    return find_checkpoint(minilm_path)


@pytest.fixture(scope="module")
def hf(minilm_path):
    from transformers import BertTokenizerFast

    return BertTokenizerFast.from_pretrained(minilm_path)


@pytest.fixture(scope="module")
def ours(files):
    from tfbert.tokenizer import BertTokenizer

    return BertTokenizer.from_files(files.vocab, files.tokenizer_config)


def assert_same_ids(got: dict, want: dict, texts: list, pairs: list | None = None) -> None:
    """Equal arrays, or a message naming the first text whose tokens differ."""
    for key in KEYS:
        assert got[key].shape == want[key].shape, (key, got[key].shape, want[key].shape)
        rows = np.flatnonzero((got[key] != want[key]).any(1))
        if len(rows):
            row = rows[0]
            pair = f" + {pairs[row]!r}" if pairs else ""
            pytest.fail(f"{key} differs on {len(rows)} rows, first {texts[row]!r}{pair}: "
                        f"tfbert {got[key][row].tolist()} vs Hugging Face {want[key][row].tolist()}")


def single_texts() -> list[str]:
    return HARD + SPECIAL_CASES + read_texts() + varied_sentences()


@pytest.mark.parametrize("max_length", [512, 128, 16, 5, 2])
def test_single_texts_match_hugging_face(ours, hf, max_length):
    texts = single_texts()
    want = hf(texts, padding="longest", truncation=True, max_length=max_length, return_tensors="np")
    assert_same_ids(ours.tokenize_numpy(texts, max_length), want, texts)


@pytest.mark.parametrize("max_length", [512, 64, 16, 9, 5, 4, 3])
def test_pairs_match_hugging_face_longest_first(ours, hf, max_length):
    varied = varied_sentences(300, seed=1)
    # Equal lengths (ties), empty sides, and one side much longer than the other.
    a = [*varied[:150], "one two", "", "short", "", "a much longer first text " * 6]
    b = [*varied[150:], "three four", "", "a much longer second text " * 6, "x", "short"]
    want = hf(a, b, padding="longest", truncation="longest_first", max_length=max_length, return_tensors="np")
    assert_same_ids(ours.tokenize_numpy(a, max_length, text_pairs=b), want, a, b)


def test_every_code_point_between_letters_matches_hugging_face(ours, hf):
    code_points = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    per_text = 64
    texts = [" ".join(f"a{chr(c)}b" for c in code_points[i:i + per_text])
             for i in range(0, len(code_points), per_text)]
    want = hf(texts, add_special_tokens=False)["input_ids"]
    got = ours.tokenize_numpy(texts, 100_000)
    lengths = got["attention_mask"].sum(1)
    for i, ids in enumerate(want):
        if got["input_ids"][i, 1:lengths[i] - 1].tolist() != ids:
            chunk = code_points[i * per_text:(i + 1) * per_text]
            bad = [c for c in chunk if ours.tokenize_numpy([f"a{chr(c)}b"], 16)["input_ids"][0, 1:-1].tolist()
                   != hf(f"a{chr(c)}b", add_special_tokens=False)["input_ids"]]
            pytest.fail(f"code points {[hex(c) for c in bad]} tokenize differently from Hugging Face")


def _tokenizer_class(kind: str):
    """tfbert's tensorflow-text tokenizer, or its TensorFlow-free twin for edge boxes."""
    if kind == "edge":
        from tfbert.edge_tokenizer import EdgeTokenizer

        return EdgeTokenizer
    from tfbert.tokenizer import BertTokenizer

    return BertTokenizer


@pytest.fixture(scope="module", params=["tensorflow-text", "edge"])
def any_tokenizer(request, files):
    return _tokenizer_class(request.param).from_files(files.vocab, files.tokenizer_config)


def test_special_tokens_written_in_text(any_tokenizer, hf):
    got = any_tokenizer.tokenize_numpy(SPECIAL_CASES, 32)
    assert_same_ids(got, hf(SPECIAL_CASES, padding="longest", return_tensors="np"), SPECIAL_CASES)
    assert any_tokenizer.mask_id in got["input_ids"][0]
    assert any_tokenizer.mask_id not in got["input_ids"][SPECIAL_CASES.index("[MA\u200bSK]")]


def test_words_over_100_characters_are_unknown(any_tokenizer, hf):
    texts = ["x" * 100, "x" * 101, "é" * 100, "é" * 101, "日本" + "x" * 101, "a" * 400, "a" * 401]
    got = any_tokenizer.tokenize_numpy(texts, 512)
    assert_same_ids(got, hf(texts, padding="longest", return_tensors="np"), texts)
    assert got["input_ids"][1].tolist()[:3] == [any_tokenizer.cls_id, any_tokenizer.unk_id, any_tokenizer.sep_id]


@pytest.mark.parametrize("settings", [
    {"do_lower_case": False},
    {"do_lower_case": True, "strip_accents": False},
    {"do_lower_case": False, "strip_accents": True},
], ids=["cased", "lower_keep_accents", "cased_strip_accents"])
@pytest.mark.parametrize("kind", ["tensorflow-text", "edge"])
def test_tokenizer_config_settings_match_hugging_face(files, tmp_path, settings, kind):
    from transformers import BertTokenizerFast

    shutil.copy(files.vocab, tmp_path / "vocab.txt")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer", **settings}))
    hf = BertTokenizerFast.from_pretrained(str(tmp_path))
    ours = _tokenizer_class(kind).from_files(str(tmp_path / "vocab.txt"), str(tmp_path / "tokenizer_config.json"))
    texts = HARD + SPECIAL_CASES + varied_sentences(200, seed=2)
    want = hf(texts, padding="longest", truncation=True, max_length=128, return_tensors="np")
    assert_same_ids(ours.tokenize_numpy(texts, 128), want, texts)
    if kind == "tensorflow-text":
        assert ours.unmatched_chars == frozenset()


def _stock_wordpiece(vocab: list[str], text: str) -> list[str]:
    """tensorflow-text's stock FastWordpieceTokenizer (ICU's word splitting, no tfbert table)."""
    import tensorflow as tf
    import tensorflow_text as tf_text

    splitter = tf_text.FastWordpieceTokenizer(vocab=["[UNK]", *vocab, *(f"##{t}" for t in vocab)],
                                              token_out_type=tf.string)
    return [t.decode() for t in splitter.tokenize(tf.constant([text])).flat_values.numpy().tolist()]


def test_remaining_differences_are_the_documented_ones(tmp_path):
    """Only with vocabularies holding characters bert-base-uncased lacks, as the module docstring says."""
    from tfbert.tokenizer import BertTokenizer

    stem, dot = "\U0001d165", "\U0001d16d"  # combining classes 216 and 226
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "##b", "\u2e5d", "##\u2e5d", "\u166d",
             "##\u166d", f"##{stem}", f"##{dot}"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    ours = BertTokenizer.from_files(str(tmp_path / "vocab.txt"))
    hf = tiny.hf_tokenizer(str(tmp_path / "vocab.txt"))

    def tokens(text: str) -> tuple[list[str], list[str]]:
        return ([vocab[i] for i in ours.tokenize_numpy([text], 16)["input_ids"][0, 1:-1]],
                [vocab[i] for i in hf(text)["input_ids"][1:-1]])

    # U+2E5D (Unicode 14) is punctuation to ICU only, where ICU knows it: the vocab has it, so the split
    # cannot be hidden. tensorflow-text's own WordPiece kernel says whether its ICU does (2.21's does,
    # 2.18's predates the character and keeps it inside the word, as Hugging Face does).
    icu_splits = _stock_wordpiece(["a", "b", "\u2e5d"], "a\u2e5db") == ["a", "\u2e5d", "b"]
    assert ours.unmatched_chars == frozenset("\u2e5d" if icu_splits else "")
    assert tokens("a\u2e5db") == (["a", "\u2e5d", "b"] if icu_splits else ["a", "##\u2e5d", "##b"],
                                  ["a", "##\u2e5d", "##b"])
    # U+166D is punctuation to Hugging Face only: surrounding it with spaces matches.
    assert tokens("a\u166db") == (["a", "\u166d", "b"], ["a", "\u166d", "b"])
    # Hugging Face's whole-text NFD puts the two marks in canonical order; the table cannot.
    assert tokens(f"a{dot}{stem}") == (["a", f"##{dot}", f"##{stem}"], ["a", f"##{stem}", f"##{dot}"])


def test_compiled_tables_are_cached_and_a_damaged_entry_is_rebuilt(files, hf, tmp_path, monkeypatch):
    import tfbert.tokenizer as tokenizer_module
    from tfbert.tokenizer import BertTokenizer

    texts = HARD + SPECIAL_CASES
    want = hf(texts, padding="longest", truncation=True, max_length=128, return_tensors="np")
    monkeypatch.setenv("TFBERT_CACHE", str(tmp_path / "cache"))
    assert_same_ids(BertTokenizer.from_files(files.vocab, files.tokenizer_config).tokenize_numpy(texts, 128),
                    want, texts)
    entries = list((tmp_path / "cache" / "tokenizer").glob("*.npz"))
    assert len(entries) == 1

    def no_compiling(*args):
        raise AssertionError("compiled the tables although they are cached")

    with monkeypatch.context() as patch:
        patch.setattr(tokenizer_module, "_normalization_table", no_compiling)
        cached = BertTokenizer.from_files(files.vocab, files.tokenizer_config)
    assert_same_ids(cached.tokenize_numpy(texts, 128), want, texts)

    # A truncated entry (a crash while copying, a full disk) is compiled again and replaced.
    data = entries[0].read_bytes()
    entries[0].write_bytes(data[: len(data) // 2])
    rebuilt = BertTokenizer.from_files(files.vocab, files.tokenizer_config)
    assert_same_ids(rebuilt.tokenize_numpy(texts, 128), want, texts)
    assert entries[0].read_bytes() == data

    # Another vocabulary is another entry; TFBERT_CACHE=off writes nothing.
    monkeypatch.setenv("TFBERT_CACHE", "off")
    BertTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"])
    assert list((tmp_path / "cache" / "tokenizer").glob("*.npz")) == entries


def test_runs_in_tf_data_tf_function_and_saved_model(ours, tmp_path):
    from tfbert.tf import import_tensorflow

    tf = import_tensorflow()
    texts = [*HARD[:12], *SPECIAL_CASES[:4]]
    expected = ours.tokenize_numpy(texts, 32)

    dataset = tf.data.Dataset.from_tensor_slices(texts).batch(len(texts)).map(lambda t: ours.tokenize(t, 32))
    batch = next(iter(dataset))
    for key in KEYS:
        np.testing.assert_array_equal(batch[key].numpy(), expected[key], err_msg=key)

    class Serving(tf.Module):
        def __init__(self):
            super().__init__()
            self.tokenizer = ours

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def tokenize(self, text):
            return self.tokenizer.tokenize(text, 32)

    module = Serving()
    traced = module.tokenize(tf.constant(texts))
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": module.tokenize})
    reloaded = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"](text=tf.constant(texts))
    for key in KEYS:
        np.testing.assert_array_equal(traced[key].numpy(), expected[key], err_msg=key)
        np.testing.assert_array_equal(reloaded[key].numpy(), expected[key], err_msg=key)


def test_tflite_under_ai_edge_litert_gives_the_same_ids(ours, hf):
    from ai_edge_litert.interpreter import InterpreterWithCustomOps

    from tfbert.tokenizer import tflite_op_registerers

    # Builtins + tensorflow-text's kernels, no Flex.
    interpreter = InterpreterWithCustomOps(model_content=ours.to_tflite(24, pairs=True),
                                           custom_op_registerers=tflite_op_registerers())
    texts, pairs = HARD + SPECIAL_CASES, list(reversed(HARD + SPECIAL_CASES))
    run = interpreter.get_signature_runner()
    got = run(text=np.array([t.encode() for t in texts], dtype=object),
              pair=np.array([t.encode() for t in pairs], dtype=object))
    want = hf(texts, pairs, padding="longest", truncation="longest_first", max_length=24, return_tensors="np")
    assert_same_ids(got, want, texts, pairs)


def test_bad_files_and_arguments_are_refused(ours, tmp_path):
    from tfbert.errors import BadInputError, ConfigMismatchError
    from tfbert.tokenizer import BertTokenizer

    with pytest.raises(BadInputError, match=r"vocab\.txt does not exist"):
        BertTokenizer.from_files(str(tmp_path / "missing.txt"))
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n[UNK]\nhello\n")
    with pytest.raises(ConfigMismatchError) as info:
        BertTokenizer.from_files(str(vocab))
    assert "[CLS]" in str(info.value) and str(vocab) in str(info.value)
    vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\nhello\n")
    with pytest.raises(ConfigMismatchError, match="twice"):
        BertTokenizer.from_files(str(vocab))
    config = tmp_path / "tokenizer_config.json"
    config.write_text("{not json")
    with pytest.raises(ConfigMismatchError, match="not valid JSON"):
        BertTokenizer.from_files(str(vocab), str(config))
    with pytest.raises(BadInputError, match="max_length"):
        ours.tokenize_numpy(["a"], 1)
    with pytest.raises(BadInputError, match="max_length"):
        ours.tokenize_numpy(["a"], 2, text_pairs=["b"])
    with pytest.raises(BadInputError, match="vector of strings"):
        ours.tokenize("just one string", 8)
    with pytest.raises(BadInputError, match="differ in length"):
        ours.tokenize_numpy(["a", "b"], 8, text_pairs=["c"])

"""tfbert's in-graph tokenizer produces exactly Hugging Face's ids."""

import numpy as np
import pytest

from tfbert.export.samples import read_texts

HARD = ["café naïve Ångström Straße", "中文字符 日本語のテキスト 한국어", "😀👍🏽 emoji", "hello,world!!",
        "$100.00 e-mail «quotes» a—b", "a\tb\u200bc\xa0d\ne", "", "   ", "MiXeD CaSe İstanbul",
        "x" * 300, "word " * 200, "☃☃☃ ⁂", "12,345.67 3rd", "don't stop", "Ｆｕｌｌｗｉｄｔｈ"]


@pytest.fixture(scope="module")
def tokenizers(minilm_path):
    from transformers import BertTokenizerFast

    from tfbert.checkpoint import find_checkpoint
    from tfbert.tokenizer import BertTokenizer

    files = find_checkpoint(minilm_path)
    return BertTokenizer.from_files(files.vocab, files.tokenizer_config), BertTokenizerFast.from_pretrained(minilm_path)


@pytest.mark.parametrize("max_length", [128, 16])
def test_ids_equal_hugging_face(tokenizers, max_length):
    ours, hf = tokenizers
    texts = HARD + read_texts()
    got = ours.tokenize_numpy(texts, max_length)
    want = hf(texts, padding="longest", truncation=True, max_length=max_length, return_tensors="np")
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_pairs_truncate_longest_first_like_hugging_face(tokenizers):
    ours, hf = tokenizers
    a, b = [*HARD[:8], "short"], [*read_texts()[:8], "a much longer second text " * 5]
    got = ours.tokenize_numpy(a, 14, text_pairs=b)
    want = hf(a, b, padding="longest", truncation="longest_first", max_length=14, return_tensors="np")
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_inside_tf_data_and_tf_function(tokenizers):
    from tfbert.tf import import_tensorflow

    tf = import_tensorflow()
    ours, _ = tokenizers
    texts = read_texts()[:10]
    expected = ours.tokenize_numpy(texts, 32)["input_ids"]
    ds = tf.data.Dataset.from_tensor_slices(texts).batch(10).map(lambda t: ours.tokenize(t, 32)["input_ids"])
    np.testing.assert_array_equal(next(iter(ds)).numpy(), expected)
    fn = tf.function(lambda t: ours.tokenize(t, 32)["input_ids"],
                     input_signature=[tf.TensorSpec([None], tf.string)])
    np.testing.assert_array_equal(fn(tf.constant(texts)).numpy(), expected)


def test_vocab_without_specials_is_refused(tmp_path):
    from tfbert.errors import ConfigMismatchError
    from tfbert.tokenizer import BertTokenizer

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n[UNK]\nhello\n")
    with pytest.raises(ConfigMismatchError) as info:
        BertTokenizer.from_files(str(vocab))
    assert "[CLS]" in str(info.value) and "vocab.txt" in str(info.value)

"""The lab's word-level tokenizer: deterministic ids, bos in front, offsets into the original text, save/reload."""

import pytest
from transformers import AutoTokenizer

from kdlens.subjects.word_tokenizer import SPECIAL_TOKEN_IDS, build_word_tokenizer

CORPUS = ["Mary went to the garden.", "John went to the kitchen.", "Where is Mary? 1+2=3; 4-1*2=2, done."]


def test_vocabulary_is_specials_then_extras_then_words_by_count_with_alphabetical_ties():
    tok = build_word_tokenizer(["b a a", "c b a", "y x"], extra_tokens=["zeta"])
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    assert [token for token, _ in vocab] == ["<pad>", "<unk>", "<bos>", "<eos>", "zeta", "a", "b", "c", "x", "y"]
    assert (tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2, 3)
    assert SPECIAL_TOKEN_IDS == {"pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3}
    assert build_word_tokenizer(["b a a", "c b a", "y x"], extra_tokens=["zeta"]).get_vocab() == tok.get_vocab()


def test_encoding_is_bos_then_words_with_punctuation_split_off():
    tok = build_word_tokenizer(CORPUS)
    ids = tok("Where is Mary? 1+2=3;")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["<bos>", "Where", "is", "Mary", "?", "1", "+", "2", "=", "3", ";"]
    assert tok.decode(ids, skip_special_tokens=True) == "Where is Mary ? 1 + 2 = 3 ;"


def test_offsets_are_character_spans_in_the_original_text():
    tok = build_word_tokenizer(CORPUS, lowercase=True)
    text = "  MARY went\tto the   kitchen."
    enc = tok(text, return_offsets_mapping=True)
    tokens = tok.convert_ids_to_tokens(enc["input_ids"])
    assert enc["offset_mapping"][0] == (0, 0)  # the bos token covers no text
    assert [text[s:e].lower() for s, e in enc["offset_mapping"][1:]] == tokens[1:]
    assert tokens[1:] == ["mary", "went", "to", "the", "kitchen", "."]


def test_lowercase_is_optional_and_rare_words_become_unk():
    cased = build_word_tokenizer(CORPUS)
    assert "Mary" in cased.get_vocab() and "mary" not in cased.get_vocab()
    assert "mary" in build_word_tokenizer(CORPUS, lowercase=True).get_vocab()
    frequent = build_word_tokenizer(CORPUS, min_count=2)
    assert frequent.convert_ids_to_tokens(frequent("Mary went to the garden")["input_ids"]) == [
        "<bos>", "Mary", "went", "to", "the", "<unk>"]


def test_an_extra_token_with_punctuation_is_matched_whole():
    tok = build_word_tokenizer(CORPUS, extra_tokens=["<sep>", "yes"])
    text = "Mary <sep> yes"
    enc = tok(text, return_offsets_mapping=True)
    assert tok.convert_ids_to_tokens(enc["input_ids"]) == ["<bos>", "Mary", "<sep>", "yes"]
    assert enc["input_ids"][2:] == [4, 5]
    assert [text[s:e] for s, e in enc["offset_mapping"][1:]] == ["Mary", "<sep>", "yes"]


def test_padding_side_is_settable():
    tok = build_word_tokenizer(CORPUS, padding_side="left")
    batch = tok(["Mary", "Mary went"], padding=True)
    assert batch["input_ids"][0][0] == tok.pad_token_id and batch["attention_mask"][0] == [0, 1, 1]


def test_save_and_reload_with_auto_tokenizer_gives_identical_ids(tmp_path):
    tok = build_word_tokenizer(CORPUS, extra_tokens=["<sep>"], lowercase=True, padding_side="left")
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    texts = ["Where is John? <sep> the garden.", "UNSEEN words 7 * 3"]
    for text in texts:
        a = tok(text, return_offsets_mapping=True)
        b = again(text, return_offsets_mapping=True)
        assert a["input_ids"] == b["input_ids"] and a["offset_mapping"] == b["offset_mapping"]
    assert again.get_vocab() == tok.get_vocab()
    assert (again.pad_token, again.unk_token, again.bos_token, again.eos_token) == ("<pad>", "<unk>", "<bos>", "<eos>")
    assert again.padding_side == "left"


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"texts": "one text"}, TypeError, "Expected `texts` to be an iterable of strings"),
    ({"texts": []}, ValueError, "non-empty corpus"),
    ({"texts": ["ok", 3]}, TypeError, r"`texts\[1\]` to be a str"),
    ({"texts": ["ok"], "min_count": 0}, ValueError, "`min_count` to be a positive integer"),
    ({"texts": ["ok"], "extra_tokens": "<sep>"}, TypeError, "Wrap it in a list"),
    ({"texts": ["ok"], "extra_tokens": [" a "]}, ValueError, "without surrounding whitespace"),
    ({"texts": ["ok"], "padding_side": "top"}, ValueError, "`padding_side` to be one of 'right', 'left'"),
])
def test_bad_arguments_raise_with_the_fix(kwargs, error, match):
    with pytest.raises(error, match=match):
        build_word_tokenizer(**kwargs)

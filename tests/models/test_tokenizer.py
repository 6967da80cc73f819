"""The offline tiny tokenizer: fast, round-trips any text, keeps special tokens whole."""

from __future__ import annotations

import pytest

from rlhfv.models.tokenizer import train_tiny_tokenizer

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"]


def test_task_words_are_single_tokens_and_special_tokens_stay_whole():
    tok = train_tiny_tokenizer(SPECIAL)
    assert tok.tokenize("The circle is red.") == ["The", "Ġcircle", "Ġis", "Ġred", "."]
    ids = tok("<|im_start|>user\n<image><image>How many?<|im_end|>")["input_ids"]
    assert ids[0] == SPECIAL.index("<|im_start|>")
    assert ids.count(SPECIAL.index("<image>")) == 2
    assert tok.decode(ids, skip_special_tokens=True) == "user\nHow many?"


def test_any_text_round_trips_through_byte_fallback():
    tok = train_tiny_tokenizer(SPECIAL, vocab_size=300)
    text = "Zebra quixotic émigré 😀 — 42"
    assert tok.decode(tok(text)["input_ids"]) == text
    assert len(tok) == 300


def test_cached_tokenizers_are_independent_copies():
    first = train_tiny_tokenizer(SPECIAL)
    first.chat_template = "{{ messages }}"
    first.add_special_tokens({"pad_token": "<|endoftext|>"})
    second = train_tiny_tokenizer(SPECIAL)
    assert second.chat_template is None and second.pad_token is None


def test_too_small_vocab_is_refused_with_the_needed_size():
    with pytest.raises(ValueError, match="at least 261"):
        train_tiny_tokenizer(SPECIAL, vocab_size=100)

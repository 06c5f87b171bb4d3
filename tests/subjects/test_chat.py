"""Chat prompts through a model's own template, the token that ends its turn, and generation that stops there."""

import pytest

from kdlens.subjects.lm.chat import chat_prompt, check_chat, end_of_turn_ids
from tests.probes.test_lm_representations import char_lm

TEMPLATE = ("{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}<|end|>\n{% endfor %}"
            "{% if add_generation_prompt %}assistant:{% endif %}")


def chat_lm(seed: int = 0):
    lm = char_lm(seed, ["user: system: assistant: what is 2 + 2 ? 4 hi"])
    lm.tokenizer.add_special_tokens({"additional_special_tokens": ["<|end|>"]})
    lm.model.resize_token_embeddings(len(lm.tokenizer))
    lm.tokenizer.chat_template = TEMPLATE
    return lm


def test_the_end_of_turn_token_is_the_special_token_the_template_writes_after_a_message():
    lm = chat_lm()
    assert end_of_turn_ids(lm) == [lm.tokenizer.convert_tokens_to_ids("<|end|>")]


def test_a_template_without_a_special_token_after_a_message_has_no_end_of_turn():
    lm = chat_lm()
    lm.tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    assert end_of_turn_ids(lm) == []


def test_the_prompt_is_the_templates_text_with_the_turns_in_order():
    lm = chat_lm()
    turns = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
             {"role": "assistant", "content": "4"}, {"role": "user", "content": "what is 2 + 2 ?"}]
    text = chat_prompt(lm, turns)
    assert text == ("<bos>system: be brief<|end|>\nuser: hi<|end|>\nassistant: 4<|end|>\n"
                    "user: what is 2 + 2 ?<|end|>\nassistant:")


def test_a_bos_the_template_writes_is_dropped_when_the_tokenizer_adds_one():
    from tokenizers import processors

    lm = chat_lm()
    lm.tokenizer._tokenizer.post_processor = processors.TemplateProcessing(single="<bos> $A",
                                                                           special_tokens=[("<bos>", 2)])
    text = chat_prompt(lm, [{"role": "user", "content": "hi"}])
    assert text == "user: hi<|end|>\nassistant:"
    assert lm.encode([text])[0].ids.count(2) == 1  # one BOS, the tokenizer's


def test_a_tokenizer_without_a_chat_template_is_refused_with_the_fix():
    lm = char_lm(0, ["abc"])
    with pytest.raises(ValueError, match="without one.*data.chat: false"):
        check_chat(lm, "student")


def test_generation_stops_at_a_stop_id_and_keeps_what_came_before():
    lm = chat_lm()
    free = lm.model.generate(**lm.tokenizer(["hi"], return_tensors="pt"), max_new_tokens=6, do_sample=False)
    first_new = int(free[0, 2])  # "h", "i", then the first new token
    assert lm.generate(["hi"], max_new_tokens=6, stop_ids=[first_new]) == [""]
    assert len(lm.generate(["hi"], max_new_tokens=6)[0]) > 0

"""Batched generation for a :class:`~kdlens.subjects.lm.LanguageModel`: greedy or seeded sampling, text out.

The functions here take the LanguageModel as ``lm`` and use its public side only (``encode``, ``model``,
``tokenizer``, ``pad_token_id``, ``device``): the class imports this module, never the other way round.
Prompts are left-padded by hand (ids and attention mask built here), so the tokenizer's ``padding_side`` is never
touched. Decoding goes through ``transformers``' ``generate`` with every knob that picks tokens set explicitly:
transformers fills the knobs a call leaves unset from the checkpoint's ``generation_config.json`` (a ``top_k`` or
``repetition_penalty`` there would otherwise change what "greedy" or "temperature 1" mean).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext

import torch
from transformers import StoppingCriteria

from kdlens import validation as C
from kdlens.subjects.lm.batching import inference, pad_rows
from kdlens.subjects.lm.checks import check_batch_size, check_texts


def _check_options(max_new_tokens, do_sample, temperature, top_p, seed, stop) -> tuple[int, bool, int]:
    """(max_new_tokens, do_sample, seed) as int, bool, int once every decoding option is checked."""
    max_new_tokens = C.check_int(max_new_tokens, "max_new_tokens", 1)
    do_sample = C.check_bool(do_sample, "do_sample")
    C.check_positive(temperature, "temperature")
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        C.fail("top_p", "a number in (0, 1]", repr(top_p), "1.0 samples from the whole distribution.")
    seed = C.check_int(seed, "seed")
    if stop is not None and (not isinstance(stop, str) or not stop):
        C.fail("stop", "None or a non-empty str", repr(stop))
    return max_new_tokens, do_sample, seed


def eos_token_ids(lm) -> list[int]:
    """The ids that end a generation: the tokenizer's eos and any the model's generation config names."""
    ids = [lm.tokenizer.eos_token_id]
    configured = getattr(getattr(lm.model, "generation_config", None), "eos_token_id", None)
    ids += configured if isinstance(configured, list) else [configured]
    return sorted({int(i) for i in ids if i is not None})


def _generation_config(lm, max_new_tokens: int, do_sample: bool, temperature: float, top_p: float,
                       stops: list[int]):
    from transformers import GenerationConfig

    knobs = dict(max_new_tokens=max_new_tokens, min_new_tokens=0, do_sample=do_sample, num_beams=1,
                 repetition_penalty=1.0, no_repeat_ngram_size=0, pad_token_id=lm.pad_token_id,
                 eos_token_id=stops or None, use_cache=True)
    if do_sample:  # plain temperature + nucleus sampling: top-k (50 by transformers' default), min-p, typical off
        knobs.update(temperature=float(temperature), top_p=float(top_p), top_k=0, min_p=0.0, typical_p=1.0)
    else:  # neutral values, so a checkpoint's sampling settings neither leak in nor raise "unused flag" warnings
        knobs.update(temperature=1.0, top_p=1.0, top_k=50, typical_p=1.0)
    return GenerationConfig(**knobs)


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's generator for the block and put the caller's random state back afterwards."""
    devices = [] if device.type == "cpu" else [device]
    with torch.random.fork_rng(devices=devices, device_type="cuda" if device.type == "cpu" else device.type):
        torch.manual_seed(seed)
        yield


def _until_eos(new_ids: list[int], stops: set[int]) -> list[int]:
    return new_ids[:next((j for j, token in enumerate(new_ids) if token in stops), len(new_ids))]


class _StopString(StoppingCriteria):
    """A stopping criterion for ``generate``: a row is done once its new text (decoded exactly as the result will be)
    holds ``stop``, so no tokens are spent after it; (B,) bool per step."""

    def __init__(self, tokenizer, prompt_ids: list[list[int]], prompt_length: int, stop: str, stops: set[int]):
        self.tokenizer, self.prompt_ids, self.start, self.stop, self.stops = (tokenizer, prompt_ids, prompt_length,
                                                                               stop, stops)
        self.heads = [tokenizer.decode(ids, skip_special_tokens=True) for ids in prompt_ids]  # decoded once
        self.done = [False] * len(prompt_ids)

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        rows = input_ids[:, self.start:].tolist()  # (B, new so far)
        for i, (ids, head, row) in enumerate(zip(self.prompt_ids, self.heads, rows, strict=True)):
            if not self.done[i]:  # a row that has ended stays ended
                text = _continuation_text(self.tokenizer, ids, _until_eos(row, self.stops), head)
                self.done[i] = self.stop in text
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)


def _continuation_text(tokenizer, prompt_ids: list[int], new_ids: list[int], head: str | None = None) -> str:
    """The text the new tokens add to the prompt, spaces included (decoding new tokens alone can drop a space);
    ``head`` is the prompt decoded, when the caller has it already."""
    head = tokenizer.decode(prompt_ids, skip_special_tokens=True) if head is None else head
    full = tokenizer.decode(prompt_ids + new_ids, skip_special_tokens=True)
    if full.startswith(head):
        return full[len(head):]
    return tokenizer.decode(new_ids, skip_special_tokens=True)


def generate(lm, prompts: list[str], max_new_tokens: int = 64, do_sample: bool = False,
             temperature: float = 1.0, top_p: float = 1.0, seed: int = 0, batch_size: int = 16,
             stop: str | None = None, stop_ids: Sequence[int] = ()) -> list[str]:
    """Continue each prompt and return only the new text.

    Greedy by default (batched results equal one-at-a-time results); with ``do_sample=True`` tokens are drawn at
    ``temperature`` from the smallest set of probability ``top_p``, from a generator seeded with ``seed`` (the same
    seed and batch size give the same texts; the caller's random state is left as it was). A row's generation ends at
    an eos token (the tokenizer's, the generation config's, and ``stop_ids``, e.g. a chat template's end-of-turn
    token, :func:`kdlens.subjects.lm.chat.end_of_turn_ids`), after ``max_new_tokens``, or as soon as its text holds
    ``stop`` (if given; the batch goes on until every row has ended); the text is then cut before the first
    ``stop``.

    Parameters
    ----------
    lm : a :class:`~kdlens.subjects.lm.LanguageModel`
    prompts : list of n str
    max_new_tokens : int >= 1; prompt tokens + max_new_tokens must fit the model's max positions
    do_sample, temperature, top_p, seed : decoding; temperature > 0, top_p in (0, 1]
    batch_size : int, prompts per ``generate`` call
    stop : str or None
    stop_ids : token ids that end a row besides the eos ids

    Returns
    -------
    list of n str, the continuations (for word-level tokenizers, words joined by spaces, with a leading space)

    Examples
    --------
    >>> import torch
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> from kdlens.subjects.lm import LanguageModel
    >>> from kdlens.subjects.word_tokenizer import build_word_tokenizer
    >>> tok = build_word_tokenizer(["one two three four ."])
    >>> _ = torch.manual_seed(0)
    >>> net = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
    ...     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))
    >>> texts = generate(LanguageModel(net, tok), ["one two", "three"], max_new_tokens=3)
    >>> len(texts), all(isinstance(t, str) for t in texts)
    (2, True)
    """
    prompts = check_texts(prompts, "prompts")
    batch_size = check_batch_size(batch_size)
    max_new_tokens, do_sample, seed = _check_options(max_new_tokens, do_sample, temperature, top_p, seed, stop)
    encodings = lm.encode(prompts, "prompts[{i}]", extra_positions=max_new_tokens, offsets=False)
    for i, e in enumerate(encodings):
        if not e.ids:
            C.fail(f"prompts[{i}]", "a prompt of at least one token", "none",
                   "Give a prompt, or use a tokenizer that adds a BOS token.")
    extra = [C.check_int(i, "stop_ids[]", 0) for i in stop_ids]
    stops = set(eos_token_ids(lm)) | set(extra)
    config = _generation_config(lm, max_new_tokens, do_sample, temperature, top_p, sorted(stops))
    device = lm.device
    texts = []
    with inference(lm.model), (_seeded(seed, device) if do_sample else nullcontext()):
        for lo in range(0, len(encodings), batch_size):
            chunk = encodings[lo:lo + batch_size]
            ids, mask = pad_rows([e.ids for e in chunk], lm.pad_token_id, "left")  # (B, T)
            ended_at_stop = [] if stop is None else [_StopString(lm.tokenizer, [e.ids for e in chunk], ids.shape[1],
                                                                   stop, stops)]
            out = lm.model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                    generation_config=config, stopping_criteria=ended_at_stop)  # (B, T + new)
            for e, row in zip(chunk, out[:, ids.shape[1]:].tolist(), strict=True):
                text = _continuation_text(lm.tokenizer, e.ids, _until_eos(row, stops))
                texts.append(text if stop is None or stop not in text else text[:text.index(stop)])
    return texts

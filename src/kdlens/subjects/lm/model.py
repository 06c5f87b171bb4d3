"""The :class:`LanguageModel`: a causal LM and its tokenizer, with the text-level operations kdlens needs.

Scoring, hidden states and token logits carry the character span of each token, so per-token numbers map back to
words or sentences (:func:`~kdlens.subjects.lm.spans.pool_by_spans`). Every method runs the model in eval mode
without gradients and restores the model's mode afterwards.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import torch
from torch import nn

from kdlens import validation as C
from kdlens.subjects.lm.batching import inference, pad_rows, range_mask
from kdlens.subjects.lm.checks import check_batch_size, check_texts
from kdlens.subjects.lm.head import output_head, reproduces_logits, target_logprobs
from kdlens.subjects.lm.layers import check_block, edit_block, run_to_block
from kdlens.subjects.lm.load import gguf_file, import_transformers, load_gguf, load_pretrained
from kdlens.subjects.lm.results import ContinuationScore, Encoding, HiddenStates, TokenLogits
from kdlens.subjects.lm.spans import continuation_tokens, spans_from
from kdlens.subjects.lm.vocabulary import vocabulary_difference


class LanguageModel:
    """A causal LM and its tokenizer, with the text-level operations kdlens needs.

    Parameters
    ----------
    model : a Hugging Face causal LM (``model(input_ids, attention_mask=...).logits`` of shape (B, T, V))
    tokenizer : its tokenizer; scoring, hidden states and token logits need a fast one (character offsets)
    name : str, how reports refer to it

    Attributes
    ----------
    logits_chunk_mb : float, default 256; scoring runs the model's body, then its output head on a chunk of the
        scored positions at a time, computing at most this many MB of float32 vocabulary logits at once (at least one
        position's). Smaller chunks cost time: each re-reads the head's weights (on a CPU, 64 MB made the head 2x
        slower at a 262k vocabulary, 256 MB 1.2x).

    Examples
    --------
    >>> import torch
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> from kdlens.subjects.lm import pool_by_spans, word_spans
    >>> from kdlens.subjects.word_tokenizer import build_word_tokenizer
    >>> tok = build_word_tokenizer(["the cat sat on the mat ."])
    >>> _ = torch.manual_seed(0)
    >>> net = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
    ...     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))
    >>> lm = LanguageModel(net, tok, "toy")
    >>> score = lm.score(["the cat"], [" sat on the mat"])[0]
    >>> score.tokens, score.offsets[0], score.token_logprobs.shape
    (['sat', 'on', 'the', 'mat'], (1, 4), torch.Size([4]))
    >>> states = lm.hidden_states(["the cat sat"])[0]
    >>> list(states.layers), states.layers["layers.1"].shape, states.offsets
    (['embed', 'layers.0', 'layers.1'], torch.Size([4, 32]), [(0, 0), (0, 3), (4, 7), (8, 11)])
    >>> pool_by_spans(states.layers["layers.1"], states.offsets, word_spans("the cat sat")).shape
    torch.Size([3, 32])
    >>> lm.token_logits(["the cat"])[0].logits.shape  # (T, V): bos, the, cat
    torch.Size([3, 10])
    """

    def __init__(self, model: nn.Module, tokenizer, name: str = "model") -> None:
        transformers = import_transformers()
        if not isinstance(model, nn.Module) or not hasattr(model, "config"):
            C.fail("model", "a Hugging Face causal LM (AutoModelForCausalLM)", type(model).__name__,
                   error=TypeError)
        if not isinstance(tokenizer, transformers.PreTrainedTokenizerBase):
            C.fail("tokenizer", "a Hugging Face tokenizer (AutoTokenizer)", type(tokenizer).__name__,
                   error=TypeError)
        if not isinstance(name, str):
            C.fail("name", "a str (how reports refer to the model)", type(name).__name__, error=TypeError)
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.logits_chunk_mb = 256.0
        self._head_check = None  # (model, its output embedding, whether the head passed the probe) once checked

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: str | torch.dtype | None = None,
                        device: str | torch.device = "cpu", trust_remote_code: bool = False,
                        name: str | None = None) -> LanguageModel:
        """Load model and tokenizer from a local directory (``save_pretrained`` layout, safetensors weights).

        ``dtype``: "float32", "bfloat16", "float16", a torch dtype, or None for the checkpoint's own (config.json).
        ``trust_remote_code``: run model code shipped in the folder; off unless you trust it. Nothing is
        downloaded (``local_files_only=True``). A missing folder raises FileNotFoundError; pickle-only weights
        (``pytorch_model.bin``) raise ValueError saying how to convert them. The model is returned in eval mode.

        >>> LanguageModel.from_pretrained("no/such/dir")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: Expected `path` to be a local model directory, but got 'no/such/dir', which does not ...
        """
        path = Path(path)
        model, tokenizer = load_pretrained(path, dtype, device, trust_remote_code)
        return cls(model, tokenizer, name or path.name)

    @classmethod
    def from_gguf(cls, path: str | Path, dtype: str | torch.dtype | None = None, device: str | torch.device = "cpu",
                  name: str | None = None) -> LanguageModel:
        """Load a llama.cpp GGUF file (``model.gguf``, or a folder holding exactly one) through transformers' GGUF
        support: weights dequantised to ``dtype`` (default float32), the tokenizer and chat template from the
        file's metadata. Needs the ``gguf`` package (the ``lm`` extra). The model is returned in eval mode.

        >>> LanguageModel.from_gguf("no/such/model.gguf")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: Expected `gguf` to be a .gguf file, or a folder holding exactly one, but got no/such/...
        """
        model, tokenizer = load_gguf(path, dtype, device)
        return cls(model, tokenizer, name or gguf_file(path).stem)

    # ---- properties ---------------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        first = next(self.model.parameters(), None)
        return first.device if first is not None else torch.device("cpu")

    @property
    def logits_chunk_mb(self) -> float:
        """The most float32 vocabulary logits (MB) scoring computes at once (see the class)."""
        return self._logits_chunk_mb

    @logits_chunk_mb.setter
    def logits_chunk_mb(self, value: float) -> None:
        self._logits_chunk_mb = C.check_positive(value, "logits_chunk_mb")

    @property
    def max_positions(self) -> int | None:
        """The longest sequence the model accepts (config ``max_position_embeddings``), or None if unknown."""
        for key in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length"):
            value = getattr(self.model.config, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    @property
    def vocab_size(self) -> int:
        """Width V of the logits (the output embedding's rows; may exceed the tokenizer's vocabulary)."""
        head = self.model.get_output_embeddings() if hasattr(self.model, "get_output_embeddings") else None
        weight = getattr(head, "weight", None)
        weight = weight() if callable(weight) else weight  # a quantised head's weight is a method
        if isinstance(weight, torch.Tensor):
            return int(weight.shape[0])
        return int(self.model.config.vocab_size)

    @property
    def pad_token_id(self) -> int:
        """The tokenizer's pad id, else its eos id (padded positions are masked, so any id serves)."""
        for value in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id):
            if value is not None:
                return int(value)
        return 0

    # ---- tokenization and forward passes -----------------------------------------------------------------------

    def encode(self, texts: list[str], name: str = "texts[{i}]", extra_positions: int = 0,
               offsets: bool = True) -> list[Encoding]:
        """Token ids (special tokens included) and character spans per text, checked against ``max_positions``.

        ``name`` (with ``{i}`` for the index) is how an error names a text too long for the model, counting
        ``extra_positions`` tokens still to be generated.
        """
        texts = check_texts(texts, "texts")
        extra_positions = C.check_int(extra_positions, "extra_positions", 0)
        offsets = C.check_bool(offsets, "offsets")
        if offsets and not self.tokenizer.is_fast:
            C.fail("tokenizer", "a fast tokenizer (character offsets are needed)", type(self.tokenizer).__name__,
                   "Load it with AutoTokenizer.from_pretrained(dir, use_fast=True) from a folder with "
                   "tokenizer.json.", error=TypeError)
        enc = self.tokenizer(texts, add_special_tokens=True, return_offsets_mapping=offsets)
        spans = enc["offset_mapping"] if offsets else [[] for _ in texts]
        out = [Encoding(list(ids), [tuple(span) for span in row]) for ids, row in zip(enc["input_ids"], spans,
                                                                                      strict=True)]
        limit = self.max_positions
        for i, (text, e) in enumerate(zip(texts, out, strict=True)):
            if limit is not None and len(e.ids) + extra_positions > limit:
                needed = f"{len(e.ids)} tokens" + (f" + {extra_positions} new" if extra_positions else "")
                C.fail(name.format(i=i), f"at most {limit} tokens ({self.name}'s max_position_embeddings)",
                       f"{needed} ({len(text)} characters)", "Shorten the text (or generate fewer tokens).")
        return out

    def _forward(self, rows: list[list[int]], base: bool = False, **kwargs):
        """The model on a right-padded batch; ``base``: its body alone (hidden states, no vocabulary logits)."""
        return self._forward_padded(*pad_rows(rows, self.pad_token_id, "right"), base=base, **kwargs)

    def _forward_padded(self, ids: torch.Tensor, mask: torch.Tensor, base: bool = False, **kwargs):
        """:meth:`_forward` on a batch already padded: (B, T) token ids and attention mask."""
        model = self.model.base_model if base and self.model.base_model is not self.model else self.model
        return model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), **kwargs)

    def _logits_at(self, ids: torch.Tensor, mask: torch.Tensor,
                   needed: list[int]) -> tuple[torch.Tensor, dict[int, int]]:
        """Logits (B, len(needed), V) at sequence positions ``needed`` of a right-padded batch ((B, T) ``ids`` and
        ``mask``), and each position's column in them; through ``logits_to_keep`` where the model takes it, else
        sliced from the full logits."""
        if "logits_to_keep" in inspect.signature(self.model.forward).parameters:
            keep = torch.tensor(needed, device=self.device)
            return self._forward_padded(ids, mask, logits_to_keep=keep).logits, {t: i for i, t in enumerate(needed)}
        return self._forward_padded(ids, mask).logits, {t: t for t in needed}

    def _head(self):
        """The output head as a function of the body's last hidden state (:func:`~kdlens.subjects.lm.head.output_head`)
        when, on a short probe, it reproduces the model's own logits; None otherwise. Checked once per model and
        output embedding (a new one, or a new model, is checked again); call it under ``inference``."""
        head = output_head(self.model)
        embedding = self.model.get_output_embeddings() if head is not None else None
        check = self._head_check
        if check is None or check[0] is not self.model or check[1] is not embedding:
            passed = head is not None
            if passed:
                n = min(8, self.max_positions or 8)
                ids = torch.randint(min(len(self.tokenizer), self.vocab_size), (n,),
                                    generator=torch.Generator().manual_seed(0)).tolist()
                hidden = getattr(self._forward([ids], base=True), "last_hidden_state", None)
                passed = hidden is not None and reproduces_logits(head, hidden, self._forward([ids]).logits)
            self._head_check = check = (self.model, embedding, passed)
        return head if check[2] else None

    def _chunk_positions(self) -> int:
        """Positions per output-head call: ``logits_chunk_mb`` of float32 logits, at least one position."""
        return max(1, int(self.logits_chunk_mb * 2**20) // (4 * self.vocab_size))

    def _batches(self, texts: list[str], batch_size: int, **kwargs) -> Iterator[tuple[list, object]]:
        """(encodings, model output) per right-padded batch of ``texts``, in eval mode without gradients."""
        texts = check_texts(texts, "texts")
        batch_size = check_batch_size(batch_size)
        encodings = self.encode(texts)
        with inference(self.model):
            for lo in range(0, len(encodings), batch_size):
                chunk = encodings[lo:lo + batch_size]
                yield chunk, self._forward([e.ids for e in chunk], **kwargs)

    def _token_strings(self, ids: list[int]) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens(ids)

    # ---- public operations -------------------------------------------------------------------------------------

    def score(self, contexts: list[str], continuations: list[str], batch_size: int = 16) -> list[ContinuationScore]:
        """Log-probability of each continuation given its context, token by token.

        Each pair is tokenized as the one text ``context + continuation`` (the tokenizer sees the real text; put
        the separating space where it belongs, usually at the start of the continuation). The continuation's tokens
        run from the first whose character span ends after the context (a token straddling the seam counts as the
        continuation's) to the last token with text (an eos a tokenizer appends is not scored). Batches are
        right-padded; results equal scoring one pair at a time.

        Memory: per batch, the body's hidden states and one chunk of vocabulary logits (``logits_chunk_mb``, 256 MB
        of float32 by default, and their log-softmax), whatever the vocabulary. A model whose output head cannot be
        run apart from its body (an unknown step between them: checked once per instance on a short probe) is scored
        from its own logits at the positions that predict a scored token instead (exact, but (B, those positions, V)
        per batch).

        Parameters
        ----------
        contexts, continuations : lists of str of equal length n; continuations non-empty
        batch_size : int, pairs per forward pass

        Returns
        -------
        list of n :class:`ContinuationScore` (natural-log probabilities, nats)
        """
        contexts = check_texts(contexts, "contexts")
        continuations = check_texts(continuations, "continuations")
        batch_size = check_batch_size(batch_size)
        if len(contexts) != len(continuations):
            C.fail("contexts` and `continuations", "lists of the same length",
                   f"{len(contexts)} and {len(continuations)}", "Pair every context with one continuation.")
        for i, continuation in enumerate(continuations):
            if not continuation:
                C.fail(f"continuations[{i}]", "a non-empty str", "''", "There is nothing to score.")
        encodings = self.encode([c + k for c, k in zip(contexts, continuations, strict=True)],
                                "contexts[{i}] + continuations[{i}]")
        positions = []  # per pair: the continuation's tokens, a range of indices in the joint sequence
        for i, (context, e) in enumerate(zip(contexts, encodings, strict=True)):
            picked = continuation_tokens(e.offsets, len(context))
            if not picked:
                C.fail(f"continuations[{i}]", "text that gives at least one token",
                       f"{continuations[i]!r}, which gives none after the context")
            if picked.start == 0:
                C.fail(f"contexts[{i}]", "a context that leaves a token before the continuation's first",
                       repr(context), "Nothing predicts the first token: give a context (or a tokenizer that adds "
                       "a BOS token).")
            positions.append(picked)

        results = []
        with inference(self.model):
            head = self._head()
            for lo in range(0, len(encodings), batch_size):
                chunk, picks = encodings[lo:lo + batch_size], positions[lo:lo + batch_size]
                ids, mask = pad_rows([e.ids for e in chunk], self.pad_token_id, "right")  # (B, T)
                scored = range_mask(picks, ids.shape[1])  # (B, T) bool: the continuations' tokens
                targets = ids[scored].to(self.device)  # (N,): the batch's scored tokens, pair after pair
                if head is not None:
                    logprobs = self._logprobs_by_head(head, ids, mask, scored, targets)
                else:
                    logprobs = self._logprobs_by_logits(ids, mask, picks, targets)
                split = logprobs.cpu().split([len(picked) for picked in picks])
                for context, e, picked, token_logprobs in zip(contexts[lo:lo + batch_size], chunk, picks, split,
                                                              strict=True):
                    total = float(token_logprobs.double().sum())
                    results.append(ContinuationScore(
                        token_logprobs=token_logprobs.clone(), token_ids=e.ids[picked.start:picked.stop],
                        offsets=spans_from(e.offsets[picked.start:picked.stop], len(context)), total=total,
                        mean=total / len(picked), token_strings=self.tokenizer.convert_ids_to_tokens))
        return results

    def _logprobs_by_head(self, head, ids: torch.Tensor, mask: torch.Tensor, scored: torch.Tensor,
                          targets: torch.Tensor) -> torch.Tensor:
        """(N,) log-probabilities of the ``scored`` tokens ((B, T) bool, of the right-padded ``ids`` and ``mask``)
        through the body, then the output head on ``_chunk_positions()`` of the N predicting positions at a time:
        never (B, T, V)."""
        hidden = self._forward_padded(ids, mask, base=True).last_hidden_state  # (B, T, d)
        before = hidden[:, :-1][scored[:, 1:].to(hidden.device)]  # (N, d): position t - 1 predicts token t
        return target_logprobs(head, before, targets, self._chunk_positions())

    def _logprobs_by_logits(self, ids: torch.Tensor, mask: torch.Tensor, picks: list[range],
                            targets: torch.Tensor) -> torch.Tensor:
        """The same from the model's own logits at the K positions any row needs (``picks``: each row's scored
        tokens): exact for any model, but holds (B, K, V)."""
        needed = sorted({t - 1 for picked in picks for t in picked})
        logits, column = self._logits_at(ids, mask, needed)
        out = []
        for b, (picked, wanted) in enumerate(zip(picks, targets.split([len(p) for p in picks]), strict=True)):
            where = torch.tensor([column[t - 1] for t in picked], device=logits.device)
            logprobs = logits[b, where].float().log_softmax(-1)  # (k, V): row t - 1 predicts token t
            out.append(logprobs.gather(1, wanted[:, None])[:, 0])
        return torch.cat(out)

    def hidden_states(self, texts: list[str], batch_size: int = 16) -> list[HiddenStates]:
        """Every layer's per-token hidden states for each text: "embed", then "layers.0" ... "layers.{L-1}".

        These are Hugging Face's ``output_hidden_states``: the embedding output, then each block's output, except
        that the last entry is taken after the model's final norm (as transformers returns it). Tensors are
        (T, d) float32 on the CPU, T counting special tokens (a BOS has the empty span (0, 0)).
        """
        results = []
        for chunk, out in self._batches(texts, batch_size, output_hidden_states=True, base=True):
            names = ["embed"] + [f"layers.{i}" for i in range(len(out.hidden_states) - 1)]
            for b, e in enumerate(chunk):
                n = len(e.ids)
                layers = {name: h[b, :n].float().cpu() for name, h in zip(names, out.hidden_states, strict=True)}
                results.append(HiddenStates(layers, e.offsets, self._token_strings(e.ids)))
        return results

    def block_outputs(self, texts: list[str], block: int, batch_size: int = 16) -> list[HiddenStates]:
        """Block ``block``'s output per token for each text (the residual stream after it), the forward pass stopped
        right after that block: later blocks and the vocabulary head never run, and no other layer is kept.

        For ``block < num_hidden_layers - 1`` this equals ``hidden_states(texts)[i].layers[f"layers.{block}"]``.
        For the last block it is the block's own output, *before* the model's final norm, where
        :meth:`hidden_states` (as transformers) gives the last entry after it. Edits of the block
        (:meth:`editing`) are applied before it is read.

        Parameters
        ----------
        texts : list of n str
        block : int, 0 to ``num_hidden_layers - 1``
        batch_size : int, texts per forward pass (right-padded; padding is dropped from the results)

        Returns
        -------
        list of n :class:`HiddenStates`, each ``layers`` ``{f"layers.{block}": (T, d) float32 CPU tensor}``, T
        counting special tokens, with the tokens' spans and strings
        """
        texts, batch_size = check_texts(texts, "texts"), check_batch_size(batch_size)
        block = check_block(self.model, block, "block", self.name)
        name, results = f"layers.{block}", []
        encodings = self.encode(texts)
        with inference(self.model):
            for lo in range(0, len(encodings), batch_size):
                chunk = encodings[lo:lo + batch_size]
                run = partial(self._forward, [e.ids for e in chunk], base=True, use_cache=False)
                hidden = run_to_block(self.model, block, run)
                for b, e in enumerate(chunk):  # hidden: (B, T, d)
                    states = {name: hidden[b, :len(e.ids)].to("cpu", torch.float32)}
                    results.append(HiddenStates(states, e.offsets, self._token_strings(e.ids)))
        return results

    @contextmanager
    def editing(self, block: int, edit: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[LanguageModel]:
        """Inside the ``with``, every forward pass of the model (:meth:`score`, :meth:`token_logits`,
        :meth:`hidden_states`, :meth:`block_outputs`, :meth:`generate`, or ``self.model`` called directly) sees
        block ``block``'s output replaced by ``edit(hidden)``: splice a reconstruction in, ablate a direction, steer.

        ``hidden`` is (B, T, d) in the model's dtype, padding included (T is 1 at each step of a generation with a
        KV cache); ``edit`` returns a tensor of its shape (a ValueError names both shapes otherwise), cast back to
        that dtype. The hook is removed on exit, also when the body or the edit raises. Edits nested on one block
        apply innermost first. Yields the model itself.

        >>> import torch
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> from kdlens.subjects.word_tokenizer import build_word_tokenizer
        >>> tok = build_word_tokenizer(["the cat sat on the mat ."])
        >>> _ = torch.manual_seed(0)
        >>> lm = LanguageModel(LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32,
        ...     intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)), tok)
        >>> before = lm.block_outputs(["the cat"], 0)[0].layers["layers.0"]
        >>> with lm.editing(0, lambda hidden: hidden + 1.0):
        ...     after = lm.block_outputs(["the cat"], 0)[0].layers["layers.0"]
        >>> torch.allclose(after, before + 1.0)
        True
        """
        block = check_block(self.model, block, "block", self.name)
        with edit_block(self.model, block, edit):
            yield self

    def token_logits(self, texts: list[str], batch_size: int = 16) -> list[TokenLogits]:
        """(T, V) next-token logits per text (float32, CPU), with ids, spans and token strings, for token-level KD.

        Each text's logits are a tensor of their own (no padding, no view of a batch): the body runs per batch, the
        output head per text, so besides what is returned a batch holds its hidden states (and, for a model that is
        not float32, the text's logits in its dtype while they are converted). A model whose head cannot be run apart
        from its body (see :meth:`score`) holds its (B, T, V) logits for the batch instead.
        """
        texts, batch_size = check_texts(texts, "texts"), check_batch_size(batch_size)
        with inference(self.model):
            head = self._head()
        results = []
        for chunk, out in self._batches(texts, batch_size, base=head is not None):
            for b, e in enumerate(chunk):
                n = len(e.ids)
                if head is not None:  # (T, V): the head's own output where it is float32 on the CPU
                    logits = head(out.last_hidden_state[b:b + 1, :n])[0].to("cpu", torch.float32)
                else:
                    logits = out.logits[b, :n].to("cpu", torch.float32, copy=True)  # out.logits: (B, T, V)
                results.append(TokenLogits(logits, torch.tensor(e.ids), e.offsets, self._token_strings(e.ids)))
        return results

    def generate(self, prompts: list[str], max_new_tokens: int = 64, do_sample: bool = False,
                 temperature: float = 1.0, top_p: float = 1.0, seed: int = 0, batch_size: int = 16,
                 stop: str | None = None, stop_ids: Sequence[int] = ()) -> list[str]:
        """Continue each prompt; greedy by default. See :func:`kdlens.subjects.lm.generation.generate`."""
        from kdlens.subjects.lm.generation import generate  # here: generation imports transformers

        return generate(self, prompts, max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
                        top_p=top_p, seed=seed, batch_size=batch_size, stop=stop, stop_ids=stop_ids)

    def same_vocabulary(self, other: LanguageModel) -> bool:
        """True when both tokenizers map the same tokens to the same ids and both logits have the same width."""
        if not isinstance(other, LanguageModel):
            C.fail("other", "a LanguageModel", type(other).__name__, error=TypeError)
        return vocabulary_difference(self, other) is None

    def __repr__(self) -> str:
        return f"LanguageModel({self.name!r}, {type(self.model).__name__}, vocab {len(self.tokenizer)})"


def check_same_vocabulary(teacher: LanguageModel, student: LanguageModel) -> None:
    """Raise ValueError, naming the first difference, unless token-level KD can compare the two models' logits."""
    for name, lm in (("teacher", teacher), ("student", student)):
        if not isinstance(lm, LanguageModel):
            C.fail(name, "a LanguageModel", type(lm).__name__, error=TypeError)
    difference = vocabulary_difference(teacher, student)
    if difference is not None:
        C.fail("student", "a model with the teacher's vocabulary (token-level KD needs one vocabulary)", difference,
               "Use sequence-level KD (train on the teacher's generated text) instead.")

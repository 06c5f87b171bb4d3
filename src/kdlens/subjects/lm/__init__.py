"""What kdlens needs from a causal language model: text scoring, hidden states, token logits and generation.

A :class:`LanguageModel` pairs a Hugging Face ``AutoModelForCausalLM`` with its (fast) tokenizer. Text is the
common ground between a teacher and a student that tokenize differently: every result carries the character span
of each token, so per-token numbers can be mapped back to words or sentences (:func:`pool_by_spans`).

Loading is safe by default: a local directory only, weights from safetensors only (never pickle), and no code from
the checkpoint unless ``trust_remote_code=True``. Every method runs the model in eval mode without gradients and
restores the model's mode afterwards.

The modules, each importing only those above it in this list:

* ``results``: what the operations return (``ContinuationScore``, ``HiddenStates``, ``TokenLogits``, ``Encoding``)
* ``checks``: the argument checks the operations share (texts, batch size)
* ``batching``: padding ragged token rows into a batch, masks of positions in it; the eval-mode, no-gradient block
* ``load``: checkpoint checks, the tokenizer as saved, the model from a local folder
* ``vocabulary``: whether two models share one vocabulary
* ``spans``: word spans, a continuation's tokens and spans, and pooling token states over character spans
* ``head``: the output head applied to chosen positions only, chunked (bounded memory at any vocabulary size)
* ``generation``: batched greedy or seeded generation (imports transformers; the class imports it when it generates)
* ``model``: the ``LanguageModel`` class and ``check_same_vocabulary``
* ``chat``: prompts through a model's own chat template, and the token that ends its turn
* ``compress``: compressed copies (int8 dynamic quantisation, dropped layers), as a user would deploy them
"""

from kdlens.subjects.lm.checks import check_batch_size, check_texts
from kdlens.subjects.lm.load import (
    DTYPES,
    GENERIC_TOKENIZERS,
    PICKLE_SUFFIXES,
    SAFE_WEIGHTS,
    load_tokenizer,
    quiet_transformers,
)
from kdlens.subjects.lm.model import LanguageModel, check_same_vocabulary
from kdlens.subjects.lm.results import ContinuationScore, Encoding, HiddenStates, Span, TokenLogits
from kdlens.subjects.lm.spans import pool_by_spans, word_spans

__all__ = ["LanguageModel", "ContinuationScore", "HiddenStates", "TokenLogits", "Encoding", "Span",
           "check_same_vocabulary", "pool_by_spans", "word_spans", "load_tokenizer", "quiet_transformers",
           "check_texts", "check_batch_size", "SAFE_WEIGHTS", "PICKLE_SUFFIXES", "GENERIC_TOKENIZERS", "DTYPES"]

"""Token-level KD's memory: the loss uses the (B, T, V) logits as they are (no shifted copy) and gives the loss of the
shifted logits; the teacher cache keeps the teacher's own dtype within ``teacher_cache_mb``."""

import pytest
import torch
import torch.nn.functional as F

from kdlens.distill import TrainConfig
from kdlens.distill import lm as distill_lm
from kdlens.distill.lm import TokenKD, _teacher_cache, _token_loss, encode
from kdlens.distill.losses import generalized_jsd_loss, kd_loss, reverse_kl_loss
from tests.distill.test_lm import chains, llama, tokenizer

DIVERGENCES = {"forward_kl": kd_loss, "reverse_kl": reverse_kl_loss, "gjsd": generalized_jsd_loss}


def batch_and_logits():
    tok = tokenizer()
    prompts, targets = chains(4)
    enc = encode(tok, prompts[:3] + ["a ?"], targets[:3] + ["3"])  # one short row: padding at the end
    with torch.no_grad():
        student = llama(len(tok), seed=1)(input_ids=enc.input_ids, attention_mask=enc.attention_mask).logits
        teacher = llama(len(tok), seed=2)(input_ids=enc.input_ids, attention_mask=enc.attention_mask).logits
    return enc, student, teacher


@pytest.mark.parametrize("loss", list(DIVERGENCES))
def test_the_token_loss_equals_the_loss_of_the_shifted_logits(loss):
    enc, student, teacher = batch_and_logits()
    kd = TokenKD(loss=loss, temperature=2.0, ce_weight=0.5)
    total, parts = _token_loss(student, teacher, enc, kd)
    s, t = student[:, :-1].flatten(0, 1), teacher[:, :-1].flatten(0, 1)  # position t predicts token t + 1
    mask = enc.target_mask[:, 1:].flatten()
    ce = F.cross_entropy(s[mask], enc.input_ids[:, 1:].flatten()[mask])
    extra = {"beta": kd.beta} if loss == "gjsd" else {}
    divergence = DIVERGENCES[loss](s[mask], t[mask], temperature=2.0, **extra)
    assert parts["ce"] == pytest.approx(float(ce), rel=1e-6)
    assert parts[loss] == pytest.approx(float(divergence), rel=1e-5)
    assert float(total) == pytest.approx(float(divergence + 0.5 * ce), rel=1e-5)


def test_the_divergence_sees_the_callers_logits_not_a_copy(monkeypatch):
    enc, student, teacher = batch_and_logits()
    seen = []

    def spy(s, t, **kwargs):
        seen.append((s.untyped_storage().data_ptr(), t.untyped_storage().data_ptr()))
        return kd_loss(s, t, **kwargs)

    monkeypatch.setattr(distill_lm, "kd_loss", spy)
    _token_loss(student, teacher, enc, TokenKD())
    assert seen == [(student.untyped_storage().data_ptr(), teacher.untyped_storage().data_ptr())]


def test_the_teacher_cache_keeps_a_half_precision_teachers_logits_within_its_bound():
    tok = tokenizer()
    prompts, targets = chains(10)
    data = encode(tok, prompts, targets)
    teacher = llama(len(tok), seed=1).to(torch.bfloat16).eval()
    n, length = data.input_ids.shape
    size_mb = n * length * len(tok) * 2 / 2**20  # bfloat16: two bytes a value
    cache = _teacher_cache(teacher, data, TrainConfig(batch_size=4, teacher_cache_mb=size_mb), "cpu")
    assert cache.dtype == torch.bfloat16 and cache.shape == (n, length, len(tok))
    with torch.no_grad():
        live = teacher(input_ids=data.input_ids[:4], attention_mask=data.attention_mask[:4]).logits.float()
    width = int(data.attention_mask[:4].sum(1).max())
    assert torch.equal(cache[:4, :width].float(), live[:, :width])  # what the loss would see, exactly
    assert _teacher_cache(teacher, data, TrainConfig(batch_size=4, teacher_cache_mb=0.99 * size_mb), "cpu") is None
    float32 = llama(len(tok), seed=1).eval()  # four bytes a value: twice the bound
    assert _teacher_cache(float32, data, TrainConfig(batch_size=4, teacher_cache_mb=size_mb), "cpu") is None
    assert _teacher_cache(float32, data, TrainConfig(batch_size=4, teacher_cache_mb=2 * size_mb), "cpu").dtype \
        == torch.float32

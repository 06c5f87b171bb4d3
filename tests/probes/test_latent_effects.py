"""Edited forward passes (issue 18: loss recovered, ablation, steering): the losses against an independent
computation, an edit that changes nothing costs nothing, edits touch only their tokens, and steering by zero is
the unsteered model."""

import pytest
import torch

from kdlens.probes.latent_effects import TokenEdit, edited_losses, steering
from tests.probes.test_lm_representations import TEXTS, word_lm


def reference(model, texts, edit=None, block=0):
    """Per-token log-probabilities of each text's next tokens, through one text at a time and a hand-made hook."""
    out = []
    blocks = model.model.model.layers
    for i, text in enumerate(texts):
        ids = torch.tensor([model.tokenizer(text)["input_ids"]])
        handle = None
        if edit is not None and edit[i] is not None:
            e = edit[i]

            def hook(module, args, output, e=e):
                hidden = output[0] if isinstance(output, tuple) else output
                hidden = hidden.clone()
                hidden[0, e.positions] = e.values if e.how == "set" else hidden[0, e.positions] + e.values
                return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

            handle = blocks[block].register_forward_hook(hook)
        try:
            with torch.no_grad():
                logits = model.model(ids).logits[0, :-1].double().log_softmax(-1)
        finally:
            if handle is not None:
                handle.remove()
        out.append((logits, ids[0, 1:]))
    return out


def test_losses_match_an_independent_computation_and_a_null_edit_costs_nothing():
    model = word_lm(0, layers=2)
    states = model.block_outputs(TEXTS, 0)
    same = [TokenEdit(torch.arange(len(s.offsets)), s.layers["layers.0"], "set") for s in states]
    zero = [TokenEdit(torch.tensor([1]), torch.zeros(1, 16), "add") for _ in TEXTS]
    g = torch.Generator().manual_seed(0)
    pushed = [TokenEdit(torch.tensor([1, 2]), 3 * torch.randn(2, 16, generator=g), "add") for _ in TEXTS]
    found = edited_losses(model, TEXTS, 0, {"same": same, "zero": zero, "pushed": pushed}, batch_size=2)
    original = reference(model, TEXTS)
    edited = reference(model, TEXTS, pushed)
    tokens = sum(t.numel() for _, t in original)
    ce = -sum(float(lp.gather(1, t[:, None]).sum()) for lp, t in original) / tokens
    ce_pushed = -sum(float(lq.gather(1, t[:, None]).sum()) for lq, t in edited) / tokens
    kl = sum(float((lp.exp() * (lp - lq)).sum()) for (lp, _), (lq, _) in zip(original, edited, strict=True)) / tokens
    assert found["original"]["tokens"] == tokens
    assert found["original"]["ce"] == pytest.approx(ce, abs=1e-5)
    assert found["pushed"]["ce"] == pytest.approx(ce_pushed, abs=1e-5) and found["pushed"]["kl"] == pytest.approx(kl,
                                                                                                                  abs=1e-5)
    assert found["pushed"]["kl"] > 1e-3
    for name in ("same", "zero"):
        assert found[name]["ce"] == pytest.approx(ce, abs=1e-5) and abs(found[name]["kl"]) < 1e-6


def test_steering_by_zero_is_the_unsteered_model_and_a_large_push_changes_the_text():
    model = word_lm(0, layers=2)
    prompts = ["a is 3 .", "mary went"]
    plain = model.generate(prompts, max_new_tokens=6)
    with steering(model, 0, torch.zeros(16)):
        assert model.generate(prompts, max_new_tokens=6) == plain
    with steering(model, 0, 50 * torch.ones(16)):
        pushed = model.generate(prompts, max_new_tokens=6)
    assert pushed != plain
    assert model.generate(prompts, max_new_tokens=6) == plain  # the hook is gone


def test_bad_edits_are_named():
    model = word_lm(0)
    with pytest.raises(ValueError, match=r"Expected `edits\['x'\]` to be one edit \(or None\) per text \(3\)"):
        edited_losses(model, TEXTS, 0, {"x": [None]})
    with pytest.raises(ValueError, match="Expected `how` to be 'set' or 'add'"):
        edited_losses(model, TEXTS[:1], 0, {"x": [TokenEdit(torch.tensor([0]), torch.zeros(1, 16), "mul")]})
    with pytest.raises(ValueError, match=r"Expected `direction` to be a \(d,\) tensor"):
        steering(model, 0, torch.zeros(2, 16))

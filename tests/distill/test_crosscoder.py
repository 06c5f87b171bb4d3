"""The crosscoder (issue 18, first part): planted shared and exclusive features are recovered and classed by their
relative decoder norm; the metrics against independent formulas; exact resume on the training loop; bad input."""

import numpy as np
import pytest
import torch

from kdlens.distill import crosscoder as C
from kdlens.distill.config import TrainConfig


def planted(n=20_000, widths=(32, 48), shared=6, exclusive=3, p=0.08, seed=0):
    """Paired activations from sparse planted features: ``shared`` directions written into both models, and
    ``exclusive`` written into one model only, per model; every model's directions orthonormal."""
    g = torch.Generator().manual_seed(seed)
    directions = [torch.linalg.qr(torch.randn(d, shared + exclusive, generator=g))[0].T for d in widths]

    def active(k):
        return (torch.rand(n, k, generator=g) < p) * (0.5 + torch.rand(n, k, generator=g))

    common, own = active(shared), [active(exclusive) for _ in widths]
    xs = [common @ dirs[:shared] + mine @ dirs[shared:] for dirs, mine in zip(directions, own, strict=True)]
    return xs, directions


def config(**overrides) -> TrainConfig:
    return TrainConfig(**{"epochs": 20, "batch_size": 256, "lr": 3e-3, "weight_decay": 0.0, "progress": False,
                          **overrides})


def test_planted_features_are_recovered_and_classed_by_relative_decoder_norm(tmp_path):
    xs, directions = planted()
    model, history = C.train(xs, 24, tmp_path / "run", config(), kind="batchtopk", k=1)
    assert history[-1]["fve_0"] > 0.99 and history[-1]["fve_1"] > 0.99
    unit = [w.detach() / w.detach().norm(dim=1, keepdim=True) for w in model.W_dec]  # (L, d_m)
    classes = C.latent_classes(C.relative_decoder_norms(model))
    cosines = [u @ d.T for u, d in zip(unit, directions, strict=True)]  # (L, features) per model
    for j in range(6):  # shared: one latent matches the feature in both models
        best = int((cosines[0][:, j] + cosines[1][:, j]).argmax())
        assert cosines[0][best, j] >= 0.9 and cosines[1][best, j] >= 0.9 and classes[best] == "shared"
    for m, name in ((0, "first"), (1, "second")):
        for j in range(6, 9):
            best = int(cosines[m][:, j].argmax())
            assert cosines[m][best, j] >= 0.9 and classes[best] == name, (m, j)


@pytest.mark.parametrize("kind", ["batchtopk", "l1"])
def test_a_model_against_itself_has_no_exclusive_latent(tmp_path, kind):
    xs, _ = planted(widths=(32, 32))
    pair = [xs[0], xs[0].clone()]
    model, history = C.train(pair, 24, tmp_path / "run", config(), kind=kind, k=1, l1_weight=0.01)
    f, _ = model(pair)
    live = (f > 0).any(0)
    assert history[-1]["fve_0"] > 0.99 and live.sum() >= 9  # at least one latent per planted feature
    assert C.latent_classes(C.relative_decoder_norms(model)[live]) == ["shared"] * int(live.sum())
    assert bool((C.decoder_cosines(model)[live] > 0.95).all())  # rows start apart; AuxK revives rare latents late


def test_fraction_of_variance_explained_is_about_each_dimensions_mean():
    g = np.random.default_rng(0)
    x = g.normal(3.0, 2.0, (500, 7))
    xhat = x + g.normal(0, 0.5, x.shape)
    expected = 1 - np.mean(np.sum((x - xhat) ** 2, 1)) / np.sum(np.var(x, 0))
    assert C.fraction_of_variance_explained(torch.tensor(x), torch.tensor(xhat)) == pytest.approx(expected, rel=1e-12)
    assert C.fraction_of_variance_explained(torch.tensor(x), torch.tensor(x.mean(0)).expand(500, 7)) == \
        pytest.approx(0.0, abs=1e-12)  # the mean explains nothing, however far from zero it is


def test_relative_decoder_norms_and_classes():
    model = C.Crosscoder([3, 4], 3, k=1)
    with torch.no_grad():
        model.W_dec[0].copy_(torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 0]]))
        model.W_dec[1].copy_(torch.tensor([[0, 0, 0, 0.0], [0, 3, 0, 0], [0, 2, 0, 0]]))
    r = C.relative_decoder_norms(model)
    assert r.tolist() == pytest.approx([0.0, 0.75, 1.0])
    assert C.latent_classes(r) == ["first", "second", "second"]
    assert C.latent_classes(r, low=0.3, high=0.8) == ["first", "shared", "second"]


def test_a_killed_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    xs, _ = planted(n=2_000)
    whole, _ = C.train(xs, 16, tmp_path / "whole", config(epochs=2, checkpoint_every=3), k=2)
    calls, original = [], C.batchtopk_loss

    def killed_at_step_ten(*args, **kwargs):
        calls.append(1)
        if len(calls) == 10:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(C, "batchtopk_loss", killed_at_step_ten)
    with pytest.raises(KeyboardInterrupt):
        C.train(xs, 16, tmp_path / "killed", config(epochs=2, checkpoint_every=3), k=2)
    monkeypatch.setattr(C, "batchtopk_loss", original)
    resumed, history = C.train(xs, 16, tmp_path / "killed", config(epochs=2, checkpoint_every=3), k=2)
    assert [h["epoch"] for h in history] == [1, 2]
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name  # the threshold and the firing counts too


def test_the_l1_crosscoder_trains_with_its_penalty_warmed_up(tmp_path):
    xs, _ = planted(n=4_000)
    model, history = C.train(xs, 24, tmp_path / "run", config(epochs=4), kind="l1", l1_weight=0.01)
    assert history[-1]["fve_0"] > 0.6 and history[-1]["sparsity"] > 0
    f, _ = model(xs)
    assert float((f > 0).float().sum(-1).mean()) < 24  # the penalty leaves latents off


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"Expected `widths` to be two positive ints"):
        C.Crosscoder([3], 4)
    model = C.Crosscoder([3, 4], 5)
    with pytest.raises(ValueError, match=r"Expected `xs\[1\]` to be a \(B, 4\) tensor"):
        model([torch.zeros(2, 3), torch.zeros(2, 5)])
    with pytest.raises(ValueError, match="Expected `crosscoder` to be trained"):
        model.eval()([torch.zeros(2, 3), torch.zeros(2, 4)])
    with pytest.raises(ValueError, match="Expected `crosscoder` to be models of one width"):
        C.decoder_cosines(model)
    with pytest.raises(ValueError, match="one row per token in every model's tensor"):
        C.train([torch.zeros(5, 3), torch.zeros(4, 4)], 4, "/tmp/unused", config())


def test_auxk_gives_dead_latents_a_loss_and_a_gradient(monkeypatch):
    xs, _ = planted(n=512)
    xs = [x[:4] + 0.1 for x in xs]  # 4 examples at k = 1: at most 4 of the 16 latents fire
    model = C.Crosscoder([32, 48], 16, k=1).train()
    monkeypatch.setattr(C, "DEAD_AFTER", 1)  # every latent that did not fire in this batch counts as dead
    loss, terms = C.batchtopk_loss(model, xs, aux_k=4)
    assert terms["aux"] > 0 and 0 < terms["dead"] < 1
    loss.backward()
    dead = model.since_fired >= 1
    assert model.W_dec[0].grad[dead].abs().sum() > 0  # the dead latents' decoders learn from the residual

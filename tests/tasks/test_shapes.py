"""The shapes task: the cue obeys each split's contract, masks mark the shape, and everything is reproducible."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kdlens.config import validate
from kdlens.tasks.shapes import CHUNK, CUE_COLOURS, SHAPES, SPLITS, ShapesConfig, ShapesSplit, make_split

CONFIG = ShapesConfig()


def binomial_band(p: float, n: int, z: float = 5.0) -> tuple[float, float]:
    half = z * math.sqrt(p * (1 - p) / n)
    return p - half, p + half


@pytest.mark.parametrize("split, expected", [("train", 0.25), ("transfer", 0.95), ("test", 0.95),
                                             ("test_shifted", 0.0)])
def test_cue_agrees_with_the_label_as_each_split_promises(split, expected):
    data = make_split(CONFIG, split, 4000)
    low, high = binomial_band(expected, 4000)
    assert low <= data.cue_agreement <= high


def test_train_cue_is_independent_of_the_label():
    data = make_split(CONFIG, "train", 8000)
    counts = torch.zeros(4, 4)
    counts.index_put_((data.labels, data.cues), torch.ones(8000), accumulate=True)
    expected = counts.sum(1, keepdim=True) * counts.sum(0, keepdim=True) / counts.sum()
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 27.9  # chi-square, 9 degrees of freedom, p = 0.001


def test_shifted_cue_can_be_independent_instead_of_wrong():
    data = make_split(CONFIG.model_copy(update={"shifted": "independent"}), "test_shifted", 4000)
    low, high = binomial_band(0.25, 4000)
    assert low <= data.cue_agreement <= high


def test_wrong_cues_spread_over_the_other_classes():
    data = make_split(CONFIG, "test_shifted", 6000)
    for label in range(4):
        cues = data.cues[data.labels == label]
        shares = torch.bincount(cues, minlength=4).double() / len(cues)
        assert shares[label] == 0
        assert all(0.27 < float(shares[c]) < 0.40 for c in range(4) if c != label)


def test_classes_are_balanced():
    shares = torch.bincount(make_split(CONFIG, "train", 8000).labels, minlength=4).double() / 8000
    assert ((shares - 0.25).abs() < 0.025).all()


def test_tensors_have_the_documented_shapes_and_ranges():
    data = make_split(ShapesConfig(image_size=24, n_classes=7, cue_size=3), "transfer", 300)
    assert isinstance(data, ShapesSplit) and len(data) == 300
    assert data.images.shape == (300, 3, 24, 24) and data.images.dtype == torch.float32
    assert 0 <= float(data.images.min()) and float(data.images.max()) <= 1
    assert data.masks.shape == (300, 24, 24) and data.masks.dtype == torch.bool
    assert data.labels.dtype == data.cues.dtype == torch.int64
    assert set(data.labels.tolist()) == set(range(7))
    assert ((0 <= data.difficulty) & (data.difficulty <= 1)).all()
    assert set(data.attributes) == {"scale", "contrast", "clutter"}
    item = data[5]
    assert set(item) == {"image", "label", "mask", "cue", "difficulty"}
    assert torch.equal(item["image"], data.images[5])


def test_evidence_mask_is_where_the_shape_is_and_never_the_cue():
    config = CONFIG.model_copy(update={"noise": 0.0, "clutter": 0})
    data = make_split(config, "test", 200)
    assert not (data.masks & data.cue_mask).any()
    for i in range(200):
        image, mask = data.images[i], data.masks[i]
        background = image[:, ~mask & ~data.cue_mask]  # (3, pixels): one flat colour without noise
        shape = image[:, mask]
        assert mask.sum() >= 8, "even the smallest shape covers several pixels"
        assert torch.allclose(background, background[:, :1])
        assert torch.allclose(shape, shape[:, :1])
        assert not torch.allclose(shape[:, 0], background[:, 0], atol=0.05)


def test_cue_patch_has_the_colour_of_the_class_it_names():
    data = make_split(CONFIG.model_copy(update={"noise": 0.0}), "test_shifted", 50)
    corner = data.images[:, :, 0, 0]  # (n, 3)
    torch.testing.assert_close(corner, CUE_COLOURS[data.cues])


def test_difficulty_tracks_size_contrast_and_clutter():
    data = make_split(CONFIG, "test", 3000)
    small = data.attributes["scale"] < data.attributes["scale"].median()
    assert data.difficulty[small].mean() > data.difficulty[~small].mean()
    crowded = data.attributes["clutter"] >= 2
    assert data.difficulty[crowded].mean() > data.difficulty[~crowded].mean()


def test_same_seed_same_images_and_other_seeds_or_splits_differ():
    a = make_split(CONFIG, "test", 100)
    b = make_split(CONFIG, "test", 100)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert not torch.equal(a.images, make_split(CONFIG.model_copy(update={"seed": 1}), "test", 100).images)
    assert not torch.equal(a.images, make_split(CONFIG, "transfer", 100).images)


@settings(max_examples=8, deadline=None)
@given(small=st.integers(1, 3 * CHUNK))
def test_a_split_is_a_prefix_of_any_larger_one(small):
    large = make_split(CONFIG, "transfer", 3 * CHUNK + 5)
    part = make_split(CONFIG, "transfer", small)
    assert torch.equal(part.images, large.images[:small])
    assert torch.equal(part.labels, large.labels[:small])


@settings(max_examples=10, deadline=None)
@given(n_classes=st.integers(2, len(SHAPES)), size=st.sampled_from([16, 32, 48]), seed=st.integers(0, 2**31))
def test_any_valid_config_draws_consistent_data(n_classes, size, seed):
    data = make_split(ShapesConfig(n_classes=n_classes, image_size=size, seed=seed), "train", 64)
    assert data.images.shape == (64, 3, size, size)
    assert int(data.labels.max()) < n_classes and int(data.cues.max()) < n_classes
    assert data.masks.flatten(1).any(1).all()


def test_splits_are_named_and_typos_suggested():
    assert SPLITS == ("train", "transfer", "test", "test_shifted")
    with pytest.raises(ValueError, match=r"Expected `split` to be one of .* but got 'test_shift'\. "
                                         r"Did you mean 'test_shifted'\?"):
        make_split(CONFIG, "test_shift", 10)


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_bad_sizes_are_rejected(n):
    with pytest.raises(ValueError, match="Expected `n` to be a positive integer"):
        make_split(CONFIG, "train", n)


@pytest.mark.parametrize("bad, message", [
    ({"n_classes": 9}, "n_classes"),
    ({"n_classes": 1}, "n_classes"),
    ({"cue_correlation": 1.5}, "cue_correlation"),
    ({"scale": (0.3, 0.2)}, "0 < low <= high"),
    ({"scale": (0.2, 0.6)}, "at most 0.5"),
    ({"cue_size": 10, "image_size": 32}, "too large"),
    ({"shifted": "opposite"}, "shifted"),
    ({"cue_corelation": 0.9}, "Did you mean 'cue_correlation'"),
])
def test_bad_configs_are_rejected_with_the_reason(bad, message):
    with pytest.raises(ValueError, match=message):
        validate(bad, ShapesConfig)


def test_a_counterfactual_changes_only_the_cue_pixels():
    from kdlens.tasks.shapes import other_cues, with_cues

    data = make_split(CONFIG, "test", CHUNK + 10)
    new = other_cues(data, seed=3)
    assert (new != data.cues).all()
    edited = with_cues(data, new)
    assert torch.equal(edited.cues, new) and torch.equal(edited.labels, data.labels)
    assert torch.equal(edited.images[:, :, ~data.cue_mask], data.images[:, :, ~data.cue_mask])
    assert torch.equal(edited.masks, data.masks)
    changed = (edited.images != data.images).any(1)  # (n, H, W)
    assert changed[:, data.cue_mask].float().mean() > 0.5
    torch.testing.assert_close(with_cues(data, data.cues).images, data.images, rtol=0, atol=0)


@pytest.mark.parametrize("cues, message", [
    (torch.zeros(5, dtype=torch.long), r"\(10,\) integer class indices"),
    (torch.full((10,), 4), r"values in \[4, 4\]"),
    (torch.zeros(10), "float32"),
])
def test_bad_counterfactual_cues_are_rejected(cues, message):
    from kdlens.tasks.shapes import with_cues

    with pytest.raises(ValueError, match=message):
        with_cues(make_split(CONFIG, "test", 10), cues)

"""The shapes task: colour images whose right reason is known, with a planted shortcut that can mislead a student.

Each image holds one shape (circle, square, triangle, ...) at a random position, scale, rotation and colour, on a
noisy background with a few distractor specks. The label is the shape; the **evidence mask** marks the shape's
pixels, the only place the answer is written. A small coloured **cue** patch in the top-left corner names a class:
the label's with probability ``cue_correlation``, another class otherwise.

Splits differ only in how the cue relates to the label:

=============  =================================================================================================
``train``      cue independent of the label (uniform over classes): a model trained here cannot profit from it
``transfer``   cue agrees with the label with probability ``cue_correlation``: what students are distilled on
``test``       like ``transfer``, fresh images
``test_shifted``  cue never names the label (``shifted="wrong"``), or is independent (``shifted="independent"``)
=============  =================================================================================================

Generation is vectorised and deterministic: images are drawn in chunks of 1,024, each from its own generator
seeded by (seed, split, chunk), so the first ``k`` examples of a split do not depend on how many are asked for
(the last chunk is drawn whole and cut).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch.utils.data import Dataset

from kdlens.config import StrictModel, did_you_mean
from kdlens.validation import check_int

SHAPES = ("circle", "square", "triangle", "cross", "ring", "bar", "semicircle")
SPLITS = ("train", "transfer", "test", "test_shifted")
CUE_COLOURS = torch.tensor([[1.0, 0.1, 0.1], [0.1, 0.9, 0.1], [0.15, 0.3, 1.0], [1.0, 0.9, 0.1], [0.95, 0.2, 0.95],
                            [0.1, 0.95, 0.95], [1.0, 0.55, 0.0]])  # (7, 3) RGB, one per class
CHUNK = 1024


class ShapesConfig(StrictModel):
    """How shapes images are drawn. Sizes are in pixels unless said otherwise.

    ``scale`` bounds the radius of the disc that holds the shape, as a fraction of ``image_size``; ``contrast`` the
    RGB distance between shape and background colour; ``clutter`` the most distractor specks per image.
    """

    image_size: int = Field(32, ge=16, le=256)
    n_classes: int = Field(4, ge=2, le=len(SHAPES))
    cue_correlation: float = Field(0.95, ge=0, le=1, description="P(cue names the label) in transfer and test")
    shifted: Literal["wrong", "independent"] = "wrong"
    cue_size: int = Field(4, ge=1)
    scale: tuple[float, float] = (0.2, 0.36)
    contrast: tuple[float, float] = (0.3, 0.7)
    noise: float = Field(0.06, ge=0, description="std of Gaussian pixel noise, images in [0, 1]")
    clutter: int = Field(3, ge=0)
    seed: int = 0

    @model_validator(mode="after")
    def _ranges(self):
        for name in ("scale", "contrast"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {(low, high)}")
        if self.scale[1] > 0.5:
            raise ValueError(f"scale[1] must be at most 0.5 (the shape must fit the image), got {self.scale[1]}")
        if self.cue_size * 4 > self.image_size:
            raise ValueError(f"cue_size {self.cue_size} is too large for image_size {self.image_size}; "
                             f"use at most {self.image_size // 4}")
        return self

    @property
    def class_names(self) -> tuple[str, ...]:
        return SHAPES[: self.n_classes]


@dataclass
class ShapesSplit(Dataset):
    """One split of the shapes task; indexing gives a dict per example.

    Attributes
    ----------
    images : (n, 3, H, W) float32 in [0, 1]
    labels : (n,) int64 shape class
    masks : (n, H, W) bool evidence mask: the shape's visible pixels
    cues : (n,) int64 the class the corner cue names
    cue_mask : (H, W) bool the cue's pixels (the same for every image)
    difficulty : (n,) float32 in [0, 1]: mean of small size, low contrast and clutter, each scaled to [0, 1]
    attributes : per-example (n,) tensors behind the difficulty: ``scale`` (radius, px), ``contrast``, ``clutter``
    """

    name: str
    config: ShapesConfig
    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    cues: torch.Tensor
    cue_mask: torch.Tensor
    difficulty: torch.Tensor
    attributes: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[index], "label": self.labels[index], "mask": self.masks[index],
                "cue": self.cues[index], "difficulty": self.difficulty[index]}

    @property
    def cue_agreement(self) -> float:
        """Fraction of examples whose cue names the label."""
        return float((self.cues == self.labels).double().mean())


def _chunk_generator(seed: int, split: str, chunk: int) -> torch.Generator:
    digest = hashlib.sha256(f"kdlens.shapes/{seed}/{split}/{chunk}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def _inside(shape: str, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Membership of points (u, v), in the shape's own frame where it fits the unit disc."""
    r2 = u * u + v * v
    if shape == "circle":
        return r2 <= 0.85**2
    if shape == "square":
        return torch.maximum(u.abs(), v.abs()) <= 0.65
    if shape == "triangle":  # equilateral, inscribed in the unit circle: three half-planes at distance 1/2
        inside = torch.ones_like(u, dtype=torch.bool)
        for angle in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6):
            inside &= u * math.cos(angle) + v * math.sin(angle) <= 0.5
        return inside
    if shape == "cross":
        return ((u.abs() <= 0.25) & (v.abs() <= 0.95)) | ((v.abs() <= 0.25) & (u.abs() <= 0.95))
    if shape == "ring":
        return (r2 <= 0.95**2) & (r2 >= 0.5**2)
    if shape == "bar":
        return (u.abs() <= 0.95) & (v.abs() <= 0.3)
    assert shape == "semicircle"
    return (r2 <= 0.95**2) & (v >= -0.15)


def _sample_cues(labels: torch.Tensor, p_label: float, n_classes: int, g: torch.Generator) -> torch.Tensor:
    """Cue = label with probability ``p_label``, otherwise a uniformly chosen *other* class."""
    other = (labels + torch.randint(1, n_classes, labels.shape, generator=g)) % n_classes
    return torch.where(torch.rand(labels.shape, generator=g) < p_label, labels, other)


def _cue_probability(config: ShapesConfig, split: str) -> float:
    if split in ("transfer", "test"):
        return config.cue_correlation
    if split == "test_shifted" and config.shifted == "wrong":
        return 0.0
    return 1.0 / config.n_classes  # independent: a uniform cue names the label 1/C of the time


def _draw_chunk(config: ShapesConfig, split: str, n: int, g: torch.Generator,
                cues_override: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    size, k = config.image_size, config.n_classes
    pixel = torch.arange(size, dtype=torch.float32) + 0.5  # pixel centres
    ys, xs = pixel.view(1, size, 1), pixel.view(1, 1, size)

    labels = torch.randint(0, k, (n,), generator=g)
    cues = _sample_cues(labels, _cue_probability(config, split), k, g)
    if cues_override is not None:  # drawn all the same, so every other random number stays where it was
        cues = cues_override

    # background: a grey level with a slight tint, plus pixel noise added at the end
    background = 0.25 + 0.5 * torch.rand(n, 1, generator=g) + 0.08 * (torch.rand(n, 3, generator=g) - 0.5)  # (n, 3)
    images = background[:, :, None, None].expand(n, 3, size, size).clone()  # (n, 3, H, W)

    # distractor specks (2x2 px) of random colour, kept out of the cue's corner; drawn under the shape
    clutter = torch.randint(0, config.clutter + 1, (n,), generator=g)
    for i in range(config.clutter):
        top = torch.randint(config.cue_size + 1, size - 2, (n,), generator=g)
        left = torch.randint(config.cue_size + 1, size - 2, (n,), generator=g)
        colour = torch.rand(n, 3, generator=g)
        speck = ((ys >= top.view(-1, 1, 1)) & (ys < top.view(-1, 1, 1) + 2) & (xs >= left.view(-1, 1, 1))
                 & (xs < left.view(-1, 1, 1) + 2) & (clutter > i).view(-1, 1, 1))  # (n, H, W)
        images = torch.where(speck[:, None], colour[:, :, None, None], images)

    # the shape: radius r, centre kept inside the image, random rotation and colour at a set contrast
    low, high = config.scale
    radius = size * (low + (high - low) * torch.rand(n, generator=g))  # (n,) px
    centre_y = radius + 0.5 + (size - 1 - 2 * radius) * torch.rand(n, generator=g)
    centre_x = radius + 0.5 + (size - 1 - 2 * radius) * torch.rand(n, generator=g)
    theta = 2 * math.pi * torch.rand(n, generator=g)
    dy, dx = ys - centre_y.view(-1, 1, 1), xs - centre_x.view(-1, 1, 1)  # (n, H, W)
    cos, sin, r = theta.cos().view(-1, 1, 1), theta.sin().view(-1, 1, 1), radius.view(-1, 1, 1)
    u, v = (cos * dx + sin * dy) / r, (-sin * dx + cos * dy) / r
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for c, shape in enumerate(SHAPES[:k]):
        chosen = labels == c
        masks[chosen] = _inside(shape, u[chosen], v[chosen])

    c_low, c_high = config.contrast
    contrast = c_low + (c_high - c_low) * torch.rand(n, generator=g)
    direction = torch.randn(n, 3, generator=g)
    direction = direction / direction.norm(dim=1, keepdim=True)
    colour = (background + contrast[:, None] * direction).clamp(0, 1)
    images = torch.where(masks[:, None], colour[:, :, None, None], images)
    contrast = (colour - background).norm(dim=1)  # the contrast actually drawn, after clamping

    # the cue, drawn last, over whatever lies in the corner
    cue_mask = (ys < config.cue_size) & (xs < config.cue_size)  # (1, H, W)
    images = torch.where(cue_mask[:, None], CUE_COLOURS[cues][:, :, None, None], images)
    masks &= ~cue_mask

    if config.noise > 0:
        images = images + config.noise * torch.randn(images.shape, generator=g)
    images = images.clamp_(0, 1)

    size_term = 1 - (radius / size - low) / max(high - low, 1e-9)
    contrast_term = 1 - ((contrast - c_low) / max(c_high - c_low, 1e-9)).clamp(0, 1)
    clutter_term = clutter.float() / max(config.clutter, 1)
    difficulty = ((size_term + contrast_term + clutter_term) / 3).clamp(0, 1)
    return {"images": images, "labels": labels, "masks": masks, "cues": cues, "difficulty": difficulty,
            "scale": radius, "contrast": contrast, "clutter": clutter, "cue_mask": cue_mask[0]}


def _check_cues(cues, n: int, n_classes: int) -> None:
    expected = f"({n},) integer class indices in [0, {n_classes - 1}]"
    if not isinstance(cues, torch.Tensor) or cues.shape != (n,) or cues.is_floating_point():
        got = f"{cues.dtype} of shape {tuple(cues.shape)}" if isinstance(cues, torch.Tensor) else type(cues).__name__
        raise ValueError(f"Expected `cues` to be {expected}, but got {got}.")
    if int(cues.min()) < 0 or int(cues.max()) >= n_classes:
        raise ValueError(f"Expected `cues` to be {expected}, but got values in [{int(cues.min())}, {int(cues.max())}].")


def make_split(config: ShapesConfig | None = None, split: str = "train", n: int = 10_000,
               cues: torch.Tensor | None = None) -> ShapesSplit:
    """Draw ``n`` examples of ``split`` (one of ``SPLITS``) of the shapes task.

    Parameters
    ----------
    config : ShapesConfig (defaults: 32x32, 4 classes, cue correlation 0.95)
    split : "train" | "transfer" | "test" | "test_shifted"
    n : number of examples
    cues : (n,) int, optional: draw the same images with these cues instead (see :func:`with_cues`)

    Returns
    -------
    ShapesSplit with images (n, 3, H, W) float32 in [0, 1], labels, evidence masks, cues and difficulty.

    Examples
    --------
    >>> data = make_split(ShapesConfig(), "test_shifted", 256)
    >>> data.images.shape, data.cue_agreement
    (torch.Size([256, 3, 32, 32]), 0.0)
    """
    config = config or ShapesConfig()
    if split not in SPLITS:
        raise ValueError(f"Expected `split` to be one of {', '.join(map(repr, SPLITS))}, but got {split!r}."
                         f"{did_you_mean(split, SPLITS)}")
    n = check_int(n, "n", 1)
    # whole chunks, the last one cut: a split's first k examples are the same whatever n is
    if cues is not None:
        _check_cues(cues, n, config.n_classes)
        cues = torch.cat([cues.long(), cues.new_zeros(math.ceil(n / CHUNK) * CHUNK - n, dtype=torch.long)])
    chunks = [_draw_chunk(config, split, CHUNK, _chunk_generator(config.seed, split, i),
                          None if cues is None else cues[i * CHUNK:(i + 1) * CHUNK])
              for i in range(math.ceil(n / CHUNK))]
    cat = {key: torch.cat([c[key] for c in chunks])[:n] for key in chunks[0] if key != "cue_mask"}
    return ShapesSplit(split, config, cat["images"], cat["labels"], cat["masks"], cat["cues"], chunks[0]["cue_mask"],
                       cat["difficulty"], {key: cat[key] for key in ("scale", "contrast", "clutter")})


def with_cues(data: ShapesSplit, cues: torch.Tensor) -> ShapesSplit:
    """The counterfactual of ``data``: the very same images (shape, colours, clutter, pixel noise) with the corner
    cue naming ``cues`` (n,) instead. Only the cue's pixels differ.

    Examples
    --------
    >>> data = make_split(ShapesConfig(), "test", 8)
    >>> edited = with_cues(data, (data.cues + 1) % 4)
    >>> bool((edited.images != data.images)[:, :, ~data.cue_mask].any())
    False
    """
    return make_split(data.config, data.name, len(data), cues=cues)


def other_cues(data: ShapesSplit, seed: int = 0) -> torch.Tensor:
    """(n,) a cue for each example naming a class other than its current cue (uniformly among the others)."""
    g = torch.Generator().manual_seed(seed)
    return (data.cues + torch.randint(1, data.config.n_classes, data.cues.shape, generator=g)) % data.config.n_classes

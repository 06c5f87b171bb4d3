"""Make what a user brings to an audit: an image folder with evidence masks, and two trained models as safetensors.

    python prepare.py            # then: kdlens audit audit_own.yaml

The images are the shapes task's (its cue makes a shortcut the small model can take); the models are trained here
with a plain PyTorch loop, as you would train your own, and saved with safetensors' save_file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from models import build_classifier
from PIL import Image
from safetensors.torch import save_file

from kdlens.tasks.shapes import SHAPES, ShapesConfig, make_split


def write_image_folder(root: Path, split: str, n: int, shapes: ShapesConfig) -> None:
    """root/images/<class>/<i>.png and root/masks/<class>/<i>.png (white = where the shape is)."""
    data = make_split(shapes, split, n)
    for i, (image, label, mask) in enumerate(zip(data.images, data.labels, data.masks, strict=True)):
        name = f"{int(label)}_{SHAPES[int(label)]}"  # folders sort in label order, as ImageFolder reads them
        for kind, array in (("images", (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)),
                            ("masks", mask.numpy().astype(np.uint8) * 255)):
            folder = root / kind / name
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(folder / f"{i:05d}.png")


def fit(model: torch.nn.Module, split: str, n: int, epochs: int, shapes: ShapesConfig, seed: int) -> None:
    data = make_split(shapes, split, n)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for index in torch.randperm(n, generator=generator).split(128):
            loss = F.cross_entropy(model(data.images[index]), data.labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for data/ and weights/")
    parser.add_argument("--n-train", type=int, default=6000)
    parser.add_argument("--n-test", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    shapes = ShapesConfig()
    for split in ("test", "test_shifted"):
        write_image_folder(args.out / "data" / split, split, args.n_test, shapes)
    (args.out / "weights").mkdir(parents=True, exist_ok=True)
    for name, width, split, seed in (("teacher", 16, "train", 0), ("student", 8, "transfer", 1)):
        torch.manual_seed(seed)
        model = build_classifier(n_classes=shapes.n_classes, width=width)
        fit(model, split, args.n_train, args.epochs, shapes, seed)
        save_file(model.state_dict(), str(args.out / "weights" / f"{name}.safetensors"))
    print(f"wrote {args.out / 'data'} and {args.out / 'weights'}")


if __name__ == "__main__":
    main()

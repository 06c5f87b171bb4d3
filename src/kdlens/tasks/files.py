"""Users' own evaluation data: a safetensors file of tensors, or a folder of images in torchvision's layout.

Both loaders return an :class:`EvalSplit`, the one shape of user data the probes read. Beside inputs and labels it
may carry what a lab task knows by construction and a user may know too:

- ``masks``: where the right reason lies in each image (the evidence an attribution map should land on);
- ``difficulty``: a per-example score, to read results by how hard an example is;
- ``counterfactuals`` and ``counterfactual_targets``: the same inputs with only a spurious feature edited, and the
  class the edited feature points to (a model that follows the edit has learned the shortcut).

A safetensors file holds these under the same names (``inputs`` and ``labels`` required, the rest optional), with
the class names, when known, as JSON in the file's metadata. :func:`save_tensor_split` writes that layout.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError, safe_open
from torch.utils.data import Dataset

from kdlens import io
from kdlens.config import did_you_mean
from kdlens.progress import progress_bar
from kdlens.validation import check_int, fail

TENSOR_KEYS = ("inputs", "labels", "masks", "difficulty", "counterfactuals", "counterfactual_targets")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
PROGRESS_FROM = 1000  # images; decoding this many takes a couple of seconds, so a bar starts to help


@dataclass
class EvalSplit(Dataset):
    """Evaluation examples with whatever ground truth the user has; indexing gives a dict per example.

    Attributes
    ----------
    inputs : (n, ...) float32, images as (n, C, H, W) in [0, 1]
    labels : (n,) int64 class indices
    masks : (n, H, W) bool or None: evidence, True where the right reason for the label lies
    difficulty : (n,) float32 or None: higher is harder, in the user's own units
    counterfactuals : (n, ...) float32 or None: ``inputs`` with only a spurious feature edited (same shape)
    counterfactual_targets : (n,) int64 or None: the class each edited feature points to
    classes : class names, ``classes[label]``, or None
    name : what reports call this split
    """

    inputs: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor | None = None
    difficulty: torch.Tensor | None = None
    counterfactuals: torch.Tensor | None = None
    counterfactual_targets: torch.Tensor | None = None
    classes: list[str] | None = None
    name: str = "eval"

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {"input": self.inputs[index], "label": self.labels[index]}
        for key, value in (("mask", self.masks), ("difficulty", self.difficulty),
                           ("counterfactual", self.counterfactuals),
                           ("counterfactual_target", self.counterfactual_targets)):
            if value is not None:
                item[key] = value[index]
        return item


# ---------------------------------------------------------------------------------------------------------------------
# checks shared by the loader and the writer


def _as_inputs(t: torch.Tensor, key: str, source: str) -> torch.Tensor:
    """float32 inputs; integer pixels (uint8 images) become float in [0, 1] by /255."""
    where = f"{key}` in `{source}"
    if t.dtype == torch.bool or t.is_complex():
        fail(where, "float (or 8-bit integer pixel) values", f"dtype {t.dtype}", f"Save {key}.float() instead.")
    if not t.is_floating_point():
        lo, hi = (int(v) for v in torch.aminmax(t))
        if lo < 0 or hi > 255:
            fail(where, "8-bit pixel values in [0, 255] (integer inputs are divided by 255)",
                 f"{t.dtype} values in [{lo}, {hi}]", f"Save other inputs as float: {key}.float().")
        return t.float().div_(255)
    t = t.float()
    bad = (~torch.isfinite(t)).flatten(1).any(dim=1)  # (n,) examples holding a NaN or inf
    if bool(bad.any()):
        fail(where, "finite", f"NaN or inf in {int(bad.sum())} of {t.shape[0]} examples "
             f"(first at index {int(bad.nonzero()[0])})", "Drop or repair those examples before saving.")
    return t


def _as_classes(t: torch.Tensor, key: str, source: str, n: int, n_classes: int | None) -> torch.Tensor:
    """(n,) int64 class indices, each in [0, n_classes) when the class names are known."""
    where = f"{key}` in `{source}"
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        fail(where, "integer class indices", f"dtype {t.dtype}",
             f"Save class indices, e.g. {key}.long(); for one-hot rows use {key}.argmax(-1).")
    if tuple(t.shape) != (n,):
        fail(where, f"of shape ({n},), one class index per input", f"shape {tuple(t.shape)}")
    lo, hi = (int(v) for v in torch.aminmax(t))
    if n_classes is None and lo < 0:
        fail(where, "non-negative class indices", f"values in [{lo}, {hi}]", "Class i is index i, counting from 0.")
    if n_classes is not None and (lo < 0 or hi >= n_classes):
        fail(where, f"class indices in [0, {n_classes - 1}]", f"values in [{lo}, {hi}]",
             f"There are {n_classes} class names; an index must name one of them.")
    return t.long()


def _checked(tensors: dict[str, torch.Tensor], source: str, classes: list[str] | None) -> dict[str, torch.Tensor]:
    """Validate the tensors of a split against each other and return them in kdlens' dtypes."""
    unknown = sorted(set(tensors) - set(TENSOR_KEYS))
    if unknown:
        fail(source, f"a split with tensors among {', '.join(TENSOR_KEYS)}", f"unknown keys {unknown}",
             f"Rename or drop them.{did_you_mean(unknown[0], TENSOR_KEYS)}")
    missing = [key for key in ("inputs", "labels") if key not in tensors]
    if missing:
        fail(source, "a split with `inputs` and `labels` tensors", f"keys {sorted(tensors)}",
             'Save it as save_file({"inputs": x, "labels": y}, path) or with kdlens.tasks.save_tensor_split.')
    inputs = tensors["inputs"]
    if inputs.ndim < 2 or inputs.numel() == 0:
        fail(f"inputs` in `{source}", "of shape (n, ...) with n >= 1 examples", f"shape {tuple(inputs.shape)}",
             "A split needs at least one example; give 1-D features a feature axis: inputs[:, None].")
    n = inputs.shape[0]
    n_classes = None if classes is None else len(classes)
    out = {"inputs": _as_inputs(inputs, "inputs", source),
           "labels": _as_classes(tensors["labels"], "labels", source, n, n_classes)}

    if "masks" in tensors:
        masks, want = tensors["masks"], (n, *inputs.shape[-2:])
        if inputs.ndim < 3:
            fail(f"masks` in `{source}", "given only with spatial inputs (n, ..., H, W)",
                 f"inputs of shape {tuple(inputs.shape)}", "Masks mark pixels; drop them for these inputs.")
        if tuple(masks.shape) != want:
            fail(f"masks` in `{source}", f"of shape {want}, one (H, W) mask per input of shape {tuple(inputs.shape)}",
                 f"shape {tuple(masks.shape)}", "Masks cover the inputs' last two (spatial) dimensions.")
        if masks.dtype != torch.bool and not bool(((masks == 0) | (masks == 1)).all()):
            fail(f"masks` in `{source}", "boolean (or 0/1)", f"{masks.dtype} values other than 0 and 1",
                 "Threshold soft masks first, e.g. masks > 0.5.")
        out["masks"] = masks.bool()

    if "difficulty" in tensors:
        difficulty = tensors["difficulty"]
        if difficulty.dtype == torch.bool or difficulty.is_complex() or tuple(difficulty.shape) != (n,):
            fail(f"difficulty` in `{source}", f"real numbers of shape ({n},), one per input",
                 f"{difficulty.dtype} of shape {tuple(difficulty.shape)}")
        if not bool(torch.isfinite(difficulty.double()).all()):
            fail(f"difficulty` in `{source}", "finite", "NaN or inf", "Give every example a difficulty score.")
        out["difficulty"] = difficulty.float()

    if ("counterfactuals" in tensors) != ("counterfactual_targets" in tensors):
        given, other = "counterfactuals", "counterfactual_targets"
        if given not in tensors:
            given, other = other, given
        fail(source, "a split with both `counterfactuals` and `counterfactual_targets` or neither",
             f"`{given}` without `{other}`",
             "Counterfactuals are read against the class their edited feature points to: save both.")
    if "counterfactuals" in tensors:
        edited = tensors["counterfactuals"]
        if edited.shape != inputs.shape:
            fail(f"counterfactuals` in `{source}", f"the inputs' shape {tuple(inputs.shape)}",
                 f"shape {tuple(edited.shape)}", "Each counterfactual is its input with one feature edited.")
        out["counterfactuals"] = _as_inputs(edited, "counterfactuals", source)
        out["counterfactual_targets"] = _as_classes(tensors["counterfactual_targets"], "counterfactual_targets",
                                                    source, n, n_classes)
    return out


def _check_class_names(classes, source: str) -> list[str] | None:
    if classes is not None and (not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes)):
        fail(f"classes` in `{source}", "a list of class names (strings)", repr(classes)[:80])
    return None if classes is None else list(classes)


# ---------------------------------------------------------------------------------------------------------------------
# safetensors


def load_tensor_split(path: str | os.PathLike, name: str | None = None) -> EvalSplit:
    """Read an evaluation split from a safetensors file.

    Parameters
    ----------
    path : a safetensors file holding ``inputs`` (n, ...) and ``labels`` (n,) integer class indices, and optionally
        ``masks`` (n, H, W) bool (H, W the inputs' last two dims), ``difficulty`` (n,), ``counterfactuals`` (the
        inputs' shape) with ``counterfactual_targets`` (n,) integer. Class names, if any, are read from the file's
        metadata (``classes``, a JSON list, as :func:`save_tensor_split` writes them).
    name : the split's name; defaults to the name saved in the metadata, else the file's stem

    Returns
    -------
    EvalSplit with float32 inputs and counterfactuals: **integer inputs (uint8 images) are divided by 255**, so they
    come back as float in [0, 1]; float inputs are kept as they are (cast to float32).

    Raises
    ------
    FileNotFoundError when ``path`` is not a file; ValueError for an unreadable file, an unknown key (the known ones
    are listed), a missing ``inputs`` or ``labels``, float labels, a shape that disagrees with n (or masks with the
    inputs' (H, W)), an empty split, or NaN/inf inputs (the message says in how many examples).

    Examples
    --------
    >>> import tempfile, torch
    >>> path = Path(tempfile.mkdtemp()) / "eval.safetensors"
    >>> images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    >>> _ = io.save_tensors(path, {"inputs": images, "labels": torch.tensor([0, 1, 1, 0])})
    >>> split = load_tensor_split(path)
    >>> split.inputs.dtype, float(split.inputs.max()) <= 1.0, split.name
    (torch.float32, True, 'eval')
    """
    path = Path(path)
    if not path.is_file():
        fail("path", "a safetensors file", f"{path} (no such file)", error=FileNotFoundError)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = io.load_tensors(path)
    except (SafetensorError, OSError, ValueError) as error:
        fail("path", "a safetensors file", f"{path}, which could not be read ({error})",
             "Write it with safetensors.torch.save_file or kdlens.tasks.save_tensor_split.")
    classes = None
    if "classes" in metadata:
        try:
            classes = json.loads(metadata["classes"])
        except json.JSONDecodeError:
            fail(f"classes` in `{path}", "a JSON list of class names", repr(metadata["classes"])[:80])
    classes = _check_class_names(classes, str(path))
    fields = _checked(tensors, str(path), classes)
    return EvalSplit(**fields, classes=classes, name=name or metadata.get("name") or path.stem)


def save_tensor_split(split: EvalSplit, path: str | os.PathLike) -> Path:
    """Write ``split`` as a safetensors file that :func:`load_tensor_split` reads back unchanged.

    Tensors are stored under their field names (None fields are left out); ``classes`` (as JSON) and ``name`` go in
    the file's metadata. The split is validated first, so a file this writes always loads. The write is atomic.

    Parameters
    ----------
    split : EvalSplit to save
    path : the file to write (parent folders are created)

    Returns
    -------
    Path of the file written.

    Examples
    --------
    >>> import tempfile, torch
    >>> split = EvalSplit(torch.rand(2, 3, 4, 4), torch.tensor([1, 0]), classes=["cat", "dog"], name="pets")
    >>> path = save_tensor_split(split, Path(tempfile.mkdtemp()) / "pets.safetensors")
    >>> load_tensor_split(path).classes
    ['cat', 'dog']
    """
    if not isinstance(split, EvalSplit):
        fail("split", "an EvalSplit", type(split).__name__, error=TypeError)
    classes = _check_class_names(split.classes, "split")
    given = {key: getattr(split, key) for key in TENSOR_KEYS if getattr(split, key) is not None}
    for key, value in given.items():
        if not isinstance(value, torch.Tensor):
            fail(f"split.{key}", "a torch.Tensor", type(value).__name__, error=TypeError)
    metadata = {"name": str(split.name)}
    if classes is not None:
        metadata["classes"] = json.dumps(classes)
    return io.save_tensors(path, _checked(given, "split", classes), metadata=metadata)


# ---------------------------------------------------------------------------------------------------------------------
# image folders


def _image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, as torchvision does), sorted by relative path; hidden ones skipped."""
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
             and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def _open(path: Path, mode: str) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert(mode)  # convert() decodes the whole file, so a truncated one fails here
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        fail("image file", "a readable image", f"{path} ({type(error).__name__}: {error})",
             "Re-save it or remove it from the folder.")


def _mask_index(masks_root: Path) -> dict[str, list[Path]]:
    """Mask files by relative path without extension (``cat/001``), so ``cat/001.png`` matches ``cat/001.jpg``."""
    index: dict[str, list[Path]] = {}
    for p in _image_files(masks_root):
        index.setdefault(p.relative_to(masks_root).with_suffix("").as_posix(), []).append(p)
    return index


def _read_mask(image_path: Path, size: tuple[int, int], root: Path, masks_root: Path,
               index: dict[str, list[Path]], image_size: int | None) -> torch.Tensor:
    """(H, W) bool evidence mask of one image: its grayscale mask file thresholded at > 127."""
    key = image_path.relative_to(root).with_suffix("").as_posix()
    found = index.get(key, [])
    if len(found) != 1:
        got = "no such file" if not found else "several: " + ", ".join(p.name for p in found)
        fail(f"mask for {image_path}", f"one file {masks_root / key}.<png|jpg|...>", got,
             "Give every image a mask with the same relative path (the extension may differ).",
             error=FileNotFoundError if not found else ValueError)
    mask = _open(found[0], "L")
    if mask.size != size:
        fail(f"mask {found[0]}", f"the size of its image {image_path}, {size[0]}x{size[1]} (width x height)",
             f"{mask.size[0]}x{mask.size[1]}")
    if image_size is not None:
        mask = mask.resize((image_size, image_size), Image.Resampling.NEAREST)
    return torch.from_numpy(np.asarray(mask, dtype=np.uint8) > 127)  # (H, W)


def load_image_folder(root: str | os.PathLike, image_size: int | None = None, masks: str | os.PathLike | None = None,
                      name: str | None = None) -> EvalSplit:
    """Read a folder of images in torchvision's ``ImageFolder`` layout: ``root/<class>/<file>``.

    Classes are the subfolders of ``root`` sorted by name (label ``i`` is the ``i``-th); files within a class are
    sorted by relative path, so the order is the same on every machine. Files ending in .png, .jpg, .jpeg, .bmp or
    .webp (any case) are read, searching subfolders too; hidden files and folders (starting with ".") are skipped.

    Parameters
    ----------
    root : the folder holding one subfolder per class
    image_size : if given, every image is resized to ``image_size`` x ``image_size`` px (PIL bilinear); if None,
        all images must already share one size
    masks : optional folder parallel to ``root`` (the same relative paths; the extension may differ, files are
        matched by stem) of grayscale evidence masks: a pixel > 127 (of 255) marks evidence. Masks must have their
        image's size and are resized nearest-neighbour when ``image_size`` is given.
    name : the split's name; defaults to ``root``'s folder name

    Returns
    -------
    EvalSplit with inputs (n, 3, H, W) float32 RGB in [0, 1] (8-bit values / 255), labels (n,) int64, masks
    (n, H, W) bool or None, and ``classes`` the folder names.

    Raises
    ------
    FileNotFoundError when ``root`` or ``masks`` is not a folder, or an image has no mask (the image is named);
    ValueError when there are no class subfolders, a class folder holds no images (it is named), a file cannot be
    read (it is named), or images differ in size without ``image_size`` (two files and their sizes are named).

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> root = Path(tempfile.mkdtemp())
    >>> for cls in ("cat", "dog"):
    ...     (root / cls).mkdir()
    ...     Image.new("RGB", (6, 4), (255, 0, 0)).save(root / cls / "a.png")
    >>> split = load_image_folder(root)
    >>> split.inputs.shape, split.labels.tolist(), split.classes
    (torch.Size([2, 3, 4, 6]), [0, 1], ['cat', 'dog'])
    """
    root = Path(root)
    if not root.is_dir():
        fail("root", "a folder of class subfolders (root/<class>/<image>)", f"{root} (no such folder)",
             error=FileNotFoundError)
    if image_size is not None:
        image_size = check_int(image_size, "image_size", 1,
                               "It is the side in pixels; None keeps the images' own size.")
    masks_root = None if masks is None else Path(masks)
    if masks_root is not None and not masks_root.is_dir():
        fail("masks", "a folder of masks laid out like `root`", f"{masks_root} (no such folder)",
             error=FileNotFoundError)

    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        fail("root", "a folder of class subfolders (root/<class>/<image>)", f"{root} with no subfolders",
             "Put each class's images in a folder named after the class.")
    files: list[tuple[Path, int]] = []
    for label, cls in enumerate(classes):
        found = _image_files(root / cls)
        if not found:
            fail(f"{root / cls}", f"a class folder holding images ({', '.join(IMAGE_SUFFIXES)})", "no image files",
                 "Add its images or remove the folder (every subfolder of root is a class).")
        files += [(p, label) for p in found]
    mask_index = None if masks_root is None else _mask_index(masks_root)

    images, evidence, first = [], [], None  # first: (path, (width, height)) of the first image, for the size check
    with progress_bar(len(files) >= PROGRESS_FROM, f"reading {root.name}", len(files)) as bar:
        for path, _ in files:
            image = _open(path, "RGB")
            if first is None:
                first = (path, image.size)
            elif image_size is None and image.size != first[1]:
                (w0, h0), (w1, h1) = first[1], image.size
                fail("images", "all of one size", f"{first[0]} at {w0}x{h0} and {path} at {w1}x{h1} (width x height)",
                     "Pass image_size= to resize every image to one square size.")
            if mask_index is not None:
                evidence.append(_read_mask(path, image.size, root, masks_root, mask_index, image_size))
            if image_size is not None:
                image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
            images.append(torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1))  # (3, H, W)
            bar.advance()

    inputs = torch.stack(images).float().div_(255)  # (n, 3, H, W)
    labels = torch.tensor([label for _, label in files], dtype=torch.long)
    return EvalSplit(inputs, labels, masks=torch.stack(evidence) if evidence else None, classes=classes,
                     name=name or root.name)


"""Users' own data: safetensors splits round-trip, image folders read exactly the pixels written, bad input is named."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from kdlens import io
from kdlens.tasks import EvalSplit, load_image_folder, load_tensor_split, save_tensor_split

# ---------------------------------------------------------------------------------------------------------------------
# safetensors splits


def full_split(n: int = 5, shape: tuple[int, ...] = (3, 4, 6), seed: int = 0) -> EvalSplit:
    g = torch.Generator().manual_seed(seed)
    return EvalSplit(inputs=torch.rand(n, *shape, generator=g), labels=torch.randint(0, 3, (n,), generator=g),
                     masks=torch.rand(n, *shape[-2:], generator=g) > 0.5, difficulty=torch.rand(n, generator=g),
                     counterfactuals=torch.rand(n, *shape, generator=g),
                     counterfactual_targets=torch.randint(0, 3, (n,), generator=g),
                     classes=["a", "b", "c"], name="mine")


def assert_same(a: EvalSplit, b: EvalSplit) -> None:
    assert (a.name, a.classes) == (b.name, b.classes)
    for key in ("inputs", "labels", "masks", "difficulty", "counterfactuals", "counterfactual_targets"):
        x, y = getattr(a, key), getattr(b, key)
        assert (x is None) == (y is None), key
        if x is not None:
            assert x.dtype == y.dtype and torch.equal(x, y), key


def test_save_then_load_gives_the_split_back(tmp_path):
    split = full_split()
    loaded = load_tensor_split(save_tensor_split(split, tmp_path / "deep" / "eval.safetensors"))
    assert_same(loaded, split)
    assert (loaded.inputs.dtype, loaded.labels.dtype, loaded.masks.dtype) == (torch.float32, torch.int64, torch.bool)
    assert len(loaded) == 5 and set(loaded[2]) == {"input", "label", "mask", "difficulty", "counterfactual",
                                                   "counterfactual_target"}


def test_optional_fields_are_left_out_and_the_name_defaults_to_the_stem(tmp_path):
    path = tmp_path / "holdout.safetensors"
    io.save_tensors(path, {"inputs": torch.zeros(2, 3), "labels": torch.tensor([0, 1], dtype=torch.int32)})
    split = load_tensor_split(path)
    assert split.name == "holdout" and split.classes is None and split.masks is None and split.counterfactuals is None
    assert split.labels.dtype == torch.int64 and set(split[0]) == {"input", "label"}
    assert load_tensor_split(path, name="other").name == "other"
    save_tensor_split(split, path)
    assert set(io.load_tensors(path)) == {"inputs", "labels"}


def test_uint8_inputs_become_floats_in_0_1(tmp_path):
    pixels = torch.tensor([[[[0, 51], [255, 128]]]], dtype=torch.uint8)  # (1, 1, 2, 2)
    io.save_tensors(tmp_path / "u8.safetensors", {"inputs": pixels, "labels": torch.tensor([0]),
                                                  "counterfactuals": pixels.flip(-1),
                                                  "counterfactual_targets": torch.tensor([1])})
    split = load_tensor_split(tmp_path / "u8.safetensors")
    assert split.inputs.dtype == torch.float32
    assert torch.equal(split.inputs, pixels.float() / 255) and float(split.inputs[0, 0, 0, 1]) == pytest.approx(0.2)
    assert torch.equal(split.counterfactuals, pixels.flip(-1).float() / 255)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 4), dims=st.lists(st.integers(1, 4), min_size=1, max_size=3),
       masks=st.booleans(), difficulty=st.booleans(), counterfactuals=st.booleans(), classes=st.booleans(),
       seed=st.integers(0, 2**16))
def test_round_trip_of_any_shape(tmp_path_factory, n, dims, masks, difficulty, counterfactuals, classes, seed):
    g = torch.Generator().manual_seed(seed)
    shape = (n, *dims)
    split = EvalSplit(torch.randn(shape, generator=g), torch.randint(0, 4, (n,), generator=g),
                      masks=torch.rand(n, *shape[-2:], generator=g) > 0.5 if masks and len(shape) >= 3 else None,
                      difficulty=torch.rand(n, generator=g) if difficulty else None,
                      counterfactuals=torch.randn(shape, generator=g) if counterfactuals else None,
                      counterfactual_targets=torch.randint(0, 4, (n,), generator=g) if counterfactuals else None,
                      classes=["w", "x", "y", "z"] if classes else None, name=f"s{seed}")
    path = tmp_path_factory.mktemp("round") / "split.safetensors"
    assert_same(load_tensor_split(save_tensor_split(split, path)), split)


def write(path, **tensors):
    io.save_tensors(path, tensors)
    return path


GOOD = {"inputs": torch.rand(3, 1, 4, 4), "labels": torch.tensor([0, 1, 0])}


@pytest.mark.parametrize("tensors, expected", [
    ({**GOOD, "mask": torch.zeros(3, 4, 4, dtype=torch.bool)}, ["'mask'", "Did you mean 'masks'?", "counterfactuals"]),
    ({"inputs": GOOD["inputs"]}, ["`inputs` and `labels`"]),
    ({**GOOD, "labels": torch.tensor([0.0, 1.0, 0.0])}, ["labels", "integer class indices", "torch.float32"]),
    ({**GOOD, "labels": torch.tensor([0, 1])}, ["labels", "(3,)", "shape (2,)"]),
    ({**GOOD, "labels": torch.tensor([0, -1, 0])}, ["labels", "non-negative", "values in [-1, 0]"]),
    ({"inputs": torch.zeros(0, 1, 4, 4), "labels": torch.zeros(0, dtype=torch.long)}, ["n >= 1", "(0, 1, 4, 4)"]),
    ({**GOOD, "masks": torch.zeros(3, 4, 5, dtype=torch.bool)}, ["masks", "(3, 4, 4)", "shape (3, 4, 5)"]),
    ({**GOOD, "masks": torch.zeros(2, 4, 4, dtype=torch.bool)}, ["masks", "(3, 4, 4)", "shape (2, 4, 4)"]),
    ({**GOOD, "masks": torch.full((3, 4, 4), 0.5)}, ["masks", "boolean", "masks > 0.5"]),
    ({"inputs": torch.rand(3, 4), "labels": GOOD["labels"], "masks": torch.zeros(3, 3, 4, dtype=torch.bool)},
     ["masks", "spatial inputs", "shape (3, 4)"]),
    ({**GOOD, "difficulty": torch.rand(4)}, ["difficulty", "(3,)", "shape (4,)"]),
    ({**GOOD, "counterfactuals": torch.rand(3, 1, 4, 4)}, ["`counterfactuals` without `counterfactual_targets`"]),
    ({**GOOD, "counterfactual_targets": torch.tensor([1, 0, 1])}, ["`counterfactual_targets` without"]),
    ({**GOOD, "counterfactuals": torch.rand(3, 1, 4, 3), "counterfactual_targets": torch.tensor([1, 0, 1])},
     ["counterfactuals", "(3, 1, 4, 4)", "shape (3, 1, 4, 3)"]),
    ({**GOOD, "counterfactuals": torch.rand(3, 1, 4, 4), "counterfactual_targets": torch.tensor([1.0, 0, 1])},
     ["counterfactual_targets", "integer class indices"]),
    ({**GOOD, "inputs": torch.tensor([[[[0, 300]]]] * 3, dtype=torch.int16)}, ["8-bit pixel values", "[0, 300]"]),
])
def test_bad_tensor_files_are_named(tmp_path, tensors, expected):
    with pytest.raises(ValueError) as error:
        load_tensor_split(write(tmp_path / "bad.safetensors", **tensors))
    message = str(error.value)
    assert message.startswith("Expected `") and "bad.safetensors" in message
    for part in expected:
        assert part in message


def test_non_finite_inputs_are_counted_by_example(tmp_path):
    inputs = torch.rand(5, 2, 3)
    inputs[1, 0, 0], inputs[3, 1, 2], inputs[3, 0, 1] = float("nan"), float("inf"), float("nan")
    with pytest.raises(ValueError, match=r"NaN or inf in 2 of 5 examples \(first at index 1\)"):
        load_tensor_split(write(tmp_path / "nan.safetensors", inputs=inputs, labels=torch.zeros(5, dtype=torch.long)))


def test_labels_must_name_a_saved_class(tmp_path):
    split = EvalSplit(torch.rand(2, 3), torch.tensor([0, 2]), classes=["a", "b"])
    with pytest.raises(ValueError, match=r"class indices in \[0, 1\].*There are 2 class names"):
        save_tensor_split(split, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        load_tensor_split(tmp_path / "nowhere.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="junk.safetensors.*could not be read"):
        load_tensor_split(tmp_path / "junk.safetensors")


# ---------------------------------------------------------------------------------------------------------------------
# image folders


def pixels(seed: int, size: tuple[int, int] = (5, 4)) -> np.ndarray:
    """(H, W, 3) uint8 for an image of ``size`` (width, height)."""
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def save_png(path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def as_input(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255  # (3, H, W)


@pytest.fixture
def folder(tmp_path):
    """root/{zebra,ant}/...: two classes, written out of order, with PNG, BMP and an upper-case suffix."""
    root = tmp_path / "pets"
    written = {"zebra/b.png": pixels(1), "zebra/a.bmp": pixels(2), "ant/2.PNG": pixels(3), "ant/1.png": pixels(4),
               "ant/sub/0.png": pixels(5)}
    for rel, array in written.items():
        save_png(root / rel, array) if not rel.endswith(".bmp") else Image.fromarray(array).save(root / rel)
    (root / "ant" / "notes.txt").write_text("not an image")
    (root / "zebra" / ".hidden.png").write_bytes(b"resource fork")
    return root, written


def test_image_folder_reads_exact_pixels_in_sorted_order(folder):
    root, written = folder
    split = load_image_folder(root)
    order = ["ant/1.png", "ant/2.PNG", "ant/sub/0.png", "zebra/a.bmp", "zebra/b.png"]
    assert split.classes == ["ant", "zebra"] and split.name == "pets" and split.masks is None
    assert split.labels.tolist() == [0, 0, 0, 1, 1] and split.labels.dtype == torch.int64
    assert split.inputs.shape == (5, 3, 4, 5) and split.inputs.dtype == torch.float32
    assert torch.equal(split.inputs, torch.stack([as_input(written[rel]) for rel in order]))
    assert load_image_folder(root, name="x").name == "x"


def test_grayscale_and_alpha_images_become_rgb(tmp_path):
    save_png(tmp_path / "c" / "gray.png", pixels(0)[..., 0])
    Image.fromarray(pixels(1)).convert("RGBA").save(tmp_path / "c" / "rgba.png")
    split = load_image_folder(tmp_path)
    assert split.inputs.shape == (2, 3, 4, 5)
    assert torch.equal(split.inputs[0], as_input(np.repeat(pixels(0)[..., :1], 3, axis=2)))
    assert torch.equal(split.inputs[1], as_input(pixels(1)))


def test_masks_are_matched_by_stem_and_thresholded(folder, tmp_path):
    root, written = folder
    mask_root = tmp_path / "masks"
    values = {}
    for i, rel in enumerate(written):
        gray = np.random.default_rng(10 + i).integers(0, 256, (4, 5), dtype=np.uint8)
        gray[0, :3] = [127, 128, 255]
        values[rel.split(".")[0]] = gray
        save_png(mask_root / (rel.split(".")[0] + ".png"), gray)  # a.bmp's mask is a.png
    split = load_image_folder(root, masks=mask_root)
    order = ["ant/1", "ant/2", "ant/sub/0", "zebra/a", "zebra/b"]
    assert split.masks.dtype == torch.bool and split.masks.shape == (5, 4, 5)
    assert torch.equal(split.masks, torch.stack([torch.from_numpy(values[key] > 127) for key in order]))
    assert split.masks[:, 0, :3].tolist() == [[False, True, True]] * 5


def test_resizing_uses_bilinear_for_images_and_nearest_for_masks(tmp_path):
    small, large = pixels(0, (4, 4)), pixels(1, (8, 6))
    save_png(tmp_path / "data" / "a" / "small.png", small)
    save_png(tmp_path / "data" / "b" / "large.png", large)
    mask = (np.arange(48).reshape(6, 8) % 3 == 0).astype(np.uint8) * 255
    save_png(tmp_path / "masks" / "a" / "small.png", np.full((4, 4), 200, dtype=np.uint8))
    save_png(tmp_path / "masks" / "b" / "large.png", mask)
    split = load_image_folder(tmp_path / "data", image_size=6, masks=tmp_path / "masks")
    assert split.inputs.shape == (2, 3, 6, 6) and split.masks.shape == (2, 6, 6)
    resized = np.asarray(Image.fromarray(large).resize((6, 6), Image.Resampling.BILINEAR))
    assert torch.equal(split.inputs[1], as_input(resized))
    nearest = np.asarray(Image.fromarray(mask).resize((6, 6), Image.Resampling.NEAREST)) > 127
    assert torch.equal(split.masks[1], torch.from_numpy(nearest)) and bool(split.masks[0].all())


def test_missing_root_and_no_class_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.*no such folder"):
        load_image_folder(tmp_path / "nowhere")
    (tmp_path / "flat.png").write_bytes(b"")
    with pytest.raises(ValueError, match="no subfolders.*folder named after the class"):
        load_image_folder(tmp_path)


def test_a_class_folder_without_images_is_named(tmp_path):
    save_png(tmp_path / "cat" / "1.png", pixels(0))
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "readme.txt").write_text("")
    with pytest.raises(ValueError, match=r"dog`.*no image files"):
        load_image_folder(tmp_path)


def test_images_of_different_sizes_name_two_files_and_suggest_image_size(tmp_path):
    save_png(tmp_path / "cat" / "1.png", pixels(0, (5, 4)))
    save_png(tmp_path / "cat" / "2.png", pixels(0, (5, 4)))
    save_png(tmp_path / "dog" / "big.png", pixels(0, (7, 3)))
    with pytest.raises(ValueError) as error:
        load_image_folder(tmp_path)
    message = str(error.value)
    assert "1.png at 5x4" in message and "big.png at 7x3" in message and "image_size=" in message
    assert load_image_folder(tmp_path, image_size=4).inputs.shape == (3, 3, 4, 4)


def test_an_unreadable_image_is_named(tmp_path):
    save_png(tmp_path / "cat" / "1.png", pixels(0))
    (tmp_path / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(ValueError, match=r"broken\.jpg"):
        load_image_folder(tmp_path)


def test_a_missing_mask_names_the_image(folder, tmp_path):
    root, written = folder
    for rel in written:
        if rel != "zebra/b.png":
            save_png(tmp_path / "masks" / rel.replace(".bmp", ".png"), np.zeros((4, 5), dtype=np.uint8))
    with pytest.raises(FileNotFoundError, match=r"zebra/b\.png.*no such file"):
        load_image_folder(root, masks=tmp_path / "masks")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_image_folder(root, masks=tmp_path / "nomasks")


def test_a_mask_of_the_wrong_size_is_named(tmp_path):
    save_png(tmp_path / "data" / "cat" / "1.png", pixels(0, (5, 4)))
    save_png(tmp_path / "masks" / "cat" / "1.png", np.zeros((5, 5), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"1\.png.*5x4.*but got 5x5"):
        load_image_folder(tmp_path / "data", masks=tmp_path / "masks")


@pytest.mark.parametrize("image_size", [0, -3, 2.5, True])
def test_image_size_must_be_a_positive_integer(folder, image_size):
    with pytest.raises(ValueError, match="image_size"):
        load_image_folder(folder[0], image_size=image_size)


def test_an_image_folder_saves_and_loads_as_tensors(folder, tmp_path):
    split = load_image_folder(folder[0])
    assert_same(load_tensor_split(save_tensor_split(split, tmp_path / "pets.safetensors")), split)

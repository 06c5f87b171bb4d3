"""Attribution tiles: an input image with its attribution heatmap laid over it, as a small inline PNG.

A report shows many of these side by side (teacher next to student, one row per example), so each is a
``data:image/png;base64,...`` URI an ``<img src=...>`` can take directly. The PNG holds pixels only (IHDR, IDAT,
IEND: no timestamp, no text chunks), so the same arrays always give the same bytes.
"""

from __future__ import annotations

import base64
import io

import matplotlib as mpl
import numpy as np
from PIL import Image

from kdlens.validation import check_int, fail

_COLORMAP = "inferno"  # perceptually uniform; low attribution dark, high attribution bright
_ALPHA = 0.5  # heatmap weight in the blend


def attribution_tile(image, heatmap, size_px: int = 96) -> str:
    """Blend a heatmap over an image and return it as a PNG data URI.

    The heatmap is resized bilinearly (half-pixel centres, as ``torch.nn.functional.interpolate`` with
    ``align_corners=False``) to cover the image exactly, divided by its maximum so it spans [0, 1], coloured with
    ``inferno`` and blended at alpha 0.5. The image is resized by nearest neighbour when enlarged (pixels stay
    crisp) and by box averaging when shrunk.

    Parameters
    ----------
    image : array-like
        Shape (3, H, W) or (H, W, 3) (channels-first when both fit, the torch convention); (H, W), (1, H, W) and
        (H, W, 1) are grey. Floats in [0, 1] or uint8 in [0, 255]. Undo any mean/std normalisation first.
    heatmap : array-like or None
        None draws the image alone. Shape (h, w), non-negative finite floats in any units (e.g. ``abs`` of a
        signed attribution); an
        all-zero map draws as zero attribution everywhere.
    size_px : int, optional
        Length of the tile's longer side in pixels, 8 to 1024; the image's aspect ratio is kept.

    Returns
    -------
    str
        ``"data:image/png;base64,..."``, RGB.

    Examples
    --------
    >>> image = np.zeros((3, 8, 8)); heatmap = np.eye(4)
    >>> attribution_tile(image, heatmap, size_px=16).startswith("data:image/png;base64,")
    True
    """
    pixels = _check_image(image)  # (H, W, 3) float64 in [0, 1]
    heat = None if heatmap is None else _check_heatmap(heatmap)  # (h, w) float64, >= 0
    size_px = check_int(size_px, "size_px")
    if not 8 <= size_px <= 1024:
        fail("size_px", "in [8, 1024]", str(size_px))

    height, width = pixels.shape[:2]
    scale = size_px / max(height, width)
    out_w, out_h = max(1, round(width * scale)), max(1, round(height * scale))

    as_uint8 = np.round(pixels * 255).astype(np.uint8)
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BOX
    base = np.asarray(Image.fromarray(as_uint8).resize((out_w, out_h), resample), dtype=np.float64) / 255

    blend = base
    if heat is not None:
        heat_img = Image.fromarray(heat.astype(np.float32)).resize((out_w, out_h), Image.Resampling.BILINEAR)
        heat = np.asarray(heat_img, dtype=np.float64)  # (out_h, out_w)
        peak = heat.max()
        heat = np.clip(heat / peak, 0.0, 1.0) if peak > 0 else np.zeros_like(heat)
        colour = mpl.colormaps[_COLORMAP](heat)[..., :3]  # (out_h, out_w, 3) in [0, 1]
        blend = (1 - _ALPHA) * base + _ALPHA * colour
    buffer = io.BytesIO()
    Image.fromarray(np.round(blend * 255).astype(np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _check_image(image) -> np.ndarray:
    """The image as (H, W, 3) float64 in [0, 1]."""
    array = np.asarray(image)
    if array.dtype.kind not in "uif" or array.dtype == np.bool_:
        fail("image", "floats in [0, 1] or uint8", f"dtype {array.dtype}", error=TypeError)
    if array.ndim == 2:
        array = array[None]  # (1, H, W)
    if array.ndim != 3:
        fail("image", "shape (3, H, W) or (H, W, 3)", f"shape {array.shape}", verb="have")
    if array.shape[0] not in (1, 3):  # channels-last
        if array.shape[-1] not in (1, 3):
            fail("image", "shape (3, H, W) or (H, W, 3)", f"shape {array.shape}", verb="have")
        array = np.moveaxis(array, -1, 0)
    array = np.broadcast_to(array, (3, *array.shape[1:]))  # (3, H, W), grey repeated
    if array.shape[1] == 0 or array.shape[2] == 0:
        fail("image", "non-empty (at least one pixel)", f"shape {array.shape}")
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            fail("image", "finite", "NaN or inf values")
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 1:
            fail("image", "floats in [0, 1]", f"values in [{low:.3g}, {high:.3g}]",
                 "Undo the mean/std normalisation (x * std + mean), or pass uint8 pixels.")
        return np.moveaxis(array.astype(np.float64), 0, -1)
    if array.min() < 0 or array.max() > 255:
        fail("image", "integers in [0, 255]", f"values in [{array.min()}, {array.max()}]")
    return np.moveaxis(array.astype(np.float64) / 255, 0, -1)


def _check_heatmap(heatmap) -> np.ndarray:
    """The heatmap as (h, w) float64, finite and non-negative."""
    array = np.asarray(heatmap)
    if array.dtype.kind not in "uif" or array.dtype == np.bool_:
        fail("heatmap", "a float array", f"dtype {array.dtype}", error=TypeError)
    if array.ndim != 2 or 0 in array.shape:
        fail("heatmap", "shape (h, w) with h, w >= 1", f"shape {array.shape}",
             "Squeeze away batch and channel axes, e.g. heatmap[0, 0].", verb="have")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        fail("heatmap", "finite", "NaN or inf values")
    if array.min() < 0:
        fail("heatmap", "non-negative", f"a minimum of {array.min():.3g}",
             "Pass abs(attribution) or attribution.clip(min=0), whichever your method means.")
    return array

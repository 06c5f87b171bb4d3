"""Report plots: valid self-contained SVG, the expected panels and labels, escaping, determinism, bad inputs."""

from __future__ import annotations

import base64
import io
import re
import struct
import xml.etree.ElementTree as ET

import matplotlib
import numpy as np
import pytest
from PIL import Image

from kdlens.report.gallery import attribution_tile
from kdlens.report.plots import bar_chart, cka_heatmap, line_chart, pareto_scatter, reliability_diagram

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = "<script>alert(1)</script> & \"q\" 'a'"
EDGES = [0.0, 0.25, 0.5, 0.75, 1.0]


def curve(confidence=(0.2, None, 0.6, 0.9), accuracy=(0.1, None, 0.7, 0.8), count=(5, 0, 7, 20)) -> dict:
    return {"confidence": list(confidence), "accuracy": list(accuracy), "count": list(count), "edges": EDGES}


def texts(svg: str) -> list[str]:
    """The content of every <text> element, as a reader sees it (XML entities decoded)."""
    return ["".join(t.itertext()) for t in ET.fromstring(svg).iter(f"{SVG}text")]


def ids(svg: str) -> list[str]:
    return [el.get("id") for el in ET.fromstring(svg).iter() if el.get("id")]


def count_ids(svg: str, kind: str) -> int:
    return sum(bool(re.search(rf"-{kind}_\d+$", i)) for i in ids(svg))


# One call per public SVG function; `name` goes where user text goes (model, layer, category names and the title).
MAKERS = {
    "reliability": lambda name: reliability_diagram({name: curve(), "student": curve()}, title=name),
    "cka": lambda name: cka_heatmap([[0.9, 0.1], [0.2, 0.8]], [name, "t2"], ["s1", name], title=name),
    "pareto": lambda name: pareto_scatter({name: (1.0, 0.9), "b": (2.0, 0.95)}, [name, "b"], name, "acc", name),
    "line": lambda name: line_chart([0.0, 0.1], {name: [0.9, 0.5], "b": [0.8, None]}, name, "accuracy", name),
    "bar": lambda name: bar_chart([name, "hard"], {name: [0.9, 0.5], "b": [None, 0.4]}, "accuracy", name),
}


@pytest.fixture(scope="module")
def hostile_svgs() -> dict[str, str]:
    return {kind: make(HOSTILE) for kind, make in MAKERS.items()}


@pytest.mark.parametrize("kind", MAKERS)
def test_svg_is_self_contained_and_escaped(kind, hostile_svgs):
    svg = hostile_svgs[kind]
    root = ET.fromstring(svg)  # well-formed XML
    assert root.tag == f"{SVG}svg"
    assert svg.startswith("<svg ") and svg.endswith("</svg>")
    assert "<?xml" not in svg and "DOCTYPE" not in svg and "<metadata" not in svg
    assert "<script" not in svg.lower()  # the name is text, escaped, never markup
    assert HOSTILE in texts(svg)  # ...and it reads exactly as given
    references = re.findall(r'href="([^"]*)"', svg) + re.findall(r"url\(([^)]*)\)", svg)
    assert all(r.startswith(("#", "data:")) for r in references), references
    known = set(ids(svg))
    assert all(r.lstrip("#") in known for r in references if r.startswith("#"))  # every reference resolves
    assert len(known) == len(ids(svg))  # no duplicate id


@pytest.mark.parametrize("kind", MAKERS)
def test_svg_is_deterministic(kind, hostile_svgs):
    assert MAKERS[kind](HOSTILE) == hostile_svgs[kind]


def test_ids_do_not_collide_between_plots(hostile_svgs):
    line, bar = set(ids(hostile_svgs["line"])), set(ids(hostile_svgs["bar"]))
    assert line and bar and not line & bar
    # matplotlib's `*{...}` stylesheet is scoped to its own drawing, so inlining it leaves the page's CSS alone.
    assert re.search(r"<style[^>]*>#k[0-9a-f]{8}-svg \*\{", hostile_svgs["line"])


def test_dollar_signs_are_not_mathtext():
    name = r"cost $5 and $\frac{a}$"
    assert name in texts(bar_chart(["x"], {name: [1.0]}, "y"))


def test_reliability_diagram_has_one_panel_per_model_and_skips_empty_bins():
    five = reliability_diagram({f"m{i}": curve() for i in range(5)})
    assert count_ids(five, "axes") == 5  # a 3 x 2 grid with the sixth cell removed
    assert {f"m{i} (n=32)" for i in range(5)} <= set(texts(five))
    assert {"confidence", "accuracy", "gap to confidence"} <= set(texts(five))

    full = reliability_diagram({"m": curve(confidence=(0.2, 0.4, 0.6, 0.9), accuracy=(0.1, 0.3, 0.7, 0.8),
                                           count=(5, 3, 7, 20))})
    skipped = reliability_diagram({"m": curve()})  # bin 1 is None
    zero_count = reliability_diagram({"m": curve(confidence=(0.2, 0.4, 0.6, 0.9), accuracy=(0.1, 0.3, 0.7, 0.8),
                                                 count=(5, 0, 7, 20))})
    assert count_ids(full, "patch") - count_ids(skipped, "patch") == 2  # its accuracy bar and its gap bar
    assert count_ids(zero_count, "patch") == count_ids(skipped, "patch")
    nan = curve(confidence=(0.2, float("nan"), 0.6, 0.9), accuracy=(0.1, float("nan"), 0.7, 0.8))
    assert count_ids(reliability_diagram({"m": nan}), "patch") == count_ids(skipped, "patch")


def test_cka_heatmap_annotates_every_cell():
    svg = cka_heatmap([[0.904, 0.1, None], [0.2, 0.8, -0.01]], ["t1", "t2"], ["s1", "s2", "s3"], title="CKA")
    shown = texts(svg)
    assert {"0.90", "0.10", "n/a", "0.20", "0.80", "-0.01"} <= set(shown)
    assert {"t1", "t2", "s1", "s2", "s3", "CKA", "teacher layer", "student layer"} <= set(shown)


def test_pareto_scatter_labels_every_point_and_skips_missing_ones():
    points = {"teacher": (11.2, 0.93), "tiny": (0.3, 0.81), "small": (1.1, 0.80), "gone": None,
              "half": (None, 0.5)}
    shown = texts(pareto_scatter(points, ["tiny", "teacher", "gone"], "parameters (M)", "accuracy"))
    assert {"teacher", "tiny", "small", "Pareto front", "other", "parameters (M)"} <= set(shown)
    assert "gone" not in shown and "half" not in shown
    assert "Pareto front" not in texts(pareto_scatter({"a": (1, 2)}, [], "x", "y"))


def test_line_chart_keeps_every_series_in_the_legend():
    svg = line_chart([0.0, 0.01, 0.03], {"teacher": [0.9, 0.6, None], "_student": [None, None, None]}, "eps", "acc")
    assert {"teacher", "_student", "eps", "acc"} <= set(texts(svg))  # "_" names are not dropped


def test_bar_chart_draws_no_bar_for_none():
    full = bar_chart(["a", "b", "c"], {"t": [0.9, 0.8, 0.7], "s": [0.6, 0.5, 0.4]}, "accuracy")
    gap = bar_chart(["a", "b", "c"], {"t": [0.9, 0.8, 0.7], "s": [0.6, None, 0.4]}, "accuracy")
    assert count_ids(full, "patch") - count_ids(gap, "patch") == 1
    assert {"a", "b", "c", "t", "s", "accuracy"} <= set(texts(gap))


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: cka_heatmap([[0.1, 0.2]] * 2, ["a", "b", "c"], ["x", "y"]), ValueError,
     "Expected `matrix` to have one row per teacher layer (3), but got 2."),
    (lambda: cka_heatmap([[0.1], [0.2]], ["a", "b"], ["x", "y"]), ValueError,
     "Expected `matrix[0]` to have one value per student layer (2), but got 1."),
    (lambda: cka_heatmap([["high", 0.2]], ["a"], ["x", "y"]), TypeError, "Expected `matrix[0][0]` to be a number"),
    (lambda: cka_heatmap([[0.1]], [], ["x"]), ValueError, "Expected `teacher_layers` to be non-empty"),
    (lambda: cka_heatmap([[0.1]], "a", ["x"]), TypeError, "Expected `teacher_layers` to be a list of str"),
    (lambda: reliability_diagram({}), ValueError, "Expected `curves` to be non-empty"),
    (lambda: reliability_diagram([curve()]), TypeError, "Expected `curves` to be a dict"),
    (lambda: reliability_diagram({"m": {"confidence": [0.5]}}), ValueError, "no accuracy, count, edges"),
    (lambda: reliability_diagram({"m": curve(accuracy=(0.1, 0.2, 0.3))}), ValueError,
     "Expected `curves['m']['accuracy']` to have one value per bin (4), but got 3."),
    (lambda: reliability_diagram({"m": curve(confidence=(0.2, None, 1.5, 0.9))}), ValueError, "in [0, 1] or None"),
    (lambda: reliability_diagram({"m": curve(count=(5, -1, 7, 20))}), ValueError, "non-negative integers"),
    (lambda: reliability_diagram({"m": {**curve(), "edges": [0.0, 0.5, 0.25, 0.75, 1.0]}}), ValueError,
     "non-decreasing"),
    (lambda: reliability_diagram({1: curve()}), TypeError, "to be a str"),
    (lambda: pareto_scatter({"a": (1, 2)}, ["b"], "x", "y"), ValueError,
     "Expected `front` to name only keys of `points`, but got 'b'. Known names: a."),
    (lambda: pareto_scatter({"a": (1, 2, 3)}, [], "x", "y"), ValueError, "one value per coordinate (x, y) (2)"),
    (lambda: pareto_scatter({"a": (1, 2)}, "a", "x", "y"), TypeError, "Expected `front` to be a list of str"),
    (lambda: line_chart([0.0, 0.1], {"a": [1.0]}, "x", "y"), ValueError,
     "Expected `series['a']` to have one value per x value (2), but got 1."),
    (lambda: line_chart([0.0, None], {"a": [1.0, 2.0]}, "x", "y"), ValueError, "Expected `x` to be a non-empty"),
    (lambda: line_chart([0.0], {"a": [float("inf")]}, "x", "y"), ValueError, "Pass None for a missing value."),
    (lambda: line_chart([0.0], {"a": [1.0]}, "x", 3), TypeError, "Expected `ylabel` to be a str, but got int."),
    (lambda: bar_chart(["a", "b"], {"s": [1.0, 2.0, 3.0]}, "y"), ValueError,
     "Expected `series['s']` to have one value per category (2), but got 3."),
    (lambda: bar_chart(["a"], {}, "y"), ValueError, "Expected `series` to be non-empty"),
])
def test_bad_inputs_name_the_problem(call, error, message):
    with pytest.raises(error) as info:
        call()
    assert message in str(info.value)


# --- attribution tiles ---

def png_of(uri: str) -> bytes:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    return base64.b64decode(uri[len(prefix):], validate=True)


def pixels(uri: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png_of(uri))))


def png_chunks(data: bytes) -> list[str]:
    chunks, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        chunks.append(data[at + 4:at + 8].decode("ascii"))
        at += 12 + length
    return chunks


def test_attribution_tile_is_a_deterministic_png_of_the_requested_size():
    rng = np.random.default_rng(0)
    image, heatmap = rng.random((3, 32, 32)), rng.random((7, 7))
    uri = attribution_tile(image, heatmap)
    assert pixels(uri).shape == (96, 96, 3)
    assert uri == attribution_tile(image.copy(), heatmap.copy())
    assert png_chunks(png_of(uri)) == ["IHDR", "IDAT", "IEND"]  # no timestamp, no text
    assert pixels(attribution_tile(rng.random((3, 32, 64)), heatmap, size_px=64)).shape == (32, 64, 3)


def test_attribution_tile_layouts_and_dtypes_agree():
    image = np.random.default_rng(1).integers(0, 256, (3, 16, 16)).astype(np.uint8)
    heatmap = np.arange(16.0).reshape(4, 4)
    reference = attribution_tile(image, heatmap, size_px=32)
    assert attribution_tile(image.transpose(1, 2, 0), heatmap, size_px=32) == reference  # (H, W, 3)
    assert attribution_tile(image / 255.0, heatmap, size_px=32) == reference  # floats in [0, 1]
    assert attribution_tile(image, heatmap * 2.0**-20, size_px=32) == reference  # normalised by its maximum
    grey = pixels(attribution_tile(np.full((16, 16), 0.5), np.zeros((4, 4)), size_px=16))
    assert grey.shape == (16, 16, 3)


def test_attribution_tile_blends_the_heatmap_where_it_is_hot():
    black = np.zeros((3, 8, 8))
    hot_corner = np.zeros((2, 2))
    hot_corner[0, 0] = 1.0
    tile = pixels(attribution_tile(black, hot_corner, size_px=16)).astype(int)
    assert tile[0, 0].sum() > tile[-1, -1].sum()  # bright where attribution is high, top-left
    cold = np.array(matplotlib.colormaps["inferno"](0.0)[:3])  # the colour of zero attribution
    np.testing.assert_array_equal(tile[-1, -1], np.round(0.5 * cold * 255))  # blended at alpha 0.5 over black
    white = pixels(attribution_tile(np.ones((3, 8, 8)), np.zeros((2, 2)), size_px=8)).astype(int)
    np.testing.assert_array_equal(white[0, 0], np.round(0.5 * (1 + cold) * 255))  # ...and over white


@pytest.mark.parametrize(("image", "heatmap", "size_px", "error", "message"), [
    (np.zeros((3, 8, 8)), -np.ones((2, 2)), 96, ValueError, "Pass abs(attribution)"),
    (np.zeros((3, 8, 8)), np.full((2, 2), np.nan), 96, ValueError, "Expected `heatmap` to be finite"),
    (np.zeros((3, 8, 8)), np.ones((1, 2, 2)), 96, ValueError, "Expected `heatmap` to have shape (h, w)"),
    (np.full((3, 8, 8), 2.0), np.ones((2, 2)), 96, ValueError, "Undo the mean/std normalisation"),
    (np.zeros((8, 8, 4)), np.ones((2, 2)), 96, ValueError, "Expected `image` to have shape (3, H, W) or (H, W, 3)"),
    (np.zeros((3, 8, 8), dtype=bool), np.ones((2, 2)), 96, TypeError, "Expected `image` to be floats"),
    (np.zeros((3, 8, 8)), np.ones((2, 2)), 4, ValueError, "Expected `size_px` to be in [8, 1024], but got 4."),
    (np.zeros((3, 8, 8)), np.ones((2, 2)), 9.5, TypeError, "Expected `size_px` to be an int"),
])
def test_attribution_tile_rejects_bad_inputs(image, heatmap, size_px, error, message):
    with pytest.raises(error) as info:
        attribution_tile(image, heatmap, size_px=size_px)
    assert message in str(info.value)


def test_names_of_points_close_together_go_to_different_sides():
    from kdlens.report.plots import _label_offsets

    offsets = _label_offsets({"seq_kd": np.array([0.405, 0.57]), "token_fkl_t1": np.array([0.402, 0.56]),
                              "far": np.array([0.30, 0.20])})
    assert offsets["seq_kd"] != offsets["token_fkl_t1"]
    assert offsets["far"] == (4, 4)


def test_a_scatter_without_a_front_has_no_legend():
    assert "other" not in texts(pareto_scatter({"a": (1, 2), "b": (2, 1)}, [], "x", "y"))

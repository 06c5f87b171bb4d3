"""report.html and summary.md from an audit's files: sections, escaping, no network, no torch, a real browser."""

import os
import subprocess
import sys

import pytest
import torch

from kdlens import audit
from kdlens.lab.cnn import SmallCNN
from kdlens.report import render
from kdlens.report.classifier import SECTIONS
from tests.report.browser import check_page, require_browser

HOSTILE = "<script>alert('x')</script>&co"


def cnn(seed: int) -> SmallCNN:
    torch.manual_seed(seed)
    return SmallCNN(n_classes=4, widths=(4, 8, 8)).eval()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """An audit of untrained models (no training needed: the report only draws what the files hold)."""
    folder = tmp_path_factory.mktemp("report") / "run"
    config = {"run_dir": str(folder), "data": {"shapes": {"image_size": 16, "cue_size": 3}, "n": 48},
              "probes": {"robustness": {"n": 16, "steps": 2, "epsilons": [2 / 255, 8 / 255]}}}
    audit.run(config, teacher=cnn(0), students={HOSTILE: cnn(1), "plain": cnn(3)},
              baselines={"teacher_reseeded": cnn(2)}, progress=False)
    render(folder)
    return folder


def test_every_section_is_written_with_its_figures(run_dir):
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f'<section id="{section}">' in html
    assert html.count("<svg") >= 8  # pareto, 2 reliability, 2 CKA, verdicts, 2 robustness curves, cue flips, ...
    assert "data:image/png;base64," in html  # the attribution gallery
    assert "block1 ← block1 (" in html  # the best-matching layer pairs under the CKA heatmaps
    for remote in ('src="http', "src='http", 'href="http', "url(http", "<link", "<iframe", "@import"):
        assert remote not in html, remote  # (SVG's xmlns="http://www.w3.org/..." names, it fetches nothing)


def test_every_piece_of_text_is_escaped(run_dir):
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    summary = (run_dir / "summary.md").read_text(encoding="utf-8")
    assert HOSTILE in summary  # Markdown holds the name as given; only table pipes are escaped


def test_rendering_again_gives_the_same_bytes(run_dir):
    first = (run_dir / "report.html").read_bytes()
    render(run_dir)
    assert (run_dir / "report.html").read_bytes() == first


def test_rendering_needs_no_model_and_no_torch(run_dir):
    code = ("import sys; from kdlens.report import render; render(sys.argv[1]); "
            "assert 'torch' not in sys.modules, 'the report imported torch'")
    subprocess.run([sys.executable, "-c", code, str(run_dir)], check=True, env={**os.environ})


def test_summary_names_the_choice_and_every_verdict(run_dir):
    summary = (run_dir / "summary.md").read_text(encoding="utf-8")
    assert "| teacher |" in summary and "| plain |" in summary and "## Verdicts" in summary


def test_a_folder_without_results(tmp_path):
    with pytest.raises(FileNotFoundError, match="results.json.*kdlens audit"):
        render(tmp_path)


def test_the_page_in_a_real_browser(run_dir, tmp_path):
    require_browser()
    screenshot = tmp_path / "report.png"
    seen = check_page(run_dir / "report.html", screenshot)
    assert seen["console_errors"] == [] and seen["page_errors"] == [] and seen["requests"] == []
    assert seen["section_ids"] == list(SECTIONS)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

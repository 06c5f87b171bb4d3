"""Reports: HTML and Markdown rendered from results files, and the plots they inline.

Layer 5: this package reads numbers (plain lists, dicts, numpy arrays) and draws them; it computes no measure and
imports no torch-heavy kdlens layer, so any report can be re-rendered from a results file without models.
"""

from kdlens.report.html import render, summary_markdown

__all__ = ["render", "summary_markdown"]

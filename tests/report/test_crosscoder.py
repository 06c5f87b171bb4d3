"""The language-model report's crosscoder section, from a hand-written run directory (exclusive latents on both
sides, Latent Scaling ratios and verdicts, ablations, steering curves, hostile contexts and traces): every part is
drawn, every piece of text escaped, a student without the stages is skipped, a run without them says how to run
the probe; and the two plots it adds."""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET

import pytest

from kdlens.report import crosscoder, render
from kdlens.report.plots import histogram, scatter
from kdlens.rundir import RunDir, StageOutput

HOSTILE = "<script>alert(1)</script>"
BASE, D, OTHER = "base", "kd&co", "plain_kd"
SVG = "{http://www.w3.org/2000/svg}"


def results(students=(BASE, D, OTHER)) -> dict:
    """The smallest results.json the language-model page reads: no figure of the other sections to draw."""
    empty = {"overall": {"table": None, "independence": None}}
    student = {"verdict": "acceptable", "verdict_text": "fine", "score": None, "rank": None, "accuracy": None,
               "step_agreement": None, "bleu": None, "contingency": empty}
    return {"schema_version": 2, "kind": "lm", "kdlens_version": "test",
            "data": {"task": "reasoning", "tasks": ["chains"], "primary": "test", "splits": {"test": 3}},
            "probes": {"traces": {"max_new_tokens": 8}}, "teacher": {"contingency": empty},
            "students": {name: dict(student) for name in students},
            "scorecard": {"teacher_reference": {"text": None}, "chosen": None, "no_choice": None,
                          "pareto_front": [], "metrics_scored": ["accuracy"],
                          "rule": {"max_accuracy_drop": 0.05, "floors": {}}},
            "breakdowns": {"steps": {}}, "samples": {}, "models": {"teacher": {"parameters": 10}}}


def latent(j: int, r: float, verdict: str | None, nu: tuple, shown: bool = True) -> dict:
    """One exclusive latent of the analysis' figures, with hostile words and contexts."""
    entry = {"latent": j, "r": r, "fires": 40 - j, "frequency": 0.0123, "mean": 1.5, "max": 3.0,
             "nu_error": nu[0], "nu_reconstruction": nu[1], "verdict": verdict,
             "regions": {"question": 0.7, "template": 0.3}, "label": "question (2.1x)",
             "words": [[HOSTILE, 0.5], ["&", 0.3], ["", 0.2]], "cue_share": 0.3, "cues": {"so": 0.2, "but": 0.1},
             "template_or_special": j == 3}
    if shown:
        entry["contexts"] = [{"before": f"x = 1 {HOSTILE} ", "token": "&amp", "after": " then <b>", "activation": 3.0,
                              "region": "question"}]
    return entry


def analysis(widths=(16, 16), pairing="token") -> dict:
    """The ``crosscoder-<D>`` figures, as crosscoder_analysis writes them (see its module docstring)."""
    second = [latent(7, 0.95, "real", (0.05, 0.1)), latent(9, 0.9, "artifact", (0.8, 0.9)),
              latent(11, 0.8, "artifact", (None, 0.7), shown=False)]
    first = [latent(3, 0.05, "real", (0.02, 0.03)), latent(4, 0.1, "artifact", (0.6, 0.4))]
    edit = {"ce": 2.0, "kl": 0.0, "tokens": 50}
    inside = {"n_texts": 4, "removed": {"ablate_distilled": 3, "ablate_base": 2, "ablate_shared": 3},
              "base": {"original": {"ce": 2.0, "tokens": 50}, "spliced": {**edit, "ce": 2.05, "kl": 0.04},
                       "zeroed": {**edit, "ce": 4.0, "kl": 1.2}, "ablate_distilled": {**edit, "ce": 2.01, "kl": 0.01},
                       "ablate_base": {**edit, "ce": 2.4, "kl": 0.3}, "ablate_shared": {**edit, "ce": 2.02, "kl": 0.02},
                       "loss_recovered": 0.975},
              "distilled": {"original": {"ce": 1.5, "tokens": 50}, "spliced": {**edit, "ce": 1.56, "kl": 0.05},
                            "zeroed": {**edit, "ce": 3.5, "kl": 1.1},
                            "ablate_distilled": {**edit, "ce": 1.9, "kl": 0.4},
                            "ablate_base": {**edit, "ce": 1.51, "kl": 0.01},
                            "ablate_shared": {**edit, "ce": 1.53, "kl": 0.03}, "loss_recovered": 0.97}}
    scaling = {"thresholds": {"error": 0.2, "reconstruction": 0.25},
               "ratios": {str(e["latent"]): {k: e[k] for k in ("nu_error", "nu_reconstruction", "verdict")}
                          for e in first + second},
               "baseline": [{"latent": 20 + i, "nu_error": 0.9 + 0.02 * i, "nu_reconstruction": 1.0 - 0.01 * i}
                            for i in range(5)]}
    histogram = [0.0] * 50
    histogram[2], histogram[25], histogram[47] = 2.0, 30.0, 3.0
    return {"base": BASE, "distilled": D, "layers": ["layers.1", "layers.1"], "pairing": pairing,
            "widths": list(widths), "scales": [1.0, 1.1], "kind": "batchtopk", "k": 4, "n_latents": 64,
            "n_rows": 900, "n_train": 800, "n_eval": 100, "low": 0.3, "high": 0.7, "history": [],
            "fit": {"fve": [0.91, 0.88], "l0": 4.2, "n_rows": 100, "dead": 0.1, "dead_window": 800,
                    "never_fired": 0.2},
            "classes": {"counts": {"first": 2, "shared": 30, "second": 3}, "live": 35, "histogram": histogram,
                        "edges": [i / 50 for i in range(51)],
                        "cosine": {"median": 0.97, "q10": 0.9, "histogram": [0.0] * 20}},
            "latent_scaling": scaling, "latents": {"first": first, "second": second},
            "counts": {"second": {"exclusive": 3, "real": 1, "artifact": 2, "template_or_special": 0},
                       "first": {"exclusive": 2, "real": 1, "artifact": 1, "template_or_special": 1}},
            "region_rows": {"question": 500, "template": 400}, "inside": inside,
            "steering": {"latents": [{"latent": 7, "verdict": "real", "label": "question (2.1x)",
                                      "direction": [0.1] * 16, "norm": 2.5}]}}


def run_of(entry: dict, accuracy: float, teacher: float) -> dict:
    return {"latent": entry, "accuracy": accuracy, "trace_accuracy": accuracy / 2, "chars": 80.0, "tokens": 20.0,
            "shares": {"teacher": teacher, "student": 0.2, "shared": 0.3, "boosted": 0.1, "other": 0.1,
                       "n_sentences": 12}}


def steering() -> tuple[dict, list[dict]]:
    """The ``crosscoder-steering-<D>`` figures and rows: latent 7 at -4 and 4 (scale 0 is the unsteered run)."""
    curves = {"none": {"0.0": run_of(None, 0.6, 0.4)},
              "7": {"-4.0": run_of(7, 0.2, 0.1), "4.0": run_of(7, 0.5, 0.7)}}
    figures = {"latents": analysis()["steering"]["latents"], "scales": [-4.0, 0.0, 4.0], "n": 3, "curves": curves,
               "provenance": True}
    rows = [{"latent": None, "scale": 0.0, "index": i, "text": f"plain trace {i}"} for i in range(3)]
    rows += [{"latent": 7, "scale": s, "index": i, "text": f"steered {s:g} #{i} {HOSTILE} & so"}
             for s in (-4.0, 4.0) for i in range(3)]
    return figures, rows


def write_run(folder, figures: dict | None = None, steered=True, students=(BASE, D, OTHER)) -> RunDir:
    """A run directory with results.json and D's crosscoder stages (none of them with ``figures=None``)."""
    run = RunDir(folder)
    folder.mkdir(parents=True)
    run.write_results(results(students))
    if figures is not None:
        run.stage(f"crosscoder-{D}").write(StageOutput(figures=figures))
        if steered:
            found, rows = steering()
            run.stage(f"crosscoder-steering-{D}").write(StageOutput(figures=found, rows=rows))
    return run


def section_of(html: str) -> str:
    start = html.index('<section id="crosscoder">')
    return html[start:html.index("</section>", start)]


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("crosscoder") / "run"
    write_run(folder, analysis())
    return render(folder).read_text(encoding="utf-8")


def test_every_part_is_drawn_for_the_student_with_a_crosscoder(page):
    part = section_of(page)
    assert '<a href="#crosscoder">' in page and part.count("<h3>") == 1  # plain_kd has no stage: skipped
    assert "base × kd&amp;co" in part
    # histogram, Latent Scaling, loss change, KL, and 4 steering curves (accuracy, trace accuracy, tokens, teacher)
    assert part.count("<svg") == 8
    for said in ("layers read: base layers.1, kd&amp;co layers.1", "BatchTopK (k = 4)", "FVE on 100 held-out tokens: "
                 "base 0.910, kd&amp;co 0.880", "L0 4.2", "dead 10.0%", "never fired on the data 20.0%",
                 "base 97.5%, KL 0.040 nats/token; kd&amp;co 97.0%, KL 0.050 nats/token", "r below 0.3", "above 0.7",
                 "base only 2, shared 30, kd&amp;co only 3",
                 "median 0.970", "ν<sub>error</sub> 0.200",
                 "Not drawn: 1 exclusive latent with a ratio that is not finite",
                 "Unsteered, on 3 questions: accuracy 60.0%"):
        assert said in part, said
    assert part.index("kd&amp;co only: 3 exclusive latents") < part.index("base only: 2 exclusive latents")
    assert part.count("<details>") == 2 + 4 + 1  # two tables, four latents' contexts, one steered latent's traces


def test_the_ablation_reads_out_each_models_loss_change(page):
    part = section_of(page)
    assert ("Removing kd&amp;co&#39;s 3 exclusive latents raises kd&amp;co&#39;s loss by 0.400 nats/token and raises "
            "base&#39;s by 0.010") in part
    assert "changes them by +0.030 and +0.020" in part and "0.040 (base) and 0.050 (kd&amp;co)" in part


def test_every_piece_of_text_is_escaped(page):
    part = section_of(page)
    assert HOSTILE not in page and "<b>" not in part
    assert "x = 1 &lt;script&gt;alert(1)&lt;/script&gt; <strong>&amp;amp</strong> then &lt;b&gt;" in part
    assert "&lt;script&gt;alert(1)&lt;/script&gt; 50.0%, &amp; 30.0%, ∅ 20.0%" in part  # the top words
    assert "steered 4 #0 &lt;script&gt;alert(1)&lt;/script&gt; &amp; so" in part


def test_the_steering_curves_start_from_the_unsteered_run(tmp_path, monkeypatch):
    seen = {}
    draw = crosscoder.plots.line_chart

    def spy(x, series, xlabel, ylabel, title=""):
        seen[ylabel] = (x, series)
        return draw(x, series, xlabel, ylabel, title)

    monkeypatch.setattr(crosscoder.plots, "line_chart", spy)
    run = write_run(tmp_path / "run", analysis())
    found = crosscoder.section(run, list(results()["students"]))
    assert list(found["students"]) == [D]
    assert seen["answer accuracy"] == ([-4.0, 0.0, 4.0], {"latent 7 (real)": [0.2, 0.6, 0.5]})
    assert seen["teacher share of sentences"][1] == {"latent 7 (real)": [0.1, 0.4, 0.7]}
    assert seen["mean trace length (tokens)"][1] == {"latent 7 (real)": [20.0, 20.0, 20.0]}
    traces = found["students"][D]["steering"]["latents"][0]["by_scale"]
    assert [s["scale"] for s in traces] == [-4.0, 0.0, 4.0] and all(len(s["traces"]) == 2 for s in traces)


def test_the_ablation_bars_are_each_models_loss_change(tmp_path, monkeypatch):
    seen = []
    draw = crosscoder.plots.bar_chart

    def spy(categories, series, ylabel, title="", intervals=None):
        seen.append((categories, series))
        return draw(categories, series, ylabel, title, intervals)

    monkeypatch.setattr(crosscoder.plots, "bar_chart", spy)
    crosscoder.section(write_run(tmp_path / "run", analysis()), [D])
    (categories, loss), (_, kl) = seen
    assert categories == ["remove kd&co-only (3)", "remove base-only (2)", "remove shared, control (3)",
                          "splice reconstruction"]
    assert loss[D] == pytest.approx([0.4, 0.01, 0.03, 0.06]) and loss[BASE] == pytest.approx([0.01, 0.4, 0.02, 0.05])
    assert kl[D] == [0.4, 0.01, 0.03, 0.05]


def test_a_run_without_crosscoder_stages_says_how_to_run_them(tmp_path):
    html = render(write_run(tmp_path / "run").path).read_text(encoding="utf-8")
    part = section_of(html)
    assert "The crosscoder probe did not run" in part and "probes: {crosscoder: {base: NAME}}" in part
    assert "<svg" not in part


def test_different_widths_or_tokenizers_say_what_could_not_be_measured(tmp_path):
    figures = analysis(widths=(16, 24), pairing="word")
    figures.update(latent_scaling=None, inside=None)
    figures["classes"]["cosine"] = None
    for side in ("first", "second"):
        figures["counts"][side].update(real=None, artifact=None)
        for e in figures["latents"][side]:
            e.update(nu_error=None, nu_reconstruction=None, verdict=None)
    part = section_of(render(write_run(tmp_path / "run", figures, steered=False).path).read_text(encoding="utf-8"))
    assert "widths are 16 and 24" in part and "the models&#39; widths differ" in part
    assert "loss recovered: not measured (the models do not share a tokenizer" in part
    assert "No ablation: base and kd&amp;co do not share a tokenizer" in part
    assert "The steering stage did not run for kd&amp;co" in part
    assert part.count("<svg") == 1  # the histogram alone


def test_a_crosscoder_without_exclusive_latents_still_reads(tmp_path):
    figures = copy.deepcopy(analysis())
    figures["latents"] = {"first": [], "second": []}
    figures["latent_scaling"] = {"ratios": {}, "baseline": [], "thresholds": None}
    figures["inside"]["removed"] = {"ablate_distilled": 0, "ablate_base": 0, "ablate_shared": 0}
    figures["steering"]["latents"] = []
    figures["counts"] = {side: {"exclusive": 0, "real": 0, "artifact": 0, "template_or_special": 0}
                         for side in ("first", "second")}
    run = write_run(tmp_path / "run", figures, steered=False)
    found, rows = steering()
    found.update(latents=[], curves={"none": found["curves"]["none"]})
    run.stage(f"crosscoder-steering-{D}").write(StageOutput(figures=found, rows=rows[:3]))
    part = section_of(render(run.path).read_text(encoding="utf-8"))
    assert "no latent is exclusive to either model" in part and "kd&amp;co has no exclusive latent to remove" in part
    assert "No latent to steer" in part and "teacher share of sentences 40.0%" in part


# --- the plots the section adds ---

@pytest.mark.parametrize("svg", [
    histogram([0.0, 0.5, 1.0], [1, 2], HOSTILE, title=HOSTILE, marks={HOSTILE: 0.3}),
    scatter({HOSTILE: [(0.1, 0.2)], "b": [(None, 1.0)], "c": []}, HOSTILE, "y", HOSTILE, colors={"b": "grey"},
            muted=["b"], vline=0.5, hline=0.5)])
def test_the_new_plots_are_self_contained_and_escaped(svg):
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg" and HOSTILE not in svg
    assert HOSTILE in ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: histogram([0.0], [], "r"), ValueError, "Expected `edges` to be at least 2 non-decreasing numbers"),
    (lambda: histogram([0.0, 1.0], [1, 2], "r"), ValueError, "Expected `counts` to have one value per bin (1)"),
    (lambda: histogram([0.0, 1.0], [-1], "r"), ValueError, "Expected `counts` to be non-negative numbers"),
    (lambda: histogram([0.0, 1.0], [1], "r", marks={"a": "x"}), TypeError, "Expected `marks['a'][0]` to be a number"),
    (lambda: scatter({}, "x", "y"), ValueError, "Expected `groups` to be non-empty"),
    (lambda: scatter({"a": [(1.0,)]}, "x", "y"), ValueError, "one value per coordinate (x, y) (2)"),
    (lambda: scatter({"a": "xy"}, "x", "y"), TypeError, "Expected `groups['a']` to be a list of (x, y) points"),
    (lambda: scatter({"a": []}, "x", "y", muted=["b"]), ValueError, "Expected `group 'b'` to be one of the groups"),
    (lambda: scatter({"a": []}, "x", "y", colors={"a": "nocolour"}), ValueError, "to be a matplotlib colour"),
])
def test_the_new_plots_name_bad_input(call, error, message):
    with pytest.raises(error) as info:
        call()
    assert message in str(info.value)

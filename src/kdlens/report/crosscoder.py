"""The language-model report's crosscoder section (model-diffing: which features did distillation create, are they
real, what do they do?), per distilled student D from its ``crosscoder-D`` and ``crosscoder-steering-D`` stages'
files (:mod:`kdlens.audit.lm.crosscoder`):

- a headline: layers, widths, sparsity, latents, fit per model (FVE, L0, dead and never-fired shares, loss
  recovered);
- the histogram of the relative decoder norm r with its class thresholds, the counts per class and the shared
  latents' decoder cosine;
- Latent Scaling: each exclusive latent's two ratios against the shared baseline, real or artifact;
- a table of each side's exclusive latents, with their top contexts;
- the ablations: each model's next-token loss and KL with each side's exclusive latents (or as many shared ones)
  removed, and with the reconstruction spliced in;
- steering: D's accuracy, trace accuracy, trace length and teacher share as each chosen latent is added at a sweep
  of scales, with sample steered traces.

Everything is computed here (charts as SVG strings, sentences and formatted cells as plain text); the template lays
them out and escapes every piece of text.
"""

from __future__ import annotations

from kdlens.report import plots
from kdlens.report.tables import fmt
from kdlens.rundir import RunDir

# The stage names (kdlens.audit.lm.crosscoder.names; not imported: the audit imports torch, the report must not).
ANALYSIS, STEERING = "crosscoder-{}", "crosscoder-steering-{}"
HOW_TO_RUN = "probes: {crosscoder: {base: NAME}}"
ABLATIONS = ("ablate_distilled", "ablate_base", "ablate_distilled_leaning", "ablate_base_leaning", "ablate_shared")
VERDICT_COLOURS = {"real": "tab:green", "artifact": "tab:red"}


def section(run: RunDir, order: list[str], traces: int = 2) -> dict | None:
    """The section's variables: per distilled student with a crosscoder (in the audit's ``order``; a student
    without one is skipped) its headline, charts, latent tables, ablation and steering, with ``traces`` steered
    traces per scale; None when no crosscoder stage is in the run (``how`` then says how to run one)."""
    students = {}
    for name in order:
        figures = run.stage(ANALYSIS.format(name)).figures()
        if figures is None:
            continue
        steering = run.stage(STEERING.format(name))
        students[name] = _student(figures, steering.figures(), steering.rows(), traces)
    return {"students": students} if students else None


def _student(figures: dict, steered: dict | None, rows: list[dict], traces: int) -> dict:
    base, d = figures["base"], figures["distilled"]
    sides = {"second": f"{d} only", "first": f"{base} only"}  # D's first
    return {"base": base, "distilled": d, "headline": _headline(figures), "classes": _classes(figures, sides),
            "scaling": _scaling(figures, sides),
            "sides": [_latents(figures, side, title) for side, title in sides.items()]
            + [_latents(figures, side, title, "leaning") for side, title in
               (("second", f"most {d}-leaning (highest r)"), ("first", f"most {base}-leaning (lowest r)"))
               if figures.get("leaning")],
            "ablation": _ablation(figures), "steering": _steering(d, steered, rows, traces)}


def _headline(figures: dict) -> list[str]:
    """The fit, one fact per string."""
    base, d, fit, live = figures["base"], figures["distilled"], figures["fit"], figures["classes"]["live"]
    kind = f"BatchTopK (k = {figures['k']})" if figures["kind"] == "batchtopk" else f"{figures['kind']} sparsity"
    facts = [f"layers read: {base} {figures['layers'][0]}, {d} {figures['layers'][1]}",
             f"widths {figures['widths'][0]} / {figures['widths'][1]}", kind,
             f"{figures['n_latents']} latents ({live} fire on the data)",
             f"trained on {figures['n_train']} token pairs (paired by {figures['pairing']})",
             f"FVE on {fit['n_rows']} held-out tokens: {base} {fmt(fit['fve'][0], 'f3')}, {d} "
             f"{fmt(fit['fve'][1], 'f3')}",
             f"L0 {fit['l0']:.1f} latents per token",
             f"dead {fmt(fit['dead'], 'pct')} (silent for the last {fit['dead_window']} training pairs)",
             f"never fired on the data {fmt(fit['never_fired'], 'pct')}"]
    inside = figures["inside"]
    if inside is None:
        facts.append("loss recovered: not measured (the models do not share a tokenizer, so their rows are paired "
                     "by word and no block output can be replaced token for token)")
    else:
        shown = []
        for key, name in (("base", base), ("distilled", d)):
            entry = inside[key]
            value = fmt(entry["loss_recovered"], "pct") if entry["loss_recovered"] is not None else \
                f"not defined ({entry.get('loss_recovered_why', 'zeroing does not raise the loss')})"
            shown.append(f"{name} {value}, KL {entry['spliced']['kl']:.3f} nats/token")
        facts.append("with the reconstruction spliced in (loss recovered against a zeroed block): " + "; ".join(shown))
    return facts


def _classes(figures: dict, sides: dict[str, str]) -> dict:
    """The histogram of r, the counts per class (base-only, shared, D-only) and the shared decoder cosine."""
    classes, low, high = figures["classes"], figures["low"], figures["high"]
    svg = plots.histogram(classes["edges"], classes["histogram"], "relative decoder norm r", "live latents",
                          f"{figures['base']} x {figures['distilled']}: r of each live latent",
                          marks={f"low {low:g}": low, f"high {high:g}": high})
    counts = [(sides["first"], classes["counts"]["first"]), ("shared", classes["counts"]["shared"]),
              (sides["second"], classes["counts"]["second"])]
    cosine = classes["cosine"]
    if cosine:
        text = f"shared latents' decoder cosine: median {cosine['median']:.3f}, 10th percentile {cosine['q10']:.3f}"
    elif figures["widths"][0] != figures["widths"][1]:
        text = "no decoder cosine: the models' widths differ (their decoder rows lie in different spaces)"
    else:
        text = "no decoder cosine: no shared latent fires"
    return {"histogram": svg, "counts": counts, "cosine": text, "low": low, "high": high}


def _scaling(figures: dict, sides: dict[str, str]) -> dict:
    """Latent Scaling's scatter (exclusive latents coloured by verdict over the shared baseline), its counts per
    side, and a note where it could not run."""
    scaling, counts = figures["latent_scaling"], figures["counts"]
    table = []
    for side, title in sides.items():
        c = counts[side]
        never = c["exclusive"] - c["real"] - c["artifact"] if c["real"] is not None else None
        table.append({"side": title, "exclusive": c["exclusive"], "real": _count(c["real"]),
                      "artifact": _count(c["artifact"]), "never": _count(never),
                      "template_or_special": c["template_or_special"]})
    out = {"svg": None, "note": None, "counts": table, "thresholds": None}
    if scaling is None:
        out["note"] = (f"Latent Scaling did not run: it reads one latent's direction in both models, which needs one "
                       f"width, and the widths are {figures['widths'][0]} and {figures['widths'][1]}.")
        return out
    if scaling["thresholds"] is None:
        out["note"] = ("Latent Scaling did not run: " + scaling["why"] + "." if scaling.get("why") else
                       "Latent Scaling had nothing to test: no latent is exclusive to either model.")
        return out
    out["thresholds"] = scaling["thresholds"]
    groups: dict[str, list] = {f"shared baseline ({len(scaling['baseline'])})": [
        (b["nu_error"], b["nu_reconstruction"]) for b in scaling["baseline"]]}
    colours, left_out = {}, 0
    for side, title in sides.items():
        for verdict in ("real", "artifact"):
            points = [(e["nu_error"], e["nu_reconstruction"]) for e in figures["latents"][side]
                      if e["verdict"] == verdict]
            left_out += sum(None in p for p in points)
            if points:
                name = f"{title}: {verdict} ({len(points)})"
                groups[name], colours[name] = points, VERDICT_COLOURS[verdict]
    out["left_out"] = left_out
    out["svg"] = plots.scatter(groups, "nu_error (other model's share in its error)",
                               "nu_reconstruction (other model's share in its reconstruction)",
                               f"{figures['base']} x {figures['distilled']}: Latent Scaling", colors=colours,
                               muted=[next(iter(groups))], vline=scaling["thresholds"]["error"],
                               hline=scaling["thresholds"]["reconstruction"])
    return out


def _count(value: int | None) -> str:
    return "–" if value is None else str(value)


def _latents(figures: dict, side: str, title: str, key: str = "latents") -> dict:
    """One side's exclusive latents (``key`` "latents") or most one-sided live ones ("leaning") as table rows
    (formatted cells) with their top contexts."""
    rows = []
    for e in figures[key][side]:
        cues = ", ".join(sorted(e["cues"], key=lambda w: -e["cues"][w]))
        rows.append({
            "latent": e["latent"], "r": fmt(e["r"], "f3"), "frequency": f"{100 * e['frequency']:.2f}%",
            "fires": e["fires"], "mean": fmt(e["mean"], "f2"), "nu_error": fmt(e["nu_error"], "f2"),
            "nu_reconstruction": fmt(e["nu_reconstruction"], "f2"), "verdict": e["verdict"] or "–",
            "label": e["label"], "template_or_special": e["template_or_special"],
            "words": ", ".join(f"{w or '∅'} {fmt(share, 'pct')}" for w, share in e["words"]),
            "cue": fmt(e["cue_share"], "pct") + (f" ({cues})" if cues else ""),
            "contexts": [{"before": c["before"], "token": c["token"], "after": c["after"],
                          "activation": fmt(c["activation"], "f2"), "region": c["region"]}
                         for c in e.get("contexts", [])]})
    return {"title": title, "rows": rows, "what": "exclusive latents" if key == "latents" else "latents"}


def _ablation(figures: dict) -> dict | None:
    """The loss change and KL per model for each ablation and the spliced reconstruction (bar charts), and a
    sentence reading them out; None where the models share no tokenizer."""
    inside = figures["inside"]
    if inside is None:
        return None
    base, d, removed = figures["base"], figures["distilled"], inside["removed"]
    labels = {"ablate_distilled": f"remove {d}-only ({removed['ablate_distilled']})",
              "ablate_base": f"remove {base}-only ({removed['ablate_base']})",
              "ablate_distilled_leaning": f"remove most {d}-leaning ({removed.get('ablate_distilled_leaning', 0)})",
              "ablate_base_leaning": f"remove most {base}-leaning ({removed.get('ablate_base_leaning', 0)})",
              "ablate_shared": f"remove shared, control ({removed['ablate_shared']})",
              "spliced": "splice reconstruction"}
    keys = [k for k in ABLATIONS if removed.get(k)] + ["spliced"]  # an ablation of no latent changes nothing
    models = {base: inside["base"], d: inside["distilled"]}
    delta = {m: {k: e[k]["ce"] - e["original"]["ce"] for k in keys} for m, e in models.items()}
    charts = [plots.bar_chart([labels[k] for k in keys], {m: [delta[m][k] for k in keys] for m in models},
                              "next-token loss change (nats/token)", f"{d}: loss change when edited"),
              plots.bar_chart([labels[k] for k in keys], {m: [e[k]["kl"] for k in keys] for m, e in models.items()},
                              "KL to the unedited model (nats/token)", f"{d}: KL when edited")]
    if removed["ablate_distilled"]:
        said = (f"Removing {d}'s {removed['ablate_distilled']} exclusive latents {_moves(delta[d]['ablate_distilled'])}"
                f" {d}'s loss by {abs(delta[d]['ablate_distilled']):.3f} nats/token and "
                f"{_moves(delta[base]['ablate_distilled'])} {base}'s by {abs(delta[base]['ablate_distilled']):.3f}; "
                f"removing as many shared latents (the control) changes them by "
                f"{delta[d]['ablate_shared']:+.3f} and {delta[base]['ablate_shared']:+.3f}.")
    else:
        said = f"{d} has no exclusive latent to remove."
    if removed.get("ablate_distilled_leaning"):
        said += (f" Removing {d}'s {removed['ablate_distilled_leaning']} most {d}-leaning latents (highest r) "
                 f"changes {d}'s loss by {delta[d]['ablate_distilled_leaning']:+.3f} and {base}'s by "
                 f"{delta[base]['ablate_distilled_leaning']:+.3f}; the {removed['ablate_shared']} random shared "
                 f"latents of the control by {delta[d]['ablate_shared']:+.3f} and {delta[base]['ablate_shared']:+.3f}.")
    if removed["ablate_base"]:
        said += (f" Removing {base}'s {removed['ablate_base']} exclusive latents changes {base}'s loss by "
                 f"{delta[base]['ablate_base']:+.3f} and {d}'s by {delta[d]['ablate_base']:+.3f}.")
    said += (f" With the reconstruction spliced in, the KL to each model's own next-token distribution is "
             f"{inside['base']['spliced']['kl']:.3f} ({base}) and {inside['distilled']['spliced']['kl']:.3f} ({d}) "
             f"nats/token (zeroing the block's output: {inside['base']['zeroed']['kl']:.3f} and "
             f"{inside['distilled']['zeroed']['kl']:.3f}).")
    return {"charts": charts, "said": said, "n_texts": inside["n_texts"],
            "tokens": inside["distilled"]["original"]["tokens"]}


def _moves(change: float) -> str:
    return "raises" if change >= 0 else "lowers"


def _steering(d: str, figures: dict | None, rows: list[dict], traces: int) -> dict | None:
    """Line charts over the scales (one line per steered latent; scale 0 is the unsteered run) of accuracy, trace
    accuracy, trace length and teacher share, and ``traces`` steered traces per latent and scale."""
    if figures is None:
        return None
    curves = {key: {float(s): v for s, v in by_scale.items()} for key, by_scale in figures["curves"].items()}
    plain = curves.get("none", {}).get(0.0)
    chosen = [c for c in figures["latents"] if str(c["latent"]) in curves]
    out = {"unsteered": _unsteered(plain, figures["n"]), "charts": [], "latents": [], "n": figures["n"]}
    if not chosen:
        return out
    scales = sorted({float(s) for s in figures["scales"]} | {0.0})
    names = {c["latent"]: (f"latent {c['latent']} ({c['verdict'] or 'not tested'})" if c.get("exclusive", True)
                           else f"latent {c['latent']} (shared, r {c['r']:.2f})") for c in chosen}
    metrics = [("answer accuracy", lambda e: e["accuracy"]), ("trace accuracy", lambda e: e["trace_accuracy"]),
               ("mean trace length (tokens)", lambda e: e["tokens"]), ("teacher share of sentences", _teacher)]
    for label, value in metrics:
        ys = {}
        for c in chosen:
            runs = [plain if s == 0.0 else curves[str(c["latent"])].get(s) for s in scales]
            ys[names[c["latent"]]] = [None if e is None else value(e) for e in runs]
        if any(v is not None for y in ys.values() for v in y):
            out["charts"].append(plots.line_chart(scales, ys, "steering scale", label, f"{d} steered: {label}"))
    for c in chosen:
        mine = [r for r in rows if r["latent"] == c["latent"]]
        shown = [{"scale": s, "traces": [r for r in mine if r["scale"] == s][:traces]} for s in scales if s != 0.0]
        shown.insert(scales.index(0.0), {"scale": 0.0, "traces": [r for r in rows if r["latent"] is None][:traces]})
        out["latents"].append({"latent": c["latent"], "name": names[c["latent"]], "label": c["label"],
                               "norm": fmt(c["norm"], "f2"), "by_scale": [s for s in shown if s["traces"]]})
    return out


def _unsteered(plain: dict | None, n: int) -> str:
    """The unsteered run in a sentence (empty when the stage has none)."""
    if plain is None:
        return ""
    teacher = _teacher(plain)
    return (f"Unsteered, on {n} questions: accuracy {fmt(plain['accuracy'], 'pct')}, trace accuracy "
            f"{fmt(plain['trace_accuracy'], 'pct')}, {plain['tokens']:.1f} tokens per trace"
            + ("" if teacher is None else f", teacher share of sentences {fmt(teacher, 'pct')}") + ".")


def _teacher(entry: dict) -> float | None:
    """The teacher share of a steered run's sentences (None without provenance, or without a sentence)."""
    shares = entry.get("shares") or {}
    return shares.get("teacher") if shares.get("n_sentences") else None

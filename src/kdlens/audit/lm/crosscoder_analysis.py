"""The ``crosscoder-<D>`` stage: what the trained crosscoder of the base B and the distilled student D says.

- Fit, on the rows of the held-out questions: each model's fraction of variance explained (variance about the
  mean), the L0 (latents firing per token); dead latents (silent through the training's last firing window) and
  latents that never fire on the data;
- the relative decoder norm r_j = ||d_j^D|| / (||d_j^B|| + ||d_j^D||) of every live latent, its histogram and
  classes (B's alone below ``low``, D's alone above ``high``, shared between); the decoder cosine of shared latents;
- Latent Scaling (:mod:`kdlens.measures.latent_scaling`) of every exclusive latent against a seeded sample of
  shared ones (as many, and at least ``BASELINE_LATENTS``), so each is "real" or a likely "artifact";
- per exclusive latent: how often and how strongly it fires, its top-activating contexts, the words it fires on
  (and the config's cue words), and where its activation falls: special tokens, the prompt's template, the
  question, the teacher's, B's or D's trace (its label: the region it favours most over that region's share of
  tokens); how many fire mostly on template or special tokens;
- inside the models (models that share a tokenizer): each model's next-token loss and KL with its activations
  replaced by their reconstructions (and zeroed: the loss recovered is (CE_zeroed - CE_spliced) / (CE_zeroed -
  CE_original), None where zeroing does not raise the loss, as for a model that does not predict the texts), and
  with the writes of D's exclusive latents, B's exclusive latents, or as many random shared latents removed, the
  error term kept;
- the ``LEANING`` most one-sided live latents of each side (highest and lowest r), described like the exclusive
  ones: where no latent is exclusive (a distilled model whose stream was re-pointed rather than extended), these
  are what ablation and steering can still probe;
- the latents steering will add (D's exclusive ones, "real" first, by how often they fire; then its most
  one-sided ones) and their directions.
"""

from __future__ import annotations

import math

import torch

from kdlens.audit.lm.crosscoder import (
    activations_stage,
    finite,
    load_crosscoder,
    names,
    training_rows,
    training_stage,
)
from kdlens.audit.lm.stages import digest
from kdlens.distill import crosscoder as C
from kdlens.measures.latent_scaling import LatentScaling, classify_exclusive
from kdlens.measures.latent_statistics import LatentStatistics, contexts
from kdlens.probes.latent_effects import TokenEdit, edited_losses
from kdlens.rundir import RunDir, StageDir, StageOutput
from kdlens.stages import Stage

REGIONS = ("special", "template", "question", "teacher trace", "base trace", "distilled trace", "text")
CHUNK = 8192  # rows encoded at a time
LEANING = 10  # the most one-sided live latents (highest r, lowest r) also described, ablated and steered
BASELINE_LATENTS = 50  # the fewest shared latents Latent Scaling's baseline holds (as many as the exclusive, if more)
HISTOGRAM_BINS = 50


def analysis_stage(run: RunDir, models: dict, base: str, d: str, read: dict, settings, upstream: dict) -> Stage:
    """The analysis of ``d``'s crosscoder (see the module docstring); ``read``: what the pair read
    (:func:`kdlens.audit.lm.crosscoder.texts_of`); ``upstream``: the activations and training stages' inputs hashes.

    Returns
    -------
    Stage ``crosscoder-<d>``; ``figures.json``: everything above; its summary: FVE per model and exclusive latents
    (real) per side.
    """
    inputs = {"stage": "crosscoder", "upstream": upstream, "models": [digest(models[base]), digest(models[d])],
              "settings": settings.model_dump(mode="json", include={"low", "high", "contexts", "shown", "cue_words",
                                                                     "eval_share", "batch_size"}),
              "steering": settings.steering.latents}

    def compute(stage_dir: StageDir) -> StageOutput:
        stage_dir.say(f"{base} x {d}: analysing the crosscoder")
        activations = run.stage(names(d)["activations"])
        made, arrays = activations.figures(), activations.arrays()
        xs, held = training_rows(arrays, made["scales"], settings, read)
        coder = load_crosscoder(run, d)
        trained = run.stage(names(d)["train"]).figures()
        figures = {"base": base, "distilled": d, "layers": made["layers"], "pairing": made["pairing"],
                   "widths": made["widths"], "scales": made["scales"], "kind": trained["kind"], "k": trained["k"],
                   "n_latents": coder.n_latents, "n_rows": made["n_rows"], "n_train": trained["n_train"],
                   "n_eval": trained["n_eval"], "low": settings.low, "high": settings.high,
                   "history": trained["history"]}
        with torch.no_grad():
            stats = LatentStatistics(coder.n_latents, k=settings.contexts)
            for lo in range(0, xs[0].shape[0], CHUNK):
                stats.update(coder.encode([x[lo:lo + CHUNK] for x in xs]), lo)
            seen = stats.compute()
            figures["fit"] = _fit(coder, [x[held] for x in xs], seen, trained["dead_window"])
            r = C.relative_decoder_norms(coder)
            live = seen["fires"] > 0
            classes = C.latent_classes(r, settings.low, settings.high)
            figures["classes"] = _classes(coder, r, live, classes)
            exclusive = {side: [j for j in range(coder.n_latents) if live[j] and classes[j] == side]
                         for side in ("first", "second")}
            scaling = _latent_scaling(coder, xs, exclusive, [j for j in range(coder.n_latents)
                                                             if live[j] and classes[j] == "shared"], settings)
            figures["latent_scaling"] = scaling
            regions = _regions(arrays, read, models[base])
            words = _words(arrays, read)
            ranked = sorted((j for j in range(coder.n_latents) if live[j]), key=lambda j: (-float(r[j]), j))
            leaning = {"second": ranked[:LEANING], "first": ranked[::-1][:LEANING]}
            described = _describe(coder, xs, {**{("latents", s): v for s, v in exclusive.items()},
                                              **{("leaning", s): v for s, v in leaning.items()}},
                                  seen, r, scaling, regions, words, arrays, read, settings)
            for key in ("latents", "leaning"):
                figures[key] = {side: described[(key, side)] for side in ("first", "second")}
            figures["region_rows"] = {name: int((regions == g).sum()) for g, name in enumerate(REGIONS)}
            figures["counts"] = _counts(figures["latents"], scaling)
            figures["inside"] = _inside(models, base, d, coder, xs, held, arrays, read, made, exclusive, leaning,
                                        classes, live, settings) if made["pairing"] == "token" else None
            figures["steering"] = {"latents": _steered(coder, figures["latents"]["second"],
                                                       figures["leaning"]["second"], made["scales"][1],
                                                       settings.steering.latents)}
        summary = {"fve_base": figures["fit"]["fve"][0], "fve_distilled": figures["fit"]["fve"][1],
                   "exclusive_distilled": figures["counts"]["second"]["exclusive"],
                   "real_distilled": figures["counts"]["second"]["real"]}
        return StageOutput(figures=figures, summary=summary)

    return Stage(names(d)["analysis"], inputs, compute=compute)


def run_pair(runner, models: dict, base: str, d: str, read: dict, settings, line: str = "crosscoder") -> None:
    """Run the crosscoder stages of the pair (``base``, ``d``) in order on ``runner``'s progress line ``line``:
    activations, training and analysis, each depending on the one before (the audit adds steering)."""
    run, stage = runner.run_dir, names(d)
    runner.run(activations_stage(models, base, d, read, settings), line=line)
    runner.run(training_stage(run, d, settings, read, runner.inputs_hash(stage["activations"])), line=line)
    upstream = {k: runner.inputs_hash(stage[k]) for k in ("activations", "train")}
    runner.run(analysis_stage(run, models, base, d, read, settings, upstream), line=line)


def _fit(coder, held: list[torch.Tensor], seen: dict, window: int) -> dict:
    """FVE per model and L0 on the held-out rows; dead and never-firing shares."""
    f, xhats = [], [[], []]
    for lo in range(0, held[0].shape[0], CHUNK):
        fi, xh = coder([x[lo:lo + CHUNK] for x in held])
        f.append((fi > 0).sum(-1).double())
        for m in range(2):
            xhats[m].append(xh[m])
    xhats = [torch.cat(x) for x in xhats]
    return {"fve": [C.fraction_of_variance_explained(x, xh) for x, xh in zip(held, xhats, strict=True)],
            "l0": float(torch.cat(f).mean()), "n_rows": held[0].shape[0],
            "dead": float((coder.since_fired >= window).double().mean()), "dead_window": window,
            "never_fired": float((seen["fires"] == 0).double().mean())}


def _classes(coder, r: torch.Tensor, live: torch.Tensor, classes: list[str]) -> dict:
    """Counts per class of the live latents, the histogram of their r, and the shared latents' decoder cosines."""
    counts = {c: sum(1 for j, k in enumerate(classes) if live[j] and k == c) for c in ("first", "shared", "second")}
    histogram = torch.histc(r[live].double(), bins=HISTOGRAM_BINS, min=0.0, max=1.0)
    out = {"counts": counts, "live": int(live.sum()), "histogram": histogram.tolist(),
           "edges": torch.linspace(0, 1, HISTOGRAM_BINS + 1).tolist(), "cosine": None}
    if coder.widths[0] == coder.widths[1]:
        shared = torch.tensor([bool(live[j]) and k == "shared" for j, k in enumerate(classes)])
        cos = C.decoder_cosines(coder)[shared].double()
        if cos.numel():
            out["cosine"] = {"median": float(cos.median()), "q10": float(cos.quantile(0.1)),
                             "histogram": torch.histc(cos, bins=20, min=-1.0, max=1.0).tolist()}
    return out


def _latent_scaling(coder, xs: list[torch.Tensor], exclusive: dict[str, list[int]], shared: list[int],
                    settings) -> dict | None:
    """Each exclusive latent's Latent Scaling ratios and verdict, against a seeded sample of shared latents."""
    if coder.widths[0] != coder.widths[1]:
        return None  # one direction read in both models needs one width
    studied = exclusive["first"] + exclusive["second"]
    if not studied:
        return {"ratios": {}, "baseline": [], "thresholds": None}
    pick = torch.randperm(len(shared), generator=torch.Generator().manual_seed(settings.training.seed))
    baseline = [shared[i] for i in pick[:max(len(studied), BASELINE_LATENTS)].tolist()]
    latents = studied + baseline
    owners = [0] * len(exclusive["first"]) + [1] * len(exclusive["second"]) + [1] * len(baseline)
    metric = LatentScaling(torch.tensor(latents), torch.tensor(owners))
    W_dec = [w.detach() for w in coder.W_dec]
    for lo in range(0, xs[0].shape[0], CHUNK):
        chunk = [x[lo:lo + CHUNK] for x in xs]
        f, xhats = coder(chunk)
        metric.update(chunk, xhats, f, W_dec)
    found = metric.compute()
    n = len(studied)
    if not baseline:
        return {"ratios": {}, "baseline": [], "thresholds": None, "why": "no shared latent fires"}
    verdict = classify_exclusive(found["nu_error"][:n], found["nu_reconstruction"][:n], found["nu_error"][n:],
                                 found["nu_reconstruction"][n:])
    ratios = {str(j): {"nu_error": finite(float(found["nu_error"][i])),
                       "nu_reconstruction": finite(float(found["nu_reconstruction"][i])),
                       "verdict": verdict.labels[i]} for i, j in enumerate(studied)}
    return {"ratios": ratios, "thresholds": {"error": verdict.threshold_error,
                                             "reconstruction": verdict.threshold_reconstruction},
            "baseline": [{"latent": j, "nu_error": finite(float(found["nu_error"][n + i])),
                          "nu_reconstruction": finite(float(found["nu_reconstruction"][n + i]))}
                         for i, j in enumerate(baseline)]}


def _regions(arrays: dict, read: dict, model) -> torch.Tensor:
    """(N,) int64: each row's region (``REGIONS``)."""
    special = set(model.tokenizer.all_special_tokens)
    out = []
    for t, (a, b) in zip(arrays["text"].tolist(), arrays["span"].tolist(), strict=True):
        text, prompt = read["texts"][t], read["prompt_lengths"][t]
        q0, q1 = read["question_spans"][t]
        if b <= a or text[a:b] in special:
            out.append(0)
        elif a >= prompt:
            out.append(REGIONS.index(read["regions"][t]))
        else:
            out.append(2 if q0 <= a < q1 else 1)
    return torch.tensor(out, dtype=torch.long)


def _words(arrays: dict, read: dict) -> list[str]:
    """Each row's token text, lower-cased and stripped."""
    return [read["texts"][t][a:b].strip().lower() for t, (a, b) in zip(arrays["text"].tolist(),
                                                                         arrays["span"].tolist(), strict=True)]


def _describe(coder, xs, groups: dict, seen: dict, r, scaling, regions, words, arrays, read, settings) -> dict:
    """Each group's latents (``groups``: key -> latent indices; a latent may be in several), most frequent first:
    statistics, verdict, label, words and contexts; one encoding pass over the rows for every group."""
    union = sorted({j for latents in groups.values() for j in latents})
    if not union:
        return {key: [] for key in groups}
    columns, at = torch.tensor(union), {j: i for i, j in enumerate(union)}
    mass = torch.zeros(len(union), len(REGIONS), dtype=torch.float64)
    by_word: list[dict[str, float]] = [{} for _ in union]
    for lo in range(0, xs[0].shape[0], CHUNK):
        f = coder.encode([x[lo:lo + CHUNK] for x in xs])[:, columns].double()  # (chunk, K)
        mass += f.T @ torch.nn.functional.one_hot(regions[lo:lo + CHUNK], len(REGIONS)).double()
        rows, ks = f.nonzero(as_tuple=True)
        for i, k, v in zip(rows.tolist(), ks.tolist(), f[rows, ks].tolist(), strict=True):
            word = words[lo + i]
            by_word[k][word] = by_word[k].get(word, 0.0) + v
    shares = mass / mass.sum(1, keepdim=True).clamp_min(1e-300)
    row_share = torch.bincount(regions, minlength=len(REGIONS)).double() / len(regions)
    cues = {w.lower() for w in settings.cue_words}
    out = {}
    for key, latents in groups.items():
        order = sorted(latents, key=lambda j: (-int(seen["fires"][j]), j))
        out[key] = [_entry(j, at[j], rank < settings.shown, seen, r, scaling, shares, row_share, by_word[at[j]], cues,
                           regions, arrays, read) for rank, j in enumerate(order)]
    return out


def _entry(j: int, i: int, with_contexts: bool, seen, r, scaling, shares, row_share, words: dict[str, float], cues,
           regions, arrays, read) -> dict:
    """Latent ``j``'s description (``i``: its row in ``shares``; ``words``: its activation mass per word)."""
    total = sum(words.values()) or 1.0
    top_words = sorted(words.items(), key=lambda kv: -kv[1])[:5]
    cue = {w: v / total for w, v in words.items() if w in cues}
    lift = [float(shares[i, g] / row_share[g]) if row_share[g] > 0 else 0.0 for g in range(len(REGIONS))]
    favoured = max(range(len(REGIONS)), key=lambda g: lift[g] if shares[i, g] >= 0.2 else -1.0)
    ratio = (scaling or {}).get("ratios", {}).get(str(j), {})
    entry = {"latent": j, "r": float(r[j]), "fires": int(seen["fires"][j]),
             "frequency": float(seen["frequency"][j]), "mean": finite(float(seen["mean_when_firing"][j])),
             "max": float(seen["top_values"][j, 0]), "nu_error": ratio.get("nu_error"),
             "nu_reconstruction": ratio.get("nu_reconstruction"), "verdict": ratio.get("verdict"),
             "regions": {name: float(shares[i, g]) for g, name in enumerate(REGIONS)},
             "label": f"{REGIONS[favoured]} ({lift[favoured]:.1f}x)", "words": [[w, v / total] for w, v in top_words],
             "cue_share": sum(cue.values()), "cues": cue,
             "template_or_special": float(shares[i, 0] + shares[i, 1]) > 0.5}
    if with_contexts:
        entry["contexts"] = [{**contexts(read["texts"][int(arrays["text"][row])], tuple(arrays["span"][row].tolist())),
                              "activation": float(value), "region": REGIONS[int(regions[row])]}
                             for value, row in zip(seen["top_values"][j].tolist(), seen["top_rows"][j].tolist(),
                                                   strict=True) if row >= 0]
    return entry


def _counts(latents: dict[str, list], scaling: dict | None) -> dict:
    """Per side: exclusive latents, how many Latent Scaling calls real or artifacts, how many fire mostly on template
    or special tokens."""
    out = {}
    for side, entries in latents.items():
        verdicts = [e["verdict"] for e in entries]
        out[side] = {"exclusive": len(entries), "real": verdicts.count("real") if scaling else None,
                     "artifact": verdicts.count("artifact") if scaling else None,
                     "template_or_special": sum(e["template_or_special"] for e in entries)}
    return out


def _inside(models, base, d, coder, xs, held, arrays, read, made, exclusive, leaning, classes, live,
            settings) -> dict:
    """Each model's next-token loss and KL on the held-out texts with its block's output edited: replaced by the
    reconstruction, zeroed, and with the writes removed (the error term kept) of each side's exclusive latents, of
    each side's ``LEANING`` most one-sided latents, or of as many random shared latents as the larger of D's
    exclusive and ``LEANING`` (none of the leaning ones: the control)."""
    rows = held.nonzero()[:, 0]  # the held-out rows, in text order
    texts = sorted(set(arrays["text"][rows].tolist()))
    one_sided = set(leaning["first"]) | set(leaning["second"])
    shared = [j for j, k in enumerate(classes) if live[j] and k == "shared" and j not in one_sided]
    pick = torch.randperm(len(shared), generator=torch.Generator().manual_seed(settings.training.seed + 1))
    control = max(len(exclusive["second"]), LEANING)
    removed = {"ablate_distilled": exclusive["second"], "ablate_base": exclusive["first"],
               "ablate_distilled_leaning": leaning["second"], "ablate_base_leaning": leaning["first"],
               "ablate_shared": [shared[i] for i in pick[:control].tolist()]}
    owner = arrays["text"][rows]
    mine = [rows[owner == t] for t in texts]  # each text's rows
    encoded = [coder([x[own] for x in xs]) for own in mine]  # one text at a time: (n, L) latents, reconstructions
    out = {"n_texts": len(texts), "removed": {k: len(v) for k, v in removed.items()}}
    for m, name in enumerate((base, d)):
        scale, block = made["scales"][m], int(made["layers"][m].split(".")[1])
        W = coder.W_dec[m].detach()
        edits: dict[str, list] = {"spliced": [], "zeroed": [], **{k: [] for k in removed}}
        for own, (f, xhats) in zip(mine, encoded, strict=True):
            positions = arrays["position"][own]
            edits["spliced"].append(TokenEdit(positions, xhats[m] / scale, "set"))
            edits["zeroed"].append(TokenEdit(positions, torch.zeros_like(xhats[m]), "set"))
            for key, latents in removed.items():
                write = f[:, latents] @ W[latents] if latents else torch.zeros_like(xhats[m])
                edits[key].append(TokenEdit(positions, -write / scale, "add"))
        found = edited_losses(models[name], [read["texts"][t] for t in texts], block, edits, settings.batch_size)
        gap = found["zeroed"]["ce"] - found["original"]["ce"]
        if gap > 0:
            found["loss_recovered"] = finite((found["zeroed"]["ce"] - found["spliced"]["ce"]) / gap)
        else:  # the model predicts these texts no better than with its stream zeroed: nothing to recover
            found["loss_recovered"] = None
            found["loss_recovered_why"] = (f"zeroing the block's output does not raise the loss "
                                           f"({found['zeroed']['ce']:.3f} against {found['original']['ce']:.3f} "
                                           f"nats): the model does not predict these texts")
        out["base" if m == 0 else "distilled"] = found
    return out


def _steered(coder, exclusive: list[dict], leaning: list[dict], scale: float, count: int) -> list[dict]:
    """The latents steering adds to the distilled student: its exclusive ones, "real" first, then by how often they
    fire; where there are fewer than ``count``, its most one-sided shared ones (highest r), marked ``exclusive:
    false``. Each with its largest write into the distilled model, in the model's units."""
    ranked = sorted(exclusive, key=lambda e: (e["verdict"] != "real", -e["fires"]))
    ranked += [e for e in leaning if e["latent"] not in {x["latent"] for x in ranked}]
    W = coder.W_dec[1].detach()
    chosen = [e for e in ranked if not math.isnan(e["max"])][:count]
    exclusive_ids = {e["latent"] for e in exclusive}
    return [{"latent": e["latent"], "verdict": e["verdict"], "label": e["label"], "r": e["r"],
             "exclusive": e["latent"] in exclusive_ids, "direction": (e["max"] * W[e["latent"]] / scale).tolist(),
             "norm": float(e["max"] * W[e["latent"]].norm() / scale)} for e in chosen]

"""The language-model audit's crosscoder stages (model-diffing: which features did distillation create, are they
real, what do they do?), run when the config names the base model (``probes: {crosscoder: {base: NAME}}``), once per
other student D:

- ``crosscoder-activations-<D>``: the residual stream after one block of the base B and of D
  (:func:`kdlens.probes.crosscoder.paired_activations`) on each question followed by the teacher's, B's and D's
  traces, row for row. Sharded over chunks of (at most) ``ACTIVATIONS_CHUNK`` batches of texts, each chunk's
  activations a safetensors part (float32 or bfloat16), so a killed run resumes after its last saved chunk and
  processes can share the work. ``figures.json``: each model's scale to mean norm sqrt(d) (the crosscoder trains on
  scaled activations; analysis divides by it to return to the model's units);
- ``crosscoder-train-<D>``: the crosscoder (:func:`kdlens.distill.crosscoder.train`, on the training loop, its
  checkpoints under the stage's ``training/``, so an interrupted training resumes exactly) on the activations of
  the questions not held out;
- ``crosscoder-<D>``: the analysis (:mod:`kdlens.audit.lm.crosscoder_analysis`);
- ``crosscoder-steering-<D>``: D's traces with an exclusive latent's decoder direction added at the block, for each
  scale of a sweep: trace length, accuracy, trace accuracy and, with the provenance probe's settings, the sentence
  categories (teacher / student / shared ...). Sharded: one shard per (latent, scale).
"""

from __future__ import annotations

import math

import torch

from kdlens import io
from kdlens.audit.common import TEACHER
from kdlens.audit.lm.stages import digest, traced_texts
from kdlens.distill import crosscoder as C
from kdlens.distill.config import TrainConfig
from kdlens.probes import provenance as P
from kdlens.probes import traces as T
from kdlens.probes.crosscoder import layer_name, paired_activations, pairing_of
from kdlens.probes.latent_effects import steering
from kdlens.rundir import RunDir, StageDir, StageOutput
from kdlens.stages import Shard, Stage, batch_spans, spans

ACTIVATIONS_CHUNK = 4  # most batches of texts read per shard of the activations stage
SOURCES = ("teacher", "base", "distilled")  # whose trace follows the question in each text, in this order


def names(d: str) -> dict[str, str]:
    """The stage names of distilled student ``d``'s crosscoder."""
    return {"activations": f"crosscoder-activations-{d}", "train": f"crosscoder-train-{d}",
            "analysis": f"crosscoder-{d}", "steering": f"crosscoder-steering-{d}"}


def held_out(n_questions: int, share: float, seed: int) -> torch.Tensor:
    """(n_questions,) bool: the questions held out for evaluation, a seeded ``share`` of them (at least one, and one
    left to train on)."""
    if n_questions < 2:
        raise ValueError(f"Expected at least 2 questions (or texts) for a crosscoder, one held out, but got "
                         f"{n_questions}. Give more.")
    count = min(max(1, round(share * n_questions)), n_questions - 1)
    chosen = torch.randperm(n_questions, generator=torch.Generator().manual_seed(seed))[:count]
    return torch.zeros(n_questions, dtype=torch.bool).index_fill_(0, chosen, True)


def texts_of(run: RunDir, asked: dict[str, list], bare: list, base: str, d: str, n: int | None) -> dict:
    """What the pair (base, d) reads in an audit: per question, its prompt (as ``base`` is asked) followed by each of
    ``SOURCES``' traces (``bare``: the questions before any template, found in the prompt). See :func:`read_texts`."""
    traces = traced_texts(run)
    count = min(n or len(asked[base]), len(asked[base]))
    texts, lengths, question_spans, regions, groups = [], [], [], [], []
    for i in range(count):
        q = asked[base][i]
        asked_text = getattr(bare[i], "question", None) or bare[i].prompt
        at = q.prompt.find(asked_text)
        span = (at, at + len(asked_text)) if at >= 0 else (0, len(q.prompt))
        for source, who in enumerate((TEACHER, base, d)):
            texts.append(q.prompt + traces[who][i])
            lengths.append(len(q.prompt))
            question_spans.append(span)
            regions.append(f"{SOURCES[source]} trace")
            groups.append(i)
    return {"texts": texts, "prompt_lengths": lengths, "question_spans": question_spans, "regions": regions,
            "groups": groups, "n_groups": count}


def read_texts(texts: list[str]) -> dict:
    """What a pair reads when it reads plain ``texts``: each text its own group (held out or not), all of it in the
    region ``text``.

    A pair's reading (this, or :func:`texts_of`'s in an audit) is a dict: ``texts``; per text its
    ``prompt_lengths`` (characters of prompt before the part in ``regions``), ``question_spans`` (the question's
    characters within the prompt; the rest of the prompt is template), ``regions`` (what follows the prompt:
    ``"teacher trace"``, ``"base trace"``, ``"distilled trace"`` or ``"text"``) and ``groups`` (texts of one group
    are held out together), and ``n_groups``."""
    return {"texts": list(texts), "prompt_lengths": [0] * len(texts), "question_spans": [(0, 0)] * len(texts),
            "regions": ["text"] * len(texts), "groups": list(range(len(texts))), "n_groups": len(texts)}


def activations_stage(models: dict, base: str, d: str, read: dict, settings) -> Stage:
    """Both models' activations at their blocks on ``read["texts"]`` (see the module docstring); ``settings``: the
    config's ``CrosscoderProbe``.

    Returns
    -------
    Stage ``crosscoder-activations-<d>``; ``arrays.safetensors``: ``first`` (N, d_B) and ``second`` (N, d_D) in the
    stored dtype, ``text`` (N,), ``position`` (N,) and ``span`` (N, 2); ``figures.json``: ``scales``, ``layers``,
    ``pairing``, ``widths``, ``dtype``; its summary: the rows.
    """
    texts, dtype = read["texts"], getattr(torch, settings.dtype)
    layers = (settings.layer, settings.layer)
    inputs = {"stage": "crosscoder-activations", "models": [digest(models[base]), digest(models[d])],
              "texts": io.stable_hash(texts), "layer": settings.layer, "keep_special": settings.keep_special,
              "dtype": settings.dtype}

    def map_chunk(chunk: Shard, stage_dir: StageDir) -> dict:
        stage_dir.say(f"{base} x {d} activations: {chunk.start}/{len(texts)} texts")
        found = paired_activations(models[base], models[d], texts[chunk.start:chunk.stop], layers,
                                   settings.batch_size, settings.keep_special)
        return {"first": found["first"].to(dtype), "second": found["second"].to(dtype),
                "text": found["text"] + chunk.start, "position": found["position"], "span": found["span"]}

    def reduce(states: list[dict], _) -> StageOutput:
        arrays = {key: torch.cat([s[key] for s in states]) for key in ("first", "second", "text", "position", "span")}
        scales = [C.scale_to_sqrt_d(arrays[key].float())[1] for key in ("first", "second")]
        figures = {"base": base, "distilled": d, "pairing": pairing_of(models[base], models[d]),
                   "layers": [layer_name(models[name], settings.layer) for name in (base, d)],
                   "widths": [arrays["first"].shape[1], arrays["second"].shape[1]], "dtype": settings.dtype,
                   "scales": scales, "n_rows": arrays["first"].shape[0], "n_texts": len(texts),
                   "sources": list(SOURCES)}
        return StageOutput(figures=figures, arrays=arrays, summary={"rows": figures["n_rows"]})

    return Stage(names(d)["activations"], inputs, shards=batch_spans(len(texts), settings.batch_size,
                                                                       ACTIVATIONS_CHUNK),
                 map=map_chunk, reduce=reduce, examples=len(texts))


def training_rows(arrays: dict, scales: list[float], settings, read: dict) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The activations of a pair (``arrays`` and ``scales``: its activations stage's) scaled to mean norm sqrt(d)
    (float32, one (N, d_m) per model) and (N,) bool: the rows of held-out groups (questions) of ``read``."""
    xs = [arrays[key].float() * s for key, s in zip(("first", "second"), scales, strict=True)]
    groups = torch.tensor(read["groups"])[arrays["text"]]  # (N,)
    held = held_out(read["n_groups"], settings.eval_share, settings.training.seed)[groups]
    return xs, held


def training_stage(run: RunDir, d: str, settings, read: dict, upstream: str | None) -> Stage:
    """The crosscoder of ``d``'s pair, trained on the rows of the questions not held out (see the module
    docstring); ``read``: what the pair read; ``upstream``: the activations stage's inputs hash.

    Returns
    -------
    Stage ``crosscoder-train-<d>``; ``arrays.safetensors``: the crosscoder's state (its parameters, inference
    threshold and firing counts); ``figures.json``: its settings and the per-epoch history (FVE per model, L0, dead
    share); its summary: the last epoch's FVEs and L0.
    """
    train = settings.training
    inputs = {"stage": "crosscoder-train", "upstream": upstream, "training": train.model_dump(mode="json"),
              "eval_share": settings.eval_share, "groups": io.stable_hash(read["groups"])}

    def compute(stage_dir: StageDir) -> StageOutput:
        made = run.stage(names(d)["activations"])
        xs, held = training_rows(made.arrays(), made.figures()["scales"], settings, read)
        pairs = [x[~held] for x in xs]
        n_latents = train.expansion * max(x.shape[1] for x in xs)
        config = TrainConfig(epochs=train.epochs, batch_size=min(train.batch_size, pairs[0].shape[0]), lr=train.lr,
                             weight_decay=0.0, seed=train.seed, drop_last=True, progress=False)
        stage_dir.say(f"training a crosscoder of {n_latents} latents on {pairs[0].shape[0]} pairs")
        model, history = C.train(pairs, n_latents, stage_dir.file("training"), config, kind=train.kind, k=train.k,
                                 l1_weight=train.l1_weight,
                                 on_epoch=lambda h: stage_dir.say(_epoch_line(h, train.epochs)))
        figures = {"kind": train.kind, "k": train.k, "n_latents": n_latents, "widths": model.widths,
                   "n_train": pairs[0].shape[0], "n_eval": int(held.sum()), "dead_window": C.dead_window(
                       pairs[0].shape[0]), "history": history}
        last = history[-1]
        return StageOutput(figures=figures, arrays={k: v.detach().clone() for k, v in model.state_dict().items()},
                           summary={"fve_base": last["fve_0"], "fve_distilled": last["fve_1"], "l0": last["l0"]})

    return Stage(names(d)["train"], inputs, compute=compute)


def _epoch_line(history: dict, epochs: int) -> str:
    return (f"crosscoder epoch {history['epoch']}/{epochs}: FVE {history['fve_0']:.3f} / {history['fve_1']:.3f}, "
            f"L0 {history['l0']:.1f}, dead {history['dead']:.1%}")


def load_crosscoder(run: RunDir, d: str) -> C.Crosscoder:
    """``d``'s trained crosscoder, from its training stage's files (eval mode)."""
    stage = run.stage(names(d)["train"])
    figures = stage.figures()
    model = C.Crosscoder(figures["widths"], figures["n_latents"], figures["kind"], figures["k"])
    model.load_state_dict(stage.arrays())
    return model.eval()


def steering_stage(run: RunDir, models: dict, base: str, d: str, questions: list, trace_settings: dict, settings,
                   provenance, upstream: str | None) -> Stage:
    """``d``'s traces on the first ``settings.steering.n`` of ``questions`` (as ``d`` is asked) with each latent the
    analysis chose for steering added at the block, per scale (see the module docstring); ``provenance``: the
    config's ``ProvenanceProbe`` (its categories are measured when it names ``base`` as the original student);
    ``upstream``: the analysis stage's inputs hash.

    Returns
    -------
    Stage ``crosscoder-steering-<d>``; ``figures.json``: per latent (and ``"none"``, unsteered) per scale: the mean
    trace length in characters and in tokens, accuracy, trace accuracy and (with provenance) the category shares;
    ``rows.jsonl``: each steered trace.
    """
    steer = settings.steering
    analysis = run.stage(names(d)["analysis"]).figures()
    chosen = analysis["steering"]["latents"]
    asked = questions[:min(steer.n, len(questions))]
    combos = [(None, 0.0)] + [(j, s) for j in [c["latent"] for c in chosen] for s in steer.scales if s != 0.0]
    scored = provenance.enabled and provenance.original_student == base
    inputs = {"stage": "crosscoder-steering", "upstream": upstream, "steering": steer.model_dump(mode="json"),
              "trace_settings": trace_settings, "questions": io.stable_hash([q.prompt for q in asked]),
              "provenance": provenance.model_dump(mode="json") if scored else None}
    model, block = models[d], int(analysis["layers"][1].split(".")[1])

    def map_combo(shard: Shard, stage_dir: StageDir) -> dict:
        latent, scale = combos[shard.start]
        stage_dir.say(f"steering {d}: latent {latent} at {scale:+g} ({shard.start + 1}/{len(combos)})")
        kwargs = {k: trace_settings[k] for k in ("max_new_tokens", "batch_size", "stop", "stop_ids")
                  if k in trace_settings}
        if latent is None:
            texts = T.generate_traces(model, asked, **kwargs)
        else:
            with steering(model, block, scale * torch.tensor(_write(chosen, latent))):
                texts = T.generate_traces(model, asked, **kwargs)
        overall = T.trace_figures(asked, texts)["overall"]
        tokens = [len(model.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        state = {"latent": latent, "scale": scale, "texts": texts, "accuracy": overall["accuracy"],
                 "trace_accuracy": overall["trace_accuracy"], "chars": sum(map(len, texts)) / len(texts),
                 "tokens": sum(tokens) / len(tokens)}
        if scored:
            state["shares"] = _categories(models, base, d, asked, texts, provenance)
        return state

    def reduce(states: list[dict], _) -> StageOutput:
        curves: dict = {}
        rows = []
        for s in states:
            key = "none" if s["latent"] is None else str(s["latent"])
            curves.setdefault(key, {})[str(s["scale"])] = {k: v for k, v in s.items() if k not in ("texts",)}
            rows += [{"latent": s["latent"], "scale": s["scale"], "index": i, "text": t}
                     for i, t in enumerate(s["texts"])]
        figures = {"latents": chosen, "scales": steer.scales, "n": len(asked), "curves": curves,
                   "provenance": scored}
        return StageOutput(figures=figures, rows=rows, summary={"combinations": len(states)})

    return Stage(names(d)["steering"], inputs, shards=spans(len(combos), 1), map=map_combo, reduce=reduce,
                 examples=len(combos))


def _write(chosen: list[dict], latent: int) -> list[float]:
    """The latent's largest write into the distilled model, in the model's units ((d,) list)."""
    return next(c["direction"] for c in chosen if c["latent"] == latent)


def _categories(models: dict, base: str, d: str, questions: list, texts: list[str], settings) -> dict:
    """The provenance categories' shares of the (steered) traces' sentences, scored under the teacher, the base
    (the original student) and the unsteered distilled student."""
    cut = settings.segmentation
    sentences = [P.segment(t, cut.terminators, cut.think) for t in texts]
    keep = [i for i, s in enumerate(sentences) if s]
    if not keep:
        return {"n_sentences": 0}
    prompts = [questions[i].prompt for i in keep]
    p = {role: torch.cat(P.sentence_probabilities(models[name], prompts, [texts[i] for i in keep],
                                                  [sentences[i] for i in keep], per=settings.per,
                                                  batch_size=settings.batch_size))
         for role, name in (("teacher", TEACHER), ("student", base), ("distilled", d))}
    flat = P.categorize(p["teacher"], p["student"], p["distilled"], settings.alpha, settings.beta)
    categories, at = [], 0
    for i in keep:
        categories.append(flat[at:at + len(sentences[i])])
        at += len(sentences[i])
    shares = P.category_shares(categories, n_resamples=200)
    return {"n_sentences": at, **{k: v["share"] for k, v in shares.items() if isinstance(v, dict) and "share" in v}}


def finite(value: float) -> float | None:
    """A float for JSON: None where it is not finite."""
    return float(value) if value is not None and math.isfinite(value) else None

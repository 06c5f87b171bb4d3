"""Per-latent statistics of a dictionary (a crosscoder's or an SAE's latents) over many rows (tokens), streamed:
how often each latent fires, how strongly, on which rows most (its top-k, to show in context), and on which groups
of rows its activation mass falls (template or special tokens against text, teacher-style against student-style).

A latent fires on a row when its activation is > 0. :class:`LatentStatistics` keeps float64 sums, the running max
and each latent's k largest firing activations with their global row indices; its states merge across shards and
processes, the top-k by a deterministic rule (larger value first, ties to the lower row index), so any chunking
and any order of merging give the same result.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from kdlens import validation as V
from kdlens.measures.merging import merge_states


class LatentStatistics(Metric):
    """Streaming per-latent statistics: ``update(f, row_offset)`` per batch of rows, ``compute()`` at the end.

    Parameters
    ----------
    n_latents : int >= 1, the number of latents L (columns of ``f``)
    k : int >= 1, how many top activations to keep per latent

    States: ``rows`` (), ``fires`` (L,) int64 and ``total`` (L,) float64 (sums), ``maximum`` (L,) float64 (max),
    ``top`` (2, L, k) float64: the top values (-inf where empty) and their rows (-1), merged by value (ties to the
    lower row).

    Examples
    --------
    >>> import torch
    >>> stats = LatentStatistics(n_latents=2, k=2)
    >>> stats.update(torch.tensor([[0.0, 1.0], [3.0, 1.0]]), row_offset=0)
    >>> stats.update(torch.tensor([[2.0, 0.0]]), row_offset=2)
    >>> out = stats.compute()
    >>> out["fires"].tolist(), out["top_rows"].tolist(), out["mean_when_firing"].tolist()
    ([2, 2], [[1, 2], [0, 1]], [2.5, 1.0])
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, n_latents: int, k: int = 20, **kwargs) -> None:
        super().__init__(**kwargs)
        self.n_latents = V.check_int(n_latents, "n_latents", 1, "Pass the crosscoder's number of latents.")
        self.k = V.check_int(k, "k", 1, "20 top rows per latent suit a review page.")
        empty = torch.stack([torch.full((self.n_latents, self.k), -torch.inf, dtype=torch.float64),
                             torch.full((self.n_latents, self.k), -1.0, dtype=torch.float64)])  # (2, L, k)
        self.add_state("rows", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("fires", default=torch.zeros(self.n_latents, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros(self.n_latents, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("maximum", default=torch.full((self.n_latents,), -torch.inf, dtype=torch.float64),
                       dist_reduce_fx="max")
        self.add_state("top", default=empty, dist_reduce_fx=_merge_top)

    def update(self, f, row_offset: int) -> None:
        """Add a batch: ``f`` (B, L) float latent activations of rows ``row_offset .. row_offset + B - 1``."""
        f = V.as_float(f, "f")
        V.check_ndim(f, "f", 2, "(B, L)")
        if f.shape[1] != self.n_latents:
            V.fail("f", f"one column per latent ({self.n_latents})", f"shape {tuple(f.shape)}")
        V.check_finite(f, "f")
        row_offset = V.check_int(row_offset, "row_offset", 0, "Pass the global index of the batch's first row.")
        if f.shape[0] == 0:
            return
        device = self.fires.device
        firing = f > 0  # (B, L)
        self.rows += f.shape[0]
        self.fires += firing.sum(0).to(device)
        self.total += f.clamp_min(0).sum(0, dtype=torch.float64).to(device)  # the firing activations' sum
        self.maximum = torch.maximum(self.maximum, f.amax(0).double().to(device))
        candidates = torch.where(firing, f, -torch.inf).T.contiguous()  # (L, B): -inf where a latent does not fire
        rows = (row_offset + torch.arange(f.shape[0], device=f.device, dtype=torch.float64)).expand_as(candidates)
        batch = _top_k(candidates, rows, self.k).to(device)  # (2, L, k)
        self.top = _merge_top(torch.stack([self.top, batch]))

    def compute(self) -> dict[str, torch.Tensor]:
        """dict: ``fires`` (L,) int64; ``mean_when_firing`` (L,) float64 (NaN when never); ``frequency`` (L,)
        float64, fires / rows seen; ``max`` (L,) float64, the largest activation seen (firing or not; -inf before
        any row); ``top_values`` (L, k) float64 (NaN where fewer than k firings); ``top_rows`` (L, k) int64 (-1
        there). torchmetrics returns 0-d tensors where a result has one element."""
        values, rows = self.top
        fires = self.fires.clone()
        return {"fires": fires, "mean_when_firing": self.total / fires.double(),
                "frequency": fires.double() / self.rows,  # NaN before any row
                "max": self.maximum.clone(), "top_values": torch.where(rows >= 0, values, torch.nan),
                "top_rows": rows.long()}

    def merge(self, other: LatentStatistics) -> LatentStatistics:
        """This accumulator with ``other``'s rows merged in (the same n_latents and k); returns itself.
        (As :func:`~kdlens.measures.merge_states`: a merged accumulator no longer syncs across processes.)"""
        if not isinstance(other, LatentStatistics):
            V.fail("other", "a LatentStatistics", type(other).__name__, error=TypeError)
        if (other.n_latents, other.k) != (self.n_latents, self.k):
            V.fail("other", f"an accumulator of {self.n_latents} latents and k = {self.k}",
                   f"{other.n_latents} latents and k = {other.k}", "Merge only shards of one analysis.")
        return merge_states(self, [other.metric_state])


def _merge_top(tops: torch.Tensor) -> torch.Tensor:
    """Merge stacked top-k states (P, 2, L, k) into one (2, L, k): the ``top`` state's reduction (across processes
    too)."""
    return _top_k(torch.cat(list(tops[:, 0]), dim=1), torch.cat(list(tops[:, 1]), dim=1), tops.shape[-1])


def _top_k(values: torch.Tensor, rows: torch.Tensor, k: int) -> torch.Tensor:
    """(2, L, k) float64: the k largest of each latent's ``values`` (L, M) (-inf: no firing) and their float
    ``rows`` (L, M), larger value first, ties to the lower row; -inf and row -1 where fewer than k fire.

    ``topk`` alone may break ties either way, so: the k-th largest value v; every entry above v (fewer than k); the
    entries equal to v with the k lowest rows; then a sort of these 2k candidates by (value, row). Three ``topk``
    passes over (L, M) and a sort of (L, 2k): no sort of all L M entries.
    """
    if values.shape[1] < k:  # fewer entries than slots: pad with empty ones
        missing = k - values.shape[1]
        values = torch.cat([values, values.new_full((values.shape[0], missing), -torch.inf)], dim=1)
        rows = torch.cat([rows, rows.new_full((rows.shape[0], missing), -1.0)], dim=1)
    kth = values.topk(k, dim=1).values[:, -1:]  # (L, 1)
    above, above_at = torch.where(values > kth, values, -torch.inf).topk(k, dim=1)  # (L, k)
    tied = (values == kth) & (values > -torch.inf)
    tied_rows = torch.where(tied, rows, torch.inf).topk(k, dim=1, largest=False).values  # (L, k): the lowest rows
    candidates = torch.cat([above, torch.where(tied_rows < torch.inf, kth, -torch.inf)], dim=1).double()  # (L, 2k)
    candidate_rows = torch.cat([torch.where(above > -torch.inf, rows.gather(1, above_at), -1.0),
                                torch.where(tied_rows < torch.inf, tied_rows, -1.0)], dim=1).double()
    order = candidate_rows.argsort(dim=1, stable=True)  # by row, then (stable) by value: ties keep the lower row
    candidates, candidate_rows = candidates.gather(1, order), candidate_rows.gather(1, order)
    order = candidates.argsort(dim=1, descending=True, stable=True)[:, :k]
    return torch.stack([candidates.gather(1, order), candidate_rows.gather(1, order)])


def group_shares(f, groups, n_groups: int) -> torch.Tensor:
    """The share of each latent's activation mass that falls on each group of rows.

    Parameters
    ----------
    f : (N,) or (N, K) non-negative float tensor, the activations of one latent or of K latents over N rows
    groups : (N,) int tensor, each row's group in [0, n_groups) (template or special token against text; teacher-
        style against student-style text)
    n_groups : int >= 1, G

    Returns
    -------
    (G,) float64 tensor for 1-D ``f``, (K, G) for 2-D: ``sum_{i in g} f_ik / sum_i f_ik``; each row sums to 1, or
    is NaN where the latent never fires.

    Examples
    --------
    >>> import torch
    >>> group_shares(torch.tensor([1.0, 3.0, 0.0, 4.0]), torch.tensor([0, 1, 1, 0]), 2).tolist()
    [0.625, 0.375]
    """
    values = V.as_float(f, "f")
    if values.ndim not in (1, 2):
        V.fail("f", "1-D (N,) or 2-D (N, K)", f"shape {tuple(values.shape)}")
    V.check_finite(values, "f")
    if bool((values < 0).any()):
        V.fail("f", "non-negative activations", f"minimum {float(values.min()):.4g}",
               "Shares of activation mass need activations >= 0 (a crosscoder's latents after its ReLU).")
    n_groups = V.check_int(n_groups, "n_groups", 1)
    groups = V.check_labels(groups, values.shape[0], n_groups, "groups").to(values.device)
    columns = values.double().reshape(values.shape[0], -1)  # (N, K)
    mass = torch.zeros(n_groups, columns.shape[1], dtype=torch.float64, device=values.device)
    mass.index_add_(0, groups, columns)  # (G, K)
    shares = (mass / mass.sum(0)).T  # (K, G): 0 / 0 = NaN for a latent that never fires
    return shares[0] if values.ndim == 1 else shares


def contexts(text: str, span: tuple[int, int], window: int = 40) -> dict[str, str]:
    """A token in its context, for showing a top-activating row: ``before``, ``token`` and ``after`` strings.

    Parameters
    ----------
    text : str, the document
    span : (start, end) character offsets of the token in ``text``, 0 <= start <= end <= len(text)
    window : int >= 0, at most this many characters each side (cut at the text's ends; newlines kept as they are)

    Examples
    --------
    >>> contexts("the cat sat on the mat", (4, 7), window=4)
    {'before': 'the ', 'token': 'cat', 'after': ' sat'}
    """
    if not isinstance(text, str):
        V.fail("text", "a str", type(text).__name__, error=TypeError)
    if (not isinstance(span, (tuple, list)) or len(span) != 2
            or any(isinstance(i, bool) or not isinstance(i, int) for i in span)):
        V.fail("span", "a (start, end) pair of ints", repr(span), error=TypeError)
    start, end = span
    if not 0 <= start <= end <= len(text):
        V.fail("span", f"offsets with 0 <= start <= end <= len(text) = {len(text)}", repr(tuple(span)),
               "Pass the token's character offsets in this text (a tokenizer's offset mapping).")
    window = V.check_int(window, "window", 0)
    return {"before": text[max(0, start - window):start], "token": text[start:end], "after": text[end:end + window]}

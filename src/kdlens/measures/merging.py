"""Streaming measures merged across shards: the partial states one process (or one shard) saved, added up."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torchmetrics import Metric


def merge_states(metric: Metric, states: Iterable[dict[str, torch.Tensor]], prefix: str = "") -> Metric:
    """``metric`` with every state in ``states`` merged in (each reduced as the metric declares: sums add), ready
    to ``compute()``; ``prefix`` picks a metric's keys out of a state that holds several (``"teacher.calibration."``).

    Examples
    --------
    >>> import torch
    >>> from kdlens.measures import Agreement
    >>> a, b = Agreement(), Agreement()
    >>> a.update(torch.tensor([[1., 0.]]), torch.tensor([[2., 0.]]))
    >>> b.update(torch.tensor([[1., 0.]]), torch.tensor([[0., 2.]]))
    >>> float(merge_states(Agreement(), [a.metric_state, b.metric_state]).compute())
    0.5
    """
    merged = 0
    for state in states:
        metric.merge_state({k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)})
        merged += 1
    metric._update_count += merged  # merged states count as updates (torchmetrics warns on compute otherwise)
    metric.sync_on_compute = metric._to_sync = False  # torchmetrics reads both
    return metric

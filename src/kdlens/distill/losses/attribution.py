"""Attribution maps that stay differentiable (saliency, Grad-CAM) and the loss that aligns a student's map
with its teacher's."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdlens.distill.losses.common import (
    EPS,
    check_features,
    check_tensor,
    flatten,
    pool_to_common,
    reduce,
)
from kdlens.validation import fail


def _check_score(score, against: torch.Tensor, name: str) -> None:
    check_tensor(score, "score")
    if score.ndim != 1 or score.shape[0] != against.shape[0]:
        fail("score", f"1-D of shape ({against.shape[0]},), one scalar per example of `{name}`",
             f"shape {tuple(score.shape)}", "Pick one logit per example, e.g. logits.gather(1, labels[:, None])[:, 0].")
    if not score.requires_grad:
        fail("score", f"connected to `{name}` by autograd", "a tensor that does not require grad",
             f"Run the forward pass with gradients enabled; if the model is frozen, call "
             f"inputs.requires_grad_(True) before it so `{name}` joins the graph.")


def input_gradient_map(score: torch.Tensor, inputs: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """Saliency (Simonyan et al. 2014): the absolute gradient of a per-example score with respect to the input.

    Computed with one ``torch.autograd.grad(score.sum(), inputs)``: examples must not interact in the forward pass
    (BatchNorm in train mode mixes them slightly).

    Parameters
    ----------
    score : (B,) float, e.g. the true-class logit, from a forward pass on ``inputs``
    inputs : (B, C, H, W) or (B, ...) float with ``requires_grad=True``
    create_graph : bool
        Keep the graph of the gradient so the map itself can be trained (double backprop); needed on the student.

    Returns
    -------
    (B, H, W) ``sum_c |d score / d inputs|`` for image inputs; otherwise ``|d score / d inputs|`` of the input's
    shape (e.g. (B, D)). Units: score units per input unit.
    """
    check_tensor(inputs, "inputs")
    _check_score(score, inputs, "inputs")
    if not inputs.requires_grad:
        fail("inputs", "a tensor with requires_grad=True", "one without", "Call inputs.requires_grad_(True) before "
             "the forward pass.")
    (grad,) = torch.autograd.grad(score.sum(), inputs, create_graph=create_graph)
    saliency = grad.abs()
    return saliency.sum(1) if inputs.ndim == 4 else saliency


def gradcam_map(score: torch.Tensor, activations: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al., ICCV 2017, eqs. 1-2) of a per-example score on one conv layer.

    ``alpha_k = mean_{h, w} d score / d A_k`` and ``map = ReLU(sum_k alpha_k A_k)``; matches captum's
    ``LayerGradCam(..., relu_attributions=True)`` squeezed to (B, h, w).

    Parameters
    ----------
    score : (B,) float, e.g. the true-class logit, from the forward pass that produced ``activations``
    activations : (B, K, h, w) float, the layer's output in that pass (captured without detaching)
    create_graph : bool
        Keep the graph so the map is differentiable with respect to the model's weights (double backprop);
        needed on the student when training it to match the teacher's map.

    Returns
    -------
    (B, h, w) nonnegative map, in score units.
    """
    check_tensor(activations, "activations")
    if activations.ndim != 4:
        fail("activations", "a 4-D conv map (B, K, h, w)", f"shape {tuple(activations.shape)}",
             "Grad-CAM needs a convolutional layer; pick one whose output is (B, K, h, w).")
    _check_score(score, activations, "activations")
    (grad,) = torch.autograd.grad(score.sum(), activations, create_graph=create_graph)  # (B, K, h, w)
    alpha = grad.mean(dim=(2, 3), keepdim=True)  # (B, K, 1, 1)
    return F.relu((alpha * activations).sum(1))  # (B, h, w)


def attribution_alignment_loss(student_map: torch.Tensor, teacher_map: torch.Tensor, reduction: str = "mean",
                               mask: torch.Tensor | None = None) -> torch.Tensor:
    """Match the student's attribution map to the teacher's, as attention transfer matches attention maps.

    Each map is flattened and L2-normalised per example (so only where the attribution falls matters, not its
    scale, which differs between models), and the loss is the squared L2 distance between the unit maps:
    ``|| m_s / ||m_s|| - m_t / ||m_t|| ||_2^2``. (B, h, w) maps of different sizes are adaptive-average-pooled to
    the smaller; an all-zero map (e.g. Grad-CAM with every location negative) normalises to zero and gives 1.

    Parameters
    ----------
    student_map : (B, h_s, w_s) or (B, D) float, differentiable (e.g. from ``gradcam_map(..., create_graph=True)``)
    teacher_map : (B, h_t, w_t) or (B, D) float
    reduction, mask : as in :func:`kd_loss`

    Returns
    -------
    Scalar tensor (or (B,)), unitless, in [0, 2] per example for nonnegative maps.
    """
    check_features(student_map, teacher_map, "student_map", "teacher_map")
    s, t = student_map, teacher_map
    if s.ndim == 3 and t.ndim == 3:
        s, t = pool_to_common(s[:, None], t[:, None])  # (B, 1, h, w)
    elif s.shape != t.shape:
        fail("student_map` and `teacher_map", "maps of the same shape, or (B, h, w) maps of any spatial size",
             f"{tuple(s.shape)} and {tuple(t.shape)}", "Compute both maps with the same method on the same inputs.")
    u_s, u_t = F.normalize(flatten(s), dim=1, eps=EPS), F.normalize(flatten(t), dim=1, eps=EPS)  # (B, N)
    per_example = (u_s - u_t).square().sum(1)  # (B,)
    return reduce(per_example, reduction, mask)

"""Attribution maps: which parts of an input (or of a layer's activation) a model's answer rests on.

One class per method, captum-style: ``Method(model, layer).attribute(inputs, target)``, batched (the whole batch in
one pass; integrated gradients chunks its expanded batch). The class activation maps are here, the gradient methods
in :mod:`kdlens.probes.gradients`; all are exported from :mod:`kdlens.probes`.

================================  =======================  ===============================================
method                            returns                  what it is
================================  =======================  ===============================================
``GradCAM(model, layer)``         (B, h, w), >= 0          ReLU(sum_k alpha_k A_k), alpha_k = spatial mean of
                                                           d score / d A_k (Selvaraju et al., ICCV 2017)
``GradCAMPlusPlus(model, layer)`` (B, h, w), >= 0          Grad-CAM with second-order pixel weights
                                                           (Chattopadhay et al., WACV 2018)
``InputXGradient(model)``         inputs' shape, signed    inputs * d score / d inputs
``IntegratedGradients(model)``    inputs' shape, signed    (x - x') * integral_0^1 grad f(x' + a (x - x')) da
                                                           (Sundararajan et al., ICML 2017)
``EmbeddingXGradient(model, l)``  (B, T), signed           sum_D embedding * d score / d embedding, per token
================================  =======================  ===============================================

``A`` is the layer's output (B, K, h, w) and ``score`` the logit of the target class (before softmax). Grad-CAM
maps live on the layer's grid (h, w); upsampling to the image and comparing happen in :mod:`kdlens.measures`
(``align_maps``). Input-space attributions keep the inputs' shape; :func:`spatial_map` reduces (B, C, H, W) ones to
(B, H, W) maps.

Normalisation: maps are returned raw, in score units (logit per unit of activation or input), never rescaled.
Two models' logits have different scales, so comparisons normalise explicitly: ``map_spearman``,
``map_topk_iou`` and ``map_cosine`` in :mod:`kdlens.measures` are invariant to a positive rescaling, and
``normalize_maps`` is there for display.

Targets: ``target`` is an int (one class for every example), or a (B,) integer tensor or list. When a teacher and a
student are compared, both explain the **teacher's** predicted class (``DEFAULT_TARGET = "teacher"``; build the
indices with :func:`resolve_targets`). The question is whether the student uses the teacher's evidence for the
teacher's answer: explaining each model's own prediction would compare explanations of different classes whenever
the two disagree, and the true label is unavailable on unlabelled data. ``"label"`` and ``"student"`` are there
for other questions.

Every method runs the model in eval mode (each module's mode is restored after), removes its hooks whatever
happens, and takes gradients with ``torch.autograd.grad`` with respect to the tensors it needs only, so no
``.grad`` is left on the parameters. Layer-based methods run the layers before ``layer`` without autograd: the
gradient stops at the layer. Results are on the model's device, detached, in the model's float dtype (float16 and
bfloat16 are returned as float32).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from kdlens import validation as C
from kdlens.probes.attribution_common import (
    check_batch,
    check_model,
    check_target,
    evaluating,
    finish,
    forward_from_layer,
    layer_gradient,
    output_logits,
    resolve_layer,
    select,
)

DEFAULT_TARGET = "teacher"
TARGET_RULES = ("teacher", "label", "student")
SPATIAL_KINDS = ("abs_sum", "sum")


# ---------------------------------------------------------------------------------------------------------------
# Targets and maps
# ---------------------------------------------------------------------------------------------------------------


def resolve_targets(rule: str = DEFAULT_TARGET, teacher_logits=None, student_logits=None, labels=None) -> torch.Tensor:
    """The class each example's attribution explains, by rule.

    Parameters
    ----------
    rule : "teacher" (default, :data:`DEFAULT_TARGET`), "student" or "label"
        ``"teacher"``: the teacher's predicted class, for both models (see the module docstring for why);
        ``"student"``: the student's predicted class; ``"label"``: the ground-truth label.
    teacher_logits, student_logits : (B, C) float, needed by the rule of the same name
    labels : (B,) int >= 0, needed by ``"label"``

    Returns
    -------
    (B,) int64 class indices, on the device of the tensor the rule reads.

    Examples
    --------
    >>> resolve_targets("teacher", teacher_logits=torch.tensor([[0.1, 2.0], [3.0, -1.0]]))
    tensor([1, 0])
    """
    C.check_choice(rule, "rule", TARGET_RULES)
    source = {"teacher": teacher_logits, "student": student_logits, "label": labels}[rule]
    name = "labels" if rule == "label" else f"{rule}_logits"
    if source is None:
        C.fail(name, f"given for rule={rule!r}", "None", f"Pass {name}=..., or pick another rule.")
    if rule == "label":
        labels = C.as_labels(source, "labels")
        if labels.numel() and int(labels.min()) < 0:
            C.fail("labels", "non-negative class indices", f"values in [{int(labels.min())}, {int(labels.max())}]",
                   "A label indexes a column of the logits: drop or remap ignore values such as -100 first.")
        return labels
    return C.check_logits(source, name).argmax(1)


def spatial_map(attributions, kind: str = "abs_sum") -> torch.Tensor:
    """Reduce input-space attributions over channels to one (B, H, W) map per example.

    Parameters
    ----------
    attributions : (B, C, H, W) float, e.g. from :class:`InputXGradient` or :class:`IntegratedGradients`;
        (B, H, W) maps (Grad-CAM) pass through unchanged.
    kind : "abs_sum" (default) sums ``|a|`` over channels: how much each pixel matters, whatever the sign, the usual
        saliency convention; "sum" keeps the sign (evidence for minus evidence against).

    Returns
    -------
    (B, H, W) float, in the attributions' units (NaN or inf attributions are refused).

    Examples
    --------
    >>> spatial_map(torch.tensor([[[[1.0]], [[-2.0]]]])).tolist()
    [[[3.0]]]
    """
    C.check_choice(kind, "kind", SPATIAL_KINDS)
    a = C.as_float(attributions, "attributions")
    if a.ndim not in (3, 4):
        C.fail("attributions", "4-D (B, C, H, W) input-space attributions or 3-D (B, H, W) maps",
               f"shape {tuple(a.shape)}", "Token attributions (B, T) are already one value per position.")
    C.check_finite(a, "attributions")
    if a.ndim == 3:
        return a
    return a.abs().sum(1) if kind == "abs_sum" else a.sum(1)


# ---------------------------------------------------------------------------------------------------------------
# Class activation maps
# ---------------------------------------------------------------------------------------------------------------


class GradCAM:
    """Grad-CAM (Selvaraju et al., ICCV 2017, eqs. 1-2) on one layer of a classifier.

    ``alpha_k = mean_{i,j} d score / d A_k[i, j]`` and ``map = ReLU(sum_k alpha_k A_k)``, with ``A`` the layer's
    output and ``score`` the target logit. Equals captum's ``LayerGradCam(model, module).attribute(inputs, target,
    relu_attributions=True)`` squeezed to (B, h, w).

    Parameters
    ----------
    model : nn.Module returning (B, n_classes) logits (or a tuple / dict / ``.logits`` holding them), or a Classifier
    layer : str, a ``named_modules()`` name (an unknown one lists close matches), or the module itself; its output
        must be (B, K, h, w), or token-shaped with ``reshape`` given
    reshape : callable, optional
        Turns a token activation (B, T, D) into (B, D, h, w), applied to the activation and its gradient alike.
        For a ViT-B/16 at 224 px: ``lambda a: a[:, 1:].reshape(a.shape[0], 14, 14, -1).permute(0, 3, 1, 2)``.

    Notes
    -----
    Layers before ``layer`` run without autograd. On the CPU, 4-D float inputs are passed to the model in the
    channels-last memory format (oneDNN convolutions run faster on it; values agree to float rounding); a model
    that calls ``.view()`` on its activations cannot take them, and is rerun on the inputs as given.

    Examples
    --------
    >>> from kdlens.lab.cnn import SmallCNN
    >>> net = SmallCNN(n_classes=3, widths=(4, 8, 8))
    >>> GradCAM(net, "block3").attribute(torch.rand(2, 3, 16, 16), target=1).shape
    torch.Size([2, 4, 4])
    """

    def __init__(self, model: nn.Module, layer: str | nn.Module, reshape: Callable | None = None) -> None:
        self.subject = check_model(model)
        self.model = self.subject.model
        self.layer = layer
        self.module = resolve_layer(self.subject, layer)
        if reshape is not None and not callable(reshape):
            C.fail("reshape", "None or a callable mapping (B, T, D) activations to (B, D, h, w)",
                   type(reshape).__name__, error=TypeError)
        self.reshape = reshape

    def attribute(self, inputs: torch.Tensor, target) -> torch.Tensor:
        """Maps for a batch.

        Parameters
        ----------
        inputs : (B, ...) tensor the model takes (images: (B, C, H, W) float), finite where it is float; inputs the
            model's forward refuses raise a ValueError (a TypeError for non-float ones) chaining the model's error
        target : int, or (B,) int tensor or list: the class explained for each example

        Returns
        -------
        (B, h, w) nonnegative, on the layer's grid, in score units, on the model's device.
        """
        acts, grads = self._activations_and_gradients(inputs, target)  # (B, K, h, w) each
        return finish(F.relu((self._weights(acts, grads) * acts).sum(1)))  # (B, h, w)

    def _weights(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return grads.mean(dim=(2, 3), keepdim=True)  # (B, K, 1, 1)

    def _activations_and_gradients(self, inputs, target) -> tuple[torch.Tensor, torch.Tensor]:
        x = C.as_tensor(inputs, "inputs")
        n = check_batch(x)
        if x.is_floating_point():  # integer inputs (token ids) have no NaN
            C.check_finite(x, "inputs")
        targets = check_target(target, n)
        x = x.to(self.subject.device)
        with evaluating(self.model), torch.enable_grad():
            out, acts = self._forward(x)
            if acts.ndim != 4 and self.reshape is None:
                C.fail("layer", "a layer with (B, K, h, w) outputs, or a `reshape`",
                       f"{self.layer!r} with outputs of shape {tuple(acts.shape)}",
                       "Pass reshape=... turning (B, T, D) tokens into (B, D, h, w), e.g. for a ViT "
                       "lambda a: a[:, 1:].reshape(a.shape[0], 14, 14, -1).permute(0, 3, 1, 2).")
            score = select(output_logits(out), targets)  # (B,)
            grads = layer_gradient(score, acts, self.layer)  # (B, ...) like acts
        acts = acts.detach()
        if self.reshape is not None:
            acts, grads = self.reshape(acts), self.reshape(grads)
            if not isinstance(acts, torch.Tensor) or acts.ndim != 4:
                C.fail("reshape(activation)", "(B, D, h, w)", f"shape {tuple(getattr(acts, 'shape', ()))}",
                       "reshape must map (B, T, D) tokens to a (B, D, h, w) grid.")
        return acts, grads

    def _forward(self, x: torch.Tensor) -> tuple[object, torch.Tensor]:
        """(the model's output, the layer's activation); the model's own error on ``x`` is raised as a kdlens one."""
        try:
            try:  # oneDNN convolutions run faster on channels-last images (CPU); the values are the same
                return self._run(x.contiguous(memory_format=torch.channels_last) if _cpu_image(x) else x)
            except RuntimeError as error:  # code that .view()s activations needs contiguous ones: run as given
                if "view" not in str(error) or not _cpu_image(x):
                    raise
                return self._run(x)
        except torch.cuda.OutOfMemoryError:  # a RuntimeError, but not the inputs' fault
            raise
        except (RuntimeError, IndexError) as error:  # a shape or dtype the model cannot take, ids out of range
            raise _refused(x, error) from error

    def _run(self, x: torch.Tensor) -> tuple[object, torch.Tensor]:
        return forward_from_layer(lambda: self.model(x), self.module, self.layer)


def _cpu_image(x: torch.Tensor) -> bool:
    return x.ndim == 4 and x.is_floating_point() and x.device.type == "cpu"


def _refused(x: torch.Tensor, error: Exception) -> Exception:
    """The kdlens error for inputs ``x`` whose forward pass raised ``error`` (the caller raises it from ``error``).

    ValueError for an IndexError (ids outside a vocabulary) and for float inputs (a shape the model cannot take),
    TypeError for other non-float inputs (integer images); the first line of the model's error, which says what it
    expected (channels, features, dtype), is quoted.
    """
    lines = str(error).strip().splitlines()
    got = (f"shape {tuple(x.shape)} and dtype {x.dtype}, which the model refused "
           f"({type(error).__name__}: {lines[0] if lines else 'no message'})")
    try:
        if isinstance(error, IndexError):
            C.fail("inputs", "indices the model can look up (token ids within its vocabulary)", got,
                   "Encode the inputs with the tokenizer the model was trained with.")
        if not x.is_floating_point():
            C.fail("inputs", "a float batch the model takes (images: (B, C, H, W) float)", got,
                   "Convert images with x.float() (uint8 images scaled as in training, e.g. x.float() / 255).",
                   error=TypeError)
        C.fail("inputs", "a batch of the shape the model takes (images: (B, C, H, W), C and H x W as in training)",
               got, "Check the inputs' shape against the model's first layer (its error is chained below).")
    except (TypeError, ValueError) as refusal:
        return refusal


class GradCAMPlusPlus(GradCAM):
    """Grad-CAM++ (Chattopadhay et al., WACV 2018, eqs. 10 and 19) on one layer of a classifier.

    With ``g = d score / d A`` (B, K, h, w), the closed form for ``exp(score)`` used by pytorch-grad-cam:
    ``alpha = g^2 / (2 g^2 + (sum_{a,b} A_k[a, b]) g^3)`` per position (0 where the denominator is 0, i.e. 0/0),
    ``w_k = sum_{i,j} alpha * ReLU(g)``, ``map = ReLU(sum_k w_k A_k)``. pytorch-grad-cam adds 1e-6 to the
    denominator instead; the two differ by that epsilon only. Parameters and shapes as :class:`GradCAM`.

    Examples
    --------
    >>> from kdlens.lab.cnn import SmallCNN
    >>> net = SmallCNN(n_classes=3, widths=(4, 8, 8))
    >>> GradCAMPlusPlus(net, "block2").attribute(torch.rand(2, 3, 16, 16), target=[0, 2]).shape
    torch.Size([2, 8, 8])
    """

    def _weights(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        g2 = grads.square()  # (B, K, h, w)
        denominator = 2 * g2 + acts.sum(dim=(2, 3), keepdim=True) * g2 * grads
        safe = torch.where(denominator != 0, denominator, torch.ones_like(denominator))
        alpha = torch.where(denominator != 0, g2 / safe, torch.zeros_like(g2))
        return (alpha * F.relu(grads)).sum(dim=(2, 3), keepdim=True)  # (B, K, 1, 1)

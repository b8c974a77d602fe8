"""L-infinity gradient attacks on images in [0, 1]: FGSM and PGD, as pure tensor functions.

Protocol:

* ``x`` is a batch of images in pixel units of the [0, 1] image (before any mean/std
  normalisation), ``eps`` the L-infinity budget in the same units (4/255 = 0.0157).
* ``loss_fn(x) -> (B,)`` gives one loss per image; the attack *increases* it. Each image's
  gradient is that of its own loss (the per-image losses are summed, so images of a batch do not
  interact as long as the model treats them independently, e.g. BatchNorm in eval mode).
* FGSM (Goodfellow et al. 2015): ``x + eps * sign(grad)``, one gradient.
* PGD (Madry et al. 2018): optionally a uniform random start in the eps ball, then ``steps``
  signed-gradient steps of ``step_size`` (default ``2.5 * eps / steps``), each followed by the
  projection; the iterate of highest loss seen is kept per image (so more steps never give a
  weaker attack in loss).
* Every returned image lies in the eps ball around ``x`` and in [0, 1] (the projection clips to
  both). Gradients are taken w.r.t. the image only; the returned tensor is detached.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

LossFn = Callable[[Any], Any]  # (B, ...) images in [0, 1] -> (B,) losses


def project(x_adv: Any, x: Any, eps: float) -> Any:
    """Clip ``x_adv`` to the L-infinity ball of radius ``eps`` around ``x`` and to [0, 1]."""
    import torch

    return torch.clamp(torch.minimum(torch.maximum(x_adv, x - eps), x + eps), 0.0, 1.0)


def losses_and_gradient(loss_fn: LossFn, x: Any) -> tuple[Any, Any]:
    """Per-image losses ``(B,)`` (detached) and the gradient of their sum w.r.t. ``x``."""
    import torch

    with torch.enable_grad():
        point = x.detach().clone().requires_grad_(True)
        losses = loss_fn(point)
        if losses.ndim != 1 or losses.shape[0] != x.shape[0]:
            raise ValueError(f"loss_fn must return one loss per image, shape ({x.shape[0]},); "
                             f"got {tuple(losses.shape)}")
        (gradient,) = torch.autograd.grad(losses.sum(), point)
    return losses.detach(), gradient.detach()


def fgsm(loss_fn: LossFn, x: Any, eps: float) -> Any:
    """Fast gradient sign method: one step of ``eps`` along the gradient's sign."""
    _check_eps(eps)
    x = x.detach()
    _, gradient = losses_and_gradient(loss_fn, x)
    return project(x + eps * gradient.sign(), x, eps)


def pgd(loss_fn: LossFn, x: Any, eps: float, steps: int = 10, step_size: float | None = None,
        random_start: bool = True, generator: Any = None) -> Any:
    """Projected gradient descent (ascent on the loss) in the L-infinity ball; keeps each
    image's highest-loss iterate. ``generator`` (a CPU ``torch.Generator``) seeds the start."""
    import torch

    _check_eps(eps)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    step = 2.5 * eps / steps if step_size is None else step_size
    x = x.detach()
    adv = x.clone()
    if random_start:
        noise = torch.rand(x.shape, generator=generator, dtype=torch.float32)
        adv = project(x + (2 * noise.to(x.device, x.dtype) - 1) * eps, x, eps)
    best, best_loss = adv.clone(), torch.full((x.shape[0],), -torch.inf, device=x.device)
    for _ in range(steps):
        losses, gradient = losses_and_gradient(loss_fn, adv)
        best, best_loss = _keep_best(best, best_loss, adv, losses)
        adv = project(adv + step * gradient.sign(), x, eps)
    with torch.no_grad():
        final = loss_fn(adv).detach()
    best, _ = _keep_best(best, best_loss, adv, final)
    return best


def _keep_best(best: Any, best_loss: Any, candidate: Any, losses: Any) -> tuple[Any, Any]:
    import torch

    better = losses.to(best_loss.dtype) > best_loss
    shape = (-1,) + (1,) * (candidate.ndim - 1)
    return (torch.where(better.view(shape), candidate, best),
            torch.where(better, losses.to(best_loss.dtype), best_loss))


def _check_eps(eps: float) -> None:
    if not 0 <= eps <= 1:
        raise ValueError(f"eps is in pixel units of the [0, 1] image: 0 <= eps <= 1, got {eps}")

"""Robustness of the evaluated model: ImageNet-C style image corruptions (``corruptions``),
text perturbations (``perturbations``), the variant datasets they make (``variants``) and the
sweep that runs the task's inference and scoring on each (``sweep``); FGSM / PGD attacks live
in ``adversarial``. Nothing heavy is imported here."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tasks.config import EvalConfig


def wants_robustness(config: EvalConfig) -> bool:
    """Whether the run asks for any robustness evaluation (corruptions, text perturbations or
    adversarial attacks)."""
    settings = config.robustness
    return bool(settings.corruptions or settings.text or settings.adversarial is not None)


__all__ = ["wants_robustness"]

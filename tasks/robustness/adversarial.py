"""Adversarial accuracy under FGSM / PGD (L-infinity) on the image, with the task's own loss.

Entry point: ``adversarial_metrics(dataset, config, run_dir) -> AdversarialResult`` for
``config.robustness.adversarial`` (``tasks.config.AdversarialConfig``).

Protocol:

* What is attacked: the pixel input in [0, 1] *before* mean/std normalisation (resized/cropped
  as the model's processor does; ``tasks.robustness.differentiable``), with epsilon in pixel
  units of the [0, 1] image; every attacked image stays in [0, 1] and in the epsilon ball.
  Gradients flow to the image only (model in eval mode, parameters frozen).
* Which models: dual encoders (``dual_encoder``) and ``torch_module`` models. Captioners, VQA
  models and ITM heads get ``skipped`` with the reason (no differentiable task loss here), as do
  tasks a model cannot be attacked on (an image-only module on a pair task, ...).
* Losses (the attack maximises them), and what counts as correct:

  - zero-shot classification (dual encoder): cross-entropy of ``exp(logit_scale) * cos(image,
    class)`` over the class embeddings of the zero_shot kind (templates averaged, CLIP recipe);
    correct = the most similar class is the label (as the kind scores it).
  - classification (image-only ``torch_module``, task ``zero_shot_classification``): negative
    log-probability of the label's class (the adapter's softmax / sigmoid reading). The label's
    class index is its position in ``zero_shot.class_names``, else its value when every label
    is a non-negative integer, else its position among the sorted labels.
  - retrieval (dual encoder, image -> text): ``-log`` of the softmax mass of the item's own
    captions among *all* captions of the evaluated items (``logsumexp(all) -
    logsumexp(own)`` over ``exp(logit_scale) * cos``); the outcome is the rank of the item's
    best caption (ties by lower text index, as ``tasks.metrics.retrieval``); correct = rank 1.
    Adversarial ``i2t_recall_at_k`` for the retrieval metric's ``ks`` (default 1, 5, 10).
  - matching (dual encoder or text-taking ``torch_module``): binary cross-entropy of the match
    logit relative to the threshold (``exp(logit_scale) * (cos - t)`` for cosine scores;
    ``logit(p) - logit(t)`` for a match probability ``p``: SigLIP's sigmoid score, a module's
    ``positive_class`` probability): it pushes a matched pair's score down and a mismatched
    pair's up. Pairs and threshold as the matching kind builds them: the configured
    threshold, or the best one on the clean scores of the calibration share of the images;
    those pairs are not attacked. Each pair is attacked on its own.
* Units: items (pairs for matching) with a usable target (a known label, a caption, a
  non-calibration pair); ``limit`` keeps those of the first N such items. Units whose image
  cannot be decoded are left out and counted.
* Metrics (MLflow-safe keys, epsilon with 4 decimals: ``eps_0.0157``):
  ``adv.clean.<metric>`` (the same differentiable path at epsilon 0),
  ``adv.<attack>.eps_<e>.<metric>`` with ``<metric>`` = ``accuracy`` (or ``i2t_recall_at_k``),
  ``robust_error`` (share of units wrong on the clean *or* the attacked image: the worst case
  over a ball that holds the clean image), ``success_rate`` (share of clean-correct units the
  attack makes wrong); each with a seeded bootstrap interval (``<key>_ci_low`` / ``_ci_high``,
  ``config.statistics``) over the attacked units.
* PGD's random start is seeded with ``robustness.seed`` (one CPU generator through the batches:
  same seed, data and batch size -> same perturbations).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from tasks.arrays import flatten_cells
from tasks.config import AdversarialConfig, EvalConfig
from tasks.data.base import DatasetRef
from tasks.kinds.scoring import bootstrap_settings
from tasks.models import load_adapter
from tasks.models.contracts import ImageTextEncoder
from tasks.robustness.attacks import LossFn, fgsm, pgd
from tasks.robustness.differentiable import (
    DualEncoderView,
    NotAttackable,
    TorchModuleView,
    View,
    probability_logit,
    view_of,
)
from tasks.stats.bootstrap import BootstrapSettings, bootstrap_mean

Outcome = dict[str, Any]  # per-unit arrays: correct (bool), rank / prediction / score
OutcomeFn = Callable[[Any], Outcome]
Prepare = Callable[[pd.DataFrame], tuple[LossFn, OutcomeFn]]

ATTACKED_KINDS = ("dual_encoder", "torch_module")
NOT_DIFFERENTIABLE = {
    "captioner": "a generative captioner: its output is decoded text, with no differentiable "
                 "task loss for a gradient attack",
    "vqa": "a generative VQA model: its answers are decoded text, with no differentiable task "
           "loss for a gradient attack",
    "itm": "an image-text matching head: gradient attacks cover dual encoders and torch_module "
           "models only",
}
DEFAULT_KS = (1, 5, 10)
DUAL_ENCODER_TASKS = ("zero_shot_classification", "retrieval", "matching")


@dataclass
class AdversarialResult:
    metrics: dict[str, float]  # adv.<attack>.eps_<e>.<metric>, adv.clean.<metric>, CI bounds
    per_sample: pd.DataFrame  # item_id (pair_id), attack, epsilon, correct (rank, ...)
    curve: list[dict[str, Any]]  # {attack, epsilon, metric, value[, ci_low, ci_high]}
    skipped: str | None = None  # why nothing was attacked
    counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass
class Target:
    """One task's attack: the units, per batch of units a (loss, outcome) pair of functions of
    the [0, 1] pixels, and how outcomes become metrics."""

    task: str
    units: pd.DataFrame  # key, item_id, image_path, shown columns; "_"-prefixed: internal
    prepare: Prepare
    key: str = "item_id"
    ks: tuple[int, ...] = ()  # retrieval's recall@k; empty: accuracy
    excluded: dict[str, int] = field(default_factory=dict)  # reason -> units left out


def skipped(reason: str) -> AdversarialResult:
    return AdversarialResult({}, pd.DataFrame(), [], skipped=reason)


def adversarial_metrics(dataset: DatasetRef, config: EvalConfig, run_dir: Path
                        ) -> AdversarialResult:
    """FGSM / PGD per configured epsilon on the evaluated model and task (module docstring).
    Nothing is written: the caller stores ``per_sample`` (``run_dir`` is the run's folder)."""
    settings = config.robustness.adversarial
    if settings is None:
        return skipped("robustness.adversarial is not configured")
    reason = kind_reason(config)
    if reason:
        return skipped(reason)
    items = dataset.load_items()
    adapter = load_adapter(config.model, list(items["image_path"]))
    view = view_of(adapter)
    if isinstance(view, str):
        return skipped(view)
    try:
        target = build_target(view, config, items)
    except NotAttackable as error:
        return skipped(str(error))
    if isinstance(target, str):
        return skipped(target)
    units = first_items(target.units, settings.limit)
    if units.empty:
        return skipped(f"no unit to attack ({_excluded_text(target.excluded)})")
    try:
        per_sample, failures = run_attacks(view, target, units, settings, config)
    except NotAttackable as error:
        return skipped(str(error))
    if per_sample.empty:
        return skipped(f"no image of the {len(units)} unit(s) to attack could be decoded "
                       f"(first: {failures[0] if failures else '-'})")
    metrics, curve = summarize(per_sample, target, settings, bootstrap_settings(config))
    counts = {"attacked": int((per_sample["attack"] == "clean").sum()), "failed": len(failures)}
    counts |= {f"excluded.{k}": v for k, v in target.excluded.items()}
    warnings = [f"{len(failures)} image(s) could not be decoded and were not attacked "
                f"(first: {failures[0]})"] if failures else []
    return AdversarialResult(metrics, per_sample, curve, None, counts, warnings)


def kind_reason(config: EvalConfig) -> str | None:
    """Why the configured model kind (or a dual encoder's task) cannot be attacked, known
    before the model is loaded (None: it may be)."""
    kind, task = config.model.kind, str(config.task)
    if kind == "dual_encoder" and task not in DUAL_ENCODER_TASKS:
        return dual_encoder_task_reason(task)
    if kind in ATTACKED_KINDS:
        return None
    return f"model kind {kind!r} is {NOT_DIFFERENTIABLE.get(kind, 'not differentiable here')}"


def dual_encoder_task_reason(task: str) -> str:
    return (f"task {task}: no differentiable task loss for a dual encoder (attacks cover "
            "zero-shot classification, retrieval and matching)")


# ---- targets ------------------------------------------------------------------------------


def build_target(view: View, config: EvalConfig, items: pd.DataFrame) -> Target | str:
    """The task's attack for this model, or why there is none."""
    task = str(config.task)
    if isinstance(view, DualEncoderView):
        builders: dict[str, Callable[[DualEncoderView, EvalConfig, pd.DataFrame],
                                     Target | str]] = {
            "zero_shot_classification": zero_shot_target, "retrieval": retrieval_target,
            "matching": matching_target}
        if task not in builders:
            return dual_encoder_task_reason(task)
        return builders[task](view, config, items)
    if view.uses_text:
        if task != "matching":
            return f"task {task}: a text-taking torch_module model is attacked on matching only"
        return matching_target(view, config, items)
    if "classification" not in task:
        return (f"task {task}: an image-only torch_module model scores no (image, text) pairs; "
                "it is attacked as a classifier on classification tasks")
    return classifier_target(view, config, items)


def _unit(vectors: Any) -> Any:
    import torch

    return torch.nn.functional.normalize(vectors, dim=-1)


def labelled_units(items: pd.DataFrame, index: dict[str, int]
                   ) -> tuple[pd.DataFrame, dict[str, int]]:
    """Items whose label has a class index (``_target``), and counts of those left out."""
    labels = items["label"] if "label" in items.columns else pd.Series([None] * len(items))
    missing = labels.isna().to_numpy()
    known = labels.map(lambda v: v in index).to_numpy(dtype=bool)
    units = items.loc[known, ["item_id", "image_path", "label"]].copy()
    units["_target"] = [index[label] for label in units["label"]]
    excluded = {"no label": int(missing.sum()),
                "label not among the classes": int((~missing & ~known).sum())}
    return units.reset_index(drop=True), {k: v for k, v in excluded.items() if v}


def class_outcome(logits: Any, targets: Any, names: list[str]) -> Outcome:
    predicted = logits.argmax(dim=1)
    return {"correct": (predicted == targets).cpu().numpy(),
            "prediction": [names[i] if i < len(names) else str(i)
                           for i in predicted.cpu().tolist()]}


def zero_shot_target(view: DualEncoderView, config: EvalConfig, items: pd.DataFrame
                     ) -> Target | str:
    """Cross-entropy over the zero_shot kind's class embeddings (CLIP prompt ensemble)."""
    import torch

    from tasks.kinds.zero_shot.infer import class_embeddings, class_names

    names = class_names(config, items)
    if not names:
        return "no class names: give zero_shot.class_names or a dataset label column"
    encoder = cast(ImageTextEncoder, view.adapter)
    classes = torch.from_numpy(np.asarray(
        class_embeddings(encoder, names, config.zero_shot.templates), np.float32)).to(view.device)
    units, excluded = labelled_units(items, {name: i for i, name in enumerate(names)})
    scale = view.logit_scale

    def prepare(rows: pd.DataFrame) -> tuple[LossFn, OutcomeFn]:
        targets = torch.as_tensor(np.array(rows["_target"], dtype=np.int64), device=view.device)

        def logits(x: Any) -> Any:
            return scale * _unit(view.image_features(x)) @ classes.T

        return (lambda x: torch.nn.functional.cross_entropy(logits(x), targets,
                                                            reduction="none"),
                lambda x: class_outcome(logits(x), targets, names))

    return Target("zero_shot_classification", units, prepare, excluded=excluded)


def class_index(config: EvalConfig, items: pd.DataFrame) -> tuple[dict[str, int], list[str]]:
    """Label -> output index of an image classifier, and the class names by index."""
    from tasks.kinds.zero_shot.infer import class_names

    if config.zero_shot.class_names:
        names = list(config.zero_shot.class_names)
        return {name: i for i, name in enumerate(names)}, names
    labels = sorted({str(v) for v in items["label"].dropna()}) if "label" in items else []
    if labels and all(label.isdigit() for label in labels):
        count = max(int(label) for label in labels) + 1
        return {label: int(label) for label in labels}, [str(i) for i in range(count)]
    names = class_names(config, items)
    return {name: i for i, name in enumerate(names)}, names


def classifier_target(view: TorchModuleView, config: EvalConfig, items: pd.DataFrame
                      ) -> Target | str:
    """Negative log-probability of the label's class of an image-only torch_module model."""
    import torch

    index, names = class_index(config, items)
    if not index:
        return "no class labels: an image classifier needs a dataset label column"
    units, excluded = labelled_units(items, index)

    def prepare(rows: pd.DataFrame) -> tuple[LossFn, OutcomeFn]:
        targets = torch.as_tensor(np.array(rows["_target"], dtype=np.int64), device=view.device)

        def log_probabilities(x: Any) -> Any:
            values = view.log_probabilities(x)
            if int(targets.max()) >= values.shape[1]:
                raise ValueError(f"label index {int(targets.max())} but the model outputs "
                                 f"{values.shape[1]} classes (set zero_shot.class_names in the "
                                 "model's output order)")
            return values

        return (lambda x: -log_probabilities(x).gather(1, targets[:, None])[:, 0],
                lambda x: class_outcome(log_probabilities(x), targets, names))

    return Target("classification", units, prepare, excluded=excluded)


def retrieval_target(view: DualEncoderView, config: EvalConfig, items: pd.DataFrame
                     ) -> Target | str:
    """Image -> text: cross-entropy of the own captions' mass among all captions."""
    import torch

    counts = items["captions"].map(len).to_numpy()
    texts = flatten_cells(items["captions"])
    if not texts:
        return "no captions: image-to-text retrieval needs captions"
    gallery = _unit(view.text_features(texts))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    has = counts > 0
    units = items.loc[has, ["item_id", "image_path"]].copy()
    units["_start"], units["_count"] = starts[has], counts[has]
    scale, columns = view.logit_scale, torch.arange(len(texts), device=view.device)
    options = config.metric_options.get("retrieval", {})
    ks = tuple(sorted({int(k) for k in options.get("ks", DEFAULT_KS)}))

    def prepare(rows: pd.DataFrame) -> tuple[LossFn, OutcomeFn]:
        start = torch.as_tensor(np.array(rows["_start"], np.int64), device=view.device)[:, None]
        stop = start + torch.as_tensor(np.array(rows["_count"], np.int64),
                                       device=view.device)[:, None]
        own = (columns[None, :] >= start) & (columns[None, :] < stop)

        def sims(x: Any) -> Any:
            return _unit(view.image_features(x)) @ gallery.T

        def loss(x: Any) -> Any:
            logits = scale * sims(x)
            return (torch.logsumexp(logits, dim=1)
                    - torch.logsumexp(logits.masked_fill(~own, -torch.inf), dim=1))

        def outcome(x: Any) -> Outcome:
            ranks = best_caption_ranks(sims(x), own).cpu().numpy()
            return {"rank": ranks, "correct": ranks == 1}

        return loss, outcome

    excluded = {"no caption": int((~has).sum())} if (~has).any() else {}
    return Target("retrieval", units.reset_index(drop=True), prepare, ks=ks,
                  excluded=excluded)


def best_caption_ranks(sims: Any, own: Any) -> Any:
    """1-based rank of each row's best own column among all columns; similarities rounded to
    ``SCORE_DECIMALS`` decimals, ties by lower index (the rule of
    ``tasks.metrics.retrieval.image_to_text_ranks``)."""
    import torch

    from tasks.metrics.ranking import SCORE_DECIMALS

    sims = torch.round(sims * float(10**SCORE_DECIMALS))  # float32 product, half to even
    best = sims.masked_fill(~own, -torch.inf).max(dim=1).values[:, None]
    columns = torch.arange(sims.shape[1], device=sims.device)[None, :]
    best_column = torch.where(own & (sims == best), columns, sims.shape[1]).min(dim=1).values
    better = (sims > best) | ((sims == best) & (columns < best_column[:, None]))
    return better.sum(dim=1) + 1


# ---- matching -----------------------------------------------------------------------------


PairFn = Callable[[Any], tuple[Any, Any]]  # pixels -> (scores, match logits)


def matching_pairs(view: View, config: EvalConfig, items: pd.DataFrame) -> pd.DataFrame | str:
    """The matching kind's pairs (dataset / seeded random / hard negatives: mined by the
    attacked dual encoder itself, else by ``matching.hard_negative_model``), or why not."""
    from tasks.kinds.matching.infer import hard_negative_miner, make_pairs

    def miner() -> ImageTextEncoder:
        if isinstance(view, DualEncoderView):
            return cast(ImageTextEncoder, view.adapter)
        return hard_negative_miner(config)

    try:
        return make_pairs(items, config, miner)
    except ValueError as error:  # no dual encoder to mine hard negatives with
        return str(error)


def pair_function(view: View, rows: pd.DataFrame) -> PairFn:
    """Per pair: the score the matching kind thresholds and a match logit increasing with it
    (``DualEncoderView.match``; ``logit(p)`` of a module's match probability)."""
    import torch

    if isinstance(view, DualEncoderView):
        texts = _unit(view.text_features(list(rows["text"])))
        dual = view

        def cosine(x: Any) -> tuple[Any, Any]:
            return dual.match((_unit(dual.image_features(x)) * texts).sum(dim=1))

        return cosine
    positive, texts_list = view.settings.positive_class, list(rows["text"])

    def probability(x: Any) -> tuple[Any, Any]:
        values = view.log_probabilities(x, texts_list)
        if positive >= values.shape[1]:
            raise ValueError(f"positive_class {positive} but the model outputs "
                             f"{values.shape[1]} classes")
        others = torch.cat([values[:, :positive], values[:, positive + 1:]], dim=1)
        return values[:, positive].exp(), values[:, positive] - torch.logsumexp(others, dim=1)

    return probability


def threshold_logit(view: View, threshold: float) -> float:
    """The match logit at the threshold (``pair_function``'s scale)."""
    if isinstance(view, DualEncoderView):
        return view.threshold_logit(threshold)
    return probability_logit(threshold)


def clean_pair_scores(view: View, pairs: pd.DataFrame, batch_size: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the pairs at epsilon 0 and the mask of pairs whose image decoded."""
    import torch

    scores, ok = np.full(len(pairs), np.nan), np.zeros(len(pairs), dtype=bool)
    for start in range(0, len(pairs), batch_size):
        rows = pairs.iloc[start:start + batch_size]
        x01, kept, _ = view.pixels01(list(rows["image_path"]))
        if x01 is None:
            continue
        with torch.no_grad():
            values, _ = pair_function(view, rows.iloc[kept])(x01)
        scores[start + np.asarray(kept)] = values.double().cpu().numpy()
        ok[start + np.asarray(kept)] = True
    return scores, ok


def matching_target(view: View, config: EvalConfig, items: pd.DataFrame) -> Target | str:
    """Binary cross-entropy of the match logit against the pair's label, at the threshold."""
    import torch

    from tasks.kinds.matching.score import calibration_split
    from tasks.metrics.matching import best_threshold

    pairs = matching_pairs(view, config, items)
    if isinstance(pairs, str):
        return pairs
    settings = config.matching
    calibration = np.zeros(len(pairs), dtype=bool)
    threshold = settings.threshold
    if threshold is None:
        calibration = calibration_split(pairs["item_id"], settings.calibration_fraction,
                                        config.seed)
        held = pairs[calibration].reset_index(drop=True)
        scores, ok = clean_pair_scores(view, held, config.model.batch_size)
        if not ok.any():
            return "no calibration pair could be scored to choose the matching threshold"
        threshold = best_threshold(held["label"].to_numpy()[ok], scores[ok])
    units = pairs.loc[~calibration, ["pair_id", "item_id", "image_path", "text", "label"]]
    bias, cut = threshold_logit(view, threshold), float(threshold)

    def prepare(rows: pd.DataFrame) -> tuple[LossFn, OutcomeFn]:
        labels = torch.as_tensor(np.array(rows["label"], np.float32), device=view.device)
        scorer = pair_function(view, rows)

        def loss(x: Any) -> Any:
            return torch.nn.functional.binary_cross_entropy_with_logits(
                scorer(x)[1] - bias, labels, reduction="none")

        def outcome(x: Any) -> Outcome:
            scores = scorer(x)[0].double().cpu().numpy()
            return {"score": scores, "correct": (scores >= cut) == (rows["label"] == 1)
                    .to_numpy()}

        return loss, outcome

    excluded = {"calibration pair": int(calibration.sum())} if calibration.any() else {}
    return Target("matching", units.reset_index(drop=True), prepare, key="pair_id",
                  excluded=excluded)


# ---- attacking ----------------------------------------------------------------------------


def first_items(units: pd.DataFrame, limit: int | None) -> pd.DataFrame:
    """The units of the first ``limit`` items (in unit order); all without a limit."""
    if limit is None:
        return units
    keep = set(pd.unique(units["item_id"])[:limit])
    return units[units["item_id"].isin(keep)].reset_index(drop=True)


def epsilon_labels(epsilons: list[float]) -> dict[float, str]:
    """``eps_<e>`` with 4 decimals (``eps_0.0157``); more digits where 4 would merge two
    budgets or show zero."""
    labels = {eps: f"{eps:.4f}" for eps in epsilons}
    if len(set(labels.values())) < len(labels) or "0.0000" in labels.values():
        labels = {eps: format(eps, ".8g") for eps in epsilons}
    return {eps: f"eps_{label}" for eps, label in labels.items()}


def attack_batch(loss: LossFn, x01: Any, attack: str, eps: float, settings: AdversarialConfig,
                 generator: Any) -> Any:
    if attack == "fgsm":
        return fgsm(loss, x01, eps)
    return pgd(loss, x01, eps, settings.steps, settings.step_size, settings.random_start,
               generator)


def run_attacks(view: View, target: Target, units: pd.DataFrame, settings: AdversarialConfig,
                config: EvalConfig) -> tuple[pd.DataFrame, list[str]]:
    """Per batch of units: the clean outcome, then each attack at each epsilon."""
    import torch

    generator = torch.Generator().manual_seed(config.robustness.seed)
    shown = [c for c in units.columns if not c.startswith("_") and c != "image_path"]
    frames, failures = [], []
    for start in range(0, len(units), config.model.batch_size):
        batch = units.iloc[start:start + config.model.batch_size]
        x01, kept, failed = view.pixels01(list(batch["image_path"]))
        failures += [f"{batch.iloc[i][target.key]}: {reason}" for i, reason in failed.items()]
        if x01 is None:
            continue
        rows = batch.iloc[kept].reset_index(drop=True)
        loss, outcome = target.prepare(rows)
        runs = [("clean", 0.0, x01)] + [
            (attack, eps, attack_batch(loss, x01, attack, eps, settings, generator))
            for attack in settings.attacks for eps in sorted(set(settings.epsilons))]
        for attack, eps, x in runs:
            with torch.no_grad():
                result = outcome(x)
            frames.append(rows[shown].assign(attack=attack, epsilon=eps, **result))
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=[*shown, "attack", "epsilon", "correct"])
    return table, failures


# ---- metrics ------------------------------------------------------------------------------


def indicators(table: pd.DataFrame, ks: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Per-unit 0/1 values whose means are the task's metrics."""
    if ks:
        ranks = table["rank"].to_numpy()
        return {f"i2t_recall_at_{k}": (ranks <= k).astype(np.float64) for k in ks}
    return {"accuracy": table["correct"].to_numpy(dtype=np.float64)}


def with_interval(prefix: str, values: dict[str, np.ndarray], boot: BootstrapSettings
                  ) -> dict[str, float]:
    """``<prefix>.<metric>`` means and their bootstrap bounds (where defined)."""
    out: dict[str, float] = {}
    for name, array in values.items():
        if len(array) == 0:
            continue
        key = f"{prefix}.{name}"
        out[key] = float(np.mean(array))
        bounds = bootstrap_mean(array, boot)
        if math.isfinite(bounds.low) and math.isfinite(bounds.high):
            out[f"{key}_ci_low"], out[f"{key}_ci_high"] = bounds.low, bounds.high
    return out


def summarize(table: pd.DataFrame, target: Target, settings: AdversarialConfig,
              boot: BootstrapSettings) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Metrics (clean and per attack / epsilon) and the accuracy-vs-epsilon curve."""
    clean = table[table["attack"] == "clean"].set_index(target.key)
    metrics = with_interval("adv.clean", indicators(clean, target.ks), boot)
    clean_correct = clean["correct"].to_numpy(dtype=bool)
    labels = epsilon_labels(sorted(set(settings.epsilons)))
    curve: list[dict[str, Any]] = []
    for attack in settings.attacks:
        curve += curve_points(attack, 0.0, "adv.clean", metrics)
        curve.append({"attack": attack, "epsilon": 0.0, "metric": "robust_error",
                      "value": float(np.mean(~clean_correct)) if len(clean) else math.nan})
        for eps, label in labels.items():
            rows = table[(table["attack"] == attack) & (table["epsilon"] == eps)]
            adv = rows.set_index(target.key).loc[clean.index]
            correct = adv["correct"].to_numpy(dtype=bool)
            values = indicators(adv, target.ks) | {
                "robust_error": (~(clean_correct & correct)).astype(np.float64),
                "success_rate": (~correct[clean_correct]).astype(np.float64)}
            prefix = f"adv.{attack}.{label}"
            block = with_interval(prefix, values, boot)
            metrics |= block
            curve += curve_points(attack, eps, prefix, block)
    return metrics, curve


def curve_points(attack: str, eps: float, prefix: str, metrics: dict[str, float]
                 ) -> list[dict[str, Any]]:
    points = []
    for key, value in metrics.items():
        name = key.removeprefix(prefix + ".")
        if not key.startswith(prefix + ".") or name.endswith(("_ci_low", "_ci_high")) \
                or name == "success_rate":
            continue
        point: dict[str, Any] = {"attack": attack, "epsilon": eps, "metric": name,
                                 "value": value}
        if f"{key}_ci_low" in metrics:
            point["ci_low"], point["ci_high"] = metrics[f"{key}_ci_low"], metrics[f"{key}_ci_high"]
        points.append(point)
    return points


def _excluded_text(excluded: dict[str, int]) -> str:
    return ", ".join(f"{reason}: {n}" for reason, n in excluded.items()) or "no items"

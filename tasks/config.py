"""The evaluation config: one pydantic model that is the CLI input, the deployment parameters
and the Prefect UI form. Choices are Literals/enums and every field has a description, because
Prefect renders this model as the run form.

This module is the schema only and imports nothing of the project but ``tasks.secrets`` (which
keeps credentials out of the config, see README "Secrets"): names that live in the
registries (model kind, data source, metrics) and rules across them are checked by
``tasks.plan.check_config``, which the CLI and every flow call first. Reading YAML, overrides
and flattening for MLflow are in ``tasks.config_io``.
"""

from __future__ import annotations

import os
import re
from enum import StrEnum
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import to_jsonable_python

from tasks.secrets import externalize_secrets, split_tracking_uri, url_credential_paths


class TaskKind(StrEnum):
    retrieval = "retrieval"
    captioning = "captioning"
    zero_shot_classification = "zero_shot_classification"
    vqa = "vqa"
    matching = "matching"
    text_to_image = "text_to_image"


# The registries' names, as the form's choices (tests/test_config.py keeps them equal to
# tasks.models.base.ADAPTERS and tasks.data.base.SOURCES). Only the JSON schema (the Prefect form)
# restricts the values: validation is ``tasks.plan.check_config``'s, which names the choices.
MODEL_KINDS = ("captioner", "dual_encoder", "itm", "torch_module", "vqa")
DATA_SOURCES = ("hf", "karpathy", "manifest", "s3")
DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:\d+)?)$"
DEVICE_EXAMPLES = ("auto", "cpu", "cuda", "cuda:0", "cuda:1", "mps")


def _show_factory_defaults(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """JSON schema hook: a field whose default comes from a factory (a list or dict) gets that
    value as its schema ``default``, so the UI form shows it (instead of "0 selected")."""
    properties = schema.get("properties", {})
    for name, field in model.model_fields.items():
        shown = properties.get(field.alias or name)
        if shown is None or field.default_factory is None or "default" in shown:
            continue
        value = field.get_default(call_default_factory=True, validated_data={})
        if isinstance(value, list | dict):
            shown["default"] = to_jsonable_python(value, by_alias=True, exclude_none=True)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True,
                              json_schema_extra=_show_factory_defaults)


FROM_CHECKPOINT = "null: the checkpoint's generation_config"


class GenerationSettings(_Strict):
    """Decoding settings; a null field is the checkpoint's own (its ``generation_config``, or
    the model family's prompt), so a run decodes as the checkpoint's authors intended unless
    the config says otherwise."""

    max_new_tokens: int | None = Field(
        None, ge=1, le=1024, description=f"Longest generated text ({FROM_CHECKPOINT}, 32 when "
        "it has none).")
    num_beams: int | None = Field(None, ge=1, le=32, description="Beam search width (1 = "
                                  f"greedy; {FROM_CHECKPOINT}).")
    do_sample: bool | None = Field(None, description="Sample instead of greedy/beam decoding "
                                   f"({FROM_CHECKPOINT}).")
    temperature: float | None = Field(None, gt=0, description="Sampling temperature (do_sample "
                                      f"only; {FROM_CHECKPOINT}).")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling mass "
                                f"(do_sample only; {FROM_CHECKPOINT}).")
    prompt: str | None = Field(
        None, description="Text the model continues (e.g. 'a picture of'); removed from outputs "
        "by token count. null: the family's own (chat models: a one-sentence caption request; "
        "others: none)."
    )
    question_template: str | None = Field(
        None, description="VQA prompt, e.g. 'Question: {question} Answer:'. null: the family's "
        "own (BLIP-2: 'Question: {question} Answer:'; chat models: the question and 'Answer the "
        "question using a single word or phrase.'; others: '{question}')."
    )

    @field_validator("question_template")
    @classmethod
    def _has_question(cls, value: str | None) -> str | None:
        if value is not None and "{question}" not in value:
            raise ValueError("must contain {question}")
        return value


class TorchModuleSettings(_Strict):
    """A user's own ``torch.nn.Module`` (model.kind: torch_module); model.path is its weights."""

    module: str = Field(
        ..., description="'package.module:ClassName' importable from the working directory or "
        "PYTHONPATH; forward(pixel_values, input_ids, attention_mask) or forward(pixel_values) "
        "returns logits (B, C), (B,) or (B, 1)."
    )
    init_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments passed to the class."
    )
    tokenizer: str | None = Field(
        None, description="Local Hugging Face tokenizer folder for text inputs (AutoTokenizer)."
    )
    max_length: int = Field(64, ge=1, le=65536, description="Longest tokenized text.")
    image_size: int = Field(224, ge=1, le=8192, description="Square input size in pixels.")
    resize: Literal["resize", "center_crop"] = Field(
        "center_crop", description="center_crop: shorter side to image_size, then a centred "
        "square crop; resize: plain resize to image_size x image_size (bilinear)."
    )
    mean: list[float] | Literal["imagenet", "dataset"] = Field(
        "imagenet", description="Per-channel mean (RGB, [0,1] scale), imagenet, or dataset "
        "(computed over the evaluated images after resizing)."
    )
    std: list[float] | Literal["imagenet", "dataset"] = Field(
        "imagenet", description="Per-channel std (RGB, [0,1] scale), imagenet, or dataset."
    )
    positive_class: int = Field(
        1, ge=0, description="Index of the 'match' class for pair scoring."
    )
    output: Literal["logits", "probability"] = Field(
        "logits", description="What forward returns: logits (softmax for 2+ classes, sigmoid for "
        "one output) or probabilities."
    )

    @field_validator("module")
    @classmethod
    def _module_format(cls, value: str) -> str:
        name = r"[A-Za-z_]\w*"
        if not re.fullmatch(rf"{name}(\.{name})*:{name}(\.{name})*", value.strip()):
            raise ValueError("must look like 'package.module:ClassName'")
        return value.strip()

    @field_validator("mean", "std")
    @classmethod
    def _three_channels(cls, value: list[float] | str) -> list[float] | str:
        if isinstance(value, list) and len(value) != 3:
            raise ValueError("give three values (R, G, B)")
        return value

    @field_validator("std")
    @classmethod
    def _positive_std(cls, value: list[float] | str) -> list[float] | str:
        if isinstance(value, list) and min(value) <= 0:
            raise ValueError("std values must be positive")
        return value


class ModelConfig(_Strict):
    kind: str = Field(
        "dual_encoder",
        description="Model adapter: dual_encoder (CLIP-like), itm (image-text matching head), "
        "captioner, vqa, or torch_module (your own PyTorch module).",
        json_schema_extra={"enum": list(MODEL_KINDS)},
    )
    path: str = Field(
        ...,
        description="Local model folder (save_pretrained layout) or a Hugging Face model id "
        "already in the local cache (no downloads are attempted).",
    )
    revision: str | None = Field(None, description="Revision of a Hugging Face model id.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="Weights dtype; auto keeps the checkpoint's dtype (float32 on CPU)."
    )
    device: str = Field(
        "auto", description="auto (CUDA when present), cpu, mps, cuda or cuda:N.",
        json_schema_extra={"pattern": DEVICE_PATTERN, "examples": list(DEVICE_EXAMPLES)},
    )
    batch_size: int = Field(64, ge=1, le=65536, description="Inference batch size.")
    amp: Literal["off", "fp16", "bf16", "auto"] = Field(
        "auto", description="Mixed precision: inference under torch.autocast with float16 "
        "(fp16) or bfloat16 (bf16), or off (float32 as the weights are); auto (the default): "
        "bf16 on a CUDA GPU that supports it, otherwise off (so CPU runs are float32). The "
        "old true/false still work: true is fp16 on CUDA and bf16 elsewhere, false is off.",
    )
    trust_remote_code: bool = Field(
        False, description="Allow model code shipped with the checkpoint. Off unless you trust it."
    )
    generation: GenerationSettings = Field(
        default_factory=GenerationSettings, description="Decoding settings of generative models."
    )
    torch_module: TorchModuleSettings | None = Field(
        None, description="Module, tokenizer and input transforms of a custom PyTorch model "
        "(kind: torch_module; path is its .safetensors/.pt/.pth/.bin state dict)."
    )

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(DEVICE_PATTERN, value):
            raise ValueError("must be auto, cpu, mps, cuda or cuda:N")
        return value

    @field_validator("amp", mode="before")
    @classmethod
    def _legacy_amp(cls, value: Any, info: ValidationInfo) -> Any:
        """The old boolean: false is off; true is what it meant before (float16 on CUDA,
        bfloat16 on any other device; for device auto, whether CUDA is there decides)."""
        if not isinstance(value, bool):
            return value
        if not value:
            return "off"
        device = str(info.data.get("device", "auto"))
        if device == "auto":
            import torch

            return "fp16" if torch.cuda.is_available() else "bf16"
        return "fp16" if device.startswith("cuda") else "bf16"



class ColumnMapping(_Strict):
    id: str | None = Field("id", description="Column with a unique item id (row number if absent).")
    image: str = Field("image", description="Column with the image path, relative to the root.")
    captions: str | None = Field(
        "captions", description="Column with the caption(s) / answers: a list, or one string per "
        "row. Null for datasets without texts (classification)."
    )
    label: str | None = Field("label", description="Optional class-label column.")


class DatasetConfig(_Strict):
    source: str = Field(
        "manifest", description="Data source: manifest (CSV/JSONL/parquet file), hf (Hugging "
        "Face dataset), karpathy (Karpathy split JSON) or s3 (a manifest on S3).",
        json_schema_extra={"enum": list(DATA_SOURCES)},
    )
    path: str = Field(
        ..., description="Manifest file (CSV/JSONL/parquet), Hugging Face dataset folder or "
        "cached dataset name, Karpathy split JSON, or s3://bucket/prefix/manifest.jsonl."
    )
    root: str | None = Field(
        None, description="Folder (or s3:// prefix for the s3 source) image paths are relative "
        "to (default: the manifest's folder). Paths may not escape it."
    )
    split: str | None = Field(None, description="Split name (Hugging Face and Karpathy sources; "
                              "or a column value filter on a 'split' column of a manifest).")
    revision: str | None = Field(
        None, description="Commit of a cached Hugging Face dataset name (hf source); the cached "
        "copy must be at this revision."
    )
    limit: int | None = Field(None, ge=1, description="Evaluate only the first N items.")
    columns: ColumnMapping = Field(
        default_factory=ColumnMapping, description="Which columns hold the item id, the image "
        "path, the captions/answers and the label.")
    caption_separator: str | None = Field(
        None, description="Split caption strings on this separator (CSV with several captions)."
    )



class ZeroShotConfig(_Strict):
    class_names: list[str] | None = Field(
        None, description="Class names (the labels' values); default: the dataset's labels."
    )
    templates: list[str] = Field(
        default_factory=lambda: ["a photo of a {}."],
        description="Prompt templates, {} = class name; text embeddings are averaged over "
        "templates as in CLIP.",
    )

    @field_validator("templates")
    @classmethod
    def _placeholder(cls, value: list[str]) -> list[str]:
        if not value or any("{}" not in t for t in value):
            raise ValueError("give at least one template, each with a {} placeholder")
        return value


class VQAConfig(_Strict):
    question_column: str = Field("question", description="Dataset column with the question.")
    question_type_column: str | None = Field(
        "question_type", description="Optional column with the question type (per-type scores)."
    )
    answer_type_column: str | None = Field(
        "answer_type", description="Optional column with the answer type (yes/no, number, ...)."
    )


class MatchingConfig(_Strict):
    negatives: Literal["dataset", "random", "hard"] = Field(
        "random", description="dataset: pairs and 0/1 labels come with the data (label_column); "
        "random: each caption's image paired with a seeded caption of another image; hard: the "
        "most similar caption of another image (needs a dual encoder)."
    )
    label_column: str = Field("match", description="0/1 column of dataset-provided pairs.")
    negatives_per_positive: int = Field(1, ge=1, le=20, description="Drawn negatives per pair.")
    threshold: float | None = Field(
        None, description="Match threshold on the model's score; default: chosen for the best "
        "accuracy on a held-out calibration part of the images."
    )
    calibration_fraction: float = Field(
        0.2, gt=0, lt=1, description="Share of images held out to choose the threshold."
    )
    hard_negative_model: str | None = Field(
        None, description="Dual-encoder folder that mines hard negatives when the evaluated "
        "model is not a dual encoder."
    )


class TextToImageConfig(_Strict):
    """Text-to-image quality: the dataset holds the prompts (the captions column) and the
    generated images; ``references`` the real images they are compared with."""

    references: str | None = Field(
        None, description="Reference (real) images: a folder (every image file under it, "
        "sub-folders included) or a manifest file (CSV/JSONL/parquet) with an image column. "
        "Required for task text_to_image.")
    reference_root: str | None = Field(
        None, description="Folder a reference manifest's image paths are relative to (default: "
        "the manifest's folder). Paths may not escape it.")
    reference_column: str = Field("image", description="Reference manifest column with the "
                                  "image path.")
    reference_limit: int | None = Field(None, ge=1, description="Use only the first N "
                                        "reference images.")
    features: Literal["model", "inception"] = Field(
        "model", description="Image features of FID, KID and precision/recall: model (the "
        "evaluated dual encoder's image embeddings) or inception (Inception-v3 pool features "
        "from inception_weights; needs torch-fidelity).")
    inception_weights: str | None = Field(
        None, description="Local torch-fidelity Inception-v3 weights file "
        "(pt_inception-2015-12-05-6726825d.pth) for features: inception; never downloaded.")
    normalize_features: bool = Field(
        False, description="L2-normalise the image features before FID, KID and "
        "precision/recall.")
    fid_interval: bool = Field(
        False, description="Bootstrap interval for FID (generated images resampled, references "
        "fixed; statistics.bootstrap resamples, one matrix square root each).")


class InferenceConfig(_Strict):
    cache: bool = Field(True, description="Reuse cached outputs with the same fingerprint.")
    shard_size: int = Field(4096, ge=1, description="Items per inference shard (cache unit).")
    num_workers: int | None = Field(
        None, ge=0, le=64, description="Threads decoding and preprocessing image batches "
        "ahead of the model; null (default): the CPU count, at most 8; 0: in the model's "
        "thread.")
    compile: bool = Field(False, description="torch.compile the model's modules before "
                          "inference (pays off on a GPU for long runs; the first batches of "
                          "each shape compile, which takes minutes on a CPU).")
    compile_backend: str = Field(
        "inductor", pattern=r"^[A-Za-z0-9_.\-]+$", description="torch.compile backend: "
        "inductor, cudagraphs, aot_eager, or eager (traces only: checks the model compiles).")
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = Field(
        "default", description="torch.compile mode (inductor only): reduce-overhead uses CUDA "
        "graphs; max-autotune searches kernels for longer.")


    def loader_threads(self) -> int:
        """``num_workers``, or for null the CPU count, at most ``AUTO_LOADER_THREADS``."""
        if self.num_workers is not None:
            return self.num_workers
        return min(AUTO_LOADER_THREADS, os.cpu_count() or 1)


AUTO_LOADER_THREADS = 8  # each thread holds one prepared batch (pinned on CUDA)


class ExecutionConfig(_Strict):
    engine: Literal["local", "dask", "ray"] = Field(
        "local", description="Where inference shards are computed: local (in the flow's "
        "process), dask (Prefect tasks on Dask workers through prefect-dask) or ray (on Ray "
        "workers through prefect-ray); each worker loads the model once; the cache folder "
        "must be shared with the workers.")
    workers: int = Field(2, ge=1, le=256, description="dask: workers of the LocalCluster "
                         "started for the run; ray: CPUs of the local Ray instance (both "
                         "ignored with an address).")
    threads_per_worker: int = Field(1, ge=1, le=64, description="dask: shards one worker "
                                    "computes at once (one model per worker either way).")
    address: str | None = Field(
        None, description="An existing cluster: a Dask scheduler (tcp://host:8786) or a Ray "
        "cluster (ray://host:10001 or auto); when set, no local cluster is started.")
    gpus: int = Field(0, ge=0, le=64, description="dask / ray: one GPU per shard task. A local "
                      "cluster gets one worker per GPU, each seeing only its own "
                      "(CUDA_VISIBLE_DEVICES); with an address, each task asks the cluster for "
                      "a GPU (Dask resource GPU=1, Ray num_gpus=1). 0: no GPU placement.")


# The robustness registries' names, as the form's choices (tests keep them equal to
# tasks.robustness.corruptions.CORRUPTIONS and tasks.robustness.perturbations.PERTURBATIONS).
CORRUPTIONS = ("gaussian_noise", "shot_noise", "gaussian_blur", "motion_blur", "jpeg",
               "pixelate", "brightness", "contrast", "saturate", "fog", "occlusion")
TEXT_PERTURBATIONS = ("char_swap", "char_drop", "char_insert", "keyboard", "lowercase",
                      "uppercase", "no_punctuation", "word_dropout", "word_shuffle")


class TextPerturbation(_Strict):
    name: str = Field(..., description="Perturbation of the text side (captions, class "
                      "templates, questions).",
                      json_schema_extra={"enum": list(TEXT_PERTURBATIONS)})
    rate: float = Field(0.1, ge=0, le=1, description="Share of characters / words perturbed, "
                        "at least one (0: the text unchanged; lowercase, uppercase and "
                        "no_punctuation change the whole text at any rate above 0).")
    window: int = Field(3, ge=2, le=64, description="word_shuffle: words move only within "
                        "windows of this many words.")


Attack = Literal["fgsm", "pgd"]


def _both_attacks() -> list[Attack]:
    return ["fgsm", "pgd"]


class AdversarialConfig(_Strict):
    attacks: list[Attack] = Field(
        default_factory=_both_attacks, description="Gradient attacks on the image "
        "(L-infinity; dual encoders and torch_module classifiers).")
    epsilons: list[float] = Field(
        default_factory=lambda: [1 / 255, 4 / 255], min_length=1, description="Attack budgets "
        "in pixel units of the [0, 1] image (4/255 = 0.0157).")
    steps: int = Field(10, ge=1, le=1000, description="PGD iterations.")
    step_size: float | None = Field(
        None, gt=0, description="PGD step in [0, 1] pixel units (default 2.5 * epsilon / steps).")
    random_start: bool = Field(True, description="PGD starts from a random point of the "
                               "epsilon ball.")
    limit: int | None = Field(None, ge=1, description="Attack only the first N items (attacks "
                              "cost steps + 1 forward and backward passes per item).")

    @field_validator("epsilons")
    @classmethod
    def _in_pixel_range(cls, value: list[float]) -> list[float]:
        if any(not 0 < eps <= 1 for eps in value):
            raise ValueError("each epsilon is in (0, 1] (pixel units of the [0, 1] image)")
        return value


class RobustnessConfig(_Strict):
    corruptions: list[str] = Field(
        default_factory=list, description="Image corruptions (ImageNet-C style); each is "
        "evaluated at every severity. Empty: none.",
        json_schema_extra={"items": {"enum": list(CORRUPTIONS), "type": "string"}})
    severities: list[int] = Field(
        default_factory=lambda: [1, 3, 5], description="Corruption severities (1-5).")
    text: list[TextPerturbation] = Field(
        default_factory=list, description="Text perturbations; each is evaluated once.")
    adversarial: AdversarialConfig | None = Field(
        None, description="FGSM / PGD attacks on the image input (null: none).")
    seed: int = Field(0, description="Seed of every corruption and perturbation (same seed: "
                      "same variants).")

    @field_validator("severities")
    @classmethod
    def _severity_range(cls, value: list[int]) -> list[int]:
        if any(not 1 <= s <= 5 for s in value):
            raise ValueError("severities are between 1 and 5")
        return sorted(set(value))


class StatisticsConfig(_Strict):
    bootstrap: int = Field(
        1000, ge=0, le=100_000, description="Bootstrap resamples for the confidence interval "
        "of every metric (0 = no intervals).")
    level: float = Field(0.95, gt=0, lt=1, description="Two-sided confidence level.")
    method: Literal["percentile", "bca"] = Field(
        "percentile", description="Interval method: percentile, or BCa (bias-corrected and "
        "accelerated; falls back to percentile where it cannot be computed).")
    seed: int = Field(0, description="Seed of the resampling stream (same seed: same interval).")


class SlicesConfig(_Strict):
    columns: list[str] = Field(
        default_factory=list, description="Metadata columns to slice by: every metric with its "
        "interval for each value (empty = no slices).")
    min_size: int = Field(30, ge=1, description="Slices with fewer rows are listed as too "
                          "small instead of scored.")
    combinations: bool = Field(False, description="Also slice by every pair of the columns' "
                               "values.")
    permutations: int = Field(
        2000, ge=0, le=100_000, description="Permutations of the slice-vs-rest test of the "
        "headline metric (0 = no test).")


class GateRule(_Strict):
    metric: str = Field(..., min_length=1, description="Metric key of report.json, e.g. "
                        "i2t_recall_at_1 (direction from the run's higher_is_better).")
    max_drop: float = Field(0.0, ge=0, description="Largest allowed drop in the metric's units "
                            "(absolute; a drop is a decrease, or an increase of a rank).")
    max_relative_drop: float | None = Field(
        None, ge=0, description="Largest allowed drop as a fraction of the baseline value (0.02 "
        "= 2%); with max_drop, the larger allowance applies.")
    alpha: float = Field(0.05, gt=0, lt=1, description="The rule fails only when the drop is "
                         "significant: Holm-adjusted p-value (over the gate's rules) < alpha.")


class GateConfig(_Strict):
    baseline: str = Field(
        ..., min_length=1, description="What the run is compared with: an MLflow run id; "
        "experiment:NAME (the best finished run on the same dataset by the first rule's metric, "
        "narrowed by filter); or models:/NAME@ALIAS (the run of that registered model version). "
        "When the experiment has no such run or the alias is not set yet, the gate passes.")
    filter: str | None = Field(
        None, description="MLflow search filter for experiment:NAME baselines, e.g. "
        "tags.bifocal.task = 'retrieval'.")
    rules: list[GateRule] = Field(
        default_factory=list, description="Regression rules; a rule fails when its metric drops "
        "by more than allowed and the drop is significant. Empty: the task's headline metric "
        "with max_drop 0.")


class PromoteConfig(_Strict):
    model_name: str = Field(..., min_length=1, description="Registered model that receives a "
                            "new version (created if missing) when the gate passes.")
    alias: str = Field("champion", pattern=r"^[A-Za-z0-9_\-]+$", description="Alias moved "
                       "to the new version on a pass; it never moves on a fail.")

    @field_validator("alias")
    @classmethod
    def _alias_allowed(cls, value: str) -> str:
        if value.lower() == "latest" or re.fullmatch(r"[vV]\d+", value):
            raise ValueError("MLflow reserves 'latest' and 'v<number>' aliases")
        return value


class SamplingStrategy(_Strict):
    """One part of the review sample; its name is a sampling strategy of the registry
    (``tasks.review.strategies``: random, stratified, worst, margin, disagreement, filter_top_k)."""

    name: str = Field(..., min_length=1, description="Sampling strategy: random, stratified, "
                      "worst, margin, disagreement or filter_top_k.")
    share: float | None = Field(
        None, gt=0, le=1, description="Part of the review size (after the failures' part) this "
        "strategy fills; strategies without a share split what the others leave equally; "
        "shares adding up to less than 1 are scaled up. A quota a strategy cannot fill passes "
        "to the next; the rest is drawn at random (strategy top_up).")
    metric: str | None = Field(
        None, description="Per-sample column it ranks by (worst, filter_top_k; margin: the "
        "margin column). Default: the task's review column, e.g. i2t_rank or cider.")
    higher_is_worse: bool | None = Field(
        None, description="Direction of metric. Default: the task's for its review column, "
        "else the metric's own direction, else worse-when-high for rank columns only.")
    column: str | None = Field(None, description="Metadata column to stratify by (stratified).")
    allocation: Literal["proportional", "equal"] = Field(
        "proportional", description="stratified: items per stratum proportional to its size, "
        "or equal per stratum.")
    metrics: list[str] = Field(
        default_factory=list, description="disagreement: the two per-sample columns whose ranks "
        "disagree most, e.g. [clip_score, cider].")
    thresholds: dict[str, dict[Literal["min", "max"], float]] = Field(
        default_factory=dict, description="filter_top_k: per-sample columns and the bounds a "
        "candidate must pass, e.g. {clip_score: {min: 0.25}}; then the worst by metric.")


# the review queue's own columns and Label Studio's data names (see tasks/review/queue.py)
RESERVED_REVIEW_COLUMNS = frozenset({
    "review_id", "run_id", "review_strategy", "status", "reason", "image_path", "image",
    "question", "prediction", "references", "scores", "reviewer", "source", "file"})


class RatingField(_Strict):
    """One answer a reviewer gives per item."""

    name: str = Field(..., pattern=r"^[a-z][a-z0-9_]*$", description="Column name of the "
                      "answer in the queue and in the ingested ratings.")
    type: Literal["rating", "choice", "text"] = Field(
        ..., description="rating: an integer scale; choice: one of choices; text: free comment.")
    title: str | None = Field(None, description="What the reviewer is asked.")
    min: int = Field(1, description="Lowest rating (rating).")
    max: int = Field(5, description="Highest rating (rating).")
    choices: list[str] = Field(
        default_factory=list, description="Allowed answers (choice); a choice field with "
        "choices [correct, incorrect] gives the share judged correct and each metric's AUROC.")
    required: bool = Field(True, description="An item counts as reviewed only with this answer "
                           "(text fields: never required).")

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_REVIEW_COLUMNS:
            raise ValueError(f"{value!r} is a column of the review queue; choose another name")
        return value

    @field_validator("choices", mode="before")
    @classmethod
    def _no_yaml_booleans(cls, value: Any) -> Any:
        if isinstance(value, list) and any(isinstance(v, bool) for v in value):
            raise ValueError("YAML reads yes/no/true/false/on/off as booleans: quote the "
                             "choices, e.g. ['yes', 'no']")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RatingField:
        if self.type == "rating" and self.min >= self.max:
            raise ValueError(f"rating {self.name!r}: min must be below max")
        if self.type == "choice" and len(set(self.choices)) < 2:
            raise ValueError(f"choice {self.name!r} needs at least two distinct choices")
        return self


def _default_schema() -> list[RatingField]:
    return [RatingField(name="relevance", type="rating", min=1, max=5,
                        title="How well does the text fit the image? (1 = not at all, 5 = "
                        "perfectly)"),
            RatingField(name="verdict", type="choice", choices=["correct", "incorrect"],
                        title="Is the model's output correct?"),
            RatingField(name="comment", type="text", required=False, title="Comment")]


def _default_strategies() -> list[SamplingStrategy]:
    return [SamplingStrategy(name="worst", share=0.5), SamplingStrategy(name="random", share=0.5)]


class ReviewFormat(StrEnum):
    csv = "csv"
    jsonl = "jsonl"
    label_studio = "label_studio"
    sheet = "sheet"


class ReviewConfig(_Strict):
    size: int = Field(20, ge=0, description="Number of items to sample (0 disables review).")
    fraction: float | None = Field(
        None, gt=0, le=1, description="Sample this part of the scored and failed items instead "
        "of size.")
    strategies: list[SamplingStrategy] = Field(
        default_factory=_default_strategies, min_length=1, description="How the sample is "
        "chosen: strategies with their shares of the size, filled in order, deduplicated.")
    failed_share: float = Field(
        0.1, ge=0, le=1, description="Part of the size kept for items that failed inference or "
        "scoring (at least one when any failed).")
    seed: int = Field(0, description="Seed of every random choice of the sample.")
    schema_: list[RatingField] = Field(
        default_factory=_default_schema, alias="schema", min_length=1,
        description="What reviewers answer per item: ratings, choices and comments.")
    formats: list[ReviewFormat] = Field(
        default_factory=lambda: list(ReviewFormat), description="Queue files to write: csv, "
        "jsonl, label_studio (labeling config + tasks JSON) and sheet (offline HTML).")
    approval: bool = Field(
        False, description="Pause the evaluate flow after the report until a reviewer approves "
        "or rejects it in the Prefect UI (a rejection fails the run).")
    approval_timeout_s: int = Field(
        86_400, ge=1, description="Seconds to wait for the approval; then it counts as rejected.")

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True,
                              serialize_by_alias=True)

    @field_validator("schema_")
    @classmethod
    def _unique_names(cls, value: list[RatingField]) -> list[RatingField]:
        names = [field.name for field in value]
        if len(set(names)) != len(names):
            raise ValueError(f"rating field names repeat: {names}")
        return value

    @model_validator(mode="after")
    def _shares_fit(self) -> ReviewConfig:
        total = sum(s.share or 0 for s in self.strategies)
        if total > 1 + 1e-9:
            raise ValueError(f"strategy shares add up to {total:g}, more than 1")
        return self


class ReportFormat(StrEnum):
    json = "json"
    html = "html"
    parquet = "parquet"
    csv = "csv"


class ReportConfig(_Strict):
    formats: list[ReportFormat] = Field(
        default_factory=lambda: list(ReportFormat), description="Report files to write."
    )
    destination: str = Field(
        "reports", description="Folder or s3://bucket/prefix; each run writes a subfolder."
    )
    examples: int = Field(8, ge=0, le=200, description="Example rows with thumbnails in HTML.")
    presign_expiry_s: int = Field(
        7 * 24 * 3600, ge=60, le=7 * 24 * 3600, description="When the destination is s3://: "
        "how long the presigned links work — the report and review sheet links in the Prefect "
        "artifact, the image URLs of review/label_studio/tasks_s3.json (SigV4: at most 7 days).")


class TrackingConfig(_Strict):
    experiment: str = Field("bifocal", description="MLflow experiment name.")
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default: $MLFLOW_TRACKING_URI, else "
        "sqlite:///mlflow.db in the working dir. Credentials never stay here: http(s)://user:"
        "password@host is stored as http(s)://host, the credentials moved into "
        "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD; another URI with credentials is "
        "moved into MLFLOW_TRACKING_URI (this field becomes null)."
    )
    run_name: str | None = Field(None, description="MLflow run name (default: model@dataset).")
    parent_run_id: str | None = Field(
        None, description="Set by suites: the MLflow run this evaluation is nested under (the "
        "child run gets the MLflow tag mlflow.parentRunId)."
    )

    @field_validator("tracking_uri")
    @classmethod
    def _credentials_to_environment(cls, value: str | None) -> str | None:
        return split_tracking_uri(value)


class EvalConfig(_Strict):
    task: TaskKind = Field(TaskKind.retrieval, description="What is evaluated.")
    model: ModelConfig = Field(description="The evaluated model: adapter kind, weights, "
                               "device, batch size and decoding settings.")
    dataset: DatasetConfig = Field(description="The evaluated data: source, path, split and "
                                   "column names.")
    metrics: list[str] = Field(
        default_factory=list, description="Metric names from the registry; empty = all of the task."
    )
    metric_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Options per metric name, e.g. {retrieval: {ks: [1,5]}}. "
        "A secret (a value under a key such as api_token or password, or a URL with credentials) "
        "is moved into the environment variable BIFOCAL_SECRET_<METRIC>_<KEY> and replaced by "
        "${env:BIFOCAL_SECRET_<METRIC>_<KEY>}; write ${env:NAME} to name your own variable."
    )
    inference: InferenceConfig = Field(
        default_factory=InferenceConfig, description="Inference cache, shards and image "
        "decoding threads.")
    execution: ExecutionConfig = Field(
        default_factory=ExecutionConfig, description="Where inference shards run: this "
        "process (local) or Dask workers (dask).")
    zero_shot: ZeroShotConfig = Field(
        default_factory=ZeroShotConfig, description="Zero-shot classification prompts."
    )
    matching: MatchingConfig = Field(
        default_factory=MatchingConfig, description="Image-text matching pairs and threshold."
    )
    text_to_image: TextToImageConfig = Field(
        default_factory=TextToImageConfig, description="Text-to-image quality: the reference "
        "images and the image features of FID / KID.")
    vqa: VQAConfig = Field(
        default_factory=VQAConfig, description="VQA columns; dataset.columns.captions names the "
        "human answers column."
    )
    statistics: StatisticsConfig = Field(
        default_factory=StatisticsConfig, description="Bootstrap confidence intervals.")
    slices: SlicesConfig = Field(
        default_factory=SlicesConfig, description="Per-slice metrics (the fairness view).")
    robustness: RobustnessConfig = Field(
        default_factory=RobustnessConfig, description="Image corruptions, text perturbations "
        "and adversarial attacks: every metric again on each variant.")
    gate: GateConfig | None = Field(
        None, description="Regression gate after the evaluation: compare with a baseline run; "
        "the flow fails when a rule fails (the MLflow run stays FINISHED, tag bifocal.gate).")
    promote: PromoteConfig | None = Field(
        None, description="On a passed gate (needs gate), register the evaluated model as a new "
        "version of a registered model and move an alias to it.")
    review: ReviewConfig = Field(
        default_factory=ReviewConfig, description="Human review: which items are sampled, what "
        "reviewers answer, the queue files and the optional approval step.")
    report: ReportConfig = Field(
        default_factory=ReportConfig, description="Report files and where they are written.")
    tracking: TrackingConfig = Field(
        default_factory=TrackingConfig, description="MLflow experiment, tracking server and "
        "run name.")
    work_dir: str = Field(".bifocal/work", description="Run folders and the inference cache.")
    seed: int = Field(0, description="Global seed (sampling, generation).")

    @field_validator("metric_options")
    @classmethod
    def _secrets_to_environment(cls, value: dict[str, dict[str, Any]]
                                ) -> dict[str, dict[str, Any]]:
        return externalize_secrets(value, "BIFOCAL_SECRET")

    @model_validator(mode="after")
    def _no_credentials(self) -> EvalConfig:
        """The config is the flow's parameter, which Prefect stores: no URL credentials."""
        found = url_credential_paths(self.model_dump(mode="json"))
        if found:
            raise ValueError(f"{', '.join(found)}: a URL with credentials (user:password@ or a "
                             "secret query parameter such as token=) is not accepted in the "
                             "configuration; give credentials through the environment")
        return self

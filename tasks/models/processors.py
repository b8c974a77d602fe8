"""Loading a checkpoint's preprocessing: its ``AutoProcessor``, or an image processor + tokenizer
pair (VisionEncoderDecoder folders have no processor class).

transformers 5 builds a processor that has a video processor (Qwen2-VL, Qwen2.5-VL, ...) only
when torchvision is installed, even for images; torchvision is not part of Bifocal's install.
Such a processor is then built without its video processor (``image_only_processor``): the same
class, image processor, tokenizer and chat template, so images and prompts are processed exactly
as by the full processor (the video path is never used by Bifocal).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from tasks.models.base import ModelError


def load_processor(path: Path, options: dict[str, Any]) -> tuple[Any, Any, Any]:
    """``(image processor, tokenizer, processor)``; the processor is None for a pair."""
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer
    from transformers.utils import is_torchvision_available

    try:
        processor = AutoProcessor.from_pretrained(path, **options)
    except (OSError, ValueError, TypeError, AttributeError, ImportError):
        # a video processor cannot be built without torchvision: try the image-only twin
        processor = None if is_torchvision_available() else image_only_processor(path, options)
    if hasattr(processor, "tokenizer") and hasattr(processor, "image_processor"):
        return processor.image_processor, processor.tokenizer, processor
    try:
        return (AutoImageProcessor.from_pretrained(path, **options),
                AutoTokenizer.from_pretrained(path, **options), None)
    except (OSError, ValueError) as error:
        raise ModelError(f"cannot load an image processor and tokenizer from {path}: {error}") \
            from None


def image_only_processor(path: Path, options: dict[str, Any]) -> Any:
    """The checkpoint's processor class without its video processor (see the module's doc);
    None when the checkpoint has no such processor."""
    from transformers import AutoConfig
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    try:
        model_type = AutoConfig.from_pretrained(path, **options).model_type
    except (OSError, ValueError):
        return None
    name = PROCESSOR_MAPPING_NAMES.get(model_type)
    if not name or not has_video_processor(name):
        return None
    try:
        return image_only_class(name).from_pretrained(path, **options)
    except (OSError, ValueError, TypeError, AttributeError, ImportError):
        return None


def has_video_processor(name: str) -> bool:
    import inspect

    import transformers

    base = getattr(transformers, name, None)
    return base is not None and "video_processor" in inspect.signature(base.__init__).parameters


@cache
def image_only_class(name: str) -> Any:
    """``name``'s processor class whose sub-processors are the image processor and tokenizer
    only. ``ProcessorMixin`` takes its sub-processors from ``__init__``'s parameters, so this
    subclass's ``__init__`` leaves the video processor out and calls the class's own
    ``__init__`` (which sets the image token and the rest) with ``video_processor=None``."""
    import transformers

    base = getattr(transformers, name)

    def __init__(self: Any, image_processor: Any = None, tokenizer: Any = None,
                 chat_template: Any = None, **kwargs: Any) -> None:
        base.__init__(self, image_processor=image_processor, tokenizer=tokenizer,
                      chat_template=chat_template, **kwargs)

    return type(name, (base,), {"__init__": __init__, "__module__": base.__module__,
                                "__doc__": f"{name} for images only (no video processor)."})

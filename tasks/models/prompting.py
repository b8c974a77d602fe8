"""How each generative image-text family is prompted, batched, and how its prompt is taken off
what ``generate()`` returns.

A ``Prompter`` turns images and prompt texts into sub-batches of model inputs. Each sub-batch
carries the token ids that ``generate()`` returns before the new text (``echo``); the adapter
removes them *by token count*, after checking they are there, so an answer never keeps an echo
of its prompt (a decoded prompt rarely equals the prompt string: tokenizer spacing, special and
image tokens, chat templates).

Families:

* decoder-only image-text-to-text (LLaVA, Qwen2-VL, Qwen2.5-VL, BLIP-2 with OPT, ...): the
  processor builds the inputs (it expands image tokens to the right count), after the chat
  template is applied when the processor has one, or the processor's image token put before the
  text when it expects one in the text and has no template; prompts are padded on the left,
  and positions follow the attention mask, so a row's output does not depend on its batch;
* encoder-decoder language models (BLIP-2 with Flan-T5): the prompt is encoded (padded on the
  right, masked); generate() returns the decoder start token first;
* decoders with absolute positions (BLIP captioning, GIT, VisionEncoderDecoder): left padding
  would shift positions and right padding would put pads before the answer, so prompts of equal
  token length are batched together, unpadded; so are BLIP VQA's questions, whose padding its
  answer decoder would attend to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tasks.models.base import ModelError

# Default prompts where the user's config sets none.
CHAT_CAPTION_PROMPT = "Provide a one-sentence caption for the provided image."  # lmms-eval COCO
CHAT_QUESTION_TEMPLATE = "{question}\nAnswer the question using a single word or phrase."
BLIP2_QUESTION_TEMPLATE = "Question: {question} Answer:"  # the BLIP-2 paper's VQA prompt
PLAIN_QUESTION_TEMPLATE = "{question}"


@dataclass
class SubBatch:
    inputs: dict[str, Any]  # keyword arguments of generate()
    positions: list[int]  # rows of the prepared batch it covers, in order
    echo: Any  # (rows, n) ids generate() returns before the new text; None: one start token


class Prompter:
    """Decoder-only image-text-to-text models driven by their processor (see the module)."""

    padding_side = "left"
    family_question_template: str | None = None  # the family's own VQA prompt, if any

    def __init__(self, processor: Any, image_processor: Any, tokenizer: Any,
                 model_config: Any) -> None:
        self.processor = processor
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.model_config = model_config
        self.chat = bool(getattr(processor, "chat_template", None))
        self._insert_image_token: bool | None = None
        tokenizer.padding_side = self.padding_side

    @property
    def caption_prompt(self) -> str | None:
        """The captioning prompt when the config sets none: chat models need an instruction."""
        return CHAT_CAPTION_PROMPT if self.chat else None

    @property
    def question_template(self) -> str:
        """The VQA template when the config sets none."""
        if self.family_question_template is not None:
            return self.family_question_template
        return CHAT_QUESTION_TEMPLATE if self.chat else PLAIN_QUESTION_TEMPLATE

    def describe(self) -> str:
        if self.chat:
            return "chat template"
        return "image token + prompt" if self._insert_image_token else "prompt"

    def batches(self, images: list[Any], texts: list[str | None]) -> list[SubBatch]:
        prompts = [self.prompt_text(text or "", images[0]) for text in texts]
        inputs = dict(self.processor(images=images, text=prompts, return_tensors="pt",
                                     padding=True))
        return [SubBatch(inputs, list(range(len(images))), inputs["input_ids"])]

    def prompt_text(self, text: str, image: Any) -> str:
        """The text the processor gets: the chat template's rendering of one user turn (the
        image, then the text), else the text after the image token where the processor expects
        one in the text, else the text."""
        if self.chat:
            content: list[dict[str, str]] = [{"type": "image"}]
            if text:
                content.append({"type": "text", "text": text})
            return str(self.processor.apply_chat_template(
                [{"role": "user", "content": content}], add_generation_prompt=True,
                tokenize=False))
        if self._insert_image_token is None:
            self._insert_image_token = self._expects_image_token(image)
        if self._insert_image_token:
            return f"{self.processor.image_token}\n{text}"
        return text

    def _expects_image_token(self, image: Any) -> bool:
        """True when the processor has an image token that it does not insert by itself
        (LLaVA-style processors expand the tokens found in the text; BLIP-2's adds its own)."""
        token = getattr(self.processor, "image_token", None)
        if token is None:
            return False
        token_id = self.tokenizer.convert_tokens_to_ids(str(token))
        try:
            ids = self.processor(images=[image], text=["a"], return_tensors="pt")["input_ids"]
        except ValueError:  # processors that check the image tokens against the images
            return True
        return bool((ids == token_id).sum() == 0)


class Blip2Prompter(Prompter):
    """BLIP-2 with a decoder-only language model (OPT): its processor puts the query tokens
    before the text; VQA uses the BLIP-2 paper's "Question: ... Answer:" prompt."""

    family_question_template = BLIP2_QUESTION_TEMPLATE


class EncoderPrompter(Prompter):
    """The prompt is encoded by an encoder-decoder language model (BLIP-2's Flan-T5): padded on
    the right and masked; generate() returns the decoder start token, then the answer."""

    padding_side = "right"

    def batches(self, images: list[Any], texts: list[str | None]) -> list[SubBatch]:
        inputs = dict(self.processor(images=images, text=[text or "" for text in texts],
                                     return_tensors="pt", padding=True))
        return [SubBatch(inputs, list(range(len(images))), None)]


class Blip2EncoderPrompter(EncoderPrompter):
    """BLIP-2 with Flan-T5: the prompt (after the query tokens) is encoded."""

    family_question_template = BLIP2_QUESTION_TEMPLATE


class GroupedPrompter(Prompter):
    """Decoders with absolute position embeddings: one unpadded sub-batch per prompt length."""

    padding_side = "right"

    def batches(self, images: list[Any], texts: list[str | None]) -> list[SubBatch]:
        import torch

        encoded = [self.prompt_ids(text or "") for text in texts]
        groups: dict[int, list[int]] = {}
        for position, ids in enumerate(encoded):
            groups.setdefault(len(ids), []).append(position)
        batches = []
        for positions in groups.values():
            pixels = self.image_processor(images=[images[p] for p in positions],
                                          return_tensors="pt")["pixel_values"]
            ids = torch.tensor([encoded[p] for p in positions])
            batches.append(SubBatch(self.inputs(pixels, ids), positions, self.echo(ids)))
        return batches

    def prompt_ids(self, text: str) -> list[int]:
        raise NotImplementedError

    def inputs(self, pixels: Any, ids: Any) -> dict[str, Any]:
        return {"pixel_values": pixels, "input_ids": ids}

    def echo(self, ids: Any) -> Any:
        return ids


class EncoderDecoderPrompter(GroupedPrompter):
    """VisionEncoderDecoder: the prompt continues the decoder start token
    (``decoder_input_ids``), and comes back first."""

    def prompt_ids(self, text: str) -> list[int]:
        start = self.model_config.decoder_start_token_id
        if start is None:
            start = self.tokenizer.bos_token_id
        return [start, *self.tokenizer(text, add_special_tokens=False)["input_ids"]]

    def inputs(self, pixels: Any, ids: Any) -> dict[str, Any]:
        return {"pixel_values": pixels, "decoder_input_ids": ids}


class BlipCaptionPrompter(GroupedPrompter):
    """BlipForConditionalGeneration: ``[CLS] prompt [SEP]`` from the tokenizer; the model
    replaces [CLS] by its BOS token and drops [SEP], and returns that prefix first."""

    def prompt_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])

    def echo(self, ids: Any) -> Any:
        prefix = ids[:, :-1].clone()
        prefix[:, 0] = self.model_config.text_config.bos_token_id
        return prefix


class BlipQuestionPrompter(GroupedPrompter):
    """BlipForQuestionAnswering: the question ``[CLS] question [SEP]`` is encoded, and the
    answer decoder attends to every position of it, pads included (its generate() does not
    pass the question's mask on), so questions are batched by token length, unpadded.
    generate() returns the decoder start token, then the answer."""

    def prompt_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])

    def echo(self, ids: Any) -> Any:
        return None


class GitPrompter(GroupedPrompter):
    """GIT: ``[CLS]`` + the prompt's ids without [SEP] (its documented VQA usage; captioning
    starts from ``[CLS]`` alone)."""

    def prompt_ids(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        return [self.tokenizer.cls_token_id, *ids]


def prompter_for(model: Any, processor: Any, image_processor: Any, tokenizer: Any) -> Prompter:
    """The prompter of ``model``'s family (decoder-only image-text-to-text by default)."""
    config = model.config
    name = type(model).__name__
    chosen: type[Prompter]
    if config.model_type == "vision-encoder-decoder":
        chosen = EncoderDecoderPrompter
    elif name == "BlipForConditionalGeneration":
        chosen = BlipCaptionPrompter
    elif name == "BlipForQuestionAnswering":
        chosen = BlipQuestionPrompter
    elif config.model_type == "git":
        chosen = GitPrompter
    elif config.model_type == "blip-2":
        encoder = config.text_config.is_encoder_decoder
        chosen = Blip2EncoderPrompter if encoder else Blip2Prompter
    elif getattr(config, "is_encoder_decoder", False):
        chosen = EncoderPrompter
    else:
        chosen = Prompter
    if processor is None and not issubclass(chosen, GroupedPrompter):
        raise ModelError(f"{name} needs its processor (processor_config.json), which the "
                         "checkpoint folder lacks")
    return chosen(processor, image_processor, tokenizer, config)


def strip_echo(ids: Any, echo: Any) -> Any:
    """The new tokens of ``generate()``'s output ``ids``: the prompt's ``echo`` (or, when None,
    the decoder start token) removed by token count, after checking it is what came back."""
    if echo is None:
        return ids[:, 1:]
    count = echo.shape[1]
    if ids.shape[1] < count or not bool((ids[:, :count].cpu() == echo.cpu()).all()):
        raise ModelError("generate() did not return the prompt's tokens first, so the prompt "
                         "cannot be removed by token count; this model family is not supported")
    return ids[:, count:]

"""Tiny generative image-text models of every family Bifocal runs, built offline from configs.

Each ``build_<family>(folder) -> folder`` writes a seeded, randomly initialised model (32-px
images, hidden size 32, 2 layers) with a processor of the same class and settings as the real
checkpoint (sizes scaled down), saved with ``save_pretrained`` so the adapters reload it with
``Auto*`` classes and ``local_files_only=True``. Tokenizers are word-level, built in memory; their
vocabulary covers ``tests.helpers.WORDS``, question words and the words of the prompt templates.

``GENERATOR_FAMILIES`` is this module's part of the family x task-kind table
(``tests/models/families.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.helpers import WORDS
from tests.models.families import (
    GENERATOR_ONLY,
    LIMITATION,
    NOT_APPLICABLE,
    Family,
    Run,
)

QUESTION_WORDS = ["what", "color", "is", "the", "it", "this", "yes", "no", "how", "many", "are",
                  "there", "which", "shape", "in", "image", "?"]
# Words of the prompt templates and chat templates (so prompts are not all [UNK]).
PROMPT_WORDS = ["Question", "Answer", ":", "USER", "ASSISTANT", "system", "user", "assistant",
                "You", "helpful", ".", "Provide", "one", "-", "sentence", "caption", "for",
                "provided", "the", "using", "single", "word", "or", "phrase"]
VOCABULARY = sorted(set(WORDS) | set(QUESTION_WORDS) | set(PROMPT_WORDS))

# llava-hf/llava-1.5-7b-hf's chat template (chat_template.json).
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ message['role'].upper() + ': '}}{% endif %}"
    "{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{# Render all text next #}"
    "{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}"
    "{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
# Qwen/Qwen2-VL-7B-Instruct's chat template (Qwen2.5-VL-Instruct ships the same one).
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                 "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
# A wider weight initialisation than the checkpoints' 0.02, so that a random tiny model's text
# depends on the image and the prompt (not one token repeated for every input).
INIT = 0.2
TINY_VISION = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2,
               "num_attention_heads": 2, "intermediate_size": 64, "initializer_range": INIT}
TINY_TEXT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 64, "initializer_range": INIT}
# CLIP's normalisation (BLIP, BLIP-2, GIT, LLaVA and Qwen2-VL processors all use it).
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def word_level_tokenizer(specials: list[str], *, bos: str | None, eos: str | None, pad: str,
                         unk: str, add_bos: bool = False, add_eos: bool = False,
                         extra_special: tuple[str, ...] = ()) -> Any:
    """A word-level fast tokenizer over ``VOCABULARY``: ``specials`` first (ids 0..), a BOS
    prepended when ``add_bos`` (Llama, OPT), an EOS appended when ``add_eos`` (T5),
    ``extra_special`` tokens added as special."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate([*specials, *VOCABULARY])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if add_bos and bos is not None:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, vocab[bos])])
    if add_eos and eos is not None:
        backend.post_processor = processors.TemplateProcessing(
            single=f"$A {eos}", special_tokens=[(eos, vocab[eos])])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=eos,
                                        pad_token=pad, unk_token=unk)
    if extra_special:
        tokenizer.add_special_tokens({"additional_special_tokens": list(extra_special)})
    return tokenizer


def bert_tokenizer(extra: tuple[str, ...] = ()) -> Any:
    """An uncased BERT WordPiece tokenizer (BLIP, GIT): [CLS] text [SEP]."""
    from transformers import BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *extra,
             *sorted({w.lower() for w in VOCABULARY})]
    return BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, model_max_length=64)


def _save(folder: Path, model: Any, processor: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _blip_config(tokenizer: Any) -> Any:
    from transformers import BlipConfig

    return BlipConfig(
        text_config={**TINY_TEXT, "vocab_size": len(tokenizer), "encoder_hidden_size": 32,
                     "max_position_embeddings": 64, "pad_token_id": tokenizer.pad_token_id,
                     "bos_token_id": tokenizer.convert_tokens_to_ids("[DEC]"),
                     "sep_token_id": tokenizer.sep_token_id,
                     "eos_token_id": tokenizer.sep_token_id},
        vision_config=TINY_VISION, projection_dim=16, image_text_hidden_size=16,
        initializer_range=INIT)


def _blip_processor(tokenizer: Any) -> Any:
    """Salesforce/blip-*: BlipImageProcessor (384 px, bicubic, CLIP mean/std) + BERT."""
    from transformers import BlipImageProcessorPil, BlipProcessor

    image = BlipImageProcessorPil(size={"height": 32, "width": 32}, image_mean=CLIP_MEAN,
                                  image_std=CLIP_STD)
    return BlipProcessor(image_processor=image, tokenizer=tokenizer)


def _blip_tokenizer() -> Any:
    tokenizer = bert_tokenizer(extra=("[DEC]", "[ENC]"))
    tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    return tokenizer


def build_blip(folder: Path) -> Path:
    """BlipForConditionalGeneration (Salesforce/blip-image-captioning-base, scaled down)."""
    import torch
    from transformers import BlipForConditionalGeneration

    tokenizer = _blip_tokenizer()
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(_blip_config(tokenizer))
    return _save(folder, model, _blip_processor(tokenizer))


def build_blip_vqa(folder: Path) -> Path:
    """BlipForQuestionAnswering (Salesforce/blip-vqa-base, scaled down)."""
    import torch
    from transformers import BlipForQuestionAnswering

    tokenizer = _blip_tokenizer()
    torch.manual_seed(0)
    model = BlipForQuestionAnswering(_blip_config(tokenizer))
    return _save(folder, model, _blip_processor(tokenizer))


def build_blip_itm(folder: Path) -> Path:
    """BlipForImageTextRetrieval (Salesforce/blip-itm-base-coco, scaled down)."""
    import torch
    from transformers import BlipForImageTextRetrieval

    tokenizer = _blip_tokenizer()
    torch.manual_seed(0)
    model = BlipForImageTextRetrieval(_blip_config(tokenizer))
    return _save(folder, model, _blip_processor(tokenizer))


BLIP2_QUERY_TOKENS = 4


def _blip2_config(tokenizer: Any, text_config: dict[str, Any] | None) -> Any:
    from transformers import Blip2Config

    return Blip2Config(
        vision_config=TINY_VISION,
        qformer_config={**TINY_TEXT, "vocab_size": 64, "encoder_hidden_size": 32,
                        "max_position_embeddings": 64},
        text_config=text_config, num_query_tokens=BLIP2_QUERY_TOKENS,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), image_text_hidden_size=16,
        initializer_range=INIT)


def _blip2_image_processor() -> Any:
    """Salesforce/blip2-*: BlipImageProcessor (224 px, bicubic, CLIP mean/std)."""
    from transformers import BlipImageProcessorPil

    return BlipImageProcessorPil(size={"height": 32, "width": 32}, image_mean=CLIP_MEAN,
                                 image_std=CLIP_STD)


def build_blip2(folder: Path) -> Path:
    """Blip2ForConditionalGeneration with an OPT language model (Salesforce/blip2-opt-2.7b,
    scaled down): the processor puts ``num_query_tokens`` ``<image>`` tokens before the text."""
    import torch
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    tokenizer = word_level_tokenizer(["<pad>", "</s>", "<unk>"], bos="</s>", eos="</s>",
                                     pad="<pad>", unk="<unk>", add_bos=True,
                                     extra_special=("<image>",))
    text = {"model_type": "opt", "vocab_size": len(tokenizer), "hidden_size": 32,
            "num_hidden_layers": 2, "num_attention_heads": 2, "ffn_dim": 64,
            "word_embed_proj_dim": 32, "max_position_embeddings": 64, "init_std": INIT,
            "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id}
    torch.manual_seed(0)
    model = Blip2ForConditionalGeneration(_blip2_config(tokenizer, text))
    processor = Blip2Processor(image_processor=_blip2_image_processor(), tokenizer=tokenizer,
                               num_query_tokens=BLIP2_QUERY_TOKENS)
    return _save(folder, model, processor)


def build_blip2_t5(folder: Path) -> Path:
    """Blip2ForConditionalGeneration with a Flan-T5 language model (Salesforce/blip2-flan-t5-xl,
    scaled down): the prompt goes to T5's encoder, the answer comes from its decoder."""
    import torch
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    tokenizer = word_level_tokenizer(["<pad>", "</s>", "<unk>"], bos=None, eos="</s>",
                                     pad="<pad>", unk="<unk>", add_eos=True,
                                     extra_special=("<image>",))
    text = {"model_type": "t5", "vocab_size": len(tokenizer), "d_model": 32, "d_kv": 16,
            "d_ff": 64, "num_layers": 2, "num_decoder_layers": 2, "num_heads": 2,
            "feed_forward_proj": "gated-gelu", "initializer_factor": 5.0,
            "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id,
            "decoder_start_token_id": tokenizer.pad_token_id, "tie_word_embeddings": False}
    torch.manual_seed(0)
    model = Blip2ForConditionalGeneration(_blip2_config(tokenizer, text))
    processor = Blip2Processor(image_processor=_blip2_image_processor(), tokenizer=tokenizer,
                               num_query_tokens=BLIP2_QUERY_TOKENS)
    return _save(folder, model, processor)


def build_blip2_itm(folder: Path) -> Path:
    """Blip2ForImageTextRetrieval (Salesforce/blip2-itm-vit-g, scaled down): the Q-Former's
    image-text matching head, a BERT tokenizer; the processor puts the query tokens' ``<image>``
    placeholders before the text and the model takes them off (``image_token_index``)."""
    import torch
    from transformers import Blip2ForImageTextRetrieval, Blip2Processor

    tokenizer = bert_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    config = _blip2_config(tokenizer, None)
    config.qformer_config.vocab_size = len(tokenizer)
    config.qformer_config.use_qformer_text_input = True  # the Q-Former reads the text too
    torch.manual_seed(0)
    model = Blip2ForImageTextRetrieval(config)
    processor = Blip2Processor(image_processor=_blip2_image_processor(), tokenizer=tokenizer,
                               num_query_tokens=BLIP2_QUERY_TOKENS)
    return _save(folder, model, processor)


def build_git(folder: Path) -> Path:
    """GitForCausalLM (microsoft/git-base, scaled down): CLIP image processor + BERT."""
    import torch
    from transformers import CLIPImageProcessorPil, GitConfig, GitForCausalLM, GitProcessor

    tokenizer = bert_tokenizer()
    config = GitConfig(vision_config={**TINY_VISION}, vocab_size=len(tokenizer),
                       max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                       **TINY_TEXT)
    torch.manual_seed(0)
    model = GitForCausalLM(config)
    image = CLIPImageProcessorPil(size={"shortest_edge": 32},
                                  crop_size={"height": 32, "width": 32})
    return _save(folder, model, GitProcessor(image_processor=image, tokenizer=tokenizer))


def build_vit_gpt2(folder: Path) -> Path:
    """VisionEncoderDecoderModel ViT + GPT-2 (nlpconnect/vit-gpt2-image-captioning, scaled
    down): ViTImageProcessor (bilinear, mean/std 0.5), a GPT-2-style tokenizer whose
    ``<|endoftext|>`` is BOS, EOS, pad and the decoder start token, no special tokens added."""
    import torch
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessorPil,
        ViTModel,
    )

    end = "<|endoftext|>"
    tokenizer = word_level_tokenizer([end, "<unk>"], bos=end, eos=end, pad=end, unk="<unk>")
    torch.manual_seed(0)
    encoder = ViTModel(ViTConfig(**TINY_VISION))
    decoder = GPT2LMHeadModel(GPT2Config(
        vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=64,
        add_cross_attention=True, initializer_range=INIT, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    model = VisionEncoderDecoderModel(encoder=encoder, decoder=decoder)
    for config in (model.config, model.generation_config):
        config.decoder_start_token_id = tokenizer.bos_token_id
        config.pad_token_id = tokenizer.pad_token_id
        config.eos_token_id = tokenizer.eos_token_id
    _save(folder, model, tokenizer)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def build_llava(folder: Path) -> Path:
    """LlavaForConditionalGeneration (llava-hf/llava-1.5-7b-hf, scaled down): CLIP vision tower
    (features of the second-to-last layer, CLS dropped), Llama, a Llama-style tokenizer with
    ``<image>`` and the checkpoint's chat template; the processor expands ``<image>`` to one
    token per patch."""
    import torch
    from transformers import (
        CLIPImageProcessorPil,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = word_level_tokenizer(["<unk>", "<s>", "</s>", "<pad>", "<image>"], bos="<s>",
                                     eos="</s>", pad="<pad>", unk="<unk>", add_bos=True,
                                     extra_special=("<image>",))
    tokenizer.padding_side = "left"
    config = LlavaConfig(
        vision_config={"model_type": "clip_vision_model", **TINY_VISION,
                       "projection_dim": 32},
        text_config={"model_type": "llama", **TINY_TEXT, "vocab_size": len(tokenizer),
                     "max_position_embeddings": 128, "pad_token_id": tokenizer.pad_token_id,
                     "bos_token_id": tokenizer.bos_token_id,
                     "eos_token_id": tokenizer.eos_token_id},
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default", vision_feature_layer=-2,
        image_seq_length=16)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    image = CLIPImageProcessorPil(size={"shortest_edge": 32},
                                  crop_size={"height": 32, "width": 32})
    processor = LlavaProcessor(image_processor=image, tokenizer=tokenizer, patch_size=8,
                               vision_feature_select_strategy="default",
                               num_additional_image_tokens=1,
                               chat_template=LLAVA_CHAT_TEMPLATE)
    return _save(folder, model, processor)


def _qwen_tokenizer() -> Any:
    tokenizer = word_level_tokenizer(QWEN_SPECIALS + ["<unk>"], bos=None, eos="<|im_end|>",
                                     pad="<|endoftext|>", unk="<unk>", add_bos=False,
                                     extra_special=tuple(QWEN_SPECIALS))
    return tokenizer


def _qwen_processor(name: str, tokenizer: Any) -> Any:
    """Qwen2VLImageProcessor: 14-px patches merged 2 x 2, images resized to multiples of 28
    between min_pixels and max_pixels (a 32-px image becomes 56 x 56: 4 image tokens). Without
    torchvision the processor is built without its video processor, as the adapters load it."""
    import transformers
    from transformers import Qwen2VLImageProcessorPil
    from transformers.utils import is_torchvision_available

    from tasks.models.processors import image_only_class

    image = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=56 * 56 * 4,
                                     image_mean=CLIP_MEAN, image_std=CLIP_STD)
    if is_torchvision_available():
        from transformers import Qwen2VLVideoProcessor

        return getattr(transformers, name)(image_processor=image, tokenizer=tokenizer,
                                           video_processor=Qwen2VLVideoProcessor(),
                                           chat_template=QWEN2_VL_CHAT_TEMPLATE)
    return image_only_class(name)(image_processor=image, tokenizer=tokenizer,
                                  chat_template=QWEN2_VL_CHAT_TEMPLATE)


def _qwen_generation(model: Any, tokenizer: Any) -> None:
    """Qwen2-VL-Instruct's generation_config.json (sampling with top_k 1: greedy in effect,
    and a repetition penalty)."""
    generation = model.generation_config
    generation.eos_token_id = [tokenizer.convert_tokens_to_ids("<|im_end|>"),
                               tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    generation.pad_token_id = tokenizer.pad_token_id
    generation.bos_token_id = tokenizer.pad_token_id
    generation.do_sample, generation.top_k, generation.top_p = True, 1, 0.001
    generation.temperature, generation.repetition_penalty = 0.1, 1.05


def _qwen_ids(tokenizer: Any) -> dict[str, int]:
    ids = tokenizer.convert_tokens_to_ids
    return {"image_token_id": ids("<|image_pad|>"), "video_token_id": ids("<|video_pad|>"),
            "vision_start_token_id": ids("<|vision_start|>"),
            "vision_end_token_id": ids("<|vision_end|>")}


def _qwen_text(tokenizer: Any) -> dict[str, Any]:
    return {**TINY_TEXT, "vocab_size": len(tokenizer), "num_key_value_heads": 1,
            "max_position_embeddings": 256,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0,
                                "mrope_section": [2, 3, 3]},
            "bos_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id}


def build_qwen2_vl(folder: Path) -> Path:
    """Qwen2VLForConditionalGeneration (Qwen/Qwen2-VL-7B-Instruct, scaled down)."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    tokenizer = _qwen_tokenizer()
    config = Qwen2VLConfig(
        vision_config={"depth": 2, "embed_dim": 32, "hidden_size": 32, "num_heads": 2,
                       "mlp_ratio": 2, "patch_size": 14, "spatial_merge_size": 2,
                       "temporal_patch_size": 2, "initializer_range": INIT},
        text_config=_qwen_text(tokenizer), **_qwen_ids(tokenizer))
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(config)
    _qwen_generation(model, tokenizer)
    return _save(folder, model, _qwen_processor("Qwen2VLProcessor", tokenizer))


def build_qwen2_5_vl(folder: Path) -> Path:
    """Qwen2_5_VLForConditionalGeneration (Qwen/Qwen2.5-VL-7B-Instruct, scaled down)."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = _qwen_tokenizer()
    config = Qwen2_5_VLConfig(
        vision_config={"depth": 2, "hidden_size": 32, "out_hidden_size": 32,
                       "intermediate_size": 64, "num_heads": 2, "patch_size": 14,
                       "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 56,
                       "fullatt_block_indexes": [1], "initializer_range": INIT},
        text_config=_qwen_text(tokenizer), **_qwen_ids(tokenizer))
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config)
    _qwen_generation(model, tokenizer)
    return _save(folder, model, _qwen_processor("Qwen2_5_VLProcessor", tokenizer))


# The family x task-kind table of the generators (tests/models/families.py renders it).
HERE = "tests.models.zoo_generators"
SHORT = {"generation": {"max_new_tokens": 4}}  # a few tokens keep the end-to-end runs fast
NO_EMBEDDINGS = {kind: (NOT_APPLICABLE, GENERATOR_ONLY)
                 for kind in ("retrieval", "zero_shot_classification", "matching")}


def _generator(name: str, model_class: str, builder: str, **notes: tuple[str, str]) -> Family:
    """A family whose one checkpoint class captions and answers questions."""
    runs = {"captioning": Run("captioner", f"{HERE}:{builder}", SHORT),
            "vqa": Run("vqa", f"{HERE}:{builder}", SHORT)}
    return Family(name, model_class, runs, {**NO_EMBEDDINGS, **notes})


# BLIP's ITC embeddings (tasks/models/itc.py) are single vectors; BLIP-2's ITC is not.
BLIP_ITM = Run("itm", f"{HERE}:build_blip_itm")
BLIP2_ITC = (LIMITATION, "BLIP-2: retrieval and zero-shot rank by the cosine of one image and "
             "one text embedding; Blip2ForImageTextRetrieval's contrastive (ITC) similarity is a "
             "max over query tokens (the largest cosine of the text embedding with each of the "
             "32 Q-Former query-token embeddings), not a single-vector cosine, so no image "
             "embedding reproduces it (its ITM head runs matching)")


GENERATOR_FAMILIES: list[Family] = [
    Family("BLIP", "BlipForConditionalGeneration / BlipForQuestionAnswering / "
           "BlipForImageTextRetrieval",
           runs={"captioning": Run("captioner", f"{HERE}:build_blip", SHORT),
                 "vqa": Run("vqa", f"{HERE}:build_blip_vqa", SHORT),
                 "matching": BLIP_ITM, "retrieval": BLIP_ITM,
                 "zero_shot_classification": BLIP_ITM}),
    Family("BLIP-2 (OPT)", "Blip2ForConditionalGeneration / Blip2ForImageTextRetrieval",
           runs={"captioning": Run("captioner", f"{HERE}:build_blip2", SHORT),
                 "vqa": Run("vqa", f"{HERE}:build_blip2", SHORT),
                 "matching": Run("itm", f"{HERE}:build_blip2_itm")},
           notes={kind: BLIP2_ITC for kind in ("retrieval", "zero_shot_classification")}),
    _generator("BLIP-2 (Flan-T5)", "Blip2ForConditionalGeneration", "build_blip2_t5"),
    _generator("GIT", "GitForCausalLM", "build_git"),
    _generator("ViT-GPT2", "VisionEncoderDecoderModel", "build_vit_gpt2"),
    _generator("LLaVA", "LlavaForConditionalGeneration", "build_llava"),
    _generator("Qwen2-VL", "Qwen2VLForConditionalGeneration", "build_qwen2_vl"),
    _generator("Qwen2.5-VL", "Qwen2_5_VLForConditionalGeneration", "build_qwen2_5_vl"),
]

"""Tiny versions of users' own PyTorch models for the torch_module adapter.

``FusionClassifier`` follows the seed article: patch tokens of the image attend over BERT token
features (cross-attention), mean-pooled, a linear head gives (no match, match) logits.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig, BertModel


class FusionClassifier(nn.Module):
    def __init__(self, vocab_size: int = 17, dim: int = 32, image_size: int = 32,
                 patch_size: int = 8, heads: int = 2, layers: int = 2,
                 num_classes: int = 2) -> None:
        super().__init__()
        self.patches = nn.Conv2d(3, dim, patch_size, stride=patch_size)
        self.position = nn.Parameter(0.02 * torch.randn(1, (image_size // patch_size) ** 2, dim))
        self.text = BertModel(BertConfig(
            vocab_size=vocab_size, hidden_size=dim, num_hidden_layers=layers,
            num_attention_heads=heads, intermediate_size=2 * dim, max_position_embeddings=64,
        ), add_pooling_layer=False)
        self.fusion = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> torch.Tensor:
        image = self.patches(pixel_values).flatten(2).transpose(1, 2) + self.position
        text = self.text(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        fused, _ = self.fusion(image, text, text, key_padding_mask=attention_mask == 0,
                               need_weights=False)
        return self.head(self.norm(image + fused).mean(dim=1))


class ImageClassifier(nn.Module):
    """Image-only: forward(pixel_values) -> (B, num_classes) logits."""

    def __init__(self, num_classes: int = 4, dim: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, dim, 3, padding=1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(dim, num_classes)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixel_values))

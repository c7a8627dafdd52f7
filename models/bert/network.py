"""The network: a BERT encoder shared by a sentiment head and a casing-aware entity tagger."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TextAnalyzer"]


class TextAnalyzer(nn.Module):
    """``(input_ids, attention_mask, casing) -> (sentiment logits [B, S], tag logits [B, T, K])``.

    Sentiment reads the attention-masked mean of the encoder's last layer (how MiniLM was
    trained for sentence embeddings); the tagger reads each token's vector next to an embedding
    of its casing class, which the uncased encoder cannot see.
    """

    def __init__(self, encoder: nn.Module, *, n_sentiment: int, n_tags: int, casing_classes: int,
                 casing_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        self.casing = nn.Embedding(casing_classes, casing_dim)
        self.sentiment = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, n_sentiment))
        self.tagger = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden + casing_dim, hidden),
                                    nn.GELU(), nn.Linear(hidden, n_tags))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                casing: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        tags = self.tagger(torch.cat([hidden, self.casing(casing)], dim=-1))
        return self.sentiment(pooled), tags

"""The network: a BERT encoder shared by a sentiment head and a casing-aware entity tagger."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ContextTagger", "TextAnalyzer", "TokenTagger"]


class TokenTagger(nn.Module):
    """Tag logits from each token's encoder vector and its casing class alone (an MLP).

    Used while the encoder is fine-tuned (stage 1), where the encoder itself supplies context.
    """

    def __init__(self, hidden: int, *, n_tags: int, casing_classes: int, casing_dim: int,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.casing = nn.Embedding(casing_classes, casing_dim)
        self.mlp = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden + casing_dim, hidden), nn.GELU(),
                                 nn.Linear(hidden, n_tags))

    def forward(self, hidden: torch.Tensor, casing: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([hidden, self.casing(casing)], dim=-1))


class ContextTagger(nn.Module):
    """Tag logits from each token's encoder vector, its casing class and its neighbours'.

    The uncased encoder cannot see capitalisation, the strongest clue for names, and whether
    a capitalised word starts or continues a name depends on the words around it ("Home
    Depot", "in Berlin"). Residual 1-D convolutions over ``[vector, casing embedding]`` see
    ``layers * (kernel // 2)`` word pieces either side. Padding is zeroed after every layer, so
    a text's tags do not depend on the other texts in its batch.
    """

    def __init__(self, hidden: int, *, n_tags: int, casing_classes: int, casing_dim: int, width: int,
                 kernel: int, layers: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.casing = nn.Embedding(casing_classes, casing_dim)
        self.dropout = nn.Dropout(dropout)
        self.inp = nn.Linear(hidden + casing_dim, width)
        self.convs = nn.ModuleList(nn.Conv1d(width, width, kernel, padding=kernel // 2)
                                   for _ in range(layers))
        self.out = nn.Linear(width, n_tags)

    def forward(self, hidden: torch.Tensor, casing: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = torch.cat([hidden, self.casing(casing)], dim=-1)
        h = nn.functional.gelu(self.inp(self.dropout(x))) * mask
        for conv in self.convs:
            h = h + nn.functional.gelu(conv(h.transpose(1, 2)).transpose(1, 2)) * mask
        return self.out(self.dropout(h))


class TextAnalyzer(nn.Module):
    """``(input_ids, attention_mask, casing) -> (sentiment logits [B, S], tag logits [B, T, K])``.

    Sentiment reads the attention-masked mean of the encoder's last layer (how MiniLM was
    trained for sentence embeddings). The tagger is either ``mlp`` (a :class:`TokenTagger`,
    used while the encoder is fine-tuned) or ``context`` (a :class:`ContextTagger`, trained
    afterwards on the frozen encoder; what is served). Both see the casing classes, which the
    uncased encoder cannot.
    """

    def __init__(self, encoder: nn.Module, *, n_sentiment: int, n_tags: int, casing_classes: int,
                 casing_dim: int, tagger: str = "mlp", width: int = 192, kernel: int = 5, layers: int = 2,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        self.sentiment = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, n_sentiment))
        if tagger == "mlp":
            self.tagger = TokenTagger(hidden, n_tags=n_tags, casing_classes=casing_classes,
                                      casing_dim=casing_dim, dropout=dropout)
        elif tagger == "context":
            self.tagger = ContextTagger(hidden, n_tags=n_tags, casing_classes=casing_classes,
                                        casing_dim=casing_dim, width=width, kernel=kernel, layers=layers,
                                        dropout=dropout)
        else:
            raise ValueError(f"tagger must be 'mlp' or 'context', not {tagger!r}")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                casing: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.sentiment(pooled), self.tagger(hidden, casing, mask)

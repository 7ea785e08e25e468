"""The decoder-only causal transformer of Power et al. (pre-norm blocks, learned positions)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from grokking.config import RunConfig

SEQUENCE_LENGTH = 4  # [x, op, y, =]; the answer is predicted at the `=` position


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        batch, length, width = h.shape
        q, k, v = self.qkv(h).split(width, dim=2)
        q, k, v = (t.view(batch, length, self.n_heads, -1).transpose(1, 2) for t in (q, k, v))
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        return self.proj(out.transpose(1, 2).reshape(batch, length, width))


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model), nn.Dropout(dropout)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.drop(self.attn(self.ln1(h)))
        return h + self.mlp(self.ln2(h))


class Transformer(nn.Module):
    def __init__(self, vocab_size: int, n_classes: int, config: RunConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, config.d_model)
        self.position_embedding = nn.Embedding(SEQUENCE_LENGTH, config.d_model)
        self.blocks = nn.ModuleList(
            Block(config.d_model, config.n_heads, config.dropout) for _ in range(config.n_layers)
        )
        self.ln_f = nn.LayerNorm(config.d_model)
        self.unembed = nn.Linear(config.d_model, n_classes, bias=False)

    def forward_all(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits at every position, [batch, length, n_classes]."""
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        h = self.token_embedding(tokens) + self.position_embedding(positions)
        for block in self.blocks:
            h = block(h)
        return self.unembed(self.ln_f(h))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits of the answer, read at the last (`=`) position: [batch, n_classes]."""
        return self.forward_all(tokens)[:, -1]


def build_model(vocab_size: int, n_classes: int, config: RunConfig) -> Transformer:
    """The model for `config`, initialised from `config.seed` alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return Transformer(vocab_size, n_classes, config)


def weight_norm(model: nn.Module) -> float:
    """L2 norm of all parameters together (Omnigrok's lens on grokking)."""
    return torch.sqrt(sum(p.detach().float().pow(2).sum() for p in model.parameters())).item()

"""The answer-token loss: cross-entropy or StableMax, in float32 or float64.

StableMax (Prieto et al. 2025, "Grokking at the edge of numerical stability") replaces softmax's
exp with s(x) = x + 1 for x ≥ 0 and 1 / (1 − x) for x < 0, which grows linearly instead of
exponentially, so the loss of a memorized sample does not round to exactly zero (softmax
collapse) and its gradient does not vanish.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from grokking.config import RunConfig


def stablemax_log_probs(logits: torch.Tensor) -> torch.Tensor:
    s = torch.where(logits >= 0, logits + 1, 1 / (1 - logits.clamp(max=0)))
    return s.log() - s.sum(dim=-1, keepdim=True).log()


def per_sample_loss(logits: torch.Tensor, targets: torch.Tensor, config: RunConfig) -> torch.Tensor:
    """Loss of each example, [batch], computed in `config.loss_dtype`: of its answer (logits
    [batch, n_out], targets [batch]), or the mean over the tokens it scores (logits [batch, T, n_out],
    targets [batch, T]: the answer and the end token, as openai/grok)."""
    logits = logits.to(getattr(torch, config.loss_dtype or "float32"))
    log_probs = stablemax_log_probs(logits) if config.loss == "stablemax" else F.log_softmax(logits, dim=-1)
    losses = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return losses.mean(dim=-1) if losses.dim() > 1 else losses


def correct(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Whether each example is right, [batch]: its answer, or every token it scores."""
    right = logits.argmax(dim=-1) == targets
    return right.all(dim=-1) if right.dim() > 1 else right


def answer_loss(logits: torch.Tensor, targets: torch.Tensor, config: RunConfig) -> torch.Tensor:
    """Mean loss of the answers, the training objective."""
    return per_sample_loss(logits, targets, config).mean()

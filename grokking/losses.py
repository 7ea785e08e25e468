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

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def stablemax_log_probs(logits: torch.Tensor) -> torch.Tensor:
    s = torch.where(logits >= 0, logits + 1, 1 / (1 - logits.clamp(max=0)))
    return s.log() - s.sum(dim=-1, keepdim=True).log()


def per_sample_loss(logits: torch.Tensor, targets: torch.Tensor, config: RunConfig) -> torch.Tensor:
    """Loss of each answer, [batch], computed in `config.loss_dtype`."""
    logits = logits.to(DTYPES[config.loss_dtype])
    log_probs = stablemax_log_probs(logits) if config.loss == "stablemax" else F.log_softmax(logits, dim=-1)
    return -log_probs.gather(-1, targets[:, None]).squeeze(-1)


def answer_loss(logits: torch.Tensor, targets: torch.Tensor, config: RunConfig) -> torch.Tensor:
    """Mean loss of the answers, the training objective."""
    return per_sample_loss(logits, targets, config).mean()

"""Running mean / variance statistics that belong to the policy (observation normalisation, return scale).

The statistics are buffers of an ``nn.Module``, so they travel with the weights (to workers, into
``policy.safetensors``, into ``load_policy()`` and the HTTP act route) and are only ever changed by
``merge``: the learner folds in the moments each worker measured on its rollout. Evaluation and
inference never update them.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn


class Moments(NamedTuple):
    """Mean and (population) variance of ``count`` samples; what a worker sends with its rollout."""

    mean: np.ndarray
    var: np.ndarray
    count: float


def moments(x: np.ndarray, shape: tuple[int, ...]) -> Moments:
    """Moments over every leading axis of ``x``, whose trailing dims are ``shape``."""
    flat = np.asarray(x, dtype=np.float64).reshape(-1, *shape)
    return Moments(flat.mean(axis=0), flat.var(axis=0), float(len(flat)))


def combine(a: Moments, b: Moments) -> Moments:
    """Chan et al.'s parallel merge: exact moments of the union of the two sample sets."""
    count = a.count + b.count
    if count == 0:
        return a
    delta = b.mean - a.mean
    mean = a.mean + delta * b.count / count
    m2 = a.var * a.count + b.var * b.count + delta**2 * a.count * b.count / count
    return Moments(mean, m2 / count, count)


class RunningNorm(nn.Module):
    """(x − mean) / sqrt(var + eps), clipped to ±clip (SB3 VecNormalize's defaults: eps 1e-8, clip 10)."""

    def __init__(self, shape: tuple[int, ...], *, clip: float = 10.0, eps: float = 1e-8):
        super().__init__()
        self.shape = tuple(shape)
        self.clip = clip
        self.eps = eps
        self.register_buffer("mean", torch.zeros(self.shape))
        self.register_buffer("var", torch.ones(self.shape))
        self.register_buffer(
            "count", torch.tensor(1e-4)
        )  # a tiny prior count, as SB3: the first merge dominates

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp((x - self.mean) / torch.sqrt(self.var + self.eps), -self.clip, self.clip)

    def std(self) -> float:
        """sqrt(var + eps) of a scalar statistic (the return scale)."""
        return float(torch.sqrt(self.var + self.eps))

    def moments(self) -> Moments:
        return Moments(self.mean.double().cpu().numpy(), self.var.double().cpu().numpy(), float(self.count))

    @torch.no_grad()
    def merge(self, parts: list[Moments]) -> None:
        total = self.moments()
        for part in parts:
            total = combine(total, part)
        self.set(total)

    @torch.no_grad()
    def set(self, m: Moments) -> None:
        """Take these statistics as they are (a worker loading the ones its parameter server merged)."""
        # reshape: a scalar statistic may come back from a file as shape (1,)
        self.mean.copy_(torch.as_tensor(m.mean, dtype=self.mean.dtype).reshape(self.mean.shape))
        self.var.copy_(torch.as_tensor(m.var, dtype=self.var.dtype).reshape(self.var.shape))
        self.count.fill_(float(m.count))

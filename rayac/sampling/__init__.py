"""Sampling: the rollout workers of a run, remote or local, behind one ``WorkerGroup``."""

from rayac.sampling.group import WorkerGroup

__all__ = ["WorkerGroup"]

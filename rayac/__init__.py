"""rayac: actor-critic reinforcement learning (A2C, A3C, TD actor-critic) on Ray, served over HTTP."""

from rayac.checkpoint import InferencePolicy, load_checkpoint, load_policy
from rayac.config import Config, ConfigError, build_config
from rayac.runner import Runner, RunResult, train

__all__ = [
    "Config",
    "ConfigError",
    "InferencePolicy",
    "RunResult",
    "Runner",
    "build_config",
    "load_checkpoint",
    "load_policy",
    "train",
]
__version__ = "0.1.0"

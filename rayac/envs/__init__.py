"""Env pipelines: construction, spaces, and the training vector env (gymnasium or envpool).

Workers only ever see a ``TrainingEnv`` and a ``SpaceSpec``; algorithms never see which pipeline it is.
"""

from rayac.envs.core import (
    check_config_against_env,
    describe_env,
    make_env,
    make_training_env,
    make_vector_env,
)
from rayac.envs.spec import SpaceSpec, image_layout
from rayac.envs.vector import EnvStep, TrainingEnv

__all__ = [
    "EnvStep",
    "SpaceSpec",
    "TrainingEnv",
    "check_config_against_env",
    "describe_env",
    "image_layout",
    "make_env",
    "make_training_env",
    "make_vector_env",
]

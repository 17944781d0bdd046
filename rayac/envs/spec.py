"""SpaceSpec: a JSON description of the observation and action spaces (a policy loads with no env)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from rayac.config import ConfigError

MAX_CHANNELS = 16  # frame stacks of RGB frames still fit; a larger first/last dim is not a channel axis
MIN_IMAGE_SIDE = 36  # the Nature CNN's 8/4, 4/2, 3/1 convolutions need at least 36 pixels per side


def is_uint8_image_space(space: gym.spaces.Box) -> bool:
    """Only uint8 observations bounded 0..255 with three dims are images (float images are never /255)."""
    return (
        space.dtype == np.uint8
        and len(space.shape) == 3
        and bool(np.all(space.low == 0))
        and bool(np.all(space.high == 255))
    )


def image_layout(shape: tuple[int, ...]) -> str:
    """'chw' or 'hwc' for an image shape; ConfigError naming the shape when it is neither."""
    if len(shape) == 3:
        if shape[0] <= MAX_CHANNELS and shape[0] < min(shape[1:]):
            layout, spatial = "chw", shape[1:]
        elif shape[2] <= MAX_CHANNELS and shape[2] < min(shape[:2]):
            layout, spatial = "hwc", shape[:2]
        else:
            layout, spatial = "", ()
        if layout and min(spatial) >= MIN_IMAGE_SIDE:
            return layout
    raise ConfigError(
        "env.id",
        f"image observations of shape {tuple(shape)} are not supported: the CNN needs (C, H, W) or (H, W, C) "
        f"with C <= {MAX_CHANNELS} channels and H, W >= {MIN_IMAGE_SIDE}",
    )


@dataclass(frozen=True)
class SpaceSpec:
    """A JSON-serialisable description of the observation and action spaces (no pickle, no env needed)."""

    obs_shape: tuple[int, ...]
    obs_dtype: str
    obs_low: list[Any] | None
    obs_high: list[Any] | None
    action_kind: str  # "discrete" | "box"
    action_n: int | None
    action_shape: tuple[int, ...]
    action_low: list[Any] | None
    action_high: list[Any] | None
    # uint8 bounded 0..255 with three dims: the CNN scales it by 1/255. None (a spec written by hand, or
    # before the field existed): decided from the dtype, the shape and the bounds when they are recorded.
    obs_image: bool | None = field(default=None)

    def __post_init__(self) -> None:
        if self.obs_image is None:
            bounded = self.obs_low is None or (
                np.all(np.asarray(self.obs_low) == 0) and np.all(np.asarray(self.obs_high) == 255)
            )
            image = self.obs_dtype == "uint8" and len(self.obs_shape) == 3 and bool(bounded)
            object.__setattr__(self, "obs_image", image)

    @classmethod
    def from_spaces(cls, obs_space: gym.Space, action_space: gym.Space) -> SpaceSpec:
        if not isinstance(obs_space, gym.spaces.Box):
            raise ConfigError("env.id", f"observation space {obs_space} is not supported (need a Box)")
        if isinstance(action_space, gym.spaces.Discrete):
            kind, n, shape, low, high = "discrete", int(action_space.n), (), None, None
        elif isinstance(action_space, gym.spaces.Box):
            kind, n, shape = "box", None, tuple(int(d) for d in action_space.shape)
            low, high = action_space.low.tolist(), action_space.high.tolist()
        else:
            raise ConfigError(
                "env.id", f"action space {action_space} is not supported (need Discrete or Box)"
            )
        small = obs_space.low.size <= 4096
        return cls(
            obs_shape=tuple(int(d) for d in obs_space.shape),
            obs_dtype=str(obs_space.dtype),
            obs_low=obs_space.low.tolist() if small else None,
            obs_high=obs_space.high.tolist() if small else None,
            action_kind=kind,
            action_n=n,
            action_shape=shape,
            action_low=low,
            action_high=high,
            obs_image=is_uint8_image_space(obs_space),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpaceSpec:
        data = dict(data)
        data["obs_shape"] = tuple(data["obs_shape"])
        data["action_shape"] = tuple(data["action_shape"])
        return cls(**data)

    @property
    def discrete(self) -> bool:
        return self.action_kind == "discrete"

    @property
    def is_image(self) -> bool:
        return bool(self.obs_image)

    def clip_actions(self, actions: np.ndarray) -> np.ndarray:
        if self.discrete:
            return actions
        return np.clip(actions, np.asarray(self.action_low), np.asarray(self.action_high))

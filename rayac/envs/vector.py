"""The training vector env: one interface over gymnasium's and envpool's engines.

Engines differ in when they reset a finished episode:
- gymnasium (SAME_STEP autoreset): the step that ends an episode already returns the next episode's first
  observation; the true final observation is in ``info["final_obs"]``.
- envpool (NEXT_STEP autoreset): the step that ends an episode returns its final observation; the *next*
  step ignores its action and only resets (reward 0, not done). That step is no transition: ``valid`` is
  False there, so the worker masks it out of the loss and out of the env-step counts.

On top of either engine it applies the training-only Atari transforms — a lost life ends the learner's
episode (terminated: no bootstrap, but the game goes on), rewards clipped to their sign — while keeping
the raw game score and length of every finished game for the metrics.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from rayac.config import ConfigError, EnvConfig
from rayac.envs.atari import envpool_kwargs, sign_rewards

FIRE = (
    1  # the action that serves the ball in games that need it (``atari.needs_fire``: meanings[1] == "FIRE")
)

# envs whose state lives in a simulator that pickling does not capture
SIMULATOR_MODULES = ("ale_py", "gymnasium.envs.mujoco", "gymnasium.envs.box2d", "mujoco", "Box2D")


class EnvStep(NamedTuple):
    """One step of N envs (N = num_envs).

    obs            (N, *obs)   the observation to act on next
    rewards        (N,) f32    training reward (clipped for Atari; 0 where not valid)
    terminated     (N,) bool   the learner's episode ended in a terminal state (or a life was lost)
    truncated      (N,) bool   cut by a time limit: bootstrap from V(final_obs)
    final_obs      (N, *obs) | None   the true last observation where truncated (None if no env truncated)
    valid          (N,) bool   False for an envpool reset step and for a FIRE pressed after a lost life:
                               no transition, no policy decision
    stepped        (N,) bool   the game advanced (a forced FIRE did, a reset step did not): the env steps
    game_over      (N,) bool   a whole game ended (not only a life): game_return / game_length are set
    game_return    (N,) f64    raw score of the game that ended
    game_length    (N,) i64    its length in agent steps
    """

    obs: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    final_obs: np.ndarray | None
    valid: np.ndarray
    stepped: np.ndarray
    game_over: np.ndarray
    game_return: np.ndarray
    game_length: np.ndarray


class TrainingEnv:
    """Wraps an engine (gymnasium vector env or envpool) with ``next_step_reset`` saying which autoreset it uses."""

    def __init__(self, engine: Any, *, next_step_reset: bool, life_loss: bool = False, clip_rewards: bool = False,
                 fire_after_life_loss: bool = False):  # fmt: skip
        """``fire_after_life_loss`` (envpool, games that serve on FIRE): the step after a lost life presses FIRE
        whatever the policy chose, as gymnasium's pipeline does inside its step (``FireOnReset``); that step is no
        policy decision, so it is masked out of the loss like a reset step, but the game did advance."""
        self.engine = engine
        self.fire_after_life_loss = fire_after_life_loss
        self.num_envs = int(engine.num_envs) if hasattr(engine, "num_envs") else len(engine.all_env_ids)
        self.next_step_reset = next_step_reset
        self.life_loss = life_loss
        self.clip_rewards = clip_rewards
        n = self.num_envs
        self._pending_reset = np.zeros(n, dtype=bool)
        self._pending_fire = np.zeros(n, dtype=bool)
        self._lives: np.ndarray | None = None
        self._return = np.zeros(n, dtype=np.float64)
        self._length = np.zeros(n, dtype=np.int64)

    def reset(self, seed: list[int] | None = None) -> np.ndarray:
        # envpool takes its seeds when it is made; a gymnasium vector env takes one per env here
        obs, info = self.engine.reset() if self.next_step_reset else self.engine.reset(seed=seed)
        self._pending_reset[:] = False
        self._pending_fire[:] = False
        self._lives = np.asarray(info["lives"]).copy() if "lives" in info else None
        self._return[:] = 0
        self._length[:] = 0
        return obs

    def step(self, actions: np.ndarray) -> EnvStep:
        fire = self._pending_fire
        if fire.any():
            actions = np.where(fire, FIRE, actions)
        obs, raw, term, trunc, info = self.engine.step(actions)
        raw = np.asarray(raw, dtype=np.float64)
        term, trunc = np.asarray(term, dtype=bool), np.asarray(trunc, dtype=bool)
        stepped = ~self._pending_reset
        valid = stepped & ~fire
        engine_done = (term | trunc) & stepped
        lives = np.asarray(info["lives"]) if "lives" in info else None
        lives_dropped = np.zeros_like(valid)
        if lives is not None and self._lives is not None:
            # a game-over step's lives are the new game's (SAME_STEP), so only live games count here
            lives_dropped = (lives < self._lives) & stepped & ~engine_done
        life_lost = lives_dropped if self.life_loss else np.zeros_like(valid)
        self._pending_fire = lives_dropped & self.fire_after_life_loss
        terminated = (term & valid) | life_lost
        truncated = trunc & valid & ~terminated
        rewards = sign_rewards(raw) if self.clip_rewards else raw.astype(np.float32)
        rewards = np.where(valid, rewards, 0.0).astype(np.float32)

        self._return += np.where(stepped, raw, 0.0)  # the raw score counts a forced FIRE's points too
        self._length += stepped
        game_return, game_length = self._return.copy(), self._length.copy()
        self._return[engine_done] = 0
        self._length[engine_done] = 0

        final_obs = None
        if truncated.any():
            if self.next_step_reset:
                final_obs = obs  # NEXT_STEP: the returned observation is the final one
            else:
                final_obs = np.array(obs, copy=True)
                for i in np.flatnonzero(truncated):
                    final_obs[i] = info["final_obs"][i]
        if self.next_step_reset:
            self._pending_reset = engine_done
        self._lives = None if lives is None else lives.copy()
        return EnvStep(obs, rewards, terminated, truncated, final_obs, valid, stepped, engine_done, game_return,
                       game_length)  # fmt: skip

    def state_is_picklable(self) -> bool:
        """Whether pickling this env captures all of its state, so a resumed run continues its episodes exactly.

        Not for envpool or async envs (the state is in C++ threads or other processes), nor for envs that keep
        their state in a simulator: ALE and MuJoCo pickle but come back re-initialised, Box2D does not pickle.
        Other envs (classic control, toy text, a user's pure-Python env) pickle whole."""
        envs = getattr(self.engine, "envs", None)
        if self.next_step_reset or envs is None:
            return False
        return not any(type(e.unwrapped).__module__.startswith(SIMULATOR_MODULES) for e in envs)

    def close(self) -> None:
        self.engine.close()


def envpool_task_id(env_id: str) -> str:
    return env_id.removeprefix("ALE/")


def make_envpool(cfg: EnvConfig, *, num_envs: int, seed: int, atari: bool) -> Any:
    try:
        import envpool
    except ImportError:
        raise ConfigError(
            "env.backend", "'envpool' needs the envpool extra: pip install 'rayac[envpool]'"
        ) from None
    task = envpool_task_id(cfg.id)
    if task not in envpool.list_all_envs():
        raise ConfigError("env.backend", f"envpool has no env '{task}' (from env.id '{cfg.id}')")
    kwargs: dict[str, Any] = envpool_kwargs(cfg) if atari else dict(cfg.kwargs)
    if cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = cfg.max_episode_steps
    try:
        return envpool.make(task, env_type="gymnasium", num_envs=num_envs, seed=seed, **kwargs)
    except Exception as err:  # envpool raises plain errors for unknown options
        raise ConfigError("env.kwargs", f"envpool cannot make '{task}': {err}") from None

"""Optional env dependencies: which rayac extra an env needs, and one clear line when it is missing."""

from __future__ import annotations

import gymnasium as gym

# entry-point fragment → the rayac extra that installs it
_EXTRAS = {"ale_py": "atari", "mujoco": "mujoco", "box2d": "box2d"}


def missing_extra_message(env_id: str, extra: str) -> str:
    return f"'{env_id}' needs the {extra} extra: pip install 'rayac[{extra}]'"


def register_atari() -> None:
    """Register the ALE/* ids with gymnasium (ale-py ships its ROMs); ValueError names the extra if missing."""
    try:
        import ale_py
    except ImportError:
        raise ValueError(missing_extra_message("ALE/*", "atari")) from None
    # errors only: its "A.L.E: Arcade Learning Environment (version …) [Powered by Stella]" banner, once per env
    # and worker, came after a run's summary as Ray worker log lines
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    gym.register_envs(ale_py)


def extra_for(env_id: str) -> str | None:
    """The extra an env id's entry point needs, or None for envs gymnasium runs on its own."""
    spec = gym.registry.get(env_id)
    entry = str(spec.entry_point) if spec is not None else ""
    if env_id.startswith("ALE/"):
        return "atari"
    return next((extra for key, extra in _EXTRAS.items() if key in entry), None)

"""Validation never touches the filesystem: env kwargs that name a path are refused.

A job's ``env.kwargs`` go to the env's constructor, and validating a job builds its env once to read its spaces.
A kwarg that names a file (MuJoCo's ``xml_file``, a dataset, a recording dir) would make the service open it on
behalf of any caller: tell them which files exist, or hang a worker thread on a FIFO. So a kwarg whose name or
value looks like a path is refused, unless the env's own module is in RAYAC_ALLOWED_ENV_MODULES (an operator who
lists a module trusts its code, and so its files).
"""

from __future__ import annotations

from typing import Any

from rayac.config import ConfigError

PATH_WORDS = frozenset({"file", "filename", "filepath", "path", "dir", "dirname", "folder", "xml", "root"})


def looks_like_path(value: str) -> bool:
    return (
        "/" in value
        or "\\" in value
        or value.startswith((".", "~"))
        or value.endswith((".xml", ".urdf", ".mjcf", ".json", ".yaml", ".npz", ".pkl", ".h5"))
    )


def _path_like(key: str, value: Any) -> str | None:
    """The dotted key of the first path-like entry under ``key`` (None: none)."""
    if isinstance(value, str):
        if looks_like_path(value) or PATH_WORDS & set(key.rsplit(".", 1)[-1].lower().split("_")):
            return key
    elif isinstance(value, dict):
        for k, v in value.items():
            found = _path_like(f"{key}.{k}", v)
            if found:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = _path_like(f"{key}.{i}", v)
            if found:
                return found
    return None


def env_module(env_id: str) -> str | None:
    """The module that defines ``env_id`` (its entry point's, or the ``module:`` prefix), if gymnasium knows."""
    if ":" in env_id:
        return env_id.split(":", 1)[0]
    import gymnasium as gym

    try:
        entry = gym.spec(env_id).entry_point
    except Exception:
        return None
    return entry.split(":", 1)[0] if isinstance(entry, str) else getattr(entry, "__module__", None)


def check_env_kwargs(env_id: str, kwargs: dict[str, Any], allowed_modules: list[str]) -> None:
    """Raises ConfigError naming the first path-like kwarg, unless the env's module (or a package above it) is
    allowed."""
    found = next(
        (k for k in (_path_like(f"config.env.kwargs.{name}", v) for name, v in kwargs.items()) if k), None
    )
    if found is None:
        return
    module = env_module(env_id) or ""
    if any(module == m or module.startswith(f"{m}.") for m in allowed_modules):
        return
    raise ConfigError(found, "looks like a filesystem path; the service opens no file a job names (an env whose "
                      f"module '{module or env_id}' is in RAYAC_ALLOWED_ENV_MODULES may)")  # fmt: skip

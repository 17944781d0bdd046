"""Checkpoints: one directory each, written to a temp dir and renamed, so a crash never leaves half of one.

ckpt_000123456/
  policy.safetensors   weights (no pickle)
  optimizer.pt         optimiser state (loaded with weights_only=True)
  config.json          the full Config
  spaces.json          observation / action spaces (a policy loads with no env)
  state.json           counters, version, seeds, RNG state, the episode window
  sampler.pkl          the rollout workers' envs, observations and action generators (exact resume; a
                       pickle, read only by --resume of this run: load_policy and the service never open it)
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rayac.config import Config, ConfigError
from rayac.envs import SpaceSpec
from rayac.policy import ActorCritic, build_policy

CKPT_PREFIX = "ckpt_"
BYTES_DTYPES = ("uint8", "float32", "float64")  # what raw observation bytes (the act route's b64) may hold


def why_unwritable(path: Path, err: OSError) -> str:
    """Why ``path`` could not be written or created, for a user: ``a/b is a file, not a directory`` when one of
    its parents is a file; else what the OS said (``Permission denied``, ``No space left on device``)."""
    for parent in Path(path).parents:
        if parent.exists():
            if not parent.is_dir():
                return f"{parent} is a file, not a directory"
            break
    return err.strerror or str(err)


def check_fresh_dir(path: Path, *, field: str, kind: str, markers: tuple[str, ...]) -> None:
    """``path`` can take a new ``kind`` (run, sweep): it is not there, or an empty directory. Else a ConfigError
    naming ``field``: a file; a directory holding a ``kind`` (one of ``markers`` is in it: ``--resume`` it); a
    directory holding anything else (nothing to resume there)."""
    if path.exists() and not path.is_dir():
        raise ConfigError(field, f"{path} is a file, not a directory")
    if path.exists() and any(path.iterdir()):
        if any((path / name).exists() for name in markers):
            raise ConfigError(field, f"{path} already holds a {kind}; use --resume or another directory")
        raise ConfigError(field, f"{path} is not empty and holds no {kind}; name a new or empty directory")


def make_dir(path: Path, *, field: str) -> None:
    """``mkdir -p path``, or a ConfigError naming ``field`` and why it cannot be made."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(field, f"cannot create {path}: {why_unwritable(path, err)}") from None


def atomic_write_file(output: Path, write: Callable[[Path], Any]) -> None:
    """``write(tmp_path)`` (a writer that takes a path: an exporter, ``savefig``), then rename over ``output``: a
    reader never sees half a file, and a failed write leaves no temp file."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str, *, mode: int | None = None) -> None:
    """``path`` holds ``text`` whole, or is as it was: a failed write (a full disk) leaves no temp file.
    ``mode`` (e.g. 0o600 for a secret): the file has it from its first byte, never a moment world-readable."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        with open(os.open(tmp, flags, 0o666 if mode is None else mode), "w") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)  # whatever the umask
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def rng_state() -> dict[str, str]:
    return {"torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()}


def restore_rng_state(state: dict[str, str]) -> None:
    if "torch" in state:
        raw = np.frombuffer(base64.b64decode(state["torch"]), dtype=np.uint8).copy()
        torch.set_rng_state(torch.from_numpy(raw))


def save_checkpoint(
    directory: Path,
    *,
    weights: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any] | None,
    cfg: Config,
    spec: SpaceSpec,
    state: dict[str, Any],
    sampler: list[bytes | None] | None = None,
) -> Path:
    """Write a checkpoint to ``directory`` atomically (temp dir in the same parent, then rename)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".tmp-{directory.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(tmp / "policy.safetensors")
        )
        if optimizer_state is not None:
            torch.save(optimizer_state, tmp / "optimizer.pt")
        (tmp / "config.json").write_text(cfg.model_dump_json(indent=2))
        (tmp / "spaces.json").write_text(json.dumps(spec.to_dict(), indent=2))
        (tmp / "state.json").write_text(json.dumps(state, indent=2, default=float))
        if sampler:
            (tmp / "sampler.pkl").write_bytes(pickle.dumps(sampler))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if directory.exists():  # same name again (e.g. a final checkpoint at a periodic step): swap
            trash = directory.parent / f".old-{directory.name}-{uuid.uuid4().hex[:8]}"
            os.rename(directory, trash)
            os.rename(tmp, directory)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(CKPT_PREFIX)
                  and (p / "state.json").is_file())  # fmt: skip


def latest_checkpoint(run_dir: Path) -> Path | None:
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1] if dirs else None


def checkpoint_eval_return(ckpt_dir: Path) -> float | None:
    """The greedy evaluation return of this checkpoint's own weights; None when they were not evaluated (a
    periodic checkpoint after an evaluation carries that evaluation's return along, for a resume)."""
    try:
        state = json.loads((ckpt_dir / "state.json").read_text())
    except (OSError, ValueError):  # pruned meanwhile, or unreadable
        return None
    value = state.get("eval_return")
    if value is None or state.get("eval_env_steps", state.get("env_steps")) != state.get("env_steps"):
        return None  # (checkpoints written before eval_env_steps was recorded count as evaluated)
    return float(value)


def best_checkpoint(dirs: list[Path]) -> Path | None:
    """The checkpoint whose own weights had the highest greedy evaluation return (the latest of equals)."""
    scored = [(value, d.name, d) for d in dirs if (value := checkpoint_eval_return(d)) is not None]
    return max(scored)[2] if scored else None


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Keep the ``keep`` newest checkpoints, and the best-evaluated one besides them."""
    dirs = checkpoint_dirs(run_dir)
    best = best_checkpoint(dirs)  # the latest of equals: one of the newest, where they tie
    # renamed away first, so a reader sees a checkpoint whole or not at all (never half deleted by rmtree)
    for old in (d for d in dirs[:-keep] if d != best):
        trash = old.parent / f".old-{old.name}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(old, trash)
        except OSError:
            continue
        shutil.rmtree(trash, ignore_errors=True)


class NoSuchCheckpoint(FileNotFoundError):
    """The run has checkpoints, but none that the choice (``best``, a step) names."""


def parse_checkpoint_choice(value: str | int) -> str | int:
    """``best``, ``latest`` or an env-step count (``STEP``); ValueError naming what is accepted."""
    if isinstance(value, int) and not isinstance(value, bool):
        step = value
    elif isinstance(value, str) and value in ("best", "latest"):
        return value
    elif isinstance(value, str) and value.strip().isdigit():
        step = int(value)
    else:
        raise ValueError(
            f"must be 'best', 'latest' or an env-step count (a checkpoint's step), got {value!r}"
        )
    if step < 0:
        raise ValueError(f"an env-step count must be >= 0, got {step}")
    return step


def select_checkpoint(run_dir: str | Path, choice: str | int = "latest", *, label: str | None = None) -> Path:
    """The checkpoint of a run that ``choice`` names: ``latest``; ``best``, the kept checkpoint whose state
    records the highest greedy evaluation return (the latest of equals); or a step, ``ckpt_<STEP>``.

    ValueError for a malformed choice; FileNotFoundError when the run has no checkpoint, NoSuchCheckpoint (naming
    what there is) when none matches. ``label`` names the run in messages (default: its path)."""
    choice = parse_checkpoint_choice(choice)
    dirs = checkpoint_dirs(Path(run_dir))
    if not dirs and label is None and not Path(run_dir).exists():  # a path typed by hand (a job's: not yet)
        raise FileNotFoundError(f"{run_dir} does not exist")
    label = label or str(run_dir)
    if not dirs:
        raise FileNotFoundError(f"no checkpoint in {label}")
    if choice == "latest":
        return dirs[-1]
    if choice == "best":
        best = best_checkpoint(dirs)
        if best is None:
            raise NoSuchCheckpoint(f"no checkpoint in {label} has an evaluation yet, so none is 'best'")
        return best
    for d in dirs:
        if d.name == f"{CKPT_PREFIX}{choice:012d}":
            return d
    steps = ", ".join(str(int(d.name[len(CKPT_PREFIX) :])) for d in dirs)
    raise NoSuchCheckpoint(f"no checkpoint at step {choice} in {label} (there are: {steps})")


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint dir, or a run dir (→ its latest checkpoint)."""
    path = Path(path)
    if (path / "policy.safetensors").is_file():
        return path
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (expected a run dir or a checkpoint dir)")
    latest = latest_checkpoint(path)
    if latest is None:
        raise FileNotFoundError(f"no checkpoint in {path} (expected a run dir or a checkpoint dir)")
    return latest


@dataclass
class Checkpoint:
    path: Path
    cfg: Config
    spec: SpaceSpec
    state: dict[str, Any]
    weights: dict[str, torch.Tensor]

    def optimizer_state(self) -> dict[str, Any] | None:
        f = self.path / "optimizer.pt"
        return torch.load(f, map_location="cpu", weights_only=True) if f.is_file() else None

    def sampler_state(self) -> list[bytes | None]:
        """The workers' sampling state (``Algorithm.sampler_state``); [] when the checkpoint has none."""
        f = self.path / "sampler.pkl"
        return pickle.loads(f.read_bytes()) if f.is_file() else []  # noqa: S301 - this run's own file

    def build_policy(self) -> ActorCritic:
        policy = build_policy(
            self.spec,
            self.cfg.model,
            estimator=self.cfg.algo.estimator,
            scale_rewards=self.cfg.algo.scale_rewards,
        )
        policy.load_state_dict(self.weights)
        return policy.eval()


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = resolve_checkpoint(path)
    cfg = Config.model_validate_json((path / "config.json").read_text())
    spec = SpaceSpec.from_dict(json.loads((path / "spaces.json").read_text()))
    state = json.loads((path / "state.json").read_text())
    return Checkpoint(path, cfg, spec, state, load_file(str(path / "policy.safetensors")))


def bytes_dtype(spec: SpaceSpec) -> str:
    """What raw observation bytes are read as by default: the dtype the policy advertises (its env's own: float64
    for MuJoCo, uint8 for images), where it is one of ``BYTES_DTYPES``, else float32."""
    if spec.is_image:
        return "uint8"
    return spec.obs_dtype if spec.obs_dtype in BYTES_DTYPES else "float32"


class InferencePolicy:
    """A trained policy for inference: numpy in, numpy out, CPU, no gradients.

    Observations are raw, as the env gives them: the policy's own normaliser (if it was trained with
    ``model.normalize_obs``) is part of the network, so ``act`` and the HTTP act route apply it alike.
    """

    def __init__(self, policy: ActorCritic, spec: SpaceSpec, cfg: Config, *, checkpoint: Path | None = None):
        self.policy = policy.eval()
        self.spec = spec
        self.cfg = cfg
        self.checkpoint = checkpoint

    @property
    def bytes_dtype(self) -> str:
        return bytes_dtype(self.spec)

    def observations_from_bytes(self, data: bytes, dtype: str | None = None) -> np.ndarray:
        """A batch from its raw bytes (C order, little-endian, ``dtype`` or else ``bytes_dtype``), then checked
        as ``check_observations`` does; raises ValueError naming the problem."""
        if dtype is not None and dtype not in BYTES_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(BYTES_DTYPES)}, got {dtype!r}")
        np_dtype = np.dtype(dtype or self.bytes_dtype).newbyteorder("<")
        size = int(np.prod(self.spec.obs_shape)) * np_dtype.itemsize
        if not data or len(data) % size:
            raise ValueError(
                f"{len(data)} bytes are not a whole number of observations of shape {self.spec.obs_shape} in "
                f"{np_dtype.name} ({size} bytes each)"
            )
        dtype = np_dtype
        return self.check_observations(
            np.frombuffer(data, dtype=dtype).reshape(-1, *self.spec.obs_shape).copy()
        )

    def check_observations(self, observations: Any) -> np.ndarray:
        """A float/uint batch of the right shape, all finite; raises ValueError naming the problem."""
        try:
            obs = np.asarray(observations)
        except (ValueError, TypeError):
            raise ValueError(
                "observations must be a rectangular batch of numbers (rows differ in length)"
            ) from None
        shape = self.spec.obs_shape
        if obs.dtype == object or not (np.issubdtype(obs.dtype, np.number) or obs.dtype == bool):
            raise ValueError("observations must be numbers")
        if obs.shape == shape:
            obs = obs[None]
        if obs.ndim != len(shape) + 1 or tuple(obs.shape[1:]) != shape:
            raise ValueError(
                f"observations must have shape (batch, {', '.join(map(str, shape))}); got {obs.shape}"
            )
        if obs.shape[0] == 0:
            raise ValueError("observations is an empty batch")
        if not self.spec.is_image:
            with np.errstate(over="ignore"):  # 1e39 → inf is refused below, not a RuntimeWarning in the log
                obs = obs.astype(np.float32, copy=False)
            if not np.all(np.isfinite(obs)):  # after the cast: 1e39 → inf
                raise ValueError("observations contain NaN, infinity or numbers beyond the float32 range")
            return obs
        # images stay uint8 to the CNN (which scales them by 1/255): JSON integers 0..255 are exact in uint8
        if obs.dtype != np.uint8:
            if obs.min() < 0 or obs.max() > 255 or not np.array_equal(obs, np.round(obs)):
                raise ValueError("observations are uint8 images: every value must be an integer in 0..255")
            obs = obs.astype(np.uint8)
        return obs

    @torch.inference_mode()
    def act(self, observations: Any, deterministic: bool = True) -> np.ndarray:
        obs = torch.as_tensor(self.check_observations(observations))
        return self.spec.clip_actions(self.policy.actions(obs, deterministic=deterministic).numpy())

    @torch.inference_mode()
    def values(self, observations: Any) -> np.ndarray:
        return self.policy.value(torch.as_tensor(self.check_observations(observations))).numpy()

    @torch.inference_mode()
    def action_probs(self, observations: Any) -> np.ndarray:
        if not self.spec.discrete:
            raise ValueError("action probabilities exist only for Discrete action spaces")
        return self.policy.action_probs(torch.as_tensor(self.check_observations(observations))).numpy()


def load_policy(path: str | Path) -> InferencePolicy:
    """Load a trained policy from a run dir (its latest checkpoint) or a checkpoint dir."""
    ckpt = load_checkpoint(path)
    return InferencePolicy(ckpt.build_policy(), ckpt.spec, ckpt.cfg, checkpoint=ckpt.path)

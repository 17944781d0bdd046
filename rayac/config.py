"""The one configuration schema: used by the CLI, the YAML presets and the REST API alike.

Every field has a description; it becomes ``rayac train --help`` and the OpenAPI docs.
Unknown keys are refused (``extra="forbid"``) so a typo in a preset fails loudly.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)


class ConfigError(ValueError):
    """A bad configuration value: ``field`` is the dotted path, ``message`` says what is wrong."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def __reduce__(self):  # copy and pickle by both arguments: Tune copies a trial's error, and failed on one
        return type(self), (self.field, self.message)


FLOAT32_MAX = 3.4028234663852886e38
MAX_FREE_FORM_VALUES = 1000  # dict/list fields such as env.kwargs: values counted through every level


def json_safety_problem(value: Any) -> str | None:
    """What keeps ``value`` from being stored and sent as JSON and used as float32, or None.

    Non-finite or float32-overflowing numbers, strings that are not valid Unicode (lone surrogates) and
    free-form containers of more than MAX_FREE_FORM_VALUES values are refused before anything is written. A
    problem inside a container names where: ``x[1]: must be a finite number``."""
    found = _unsafe(value, [MAX_FREE_FORM_VALUES])
    if found is None:
        return None
    path, problem = found
    return f"{path.lstrip('.')}: {problem}" if path else problem


def _unsafe(value: Any, budget: list[int]) -> tuple[str, str] | None:
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return "", "must be a finite number (NaN and Infinity are not allowed)"
        if abs(value) > FLOAT32_MAX:
            return "", f"{value:g} is beyond the float32 range (±{FLOAT32_MAX:.4g})"
    elif isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "", "is not valid Unicode (it contains a lone surrogate)"
    elif isinstance(value, dict | list | tuple):
        budget[0] -= len(value)
        if budget[0] < 0:
            return "", f"is too large: at most {MAX_FREE_FORM_VALUES} values in all"
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            where = f"[{key}]" if isinstance(value, list | tuple) else f".{key}"
            bad_key = _unsafe(key, budget) if isinstance(key, str) else None
            if bad_key:
                return "", f"a key {bad_key[1]}"
            found = _unsafe(item, budget)
            if found:
                return where + found[0], found[1]
    return None


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _bools_are_not_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """``true`` is no number and ``0`` no boolean (pydantic's lax mode would take either for the other)."""
        annotation = cls.model_fields[info.field_name].annotation
        accepted = set(get_args(annotation)) or {annotation}
        numbers = bool(accepted & {int, float})
        if isinstance(value, bool) and bool not in accepted and numbers:
            raise ValueError("must be a number, not a boolean")
        if (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and bool in accepted
            and not numbers
        ):
            raise ValueError("must be true or false, not a number")
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _json_safe(cls, value: Any) -> Any:
        problem = None if isinstance(value, BaseModel) else json_safety_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class EnvConfig(_Section):
    id: str = Field(
        "CartPole-v1", description="Gymnasium environment id (a registered id, or 'module:Name')."
    )
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for gymnasium.make.")
    num_envs: int = Field(8, ge=1, le=4096, description="Environments per rollout worker (one vector env).")
    num_envs_total: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="The environments of the whole run, split over the rollout workers: each of max(1, "
        "resources.num_workers) gets num_envs_total / workers (rounded up), and env.num_envs is set from it. The "
        "batch, and so the updates per env step, stay as with 0 workers: adding workers adds throughput without "
        "changing what is learned per sample. None: env.num_envs per worker.",
    )
    vectorization: Literal["sync", "async"] = Field(
        "sync", description="Vector env kind: 'sync' steps in-process, 'async' in subprocesses."
    )
    seed: int = Field(
        0, ge=0, description="Base seed: envs, action sampling and network init derive from it."
    )
    max_episode_steps: int | None = Field(None, ge=1, description="Override the env's time limit.")
    backend: Literal["gymnasium", "envpool"] = Field(
        "gymnasium",
        description="Engine of the training envs: gymnasium vector envs, or envpool (C++ threads; needs "
        "rayac[envpool]). Evaluation always runs the gymnasium pipeline, so scores compare across backends.",
    )
    atari: StrictBool | Literal["auto"] = Field(
        "auto",
        description="The Atari pipeline (no-op reset, frame skip, 84x84 grayscale, frame stack, fire on reset, "
        "life loss and reward clipping in training); 'auto': on for ALE/* ids.",
    )
    frame_stack: int = Field(4, ge=1, le=16, description="Atari: frames stacked into one observation.")
    frame_skip: int = Field(
        4, ge=1, le=16, description="Atari: frames each action repeats (max over the last two)."
    )
    noop_max: int = Field(30, ge=0, description="Atari: up to this many no-op actions after a reset.")
    terminal_on_life_loss: StrictBool = Field(
        True, description="Atari, training only: a lost life ends the episode for the learner (no bootstrap)."
    )
    clip_rewards: StrictBool = Field(
        True, description="Atari, training only: rewards clipped to their sign; metrics report the raw score."
    )

    @field_validator("id")
    @classmethod
    def _known_env(cls, value: str) -> str:
        import gymnasium as gym

        if ":" in value or value in gym.registry:
            return value
        if value.startswith("ALE/"):
            from rayac.envs.extras import register_atari

            register_atari()  # raises naming the extra to install when ale-py is missing
            if value in gym.registry:
                return value
        hint = _env_id_hint(value)
        raise ValueError(f"unknown env id '{value}'{hint}")

    @field_validator("atari", mode="before")
    @classmethod
    def _atari_choice(cls, value: Any) -> Any:
        if value is True or value is False or value == "auto":
            return value
        raise ValueError("must be true, false or 'auto' (on for ALE/* ids)")

    @property
    def is_atari(self) -> bool:
        return self.id.startswith("ALE/") if self.atari == "auto" else bool(self.atari)


def _env_id_hint(value: str) -> str:
    """`` (did you mean 'ALE/Pong-v5'?)``: the same name in a namespace (Atari's ids live under ALE/) before the
    nearest spelling, so ``Pong-v5`` is not sent to ``Ant-v5``."""
    import contextlib

    import gymnasium as gym

    if "/" not in value:
        from rayac.envs.extras import register_atari

        with contextlib.suppress(ValueError):  # ale-py missing: no ALE/* ids to suggest
            register_atari()
    same_name = [k for k in gym.registry if "/" in k and k.rsplit("/", 1)[1].lower() == value.lower()]
    close = same_name[:1] or difflib.get_close_matches(value, list(gym.registry), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class ModelConfig(_Section):
    architecture: Literal["separate", "shared"] = Field(
        "separate", description="'separate' actor and critic networks, or one 'shared' trunk with two heads."
    )
    hidden_sizes: list[int] = Field(
        default_factory=lambda: [64, 64],
        description="Hidden layer widths of the MLP (the actor's, if separate).",
    )
    critic_hidden_sizes: list[int] | None = Field(
        None, description="Hidden widths of the critic MLP when separate (default: same as hidden_sizes)."
    )
    activation: Literal["tanh", "relu", "elu"] = Field("tanh", description="Hidden-layer activation.")
    encoder: Literal["auto", "mlp", "cnn"] = Field(
        "auto",
        description="Observation encoder: 'cnn' (Nature CNN) for images, 'mlp' for vectors; auto picks.",
    )
    ortho_init: StrictBool = Field(
        True, description="Orthogonal initialisation (gain sqrt(2), 0.01 policy head, 1 value)."
    )
    log_std_init: float = Field(0.0, description="Initial log standard deviation of Gaussian (Box) actions.")
    encoder_dtype: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="What the encoder (the Nature CNN or the MLP trunk) computes in. 'bfloat16' runs it under "
        "autocast: weights, heads, losses and the optimiser stay float32, activations inside the trunk keep ~3 "
        "significant digits. ~1.6x faster Nature CNN learner on CPUs with AMX / AVX512-BF16 and on recent GPUs; "
        "slower on CPUs without bfloat16 support. Serving and evaluation compute as training did.",
    )
    normalize_obs: StrictBool = Field(
        False,
        description="Normalise observations by a running mean/variance (continuous control). The statistics "
        "are buffers of the policy: merged by the learner from every worker's rollouts, frozen in evaluation, "
        "saved with the checkpoint and applied by load_policy() and the HTTP act route.",
    )

    @field_validator("hidden_sizes", "critic_hidden_sizes")
    @classmethod
    def _positive_widths(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(w < 1 for w in value):
            raise ValueError("every hidden width must be >= 1")
        return value


class OptimConfig(_Section):
    name: Literal["adam", "rmsprop", "rmsprop_tf"] = Field(
        "adam",
        description="Optimiser: Adam; torch's RMSprop (eps outside the square root); or 'rmsprop_tf', RMSprop as "
        "in the A3C paper and TensorFlow (eps inside the square root, mean square starting at 1).",
    )
    lr: float = Field(
        7e-4, gt=0, le=1, description="Learning rate (of everything, unless actor_lr/critic_lr)."
    )
    actor_lr: float | None = Field(None, gt=0, le=1, description="Actor learning rate (separate nets only).")
    critic_lr: float | None = Field(
        None, gt=0, le=1, description="Critic learning rate (separate nets only)."
    )
    eps: float = Field(1e-5, gt=0, description="Optimiser epsilon.")
    lr_schedule: Literal["constant", "linear"] = Field(
        "constant",
        description="'linear' anneals every learning rate to 0 over run.stop.total_env_steps (RL-Zoo's lin_<lr>; A2C).",
    )
    rmsprop_alpha: float = Field(0.99, gt=0, lt=1, description="RMSprop smoothing constant.")


Estimator = Literal["mc", "nstep", "gae", "td", "q"]


class AlgoConfig(_Section):
    name: Literal["a2c", "a3c", "impala"] = Field(
        "a2c",
        description="Algorithm: synchronous A2C, asynchronous A3C (workers push gradients), or IMPALA "
        "(workers push trajectories; the learner corrects their lag with V-trace, which replaces the estimator).",
    )
    estimator: Estimator = Field(
        "gae",
        description=(
            "Policy weight: 'mc' whole-episode returns − V; 'nstep' n-step bootstrapped targets − V; "
            "'gae' GAE(λ); 'td' one-step TD error; 'q' a Q(s,a) critic trained on SARSA targets."
        ),
    )
    q_baseline: Literal["none", "expected"] = Field(
        "none",
        description="Estimator 'q': the policy weight is Q(s,a) ('none') or Q(s,a) − Σ_a' π(a'|s) Q(s,a') "
        "('expected': the expected-value baseline, same expected gradient, lower variance).",
    )
    gamma: float = Field(0.99, ge=0, lt=1, description="Discount factor, in [0, 1).")
    gae_lambda: float = Field(0.95, ge=0, le=1, description="GAE λ (estimator 'gae').")
    n_step: int | None = Field(
        None,
        ge=1,
        description="Horizon of 'nstep' targets; None bootstraps from the rollout's end (A3C paper).",
    )
    batch_mode: Literal["auto", "steps", "episodes"] = Field(
        "auto",
        description="'steps': fixed rollout_steps per env; 'episodes': one whole episode per env; auto: "
        "episodes for 'mc', steps otherwise.",
    )
    rollout_steps: int = Field(
        5, ge=1, le=100_000, description="Steps per env per update (A3C's update_interval / t_max)."
    )
    ent_coef: float = Field(0.0, ge=0, description="Entropy bonus coefficient β.")
    vf_coef: float = Field(0.5, ge=0, description="Value-loss coefficient.")
    max_grad_norm: float | None = Field(
        0.5, gt=0, description="Clip the global gradient norm (None: no clipping)."
    )
    normalize_advantages: StrictBool = Field(
        False, description="Normalise advantages to zero mean, unit std per batch."
    )
    scale_rewards: StrictBool = Field(
        False,
        description="Divide training rewards by the running std of the discounted return (as SB3's VecNormalize); "
        "episode returns and evaluation stay raw.",
    )
    max_staleness: int | None = Field(
        None,
        ge=0,
        description="A3C: each shard drops gradient slices more than this many of its versions old.",
    )
    ps_checkpoint_interval: int = Field(
        500,
        ge=0,
        description="A3C: every parameter-server shard checkpoints its slice every K of its updates, besides at "
        "its start and every ps_checkpoint_interval_s; a restarted shard comes back from its own last "
        "checkpoint (0: no update-count checkpoints).",
    )
    ps_checkpoint_interval_s: float | None = Field(
        30.0,
        gt=0,
        description="A3C: the parameter server also checkpoints every this many seconds (None: only by update "
        "count), so a restart early in a run loses at most this much time of updates.",
    )
    ps_shards: int | Literal["auto"] = Field(
        1,
        description="A3C: parameter-server actors, each owning a contiguous slice of the flat parameters and its "
        "optimiser state; a push goes to all of them in parallel. 'auto' sizes it from the model and the "
        "worker count (see README).",
    )
    push_pipelining: bool = Field(
        False,
        description="A3C: a worker samples and backprops its next rollout while its push is in flight (one more "
        "version of staleness).",
    )
    ps_transfer_dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32",
        description="A3C: dtype of the gradients and weights on the wire; the parameter server keeps float32.",
    )

    rho_bar: float = Field(
        1.0, gt=0, le=1e6, description="IMPALA: ρ̄, the clip of the V-trace importance weights in δ_t and the "
        "policy gradient (which value function is learnt: V^π for ρ̄ = ∞, V^μ near ρ̄ = 0)."
    )  # fmt: skip
    c_bar: float = Field(
        1.0, gt=0, le=1e6, description="IMPALA: c̄, the clip of the V-trace trace coefficients (how far back a "
        "correction reaches; the paper's c̄ = 1)."
    )  # fmt: skip
    vtrace_lambda: float = Field(
        1.0, ge=0, le=1, description="IMPALA: λ of V-trace's traces, c_t = λ·min(c̄, π/μ) (1: the paper's default)."
    )  # fmt: skip
    learner_batch_rollouts: int = Field(
        1, ge=1, le=1024, description="IMPALA: rollouts (one worker's num_envs × rollout_steps each) per update."
    )  # fmt: skip
    max_lag: int | None = Field(
        None, ge=0, description="IMPALA: drop (and count) rollouts sampled with weights more than this many "
        "versions behind the learner (None: keep every rollout; V-trace corrects the lag)."
    )  # fmt: skip
    rollout_queue_size: int = Field(
        4, ge=1, le=1024, description="IMPALA: sampled rollouts held for the learner at most; a worker whose "
        "rollout finds the queue full waits (backpressure, bounded memory)."
    )  # fmt: skip

    @field_validator("ps_shards", mode="before")
    @classmethod
    def _shards(cls, value: Any) -> int | str:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 64:
            raise ValueError("must be an integer between 1 and 64, or 'auto'")
        return value

    @property
    def episodic(self) -> bool:
        return self.batch_mode == "episodes" or (self.batch_mode == "auto" and self.estimator == "mc")

    @model_validator(mode="after")
    def _estimator_options(self) -> AlgoConfig:
        if self.estimator == "mc" and self.batch_mode == "steps":
            raise ConfigError(
                "algo.batch_mode", "the 'mc' estimator needs whole episodes: use 'episodes' or 'auto'"
            )
        if self.name == "impala" and self.estimator == "q":
            raise ConfigError(
                "algo.estimator", "'q' does not apply to impala (V-trace learns a state value V)"
            )
        if self.name == "impala" and self.episodic:
            raise ConfigError("algo.batch_mode", "impala samples fixed-length rollouts: use 'steps' (or 'auto' "
                              "with an estimator other than 'mc')")  # fmt: skip
        if self.q_baseline != "none" and self.estimator != "q":
            raise ConfigError("algo.q_baseline", "applies to the 'q' estimator only (set algo.estimator=q)")
        return self


class ResourcesConfig(_Section):
    num_workers: int = Field(
        0,
        description="Rollout worker actors on Ray; 0 runs everything in this process, no Ray; 'auto' is one per "
        "CPU of this machine (resolved when the config is read, and saved resolved).",
        json_schema_extra={"anyOf": [{"type": "integer", "minimum": 0, "maximum": 1024}, {"const": "auto"}]},
    )

    @field_validator("num_workers", mode="before")
    @classmethod
    def _workers(cls, value: Any) -> int:
        if value == "auto":
            return os.cpu_count() or 1
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError("must be an integer >= 0 or 'auto' (one per CPU)")
        try:
            count = int(value)
        except ValueError:
            raise ValueError("must be an integer >= 0 or 'auto' (one per CPU)") from None
        if not 0 <= count <= 1024:
            raise ValueError("must be between 0 and 1024 (or 'auto': one per CPU)")
        return count

    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto",
        description="Device of the learner / parameter server ('auto': a GPU when torch sees one); rollout "
        "workers always run their forward pass on the CPU with one torch thread.",
    )
    worker_cpus: float = Field(1.0, gt=0, description="CPUs Ray reserves for each rollout worker.")
    learner_cpus: float = Field(
        1.0,
        ge=0,
        description="CPUs Ray reserves for the A3C parameter server (split among its algo.ps_shards).",
    )
    learner_resources: dict[str, Annotated[float, Strict(), Field(ge=0)]] = Field(
        default_factory=dict,
        description="Custom Ray resources that place the learner: the A3C parameter server, or the A2C learner, "
        "which then runs as an actor (also with device=cuda) while the driver stays put and writes the run's files. "
        "E.g. {learner: 1} on a node started with --resources='{\"learner\": 1}'.",
    )
    learner_threads: int = Field(
        1,
        ge=1,
        le=256,
        description="torch CPU threads of the learner (small nets are fastest on 1; fixed for "
        "reproducibility: results differ in the last digits across thread counts).",
    )


class StopConfig(_Section):
    total_env_steps: int | None = Field(200_000, ge=1, description="Stop after this many env steps.")
    target_return: float | None = Field(
        None, description="Stop once the greedy evaluation mean reaches this."
    )
    time_limit_s: float | None = Field(None, gt=0, description="Stop after this many seconds of training.")

    @model_validator(mode="after")
    def _some_stop(self) -> StopConfig:
        if self.total_env_steps is None and self.time_limit_s is None:
            raise ConfigError("run.stop", "set total_env_steps or time_limit_s, or the run never ends")
        return self


class RunConfig(_Section):
    stop: StopConfig = Field(
        default_factory=StopConfig, description="When training ends (first condition met)."
    )
    eval_interval_steps: int = Field(
        10_000, ge=0, description="Greedy evaluation every K env steps (0: never)."
    )
    eval_interval_episodes: int = Field(
        0, ge=0, description="Greedy evaluation every K finished training episodes (0: never)."
    )
    eval_episodes: int = Field(10, ge=1, le=1000, description="Episodes per greedy evaluation.")
    checkpoint_interval_steps: int = Field(
        50_000, ge=0, description="Checkpoint every K env steps (0: only at the end)."
    )
    keep_checkpoints: int = Field(
        3,
        ge=1,
        description="How many of the newest checkpoints to keep; the best-evaluated one is kept besides "
        "them (a new best evaluation is checkpointed when it happens).",
    )
    run_dir: str | None = Field(None, description="Run directory (default: runs/<algo>-<env>-<time>).")
    metrics_interval_steps: int = Field(
        0, ge=0, description="Write a metrics record (metrics.jsonl, progress.csv, TensorBoard, the job's stream) "
        "every K env steps, not after every update: train/* are the last update's (A3C's a3c/* the last poll's; "
        "a3c/pushes_total and a3c/dropped_total count the whole run), time/sps is over the whole span; a key only a "
        "skipped update had (a3c/ps_rollback_updates) goes into the next record. Evaluations and the last update are "
        "always written. 0: one record per update. For million-step runs.",
    )  # fmt: skip
    log_interval_s: float = Field(5.0, gt=0, description="Seconds between console summary tables.")
    progress_bar: StrictBool = Field(True, description="Show a rich progress bar.")
    tensorboard: StrictBool = Field(True, description="Write TensorBoard event files to <run_dir>/tb.")
    wandb: StrictBool = Field(
        False, description="Log to Weights & Biases if wandb is installed (offline works)."
    )


class Config(_Section):
    env: EnvConfig = Field(default_factory=EnvConfig, description="The environment.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The actor-critic network.")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="The optimiser.")
    algo: AlgoConfig = Field(default_factory=AlgoConfig, description="The algorithm and its estimator.")
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig, description="Workers and devices.")
    run: RunConfig = Field(default_factory=RunConfig, description="Stop, evaluation, checkpoints, logging.")

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        if self.env.num_envs_total is not None:  # derived, not assigned: validate_assignment would recurse
            self.env.__dict__["num_envs"] = -(-self.env.num_envs_total // max(1, self.resources.num_workers))
        if self.model.architecture == "shared":
            for name in ("actor_lr", "critic_lr"):
                if getattr(self.optim, name) is not None:
                    raise ConfigError(
                        f"optim.{name}", "needs model.architecture=separate (a shared trunk has one lr)"
                    )
        if self.optim.lr_schedule == "linear":
            if self.run.stop.total_env_steps is None:
                raise ConfigError(
                    "optim.lr_schedule", "'linear' needs run.stop.total_env_steps to anneal over"
                )
            if self.algo.name == "a3c":
                raise ConfigError(
                    "optim.lr_schedule", "'linear' is not supported with algo.name=a3c yet (use a2c)"
                )
        return self


# ----------------------------------------------------------------------------- loading & overrides


def describe_error(
    e: dict[str, Any], *, skip: frozenset[str] = frozenset(), prefix: str = "", root: str = "config"
) -> tuple[str, str]:
    """(dotted field, message) of one pydantic error; a ConfigError raised in a validator names its own field
    (under ``prefix``). ``skip``: location parts that are not fields (an HTTP request's 'body', 'query' …)."""
    loc = ".".join(str(p) for p in e["loc"] if p not in skip)
    msg = e["msg"]
    ctx_err = (e.get("ctx") or {}).get("error")
    if isinstance(ctx_err, ConfigError):
        return prefix + ctx_err.field, ctx_err.message
    if msg.startswith(("Value error, ", "Assertion failed, ")):
        msg = msg.split(", ", 1)[1]
    if e["type"] == "extra_forbidden":
        msg = "unknown field" + _nearest_key_hint([str(p) for p in e["loc"] if p not in skip])
    return loc or root, msg


def config_keys(model: type[BaseModel] = None, prefix: str = "") -> list[str]:  # type: ignore[assignment]
    """Every dotted key of the config, sections and fields: ``algo``, ``algo.gamma``, ``run.stop.target_return``."""
    keys = []
    for name, field in (model or Config).model_fields.items():
        keys.append(prefix + name)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            keys += config_keys(field.annotation, f"{prefix}{name}.")
    return keys


# what other libraries (SB3, RLlib) call a field, for the hint on an unknown key
KEY_ALIASES = {
    "learning_rate": "optim.lr", "n_steps": "algo.rollout_steps", "n_envs": "env.num_envs",
    "total_timesteps": "run.stop.total_env_steps", "num_env_runners": "resources.num_workers",
    "num_envs_per_env_runner": "env.num_envs", "env_id": "env.id", "seed": "env.seed",
}  # fmt: skip


def _nearest_key_hint(loc: list[str]) -> str:
    """`` (did you mean 'algo.gamma'?)`` for an unknown ``algo.gama``; a leading non-config part (the REST body's
    ``config``) is kept in the suggestion."""
    lead = 1 if len(loc) > 1 and loc[0] not in Config.model_fields and loc[1] in Config.model_fields else 0
    key = ".".join(loc[lead:])
    keys = config_keys()
    # a key in the wrong section (run.total_env_steps) is matched on its last part too
    close = (
        difflib.get_close_matches(key, keys, n=1, cutoff=0.75)
        or [k for k in keys if k.rsplit(".", 1)[-1] == loc[-1] and k != key][:1]
        or ([KEY_ALIASES[loc[-1]]] if loc[-1] in KEY_ALIASES else [])
    )
    return f" (did you mean '{'.'.join([*loc[:lead], close[0]])}'?)" if close else ""


def format_validation_error(err: ValidationError) -> str:
    """All problems on one line, each naming its dotted field: ``algo.gamma: Input should be less than 1``."""
    return "; ".join(f"{loc}: {msg}" for loc, msg in map(describe_error, err.errors()))


def parse_config(data: dict[str, Any]) -> Config:
    """Validate a nested dict; raises ConfigError naming the first bad field."""
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(*describe_error(err.errors()[0])) from None


def parse_override(item: str) -> tuple[list[str], Any]:
    """``algo.gamma=0.9`` → (["algo", "gamma"], 0.9); the value is read as a YAML scalar or list."""
    if "=" not in item:
        raise ConfigError(item, "an override is KEY=VALUE, e.g. algo.gamma=0.9")
    key, raw = item.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(item, "empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError:
        value = raw
    return path, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    data = json.loads(json.dumps(data))  # deep copy of plain data
    for item in overrides:
        path, value = parse_override(item)
        if path == ["env", "num_envs"] and isinstance(data.get("env"), dict):
            data["env"].pop("num_envs_total", None)  # envs per worker asked for: no longer split from a total
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(".".join(path), f"'{part}' is not a section")
        node[path[-1]] = value
    return data


PRESETS_DIR = Path(__file__).parent / "presets"


def list_presets() -> dict[str, str]:
    """Preset name → the first sentence of its leading comment (which may run over several lines)."""
    out = {}
    for path in sorted(PRESETS_DIR.glob("*.yaml")):
        comment = []
        for line in path.read_text().splitlines():
            if not line.startswith("#"):
                break
            comment.append(line.lstrip("# ").strip())
        out[path.stem] = first_sentence(" ".join(comment))
    return out


def first_sentence(text: str) -> str:
    """Up to the first '.' that ends a sentence: followed by a space or the end, outside parentheses."""
    depth = 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if ch == "." and depth == 0 and (i + 1 == len(text) or text[i + 1] == " "):
            return text[: i + 1]
    return text


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's five-line report as one line: where, and what it expected."""
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{where}: {str(getattr(err, 'problem', None) or err).strip()}"


def load_preset(name_or_path: str) -> dict[str, Any]:
    path = Path(name_or_path)
    if not path.is_file():
        path = PRESETS_DIR / f"{name_or_path.removesuffix('.yaml')}.yaml"
    if not path.is_file():
        if name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path:  # meant as a file
            raise ConfigError("preset", f"{name_or_path} does not exist (a preset is a YAML file or a built-in "
                              "name: see `rayac presets`)")  # fmt: skip
        close = difflib.get_close_matches(name_or_path, list(list_presets()), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f"; known: {', '.join(list_presets())}"
        raise ConfigError("preset", f"no preset '{name_or_path}'{hint}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError("preset", f"{path} is not valid YAML{_yaml_problem(err)}") from None
    if not isinstance(data, dict):
        raise ConfigError("preset", f"{path} must hold a mapping of sections")
    # named here with the file: else "preset: unknown field" for a `preset:` key, read as --preset
    for key in data:
        if key not in Config.model_fields:
            hint = _nearest_key_hint([str(key)]) or f" (sections: {', '.join(Config.model_fields)})"
            extra = (f"; a file starts from the defaults, not from a preset: copy one from {PRESETS_DIR}/ "
                     "(e.g. a2c_cartpole.yaml) and edit it") if key == "preset" else ""  # fmt: skip
            raise ConfigError("preset", f"{path}: '{key}' is not a config section{hint}{extra}")
    return data


def build_config(
    *, preset: str | None = None, overrides: list[str] | None = None, base: dict[str, Any] | None = None
) -> Config:
    """Preset (or ``base``) + ``key=value`` overrides → a validated Config."""
    data = dict(base or {})
    if preset:
        data = load_preset(preset)
    data = apply_overrides(data, overrides or [])
    return parse_config(data)

"""Actor-critic networks. Passive modules: no optimiser, no env, no Ray.

``ActorCritic`` has an encoder (MLP for vectors, Nature CNN for images), shared by actor and critic
or duplicated for each, a Categorical or diagonal-Gaussian action head, and a critic head giving
V(s) — or Q(s, ·) when built with ``q_critic=True`` (the 'q' estimator).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from rayac.config import Estimator, ModelConfig
from rayac.envs import SpaceSpec, image_layout
from rayac.normalizer import RunningNorm

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}


def _init(layer: nn.Module, gain: float) -> nn.Module:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def mlp(in_dim: int, sizes: list[int], activation: str, *, ortho: bool) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    for width in sizes:
        linear = nn.Linear(in_dim, width)
        layers += [_init(linear, math.sqrt(2)) if ortho else linear, _ACTIVATIONS[activation]()]
        in_dim = width
    return nn.Sequential(*layers), in_dim


class NatureCNN(nn.Module):
    """The DQN/A3C Atari encoder; takes (B, H, W, C) or (B, C, H, W) uint8 images, scaled to [0, 1] here.

    Observations stay uint8 up to this layer (rollouts, Ray, the learner's device): 4x less to move.
    """

    def __init__(self, obs_shape: tuple[int, ...], out_dim: int = 512, *, ortho: bool = True) -> None:
        super().__init__()
        self.channels_last = image_layout(obs_shape) == "hwc"
        c = obs_shape[-1] if self.channels_last else obs_shape[0]
        convs = [
            nn.Conv2d(c, 32, 8, stride=4),
            nn.Conv2d(32, 64, 4, stride=2),
            nn.Conv2d(64, 64, 3, stride=1),
        ]
        layers: list[nn.Module] = []
        for conv in convs:  # the same orthogonal init (gain sqrt 2 for ReLU) as the MLP's hidden layers
            layers += [_init(conv, math.sqrt(2)) if ortho else conv, nn.ReLU()]
        self.conv = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            n_flat = self.conv(self._to_nchw(torch.zeros(1, *obs_shape))).shape[1]
        fc = nn.Linear(n_flat, out_dim)
        self.fc = nn.Sequential(_init(fc, math.sqrt(2)) if ortho else fc, nn.ReLU())
        self.out_dim = out_dim

    def _to_nchw(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2) if self.channels_last else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._to_nchw(x)
        if torch.is_grad_enabled() and x.device.type == "cpu":
            # oneDNN's convolution backward is ~1.3x faster on channels-last input (the learner's 80-frame batch:
            # 56 -> 42 ms on one thread); a rollout's small no-grad batches are not, so only training converts
            # (before scaling: a uint8 image is 4x fewer bytes to move)
            x = x.contiguous(memory_format=torch.channels_last)
        return self.fc(self.conv(x / 255.0))


class ActorCritic(nn.Module):
    def __init__(
        self, spec: SpaceSpec, cfg: ModelConfig, *, q_critic: bool = False, scale_rewards: bool = False
    ) -> None:
        """``cfg.normalize_obs`` adds ``obs_norm``; ``scale_rewards`` adds ``return_norm`` (the running return's
        variance, which workers divide training rewards by). Both are buffers: saved, loaded and sent with
        the weights, changed only by the learner's merge."""
        super().__init__()
        self.spec = spec
        self.q_critic = q_critic
        self.shared = cfg.architecture == "shared"
        use_cnn = cfg.encoder == "cnn" or (cfg.encoder == "auto" and spec.is_image)
        obs_dim = int(np.prod(spec.obs_shape))
        self.obs_norm = RunningNorm(spec.obs_shape) if cfg.normalize_obs else None
        self.bf16_encoder = cfg.encoder_dtype == "bfloat16"
        self.return_norm = RunningNorm(()) if scale_rewards else None

        def encoder(sizes: list[int]) -> tuple[nn.Module, int]:
            if use_cnn:
                cnn = NatureCNN(spec.obs_shape, ortho=cfg.ortho_init)
                return cnn, cnn.out_dim
            body, out = mlp(obs_dim, sizes, cfg.activation, ortho=cfg.ortho_init)
            return nn.Sequential(nn.Flatten(), body), out

        self.actor_body, actor_out = encoder(cfg.hidden_sizes)
        if self.shared:  # registered once, so the state_dict names each weight once
            self.critic_body, critic_out = None, actor_out
        else:
            self.critic_body, critic_out = encoder(cfg.critic_hidden_sizes or cfg.hidden_sizes)

        n_out = spec.action_n if spec.discrete else int(np.prod(spec.action_shape))
        self.policy_head = nn.Linear(actor_out, n_out)
        self.value_head = nn.Linear(critic_out, spec.action_n if q_critic else 1)
        if cfg.ortho_init:
            _init(self.policy_head, 0.01)
            _init(self.value_head, 1.0)
        self.log_std = None if spec.discrete else nn.Parameter(torch.full((n_out,), cfg.log_std_init))

    # -- parameter groups: the optimiser gives the critic its own lr when the nets are separate
    def actor_parameters(self) -> list[nn.Parameter]:
        params = list(self.actor_body.parameters()) + list(self.policy_head.parameters())
        return params + ([self.log_std] if self.log_std is not None else [])

    def critic_parameters(self) -> list[nn.Parameter]:
        body = [] if self.critic_body is None else list(self.critic_body.parameters())
        return body + list(self.value_head.parameters())

    def normalizers(self) -> dict[str, RunningNorm]:
        """The running statistics this policy carries, by buffer prefix (``obs_norm``, ``return_norm``)."""
        norms = {"obs_norm": self.obs_norm, "return_norm": self.return_norm}
        return {name: norm for name, norm in norms.items() if norm is not None}

    # -- core
    def _prep(self, obs: torch.Tensor) -> torch.Tensor:
        """Raw observations in (uint8 images, or floats), what the encoders read out."""
        if self.obs_norm is None and obs.dtype == torch.uint8 and isinstance(self.actor_body, NatureCNN):
            return (
                obs  # the CNN scales uint8 to [0, 1] itself, in one pass (the same floats as .float() / 255)
            )
        obs = obs.float()
        return obs if self.obs_norm is None else self.obs_norm(obs)

    def _encode(self, body: nn.Module, obs: torch.Tensor) -> torch.Tensor:
        """``body(obs)`` in float32, computed in bfloat16 under autocast when ``model.encoder_dtype`` says so."""
        if not self.bf16_encoder:
            return body(obs)
        with torch.autocast(obs.device.type, dtype=torch.bfloat16):
            return body(obs).float()

    def _features(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        obs = self._prep(obs)
        actor_x = self._encode(self.actor_body, obs)
        critic_x = actor_x if self.critic_body is None else self._encode(self.critic_body, obs)
        return actor_x, critic_x

    def _dist_params(self, actor_x: torch.Tensor) -> torch.Tensor:
        return self.policy_head(actor_x)

    def _log_prob_entropy(
        self, head: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.spec.discrete:
            log_p = F.log_softmax(head, dim=-1)
            log_prob = log_p.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
            entropy = -(log_p.exp() * log_p).sum(-1)
        else:
            std = self.log_std.exp()
            z = (actions.reshape(head.shape) - head) / std  # multi-dimensional Box actions are flat here
            log_prob = (-0.5 * z.pow(2) - self.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
            entropy = (0.5 + 0.5 * math.log(2 * math.pi) + self.log_std).sum().expand(head.shape[0])
        return log_prob, entropy

    def _state_value(self, head: torch.Tensor, critic_out: torch.Tensor) -> torch.Tensor:
        if not self.q_critic:
            return critic_out.squeeze(-1)
        # V(s) = Σ_a π(a|s) Q(s, a)
        return (F.softmax(head, dim=-1) * critic_out).sum(-1)

    def _critic(self, critic_x: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """V(s), or Q(s, a) of the given actions for a Q critic."""
        critic_out = self.value_head(critic_x)
        if self.q_critic:
            return critic_out.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
        return critic_out.squeeze(-1)

    def rollout_step(
        self, obs: torch.Tensor, *, deterministic: bool = False, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What a rollout records at each step: (actions, values, log_probs), actor and critic both run; values
        are Q(s,a) for a Q critic. ``actions`` is the actor alone, for evaluation and inference.

        ``generator`` makes sampling reproducible per worker, whatever process it runs in.
        """
        actor_x, critic_x = self._features(obs)
        head = self._dist_params(actor_x)
        actions = self._sample(head, deterministic, generator)
        log_prob, _ = self._log_prob_entropy(head, actions)
        return actions, self._critic(critic_x, actions), log_prob

    def actions(
        self, obs: torch.Tensor, *, deterministic: bool = True, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Actions only (the actor path): what inference and evaluation need, without log-probs or the critic."""
        return self._sample(
            self.policy_head(self._encode(self.actor_body, self._prep(obs))), deterministic, generator
        )

    def _sample(
        self, head: torch.Tensor, deterministic: bool, generator: torch.Generator | None
    ) -> torch.Tensor:
        if self.spec.discrete:
            if deterministic:
                return head.argmax(-1)
            # Gumbel-max: one categorical sample per row without torch.distributions overhead
            return (head - torch.empty_like(head).exponential_(generator=generator).log()).argmax(-1)
        shape = (head.shape[0], *self.spec.action_shape)  # the env's action shape, e.g. (2, 2)
        if deterministic:
            return head.reshape(shape)
        noise = torch.randn(head.shape, generator=generator, dtype=head.dtype, device=head.device)
        return (head + self.log_std.exp() * noise).reshape(shape)

    def evaluate_actions(
        self, obs: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log π(a|s), entropy, critic) for a batch; critic is V(s), or Q(s, a) for a Q critic."""
        actor_x, critic_x = self._features(obs)
        head = self._dist_params(actor_x)
        log_prob, entropy = self._log_prob_entropy(head, actions)
        return log_prob, entropy, self._critic(critic_x, actions)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(s) (for a Q critic: the policy-weighted mean of Q(s, ·))."""
        actor_x, critic_x = self._features(obs)
        return self._state_value(self._dist_params(actor_x), self.value_head(critic_x))

    def action_probs(self, obs: torch.Tensor) -> torch.Tensor:
        """π(·|s) of a discrete policy, (B, n_actions)."""
        actor_x, _ = self._features(obs)
        return F.softmax(self._dist_params(actor_x), dim=-1)


def build_policy(
    spec: SpaceSpec, model: ModelConfig, *, estimator: Estimator, scale_rewards: bool = False
) -> ActorCritic:
    return ActorCritic(spec, model, q_critic=estimator == "q", scale_rewards=scale_rewards)


def weights_to_numpy(policy: nn.Module) -> dict[str, np.ndarray]:
    """A state_dict as CPU numpy arrays: what crosses actor boundaries (zero-copy in Ray's object store)."""
    return {k: v.detach().cpu().numpy() for k, v in policy.state_dict().items()}


def load_numpy_weights(policy: nn.Module, weights: dict[str, np.ndarray]) -> None:
    policy.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in weights.items()})

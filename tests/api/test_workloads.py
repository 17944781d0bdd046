"""Real workloads through the service: an Atari job with Ray workers, and a MuJoCo policy with its normaliser."""

from __future__ import annotations

import base64
import subprocess
import sys

import numpy as np
import pytest
import torch

import rayac
from rayac.config import EnvConfig
from rayac.envs import make_env
from tests.api.conftest import follow

pytestmark = [pytest.mark.timeout(900)]


def test_pong_with_two_ray_workers_trains_checkpoints_evaluates_renders_and_serves(service, tmp_path):
    env = {"id": "ALE/Pong-v5", "num_envs": 4, "seed": 0, "kwargs": {"repeat_action_probability": 0.0},
           "max_episode_steps": 300}  # fmt: skip
    config = {
        "env": env,
        "model": {"architecture": "shared", "encoder": "cnn"},
        "optim": {"name": "rmsprop_tf", "lr": 0.0007},
        "algo": {"name": "a2c", "estimator": "nstep", "rollout_steps": 5, "ent_coef": 0.01, "vf_coef": 0.25},
        "resources": {"num_workers": 2},
        "run": {"stop": {"total_env_steps": 2000}, "eval_interval_steps": 0, "eval_episodes": 1,
                "checkpoint_interval_steps": 1000, "tensorboard": False},
    }  # fmt: skip
    with service.client() as c:
        resp = c.post("/v1/jobs", json={"name": "pong", "config": config})
        assert resp.status_code == 201, resp.text
        job = resp.json()
        events, final = follow(c, job["id"], timeout=600)
        assert final == {"status": "succeeded", "error": None}, c.get(f"/v1/jobs/{job['id']}/logs").text[
            -3000:
        ]
        records = [r for _, r in events]
        updates = [r for r in records if "train/loss" in r]
        assert len(updates) >= 2000 // 40 and all(np.isfinite(r["train/loss"]) for r in updates)
        assert records[-1]["time/env_steps"] >= 2000 and "eval/return_mean" in records[-1]
        assert -21 <= records[-1]["eval/return_mean"] <= 21  # a raw Pong score, not a clipped one
        info = c.get(f"/v1/jobs/{job['id']}").json()
        assert len(info["checkpoints"]) >= 2

        run_dir = f"{service.storage}/runs/{job['id']}"
        gif = tmp_path / "pong.gif"
        proc = subprocess.run([sys.executable, "-m", "rayac.cli", "evaluate", run_dir, "--episodes", "1",
                               "--gif", str(gif)], capture_output=True, text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert gif.stat().st_size > 10_000 and gif.read_bytes()[:6] == b"GIF89a"

        frames = make_env(EnvConfig(**env))
        obs, _ = frames.reset(seed=5)
        frames.close()
        assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
        resp = c.post(f"/v1/policies/{job['id']}/act",
                      json={"observations": [obs.tolist()], "deterministic": True, "return_values": True})  # fmt: skip
        assert resp.status_code == 200, resp.text
        local = rayac.load_policy(run_dir)
        assert resp.json()["actions"] == local.act(obs[None]).tolist()
        np.testing.assert_allclose(resp.json()["values"], local.values(obs[None]), rtol=1e-5)
        # the same frames as raw bytes: a batch of 3 stacks, 3 x 28,224 uint8
        batch = np.stack([obs, obs[::-1].copy(), 255 - obs])
        raw = c.post(f"/v1/policies/{job['id']}/act",
                     json={"observations_b64": base64.b64encode(batch.tobytes()).decode(), "return_values": True})  # fmt: skip
        assert raw.status_code == 200, raw.text
        assert raw.json()["actions"] == local.act(batch).tolist()
        np.testing.assert_allclose(raw.json()["values"], local.values(batch), rtol=1e-5)


def test_mujoco_served_action_equals_load_policy_on_raw_observations(service):
    config = {
        "env": {"id": "HalfCheetah-v5", "num_envs": 2, "seed": 0, "max_episode_steps": 100},
        "model": {"normalize_obs": True},
        "algo": {"name": "a2c", "rollout_steps": 5, "scale_rewards": True},
        "run": {"stop": {"total_env_steps": 1000}, "eval_interval_steps": 0, "eval_episodes": 1,
                "tensorboard": False},
    }  # fmt: skip
    with service.client() as c:
        job = c.post("/v1/jobs", json={"name": "cheetah", "config": config}).json()
        _, final = follow(c, job["id"], timeout=600)
        assert final["status"] == "succeeded", final
        local = rayac.load_policy(f"{service.storage}/runs/{job['id']}")
        norm = local.policy.obs_norm
        assert float(norm.count) >= 1000 and float(norm.mean.abs().max()) > 0.01  # statistics were learnt

        env = make_env(EnvConfig(id="HalfCheetah-v5"))
        obs = np.stack([env.reset(seed=s)[0] for s in range(3)])  # raw float64 observations
        env.close()
        resp = c.post(
            f"/v1/policies/{job['id']}/act", json={"observations": obs.tolist(), "deterministic": True}
        )
        assert resp.status_code == 200, resp.text
        served = np.asarray(resp.json()["actions"])
        np.testing.assert_allclose(served, local.act(obs), rtol=1e-5, atol=1e-6)

        # the normaliser matters: the same network without it gives other actions
        with torch.no_grad():
            bare = local.policy.policy_head(
                local.policy.actor_body(torch.as_tensor(obs, dtype=torch.float32))
            )
        assert not np.allclose(served, local.spec.clip_actions(bare.numpy()), atol=1e-3)

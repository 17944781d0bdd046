"""The peer for bench_serve.py: a minimal FastAPI endpoint, same model, no micro-batching.

RAYAC_BENCH_POLICY=<run dir> uvicorn --factory benchmarks.minimal_app:create_app
"""

import os

import numpy as np
import torch
from fastapi import FastAPI
from pydantic import BaseModel

import rayac


class ActIn(BaseModel):
    observations: list[list[float]]
    deterministic: bool = True


class ActOut(BaseModel):
    actions: list[int]


def create_app() -> FastAPI:
    torch.set_num_threads(1)  # same as the service: a fair peer
    policy = rayac.load_policy(os.environ["RAYAC_BENCH_POLICY"])
    app = FastAPI()

    @app.post("/act", response_model=ActOut)
    def act(body: ActIn) -> ActOut:
        return ActOut(
            actions=policy.act(np.asarray(body.observations, dtype=np.float32), body.deterministic).tolist()
        )

    return app

"""Export a trained policy to one file that runs without rayac: ONNX (for onnxruntime) or TorchScript.

The whole observation path is inside the graph, as it is inside ``load_policy()``: raw observations go in
(uint8 frames for image policies, which the Nature CNN scales by 1/255; float32 vectors otherwise, through the
policy's running normaliser when it was trained with ``model.normalize_obs``). Out come

  discrete actions:  action (int64, (B,)), probs (float32, (B, n)), value (float32, (B,))
  Box actions:       action (float32, (B, *shape), the mean clipped to the bounds), mean, std, value

``action`` is what ``load_policy().act(obs, deterministic=True)`` returns. A JSON sidecar (``FILE.json``) names
the inputs and outputs, their shapes and dtypes, the env id and the checkpoint.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from rayac.checkpoint import (
    atomic_write_file,
    atomic_write_text,
    load_checkpoint,
    select_checkpoint,
    why_unwritable,
)
from rayac.envs import SpaceSpec
from rayac.policy import ActorCritic

Format = Literal["onnx", "torchscript"]
FORMATS: tuple[str, ...] = ("onnx", "torchscript")
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".jit")  # torch.jit.save's usual names; anything else is ONNX


class OutputNotWritable(OSError):
    """The export's file (or its sidecar) could not be written where it was asked for; the message says why."""


def format_for(output: str | Path) -> Format:
    """The format a file name asks for: TorchScript for ``.pt``, ``.pth``, ``.ts``, ``.jit``; ONNX otherwise."""
    return "torchscript" if Path(output).suffix.lower() in TORCHSCRIPT_SUFFIXES else "onnx"


SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}
INPUT = "observations"
ONNX_OPSET = 17


class ExportedPolicy(nn.Module):
    """The graph that is exported: raw observations → (action, probs | mean, std, value), no sampling."""

    def __init__(self, policy: ActorCritic, spec: SpaceSpec):
        super().__init__()
        self.policy = policy.eval()
        # bfloat16 autocast does not export: the trunk runs in float32 (closer to the weights, not bit-equal
        # to a bfloat16 act)
        self.policy.bf16_encoder = False
        self.discrete = spec.discrete
        self.action_shape = tuple(spec.action_shape)
        if not self.discrete:
            self.register_buffer("low", torch.tensor(np.asarray(spec.action_low, np.float32)))
            self.register_buffer("high", torch.tensor(np.asarray(spec.action_high, np.float32)))

    def forward(self, observations: torch.Tensor) -> tuple[torch.Tensor, ...]:
        actor_x, critic_x = self.policy._features(observations)
        head = self.policy._dist_params(actor_x)
        value = self.policy._state_value(head, self.policy.value_head(critic_x))
        if self.discrete:
            return head.argmax(-1), F.softmax(head, dim=-1), value
        mean = head.reshape(-1, *self.action_shape)
        action = torch.minimum(torch.maximum(mean, self.low), self.high)
        std = self.policy.log_std.exp().reshape(self.action_shape).expand_as(mean)
        return action, mean, std, value


def output_names(spec: SpaceSpec) -> list[str]:
    return ["action", "probs", "value"] if spec.discrete else ["action", "mean", "std", "value"]


def _describe(spec: SpaceSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    obs_dtype = "uint8" if spec.is_image else "float32"
    inputs = [{
        "name": INPUT, "dtype": obs_dtype, "shape": ["batch", *spec.obs_shape],
        "description": "raw observations as the env gives them: "
        + ("uint8 frames 0..255 (scaled by 1/255 inside)" if spec.is_image else "float32 (normalised inside, "
           "when the policy was trained with model.normalize_obs)"),
    }]  # fmt: skip
    act = list(spec.action_shape)
    if spec.discrete:
        outputs = [
            {"name": "action", "dtype": "int64", "shape": ["batch"], "description": "greedy action (argmax)"},
            {"name": "probs", "dtype": "float32", "shape": ["batch", spec.action_n],
             "description": "action probabilities pi(a|s)"},
        ]  # fmt: skip
    else:
        outputs = [
            {"name": "action", "dtype": "float32", "shape": ["batch", *act],
             "description": "deterministic action: the Gaussian mean clipped to the action bounds"},
            {"name": "mean", "dtype": "float32", "shape": ["batch", *act], "description": "Gaussian mean (unclipped)"},
            {"name": "std", "dtype": "float32", "shape": ["batch", *act], "description": "Gaussian standard deviation"},
        ]  # fmt: skip
    outputs.append({"name": "value", "dtype": "float32", "shape": ["batch"], "description": "V(s)"})
    return inputs, outputs


def _example(spec: SpaceSpec, batch: int = 2) -> torch.Tensor:
    dtype = torch.uint8 if spec.is_image else torch.float32
    return torch.zeros((batch, *spec.obs_shape), dtype=dtype)


def export_policy(
    path: str | Path, output: str | Path, *, fmt: Format | None = None, checkpoint: str | int = "latest"
) -> dict[str, Any]:
    """Export the ``checkpoint`` (``best``, ``latest`` or a step) of a run dir — or the checkpoint dir ``path``
    itself — to ``output``, and its sidecar to ``output + '.json'``. Returns the sidecar. ``fmt`` None: the
    format ``output``'s suffix asks for (``format_for``).

    Raises ValueError for a bad format or checkpoint choice, FileNotFoundError when there is no such checkpoint,
    OutputNotWritable when ``output`` cannot be written (nothing is left behind then).
    """
    fmt = fmt or format_for(output)
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    path, output = Path(path), Path(output)
    ckpt_dir = path if (path / "policy.safetensors").is_file() else select_checkpoint(path, checkpoint)
    ckpt = load_checkpoint(ckpt_dir)
    graph = ExportedPolicy(ckpt.build_policy(), ckpt.spec).eval()
    names = output_names(ckpt.spec)
    example = _example(ckpt.spec)

    graph.requires_grad_(False)

    def write(tmp: Path) -> None:
        # both exporters are deprecated in torch (in favour of torch.export) but still the ones that give a
        # self-contained file: say nothing about it to the user
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            if fmt == "onnx":
                torch.onnx.export(graph, (example,), str(tmp), dynamo=False, opset_version=ONNX_OPSET,
                                  input_names=[INPUT], output_names=names,
                                  dynamic_axes={n: {0: "batch"} for n in (INPUT, *names)})  # fmt: skip
            else:
                traced = torch.jit.trace(graph, (example,), check_trace=False)
                torch.jit.save(traced, str(tmp))

    inputs, outputs = _describe(ckpt.spec)
    state = ckpt.state
    sidecar = {
        "format": fmt,
        "file": output.name,
        "env_id": ckpt.cfg.env.id,
        "algo": ckpt.cfg.algo.name,
        "checkpoint": ckpt.path.name,
        "env_steps": state.get("env_steps"),
        "version": state.get("version"),
        "eval_return": state.get("eval_return"),
        "inputs": inputs,
        "outputs": outputs,
        "observation_space": {"shape": list(ckpt.spec.obs_shape), "dtype": ckpt.spec.obs_dtype},
        "action_space": _action_space(ckpt.spec),
        "preprocessing": "inside the graph: "
        + ("uint8 frames / 255 in the CNN" if ckpt.spec.is_image else "none")
        + (", then the running observation normaliser" if ckpt.cfg.model.normalize_obs else ""),
        "encoder_dtype": "float32",
        "usage": _usage(fmt, output.name, names),
    }
    written = False
    try:
        atomic_write_file(output, write)
        written = True
        atomic_write_text(output.with_name(output.name + ".json"), json.dumps(sidecar, indent=2) + "\n")
    except OSError as err:
        if written:  # a file without its sidecar is half an export
            output.unlink(missing_ok=True)
        raise OutputNotWritable(f"cannot write {output}: {why_unwritable(output, err)}") from None
    return sidecar


def _action_space(spec: SpaceSpec) -> dict[str, Any]:
    if spec.discrete:
        return {"kind": "discrete", "n": spec.action_n}
    return {"kind": "box", "shape": list(spec.action_shape), "low": spec.action_low, "high": spec.action_high}


def _usage(fmt: str, name: str, names: list[str]) -> str:
    if fmt == "onnx":
        return (f"import onnxruntime as ort; s = ort.InferenceSession('{name}'); "
                f"{', '.join(names)} = s.run(None, {{'{INPUT}': obs}})")  # fmt: skip
    return f"import torch; m = torch.jit.load('{name}'); {', '.join(names)} = m(torch.as_tensor(obs))"

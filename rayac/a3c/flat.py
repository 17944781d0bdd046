"""Flat parameter vectors for the A3C messages: one contiguous float32 buffer per gradient or weight set.

Both ends build the same ``FlatLayout`` from the policy (actor parameters, then critic parameters, in the
order ``build_optimizer`` groups them), so a message is one array and no names or shapes travel with it.
A numpy array inside a message is read zero-copy from Ray's object store (pickle 5, out-of-band buffers).
A shard of the parameter server owns the slice ``shard_bounds(total, K)[i]`` of that vector.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from rayac.a3c.messages import OptimizerSlice

FLAT_STATE_FORMAT = "rayac-flat-optimizer-v1"


@dataclass(frozen=True)
class FlatLayout:
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]
    total: int
    actor_size: int  # [0, actor_size) is the actor parameter group, [actor_size, total) the critic's

    @classmethod
    def of(cls, policy: nn.Module) -> FlatLayout:
        params = ordered_parameters(policy)
        by_id = {id(p): name for name, p in policy.named_parameters()}
        names, shapes, offsets, offset = [], [], [], 0
        for p in params:
            names.append(by_id[id(p)])
            shapes.append(tuple(p.shape))
            offsets.append(offset)
            offset += p.numel()
        actor = sum(p.numel() for p in policy.actor_parameters())
        return cls(tuple(names), tuple(shapes), tuple(offsets), offset, actor)

    def group_ranges(self) -> list[tuple[int, int]]:
        """The optimiser's parameter groups as ranges of the flat vector: actor, critic."""
        return [(0, self.actor_size), (self.actor_size, self.total)]

    def shard_bounds(self, num_shards: int) -> list[tuple[int, int]]:
        """K contiguous slices, as equal as possible, each boundary a multiple of ``ALIGN`` elements from the start
        of its optimiser group: vectorised optimiser kernels (fused Adam) then treat every element exactly as
        they do with one server — the same vector lanes, the scalar tail only at a group's end."""
        return shard_bounds(self.total, num_shards, group_starts=(0, self.actor_size))

    def to_state_dict(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        return {
            name: flat[o : o + math.prod(shape)].reshape(shape)
            for name, shape, o in zip(self.names, self.shapes, self.offsets, strict=True)
        }

    def from_state_dict(self, weights: dict[str, Any]) -> np.ndarray:
        return np.concatenate(
            [np.asarray(weights[name], dtype=np.float32).reshape(-1) for name in self.names]
        )


def ordered_parameters(policy: nn.Module) -> list[nn.Parameter]:
    """Actor then critic parameters: every parameter exactly once, or the layout would be wrong."""
    params = list(policy.actor_parameters()) + list(policy.critic_parameters())
    if {id(p) for p in params} != {id(p) for p in policy.parameters()} or len(params) != len(
        list(policy.parameters())
    ):
        raise ValueError("actor_parameters() + critic_parameters() must hold every parameter exactly once")
    return params


ALIGN = 64  # elements: a multiple of every CPU vector width and of fused Adam's 16-float work unit


def shard_bounds(
    total: int, num_shards: int, *, group_starts: tuple[int, ...] = (0,), align: int = ALIGN
) -> list[tuple[int, int]]:
    """K contiguous slices; each inner boundary snapped to a multiple of ``align`` past the start of the group
    (a range starting at one of ``group_starts``) it falls in."""
    cuts = [0]
    for i in range(1, num_shards):
        ideal = round(i * total / num_shards)
        start = max(g for g in group_starts if g <= ideal)
        cut = start + round((ideal - start) / align) * align
        cuts.append(min(cut, total))
    cuts.append(total)
    if any(b <= a for a, b in zip(cuts, cuts[1:], strict=False)):
        raise ValueError(f"{total} parameters are too few for {num_shards} shards of at least {align}")
    return list(zip(cuts, cuts[1:], strict=False))


def bind_flat(policy: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Make every parameter and its ``.grad`` a view of two flat buffers (layout order).

    Loading weights is then one copy into the first, and after ``backward()`` (which accumulates into an
    existing ``.grad`` in place) the gradient message is the second, with no per-tensor gathering.
    """
    params = ordered_parameters(policy)
    flat = torch.cat([p.detach().reshape(-1) for p in params]).contiguous()
    grad = torch.zeros_like(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.data = flat[offset : offset + n].view_as(p)
        p.grad = grad[offset : offset + n].view_as(p)
        offset += n
    return flat, grad


def clip_coefficient(grad: torch.Tensor, max_norm: float | None) -> tuple[float, float]:
    """(pre-clip global norm, factor) exactly as ``clip_grad_norm_`` computes them, over the whole gradient, so
    every shard scales its slice by the same number."""
    norm = torch.linalg.vector_norm(grad)
    if max_norm is None:
        return float(norm), 1.0
    coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    return float(norm), float(coef)


# ----------------------------------------------------------------------------- 16-bit transfer
@dataclass
class Payload:
    """A flat float vector on the wire: float32 as is, or 16 bits (bfloat16 travels as its int16 bit pattern,
    float16 with a power-of-two scale so small gradients do not underflow)."""

    data: np.ndarray
    dtype: str = "float32"
    scale: float = 1.0


_read_only_seen = False


def shared_tensor(arr: np.ndarray) -> torch.Tensor:
    """A tensor sharing ``arr``'s memory, also when Ray handed it over read-only (the reader never writes it).

    torch warns about a read-only array once per process, from C++: that once is silenced here, and later calls
    skip ``warnings.catch_warnings`` (a few µs, and not thread-safe)."""
    global _read_only_seen
    if _read_only_seen or arr.flags.writeable:
        return torch.from_numpy(arr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        tensor = torch.from_numpy(arr)
    _read_only_seen = True
    return tensor


def fp16_scale(flat: torch.Tensor) -> float:
    """The largest power of two that keeps max|x| ≤ 2^15 (float16's max is 65504): exact to undo on decode."""
    amax = float(flat.detach().abs().max()) if flat.numel() else 0.0
    return 2.0 ** (15 - math.ceil(math.log2(amax))) if amax > 0 and math.isfinite(amax) else 1.0


def encode(flat: torch.Tensor, dtype: str, *, copy: bool = True, scale: float | None = None) -> Payload:
    """``copy=False`` (float32 only): the payload is a view of ``flat``; fine when it is serialised at once.
    ``scale`` (float16): the one of a whole vector this is a slice of, so K slices round like the whole."""
    if dtype == "float32":
        arr = flat.detach().cpu().numpy()
        return Payload(arr.copy() if copy else arr)
    if dtype == "bfloat16":
        return Payload(flat.detach().to(torch.bfloat16).view(torch.int16).cpu().numpy(), dtype)
    scale = fp16_scale(flat) if scale is None else scale
    return Payload((flat.detach() * scale).to(torch.float16).cpu().numpy(), dtype, scale)


def decode_into(payload: Payload | np.ndarray, out: torch.Tensor, *, factor: float = 1.0) -> None:
    """Write a payload (or a bare float32 array) times ``factor`` into the float32 tensor ``out``."""
    if isinstance(payload, np.ndarray):
        payload = Payload(payload)
    src = shared_tensor(payload.data)
    if payload.dtype == "bfloat16":
        src = src.view(torch.bfloat16)
    if payload.dtype == "float32" and factor != 1.0 and out.device.type == "cpu":
        torch.mul(src, factor, out=out)  # one pass over the slice instead of copy, then scale
        return
    out.copy_(src)
    if payload.scale != 1.0:
        out.div_(payload.scale)
    if factor != 1.0:
        out.mul_(factor)


# ----------------------------------------------------------------------------- optimiser state as flat arrays
def segment_state(optimizer: torch.optim.Optimizer, params: list[nn.Parameter]) -> OptimizerSlice:
    """The optimiser state of ``params`` (consecutive segments of one flat slice) as one ``OptimizerSlice``:
    per-element tensors concatenated, scalar ones (``step``, the same for every segment) kept once."""
    moments: dict[str, list[np.ndarray]] = {}
    scalars: dict[str, float] = {}
    for p in params:
        for key, value in optimizer.state.get(p, {}).items():
            if isinstance(value, torch.Tensor) and value.shape == p.shape:
                moments.setdefault(key, []).append(value.detach().cpu().reshape(-1).numpy())
            elif isinstance(value, torch.Tensor) and value.numel() == 1:
                scalars[key] = float(value)
    return OptimizerSlice({k: np.concatenate(v).astype(np.float32) for k, v in moments.items()}, scalars)


def load_segment_state(
    optimizer: torch.optim.Optimizer, params: list[nn.Parameter], state: OptimizerSlice
) -> None:
    optimizer.state.clear()
    if state.empty:
        return
    offset = 0
    for p in params:
        n = p.numel()
        entry: dict[str, torch.Tensor] = {
            k: torch.tensor(v[offset : offset + n], device=p.device).view_as(p)
            for k, v in state.moments.items()
        }
        # torch keeps 'step' as a float32 tensor on the CPU, or on the parameter's device when fused or capturable
        group = next(g for g in optimizer.param_groups if any(q is p for q in g["params"]))
        device = p.device if group.get("fused") or group.get("capturable") else torch.device("cpu")
        entry.update(
            {k: torch.tensor(v, dtype=torch.float32, device=device) for k, v in state.scalars.items()}
        )
        optimizer.state[p] = entry
        offset += n


def to_checkpoint(state: OptimizerSlice) -> dict[str, Any]:
    """The optimiser state as ``optimizer.pt`` holds it for A3C: tensors and plain values (weights_only loads)."""
    return {
        "format": FLAT_STATE_FORMAT,
        "flat": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.moments.items()},
        "scalars": dict(state.scalars),
    }


def from_checkpoint(saved: dict[str, Any] | None, layout: FlatLayout) -> OptimizerSlice:
    """Read either the flat format or a torch ``Optimizer.state_dict()`` of the whole policy (checkpoints written
    before sharding): its parameter indices run actor then critic, the layout's order."""
    if not saved:
        return OptimizerSlice()
    if saved.get("format") == FLAT_STATE_FORMAT:
        return OptimizerSlice(
            {k: np.asarray(v, dtype=np.float32) for k, v in saved["flat"].items()},
            {k: float(v) for k, v in saved["scalars"].items()},
        )
    indices = [i for group in saved["param_groups"] for i in group["params"]]
    per_param = [saved["state"].get(i, {}) for i in indices]
    if not all(per_param):
        return OptimizerSlice()
    moments: dict[str, list[np.ndarray]] = {}
    scalars: dict[str, float] = {}
    for shape, entry in zip(layout.shapes, per_param, strict=True):
        for key, value in entry.items():
            if isinstance(value, torch.Tensor) and tuple(value.shape) == shape and value.dim() > 0:
                moments.setdefault(key, []).append(value.reshape(-1).float().numpy())
            elif isinstance(value, torch.Tensor | float | int):
                scalars[key] = float(value)
    return OptimizerSlice({k: np.concatenate(v) for k, v in moments.items()}, scalars)


def resolve_ps_shards(value: int | str, *, num_params: int, num_workers: int) -> int:
    """``algo.ps_shards``; 'auto': one shard per 4 workers, none smaller than 256k parameters, at most 8 — below
    that a slice saves less apply time than the extra call per push costs."""
    if value != "auto":
        return min(int(value), max(num_params // ALIGN, 1))
    return max(1, min(num_workers // 4, num_params // 262_144, 8))

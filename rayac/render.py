"""One greedy episode of a checkpoint as an animated GIF, played in a process of its own.

A renderer can end the process it runs in: MuJoCo with no display and no headless GL stops in libc++'s terminate,
not in an exception. So the episode is played by ``python -m rayac.render`` (this module), and where there is no
display and ``MUJOCO_GL`` is unset the backends are tried in turn: none (most envs need no GL), then EGL, then
OSMesa. ``rayac evaluate --gif`` and the service's episode route both render through ``render_episode``.

    python -m rayac.render CHECKPOINT SEED MAX_STEPS DOWNSCALE OUT.gif

writes OUT.gif and prints one JSON line, ``{"return": …, "length": …, "frames": …}``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

WORKER = "rayac.render"  # the module a render process runs (tests put a stand-in that aborts)

# words in a render process's last words that blame the display or GL, not a bug in rayac or the env
GL_WORDS = re.compile(r"\b(GL|EGL|OSMesa|GLFW|glfw|OpenGL|DISPLAY|display|X11|FatalError|gladLoadGL)\b")


class RenderUnavailable(RuntimeError):
    """No backend renders this env on this machine; the message names each one's reason and the setting."""


class RenderTimedOut(RuntimeError):
    """The render process ran past its time."""


def gl_backends() -> list[str | None]:
    """GL backends to try: the configured one (or none: pygame needs no GL) when there is a display or MUJOCO_GL
    is set; else none first (most envs need no GL), then EGL, then OSMesa."""
    if os.environ.get("DISPLAY") or os.environ.get("MUJOCO_GL"):
        return [None]
    return [None, "egl", "osmesa"]


def render_episode(checkpoint: Path, out: Path, *, seed: int = 0, max_steps: int = 1000, downscale: int = 1,
                   timeout_s: float = 120.0, worker: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Play one greedy episode of ``checkpoint`` in a process of its own and write it to ``out`` as a GIF, whole
    or not at all. Returns ``{"return", "length", "frames"}``. Raises RenderUnavailable when no GL backend renders
    it, RenderTimedOut past ``timeout_s``, RuntimeError (its stderr's tail) when the process fails for another
    reason."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)  # an OSError here, not a render process's traceback
    problems = []
    for gl in gl_backends():
        env = {**os.environ, **({"MUJOCO_GL": gl, "PYOPENGL_PLATFORM": gl} if gl else {})}
        cmd = [sys.executable, "-m", worker or WORKER, str(checkpoint), str(seed), str(max_steps), str(downscale),
               str(out)]  # fmt: skip
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s,
                                  cwd=Path(__file__).resolve().parents[1])  # fmt: skip
        except subprocess.TimeoutExpired:
            raise RenderTimedOut(f"rendering the episode took over {timeout_s:g} s") from None
        if proc.returncode == 0:
            return json.loads(proc.stdout.strip().splitlines()[-1])
        if proc.returncode > 0 and not GL_WORDS.search(proc.stderr):  # a bug, not the display
            raise RuntimeError(f"rendering failed: {proc.stderr.strip()[-500:]}")
        why = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        problems.append(f"MUJOCO_GL={gl}: {why}" if gl else why)
    raise RenderUnavailable("this env cannot be rendered on this machine (" + "; ".join(problems)[-600:] + "); "
                            "a display (DISPLAY) or a headless GL backend (MUJOCO_GL=egl with EGL, or osmesa "
                            "with OSMesa) is needed")  # fmt: skip


def main(argv: list[str]) -> int:
    from rayac.checkpoint import load_checkpoint
    from rayac.evaluate import render_gif

    ckpt, seed, max_steps, downscale, out = argv
    loaded = load_checkpoint(Path(ckpt))
    env_cfg = loaded.cfg.env.model_copy(update={"seed": int(seed)})
    info = render_gif(loaded.build_policy(), env_cfg, Path(out), seed=int(seed), max_steps=int(max_steps),
                      downscale=int(downscale))  # fmt: skip
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

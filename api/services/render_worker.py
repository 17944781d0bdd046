"""One episode GIF, rendered in a process of its own: a renderer that aborts (a MuJoCo env with no display and no
headless GL) takes down this process, never the service.

    python -m api.services.render_worker CHECKPOINT SEED MAX_STEPS DOWNSCALE OUT.gif

Writes the GIF to OUT.gif and one JSON line, {"return": …, "length": …}, on stdout.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

FPS = 30


def main(argv: list[str]) -> int:
    import imageio.v2 as imageio

    from rayac.checkpoint import load_checkpoint
    from rayac.evaluate import play_episode

    ckpt, seed, max_steps, downscale, out = argv
    loaded = load_checkpoint(Path(ckpt))
    env_cfg = loaded.cfg.env.model_copy(update={"seed": int(seed)})
    frames, total, steps = play_episode(loaded.build_policy(), env_cfg, seed=int(seed), max_steps=int(max_steps),
                                        downscale=int(downscale))  # fmt: skip
    buf = io.BytesIO()
    imageio.mimsave(buf, frames, format="GIF", duration=1000 / FPS, loop=0)
    Path(out).write_bytes(buf.getvalue())
    print(json.dumps({"return": total, "length": steps}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

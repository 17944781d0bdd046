"""A stand-in render process that renders only under MUJOCO_GL=egl, as a MuJoCo env does on a headless machine
with EGL: without it, it dies as MuJoCo does (GLFW finds no display)."""

import os
import sys

if __name__ == "__main__":
    if os.environ.get("MUJOCO_GL") != "egl":
        print("mujoco.FatalError: an OpenGL platform library has not been loaded into this process", file=sys.stderr,
              flush=True)  # fmt: skip
        os.abort()
    from rayac.render import main

    sys.exit(main(sys.argv[1:]))

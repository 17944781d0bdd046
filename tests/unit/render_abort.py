"""A stand-in render process that dies as MuJoCo does on a machine with no display and no headless GL."""

import os
import sys

if __name__ == "__main__":
    print("mujoco.FatalError: gladLoadGL error", file=sys.stderr, flush=True)
    os.abort()  # libc++abi: terminating (exit 134): in the service's own process this would end it

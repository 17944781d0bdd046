#!/usr/bin/env bash
# The whole local-cluster round trip, meant to run as the only thing in its own PID namespace:
#   unshare --pid --fork --mount-proc cluster/local-e2e.sh VENV_DIR STATE_DIR
# so that `ray up`/`ray down` (which run `ray stop`) can only see this cluster's processes, and everything
# left over dies with the namespace. Prints "E2E <json>" from the REST round trip and "LEFT <n>" at the end.
set -uo pipefail
venv=$(cd "$1" && pwd)
state=$2
here=$(cd "$(dirname "$0")" && pwd)
export PATH="$venv/bin:$PATH" RAY_UP_enable_autoscaler_v2=0 RAY_USAGE_STATS_ENABLED=0
export RAY_AUTH_MODE=disabled
# The local provider keeps its node state in <ray temp dir>/cluster-<name>.{state,lock}, written by `ray up`
# (here, root) and by the autoscaler on the head (the ssh user, whose temp dir is /tmp/ray). Both must use the
# same files, so this side drops any RAY_TMPDIR/TMPDIR it inherited. /tmp/ray is a tmpfs private to this
# namespace: nothing an earlier run left there is read, and nothing this run writes outlives it. The state file
# starts as valid JSON (an empty one fails to parse) and both files are writable by both users.
unset RAY_TMPDIR TMPDIR
made_mountpoint=0
[ -d /tmp/ray ] || { mkdir /tmp/ray && made_mountpoint=1; }  # the mount point itself is on the host's /tmp
mount -t tmpfs -o mode=1777 rayac-e2e /tmp/ray || { echo "UP rc=1 (cannot mount /tmp/ray)"; exit 1; }
# The ssh user runs this checkout's code with this venv, wherever they live: a clone in a private directory
# (mktemp -d, a home: 0700) or a pyenv Python under /root. Nothing on the host is chmod-ed. Instead, inside
# this namespace only, each directory on the way that others cannot traverse is covered by a tmpfs of mode 0711
# (traverse, no listing) into which its own entries are bound back, so paths (shebangs, the venv's pyvenv.cfg,
# an editable install) stay the same. The view ends with the namespace.
keep=/tmp/ray/.rayac-keep
mkdir -m 700 "$keep"
opened=0
open_path() {
  local d="" part e t parts
  IFS=/ read -ra parts <<< "${1#/}"
  for part in "${parts[@]}"; do
    d="$d/$part"
    [ -d "$d" ] || return 0
    case "$(stat -c %A "$d" | cut -c10)" in x|t) continue ;; esac
    opened=$((opened + 1))
    mkdir "$keep/$opened" && mount --rbind "$d" "$keep/$opened" || return 1
    mount -t tmpfs -o mode=0711 rayac-e2e-open "$d" || return 1
    for e in "$keep/$opened"/* "$keep/$opened"/.[!.]* "$keep/$opened"/..?*; do
      [ -e "$e" ] || [ -L "$e" ] || continue
      t="$d/${e##*/}"
      if [ -L "$e" ]; then cp -P "$e" "$t"
      elif [ -d "$e" ]; then mkdir "$t" && mount --rbind "$e" "$t"
      else touch "$t" && mount --rbind "$e" "$t"; fi || return 1
    done
  done
}
repo=$(cd "$here/.." && pwd)
for p in "$venv" "$(readlink -f "$venv/bin/python3")" "$repo"; do
  open_path "$(readlink -f "$p")" || { echo "UP rc=1 (cannot open $p to the ssh user)"; exit 1; }
done
RAYAC_SSH_PYTHONPATH="$repo" "$here/local-sshd.sh" "$venv" "$state" >/dev/null \
  || { echo "UP rc=1 (local-sshd.sh failed)"; exit 1; }
/usr/sbin/sshd -f "$state/sshd_config"
cd "$repo"
echo '{}' > /tmp/ray/cluster-rayac-local.state
touch /tmp/ray/cluster-rayac-local.lock
chmod 666 /tmp/ray/cluster-rayac-local.state /tmp/ray/cluster-rayac-local.lock
# The head's service keeps its job registry in the ssh user's home: start from an empty one.
rm -rf "$(getent passwd rayac | cut -d: -f6)/rayac-data"
t0=$(date +%s)
timeout 300 ray up -y cluster/local.yaml --no-config-cache > "$state/ray-up.log" 2>&1
echo "UP rc=$? in $(( $(date +%s) - t0 ))s"
python - <<'PY'
import json, time
import httpx
url = "http://127.0.0.1:8390"
deadline = time.monotonic() + 90
while True:
    try:
        if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
            break
    except httpx.HTTPError:
        pass
    if time.monotonic() > deadline:
        print("E2E " + json.dumps({"healthz": False}))
        raise SystemExit(0)
    time.sleep(0.5)
out = {"healthz": True}

def alive_nodes():
    nodes = httpx.get("http://127.0.0.1:8290/nodes?view=summary", timeout=10).json()["data"]["summary"]
    return sum(1 for n in nodes if n["raylet"]["state"] == "ALIVE")

deadline = time.monotonic() + 120  # the autoscaler on the head launches the worker node after `ray up` returns
while alive_nodes() < 2 and time.monotonic() < deadline:
    time.sleep(1)
out["nodes_before_job"] = alive_nodes()
with httpx.Client(base_url=url, timeout=120) as c:
    cfg = {"env": {"num_envs": 16}, "optim": {"lr": 0.002}, "resources": {"num_workers": 2},
           "run": {"stop": {"total_env_steps": 30000, "target_return": 475}, "eval_interval_steps": 5000}}
    resp = c.post("/v1/jobs", json={"name": "e2e", "config": cfg})
    job = resp.json()
    out["job"], out["submit_status"] = job.get("id"), resp.status_code
    if resp.status_code != 201:
        print("E2E " + json.dumps({**out, "detail": job.get("detail")}), flush=True)
        raise SystemExit(0)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        info = c.get(f"/v1/jobs/{job['id']}").json()
        if info["status"] in ("succeeded", "failed", "stopped"):
            break
        time.sleep(1)
    out["status"], out["error"] = info["status"], info.get("error")
    if info["status"] == "succeeded":
        act = c.post(f"/v1/policies/{job['id']}/act", json={"observations": [[0.0, 0.1, 0.0, -0.1]] * 3})
        out["act_status"], out["actions"] = act.status_code, act.json().get("actions")
print("E2E " + json.dumps(out), flush=True)
PY
cp /tmp/ray/session_latest/logs/monitor.log "$state/monitor.log" 2>/dev/null || true
cp ~rayac/rayac-serve.log "$state/rayac-serve.log" 2>/dev/null || true
t0=$(date +%s)
timeout 120 ray down -y cluster/local.yaml > "$state/ray-down.log" 2>&1
echo "DOWN rc=$? in $(( $(date +%s) - t0 ))s"
sleep 2
echo "LEFT $(pgrep -c -f 'raylet|gcs_server|dashboard' || true)"
umount -l /tmp/ray && [ "$made_mountpoint" = 1 ] && rmdir /tmp/ray || true  # leave the host's /tmp as it was

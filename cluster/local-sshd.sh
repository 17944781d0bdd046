#!/usr/bin/env bash
# Prepare this machine for `ray up cluster/local.yaml`: a user 'rayac' whose login shell finds this checkout's
# venv (ray, rayac), a throwaway ssh key for the caller, and an sshd config that listens on 127.0.0.1 and
# 127.0.0.2 only. Needs root, openssh-server and rsync (apt-get install openssh-server rsync).
# Usage: cluster/local-sshd.sh VENV_DIR STATE_DIR   — then start sshd with: /usr/sbin/sshd -f STATE_DIR/sshd_config
set -euo pipefail
venv=$(cd "$1" && pwd)
state=$(mkdir -p "$2" && cd "$2" && pwd)
id rayac >/dev/null 2>&1 || useradd --create-home --shell /bin/bash rayac
usermod -p '*' rayac  # no password, but not locked: sshd without PAM refuses locked accounts, even with a key
home=$(getent passwd rayac | cut -d: -f6)
# Ray's ssh runner uses an interactive login bash: .bashrc is what sets the PATH.
# RAYAC_SSH_PYTHONPATH (optional): the checkout whose rayac the nodes run, ahead of what the venv installed.
printf 'export PATH=%s/bin:$PATH\nexport RAY_USAGE_STATS_ENABLED=0\n' "$venv" > "$home/.bashrc"
[ -z "${RAYAC_SSH_PYTHONPATH:-}" ] || printf 'export PYTHONPATH=%s\n' "$RAYAC_SSH_PYTHONPATH" >> "$home/.bashrc"
cp "$home/.bashrc" "$home/.profile"
mkdir -p ~/.ssh "$home/.ssh"
[ -f ~/.ssh/rayac_local_key ] || ssh-keygen -q -t ed25519 -N "" -f ~/.ssh/rayac_local_key
cp ~/.ssh/rayac_local_key.pub "$home/.ssh/authorized_keys"
chown -R rayac: "$home"
chmod 700 "$home/.ssh" && chmod 600 "$home/.ssh/authorized_keys"
# The venv, the interpreter it links to and PYTHONPATH must be readable by that user. This script changes no
# permissions on the host: put them where the user can reach them (cluster/local-e2e.sh does so inside its own
# mount namespace, whatever the mode of the checkout's directories).
for p in "$venv/bin/python3" "$(readlink -f "$venv/bin/python3")" ${RAYAC_SSH_PYTHONPATH:+"$RAYAC_SSH_PYTHONPATH"}; do
  runuser -u rayac -- test -r "$p" || { echo "local-sshd.sh: user rayac cannot read $p (a private directory on the way?)" >&2; exit 1; }
done
[ -f "$state/host_key" ] || ssh-keygen -q -t ed25519 -N "" -f "$state/host_key"
mkdir -p /run/sshd
cat > "$state/sshd_config" <<CFG
ListenAddress 127.0.0.1
ListenAddress 127.0.0.2
Port 22
HostKey $state/host_key
PidFile $state/sshd.pid
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AllowUsers rayac
UsePAM no
StrictModes no
CFG
# Accept the loopback host keys for the caller, so ray up asks nothing.
for ip in 127.0.0.1 127.0.0.2; do ssh-keygen -R "$ip" >/dev/null 2>&1 || true; done
echo "ready: /usr/sbin/sshd -f $state/sshd_config"

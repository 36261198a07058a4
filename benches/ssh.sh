#!/usr/bin/env bash
# Host steps over SSH against Ansible, on the same sshd, in one run.
#
#   benches/ssh.sh
#   ROUNDS=5 STEPS=200 HOSTS=40 HOST_STEPS=10 KEEP=target/ssh-bench benches/ssh.sh
#
# 1. One host: runbook (release build) runs STEPS host steps `shell: "true"` on it, and
#    ansible-playbook (ansible-core in target/ansible-venv, `-c ssh`, pipelining on,
#    ControlPersist as it sets it, no facts) runs STEPS tasks `command: true` on the
#    same sshd (as root: both log in as a user of the bench whose login shell is /bin/sh,
#    made for the run and removed after). ROUNDS interleaved rounds (runbook, ansible, runbook, ansible ...),
#    each a whole command from its start (a fresh store for runbook, so its first step
#    pays the handshake as Ansible's does). Per server: wall time min and median, time
#    per step, and the ratio runbook/ansible (median of the per-round ratios).
# 2. Many hosts: HOSTS addresses (127.0.0.10 ...) on one sshd, HOST_STEPS steps `on: all`
#    at concurrency HOSTS. Every host of every step must succeed (no connection dropped:
#    sshd's MaxStartups is set above HOSTS); the overhead per host-step is reported
#    (wall time / (HOSTS x HOST_STEPS)).
#
# Targets (issue 16): runbook at most one fifth of Ansible's time (median ratio <= 0.2);
# under 50 ms per step on a warm connection (runbook's median wall time / STEPS); every
# host-step of part 2 succeeded. Each miss is marked `!` and listed at the end.
# Exits 0 when every target is met, 1 when one is missed, 2 when the bench cannot run
# (`bash scripts/test-tools.sh sshd ansible` installs what it needs). Everything it
# starts is stopped, and its directory removed, on exit (KEEP=DIR keeps a copy).
set -Eeuo pipefail
trap 'exit 2' ERR

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

rounds="${ROUNDS:-5}"
steps="${STEPS:-200}"
hosts="${HOSTS:-40}"
host_steps="${HOST_STEPS:-10}"
max_ratio=0.2
max_step_ms=50

die() {
  echo "ssh-bench: $*" >&2
  exit 2
}

[ -x /usr/sbin/sshd ] || die "/usr/sbin/sshd is missing: bash scripts/test-tools.sh sshd"
ansible="${RUNBOOK_ANSIBLE_VENV:-$root/target/ansible-venv}/bin/ansible-playbook"
[ -x "$ansible" ] || die "$ansible is missing: bash scripts/test-tools.sh ansible"
command -v setsid >/dev/null || die "setsid is missing (util-linux)"

echo "ssh-bench: building the release binary" >&2
cargo build --release --quiet || die "cargo build --release failed"
runbook="$root/target/release/runbook"

work="$(mktemp -d)"
# The bench user reads authorized_keys here (its keys stay private to root).
chmod 755 "$work"
sshd_pids=()
made_user=""
cleanup() {
  for p in "${sshd_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "$made_user" ]; then
    sleep 0.2
    userdel "$made_user" 2>/dev/null || true
  fi
  if [ -n "${KEEP:-}" ]; then
    mkdir -p "$KEEP" && cp -r "$work"/. "$KEEP"/ || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p /run/sshd 2>/dev/null || true
ssh-keygen -q -t ed25519 -N '' -f "$work/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$work/client_key"
cp "$work/client_key.pub" "$work/authorized_keys"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.2", 0)); print(s.getsockname()[1])')"
# sshd listens on at most 16 sockets: one instance per 15 addresses, the same port.
addresses=(127.0.0.2)
for i in $(seq 1 "$hosts"); do addresses+=("127.0.0.$((9 + i))"); done
key="$(cut -d' ' -f1,2 "$work/host_key.pub")"
: >"$work/known_hosts"
for a in "${addresses[@]}"; do echo "[$a]:$port $key" >>"$work/known_hosts"; done
sshd_pids=()
for ((start = 0; start < ${#addresses[@]}; start += 15)); do
  n=$((start / 15))
  {
    echo "Port $port"
    for a in "${addresses[@]:start:15}"; do echo "ListenAddress $a"; done
    echo "HostKey $work/host_key"
    echo "AuthorizedKeysFile $work/authorized_keys"
    echo "PasswordAuthentication no"
    echo "KbdInteractiveAuthentication no"
    echo "PermitRootLogin prohibit-password"
    echo "StrictModes no"
    echo "UsePAM no"
    echo "PidFile none"
    echo "MaxStartups $((hosts * 4)):30:$((hosts * 8))"
    echo "MaxSessions $((hosts * 4))"
    echo "LogLevel ERROR"
  } >"$work/sshd_config.$n"
  /usr/sbin/sshd -D -e -f "$work/sshd_config.$n" 2>"$work/sshd.$n.log" &
  sshd_pids+=($!)
done
for a in "${addresses[@]}"; do
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/$a/$port") 2>/dev/null && break
    sleep 0.05
  done
done
# The login user on the hosts: as root, a user of the bench's own whose login shell is
# /bin/sh, so that neither tool pays for root's shell start-up files (a ~/.bashrc that
# starts pyenv costs ~120 ms per command on this machine); else the current user.
user="$(id -un)"
if [ "$(id -u)" -eq 0 ] && command -v useradd >/dev/null; then
  user=runbook-bench
  mkdir -p "$work/home"
  if ! id "$user" >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir "$work/home" --shell /bin/sh "$user"
    made_user="$user"
  fi
  usermod -d "$work/home" -s /bin/sh -p '*' "$user"
  chown "$user" "$work/home"
else
  echo "ssh-bench: not root: logging in as $user, whose login shell's start-up counts" >&2
fi
echo "login user on the hosts: $user ($(getent passwd "$user" | cut -d: -f7))"

# The runbooks.
ssh_section="ssh:
  user: $user
  identity_file: $work/client_key
  options: { UserKnownHostsFile: $work/known_hosts, GlobalKnownHostsFile: /dev/null }"
{
  echo "runbook: ssh-bench-one"
  echo "hosts:"
  echo "  one: [{ name: h1, address: 127.0.0.2, port: $port }]"
  echo "$ssh_section"
  echo "steps:"
  for i in $(seq 1 "$steps"); do
    echo "  - { id: s$i, kind: patch, on: one, run: { shell: \"true\" } }"
  done
} >"$work/one.yaml"
{
  echo "runbook: ssh-bench-many"
  echo "hosts:"
  echo "  many:"
  for i in $(seq 1 "$hosts"); do
    echo "    - { name: h$i, address: 127.0.0.$((9 + i)), port: $port }"
  done
  echo "$ssh_section"
  echo "steps:"
  for i in $(seq 1 "$host_steps"); do
    echo "  - { id: s$i, kind: patch, on: all, concurrency: $hosts, run: { shell: \"true\" } }"
  done
} >"$work/many.yaml"

# The playbook.
cat >"$work/ansible.cfg" <<EOF
[defaults]
host_key_checking = True
gathering = explicit
interpreter_python = auto_silent
forks = 5
stdout_callback = default
[ssh_connection]
pipelining = True
ssh_args = -o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile=$work/known_hosts -o GlobalKnownHostsFile=/dev/null
control_path_dir = $work/ansible-cp
EOF
# The host's Python for Ansible's modules: Debian's, else the virtualenv's.
py=/usr/bin/python3
[ -x "$py" ] || py="$(dirname "$ansible")/python"
echo "h1 ansible_host=127.0.0.2 ansible_port=$port ansible_user=$user ansible_ssh_private_key_file=$work/client_key ansible_python_interpreter=$py" >"$work/inventory.ini"
{
  echo "- hosts: h1"
  echo "  gather_facts: false"
  echo "  tasks:"
  for i in $(seq 1 "$steps"); do
    echo "    - { name: t$i, command: \"true\" }"
  done
} >"$work/play.yml"

now() { date +%s.%N; }

run_runbook() { # FILE ROUND
  local store="sqlite://$work/store-$2-$(basename "$1" .yaml).db" t0 t1
  t0="$(now)"
  (cd "$work" && "$runbook" execute "$1" --now --yes --store "$store" >"$work/runbook-$2.log" 2>&1) ||
    die "runbook failed (round $2): $(tail -3 "$work/runbook-$2.log")"
  t1="$(now)"
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }'
}

run_ansible() { # ROUND
  local t0 t1
  t0="$(now)"
  (cd "$work" && ANSIBLE_CONFIG="$work/ansible.cfg" "$ansible" -c ssh -i inventory.ini play.yml >"$work/ansible-$1.log" 2>&1) ||
    die "ansible-playbook failed (round $1): $(tail -5 "$work/ansible-$1.log")"
  t1="$(now)"
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }'
}

stats() { # min median of the arguments
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%s %s", v[1], m }'
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "part 1: $steps steps on one host, $rounds interleaved rounds"
rb_times=()
an_times=()
ratios=()
for r in $(seq 1 "$rounds"); do
  a="$(run_runbook one.yaml "$r")"
  b="$(run_ansible "$r")"
  rb_times+=("$a")
  an_times+=("$b")
  ratios+=("$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.4f", a / b }')")
  echo "  round $r: runbook ${a}s, ansible ${b}s"
done
read -r rb_min rb_med <<<"$(stats "${rb_times[@]}")"
read -r an_min an_med <<<"$(stats "${an_times[@]}")"
read -r ratio_min ratio_med <<<"$(stats "${ratios[@]}")"
rb_step_ms="$(awk -v t="$rb_med" -v n="$steps" 'BEGIN { printf "%.2f", t * 1000 / n }')"
an_step_ms="$(awk -v t="$an_med" -v n="$steps" 'BEGIN { printf "%.2f", t * 1000 / n }')"

echo "part 2: $hosts hosts x $host_steps steps at concurrency $hosts"
many_times=()
for r in $(seq 1 "$rounds"); do
  t="$(run_runbook many.yaml "many-$r")"
  ok="$(grep -c "item h[0-9]* succeeded" "$work/runbook-many-$r.log" || true)"
  [ "$ok" -eq $((hosts * host_steps)) ] || die "round $r: $ok of $((hosts * host_steps)) host-steps succeeded"
  many_times+=("$t")
  echo "  round $r: ${t}s, $ok host-steps succeeded"
done
read -r many_min many_med <<<"$(stats "${many_times[@]}")"
per_host_step="$(awk -v t="$many_med" -v n=$((hosts * host_steps)) 'BEGIN { printf "%.2f", t * 1000 / n }')"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

missed=()
mark() { awk -v v="$1" -v t="$2" -v op="$3" 'BEGIN { ok = (op == "le") ? v <= t : v < t; print ok ? " " : "!" }'; }
m1="$(mark "$ratio_med" "$max_ratio" le)"
m2="$(mark "$rb_step_ms" "$max_step_ms" lt)"
[ "$m1" = "!" ] && missed+=("runbook/ansible time ratio $ratio_med > $max_ratio")
[ "$m2" = "!" ] && missed+=("runbook $rb_step_ms ms per step >= $max_step_ms ms")

echo
echo "                       min        median     per step"
printf "  runbook  %8.3fs  %8.3fs  %8s ms %s\n" "$rb_min" "$rb_med" "$rb_step_ms" "$m2"
printf "  ansible  %8.3fs  %8.3fs  %8s ms\n" "$an_min" "$an_med" "$an_step_ms"
printf "  ratio runbook/ansible: median %s (range %s..%s; target <= %s) %s\n" \
  "$ratio_med" "$ratio_min" "$(printf '%s\n' "${ratios[@]}" | sort -g | tail -1)" "$max_ratio" "$m1"
printf "  %d hosts x %d steps: min %.3fs, median %.3fs, %s ms per host-step, all succeeded\n" \
  "$hosts" "$host_steps" "$many_min" "$many_med" "$per_host_step"
if [ "${#missed[@]}" -gt 0 ]; then
  printf 'missed: %s\n' "${missed[@]}"
  exit 1
fi
echo "every target met"

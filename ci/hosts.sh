#!/usr/bin/env bash
# A multi-host test bed on one Linux box: every "host" is a network namespace
# with its own address, hostname, hosts file and sshd, so that horovodrun,
# Gloo and Open MPI see separate machines, as on a cluster with a shared
# filesystem (code and .venv paths are the same everywhere).
#
#   ci/hosts.sh up N          create hosts hvdhost1..hvdhostN (root only)
#   eval "$(ci/hosts.sh env)" put the test bed's ssh on PATH (see below)
#   ci/hosts.sh status        what exists now
#   ci/hosts.sh down          remove everything (also what a crashed run left)
#   ci/hosts.sh run N -- CMD  up N, run CMD, down (also on failure and Ctrl-C)
#   ci/hosts.sh kill I        kill every process of host I except its sshd
#   ci/hosts.sh cut I | heal I   take host I's network link down / up again
#   ci/hosts.sh shape RATE    limit every host's link to RATE in both directions
#                             (100mbit, 1gbit, 2.5gbit...: tc's units); `shape off`
#                             removes the limit, and so does `down`
#   ci/hosts.sh exec I -- CMD  run CMD as if on host I (its network, hostname
#                            and hosts file): e.g. a launcher on host 1
#   ci/hosts.sh slurm up|down  a Slurm cluster on the hosts: slurmctld on the
#                            launcher, slurmd on every host (installs Debian's
#                            slurmd, slurmctld, slurm-client, munge if missing);
#                            `env` then also sets SLURM_CONF
#
# HVDAGENT_HOSTS_KEEPALIVE=0 at `up` leaves ssh's keep-alive at its default
# (off), on the client and the hosts' sshd, as on a machine nobody tuned; the
# default (1) makes ssh give up on a silent host after 30-35 s.
#
# Layout (SUBNET is the first free one of 10.213.37.0/24 ... 10.213.44.0/24):
#   launcher (this machine's namespace): bridge "hvd0", SUBNET.1
#   host I: namespace hvdagent-hI, interface "hvd0", SUBNET.(10+I), hostname
#           hvdhostI (own UTS namespace), /etc/netns/hvdagent-hI/hosts mapping
#           every host's name (its own included) to its routable address,
#           sshd on SUBNET.(10+I):22, key-only root login.
# The same interface name everywhere lets `--network-interface hvd0` name an
# existing interface on the launcher and on every host.
#
# Shaping is a token bucket (tc qdisc tbf) on both ends of every host's veth:
# the end in the host's namespace limits what the host sends, the end on the
# bridge what it receives. Bucket: 2 ms of RATE (at least 15 kB), queue: 50 ms
# (a bulk TCP transfer then carries about 95% of RATE). Bandwidth only: tc's
# netem (delay, loss) is not used (not every kernel has it).
#
# Nothing outside the state directory (default /tmp/hvdagent-hosts, or
# HVDAGENT_HOSTS_DIR) is written, except the namespaces, links and
# /etc/netns/hvdagent-h*: no change to ~/.ssh (`slurm up` installs Debian's
# Slurm packages when they are missing). `env` prints
#   PATH=<state>/bin:$PATH  (an `ssh` that reads <state>/ssh_config: key,
#                            known_hosts and keep-alives of the test bed)
#   HVDAGENT_HOSTS=hvdhost1,hvdhost2,...  HVDAGENT_HOSTS_SUBNET=10.213.37
# horovodrun and mpirun both find `ssh` on PATH.
#
# One test bed at a time per machine: `up` waits (up to HVDAGENT_HOSTS_WAIT
# seconds, default 0) while another live process owns one, and cleans up what
# a dead owner left before starting.
set -euo pipefail

STATE=${HVDAGENT_HOSTS_DIR:-/tmp/hvdagent-hosts}
NS_PREFIX=hvdagent-h
VETH_PREFIX=hvdagent-v
BRIDGE=hvd0
IFACE=hvd0

say() { printf '[hosts] %s\n' "$*" >&2; }
die() { printf '[hosts] ERROR: %s\n' "$*" >&2; exit 1; }

need_root() {
  [ "$(id -u)" = 0 ] || die "the test bed creates network namespaces: run it as root"
  command -v ip >/dev/null 2>&1 || die "ip (iproute2) is missing: bash ci/setup.sh installs it"
  [ -x /usr/sbin/sshd ] || die "sshd (openssh-server) is missing: bash ci/setup.sh installs it"
  command -v unshare >/dev/null 2>&1 || die "unshare (util-linux) is missing"
}

our_namespaces() { ip netns list 2>/dev/null | awk '{print $1}' | grep "^$NS_PREFIX[0-9]*$" || true; }

owner_alive() {
  local pid
  pid=$(cat "$STATE/owner" 2>/dev/null || true)
  [ -n "$pid" ] && [ "$pid" != 0 ] && kill -0 "$pid" 2>/dev/null
}

leftovers() {
  local out=""
  [ -d "$STATE" ] && out="$out state:$STATE"
  for ns in $(our_namespaces); do out="$out netns:$ns"; done
  ip link show "$BRIDGE" >/dev/null 2>&1 && out="$out link:$BRIDGE"
  for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep "^$VETH_PREFIX" || true); do
    out="$out link:$l"
  done
  for d in /etc/netns/$NS_PREFIX*; do [ -e "$d" ] && out="$out dir:$d"; done
  echo "$out"
}

kill_host_processes() {  # $1 = namespace; $2 = "all" or "keep-sshd"
  local ns=$1 keep=${2:-all} sshd_pid="" pids
  [ "$keep" = keep-sshd ] && sshd_pid=$(cat "$STATE/sshd-${ns#$NS_PREFIX}.pid" 2>/dev/null || true)
  for _ in 1 2 3 4 5; do
    pids=$(ip netns pids "$ns" 2>/dev/null | grep -vx "${sshd_pid:-none}" || true)
    [ -z "$pids" ] && return 0
    kill -9 $pids 2>/dev/null || true
    sleep 0.2
  done
}

down() {
  local ns
  for ns in $(our_namespaces); do
    kill_host_processes "$ns" all
    ip netns del "$ns" 2>/dev/null || true
  done
  # sshd daemons whose namespace is already gone (pid files of this test bed).
  for f in "$STATE"/sshd-*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f" 2>/dev/null || true)
    if [ -n "$pid" ] && grep -q "$STATE/sshd" "/proc/$pid/cmdline" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
  done
  slurm_stop
  ip link del "$BRIDGE" 2>/dev/null || true
  for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep "^$VETH_PREFIX" || true); do
    ip link del "$l" 2>/dev/null || true
  done
  rm -rf /etc/netns/$NS_PREFIX* 2>/dev/null || true
  rmdir /etc/netns 2>/dev/null || true
  if [ -f "$STATE/created-run-sshd" ]; then rmdir /run/sshd 2>/dev/null || true; fi
  rm -rf "$STATE"
}

pick_subnet() {
  local third
  for third in 37 38 39 40 41 42 43 44; do
    if ! ip -4 addr show | grep -q "inet 10\.213\.$third\." && ! ip -4 route show | grep -q "^10\.213\.$third\."; then
      echo "10.213.$third"
      return 0
    fi
  done
  die "no free /24 among 10.213.37.0 ... 10.213.44.0"
}

up() {
  local n=${1:-2} owner=${2:-0} waited=0 wait_max=${HVDAGENT_HOSTS_WAIT:-0}
  case "$n" in ''|*[!0-9]*) die "up takes a number of hosts (1-8). Received: $n";; esac
  [ "$n" -ge 1 ] && [ "$n" -le 8 ] || die "up takes a number of hosts (1-8). Received: $n"
  need_root
  case "${HVDAGENT_HOSTS_KEEPALIVE:-1}" in 0|1) ;; *) die "HVDAGENT_HOSTS_KEEPALIVE must be 0 (ssh's default: no keep-alive) or 1. Received: HVDAGENT_HOSTS_KEEPALIVE=$HVDAGENT_HOSTS_KEEPALIVE";; esac
  while [ -d "$STATE" ] && owner_alive; do
    [ "$waited" -ge "$wait_max" ] && die "a test bed owned by live process $(cat "$STATE/owner") exists; run 'ci/hosts.sh down' or wait"
    sleep 2; waited=$((waited + 2))
  done
  local left
  left=$(leftovers)
  if [ -n "$left" ]; then
    say "cleaning up what an earlier run left:$left"
    down
    left=$(leftovers)
    [ -z "$left" ] || die "could not remove leftovers:$left"
  fi
  ip netns add "${NS_PREFIX}probe" 2>/dev/null || die "cannot create network namespaces here (no CAP_SYS_ADMIN or no netns support)"
  ip netns del "${NS_PREFIX}probe"
  trap 'say "set-up failed; removing what was created"; down' ERR INT TERM
  mkdir -p "$STATE/bin" && chmod 700 "$STATE"
  echo "$owner" > "$STATE/owner"
  local subnet
  subnet=$(pick_subnet)
  echo "$subnet" > "$STATE/subnet"
  if [ ! -d /run/sshd ]; then mkdir -p /run/sshd && chmod 755 /run/sshd && touch "$STATE/created-run-sshd"; fi

  # Keys: one client key; a host key per host; known_hosts for names and addresses.
  ssh-keygen -q -t ed25519 -N '' -C hvdagent-test-bed -f "$STATE/id_ed25519"
  cp "$STATE/id_ed25519.pub" "$STATE/authorized_keys"
  : > "$STATE/known_hosts"
  {
    echo "# written by ci/hosts.sh; removed by 'ci/hosts.sh down'"
    echo "Host hvdhost* $subnet.*"
    echo "  User root"
    echo "  Port 22"
    echo "  IdentityFile $STATE/id_ed25519"
    echo "  IdentitiesOnly yes"
    echo "  UserKnownHostsFile $STATE/known_hosts"
    echo "  GlobalKnownHostsFile /dev/null"
    echo "  StrictHostKeyChecking yes"
    echo "  BatchMode yes"
    echo "  ConnectTimeout 10"
    if [ "${HVDAGENT_HOSTS_KEEPALIVE:-1}" != 0 ]; then
      echo "  ServerAliveInterval 5"
      echo "  ServerAliveCountMax 6"
    fi
    echo "  LogLevel ERROR"
  } > "$STATE/ssh_config"
  printf '#!/bin/sh\nexec /usr/bin/ssh -F %s "$@"\n' "$STATE/ssh_config" > "$STATE/bin/ssh"
  chmod +x "$STATE/bin/ssh"

  ip link add "$BRIDGE" type bridge
  ip addr add "$subnet.1/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up

  local i ns addr names="" hosts_lines="127.0.0.1 localhost"
  for i in $(seq 1 "$n"); do hosts_lines="$hosts_lines"$'\n'"$subnet.$((10 + i)) hvdhost$i"; done
  hosts_lines="$hosts_lines"$'\n'"$subnet.1 hvdlauncher"
  for i in $(seq 1 "$n"); do
    ns=$NS_PREFIX$i; addr=$subnet.$((10 + i))
    ip netns add "$ns"
    mkdir -p "/etc/netns/$ns"
    printf '%s\n' "$hosts_lines" > "/etc/netns/$ns/hosts"
    echo "hvdhost$i" > "/etc/netns/$ns/hostname"
    ip link add "$VETH_PREFIX$i" type veth peer name "${VETH_PREFIX}p$i"
    ip link set "${VETH_PREFIX}p$i" netns "$ns"
    ip -n "$ns" link set "${VETH_PREFIX}p$i" name "$IFACE"
    ip -n "$ns" addr add "$addr/24" dev "$IFACE"
    ip -n "$ns" link set "$IFACE" up
    ip -n "$ns" link set lo up
    ip -n "$ns" route add default via "$subnet.1"
    ip link set "$VETH_PREFIX$i" master "$BRIDGE"
    ip link set "$VETH_PREFIX$i" up

    ssh-keygen -q -t ed25519 -N '' -C "hvdhost$i" -f "$STATE/hostkey-$i"
    echo "hvdhost$i,$addr $(cut -d' ' -f1-2 "$STATE/hostkey-$i.pub")" >> "$STATE/known_hosts"
    printf 'Host hvdhost%s\n  HostName %s\n' "$i" "$addr" >> "$STATE/ssh_config.hosts"
    cat > "$STATE/sshd-$i.conf" <<EOF
ListenAddress $addr
Port 22
HostKey $STATE/hostkey-$i
PidFile $STATE/sshd-$i.pid
AuthorizedKeysFile $STATE/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
$([ "${HVDAGENT_HOSTS_KEEPALIVE:-1}" != 0 ] && printf 'ClientAliveInterval 5\nClientAliveCountMax 3')
MaxStartups 64:30:128
MaxSessions 64
LogLevel ERROR
EOF
    # Own UTS namespace (hostname) inside the network namespace; `ip netns
    # exec` bind-mounts /etc/netns/$ns/hosts over /etc/hosts for sshd and
    # everything it starts.
    ip netns exec "$ns" unshare --uts sh -c "hostname hvdhost$i && exec /usr/sbin/sshd -f '$STATE/sshd-$i.conf' -E '$STATE/sshd-$i.log'"
    names="$names${names:+,}hvdhost$i"
  done
  # Host aliases first: ssh uses the first value it finds for each option.
  cat "$STATE/ssh_config.hosts" "$STATE/ssh_config" > "$STATE/ssh_config.new" && mv "$STATE/ssh_config.new" "$STATE/ssh_config"
  rm -f "$STATE/ssh_config.hosts"
  {
    echo "export PATH=\"$STATE/bin:\$PATH\""
    echo "export HVDAGENT_HOSTS=$names"
    echo "export HVDAGENT_HOSTS_SUBNET=$subnet"
    echo "export HVDAGENT_HOSTS_DIR=$STATE"
  } > "$STATE/env"

  # Every host answers ssh and knows its own name.
  for i in $(seq 1 "$n"); do
    local tries=0
    until [ "$("$STATE/bin/ssh" "hvdhost$i" hostname 2>/dev/null)" = "hvdhost$i" ]; do
      tries=$((tries + 1))
      [ "$tries" -le 50 ] || die "sshd of hvdhost$i does not answer (log: $(cat "$STATE/sshd-$i.log" 2>/dev/null))"
      sleep 0.2
    done
  done
  trap - ERR INT TERM
  say "up: $n host(s) $names on $subnet.0/24, interface $IFACE; run: eval \"\$(ci/hosts.sh env)\""
}

shape() {  # $1 = RATE (tc units: 100mbit, 1gbit...) or "off"
  local rate=${1:-} burst ns i
  need_root
  command -v tc >/dev/null 2>&1 || die "tc (iproute2) is missing: bash ci/setup.sh installs it"
  [ -n "$(our_namespaces)" ] || die "no test bed to shape (ci/hosts.sh up N first)"
  # The links are shared by whoever uses the test bed: only its owner shapes them.
  if owner_alive && [ "${HVDAGENT_HOSTS_OWNER:-}" != "$(cat "$STATE/owner")" ]; then
    die "the test bed belongs to live process $(cat "$STATE/owner"): shape only your own (inside 'ci/hosts.sh run N -- CMD', or with HVDAGENT_HOSTS_OWNER set to the owner given to 'up')"
  fi
  if [ "$rate" != off ]; then
    burst=$(printf '%s\n' "$rate" | awk '
      /^[0-9]+(\.[0-9]+)?(kbit|mbit|gbit)$/ {
        n = $0; sub(/[a-z]+$/, "", n); u = $0; sub(/^[0-9.]+/, "", u)
        bps = n * (u == "kbit" ? 1e3 : u == "mbit" ? 1e6 : 1e9)
        b = bps / 8 * 0.002; if (b < 15000) b = 15000; printf "%d", b; exit }')
    [ -n "$burst" ] && [ "$burst" != 0 ] || die "shape takes a rate such as 100mbit, 1gbit or 2.5gbit, or off. Received: ${rate:-(nothing)}"
  fi
  for ns in $(our_namespaces); do
    i=${ns#$NS_PREFIX}
    if [ "$rate" = off ]; then
      tc qdisc del dev "$VETH_PREFIX$i" root 2>/dev/null || true
      ip netns exec "$ns" tc qdisc del dev "$IFACE" root 2>/dev/null || true
    else
      tc qdisc replace dev "$VETH_PREFIX$i" root tbf rate "$rate" burst "$burst" latency 50ms
      ip netns exec "$ns" tc qdisc replace dev "$IFACE" root tbf rate "$rate" burst "$burst" latency 50ms
    fi
  done
  if [ "$rate" = off ]; then rm -f "$STATE/shape"; else echo "$rate" > "$STATE/shape"; fi
  say "shape: $([ "$rate" = off ] && echo "links unlimited" || echo "every host's link limited to $rate each way (burst $burst bytes)")"

}

# -- Slurm on the test bed: slurmctld (and munged) on the launcher, slurmd on
# every host under its own NodeName, all state in $STATE/slurm.
SLURM_PACKAGES="slurmd slurmctld slurm-client munge"

slurm_stop() {  # the launcher's daemons (slurmd ends with its host's processes)
  local f pid
  for f in "$STATE"/slurm/ctld.pid "$STATE"/slurm/munge/pid "$STATE"/slurm/d-*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f" 2>/dev/null || true)
    if [ -n "$pid" ] && grep -q "$STATE/slurm" "/proc/$pid/cmdline" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
  done
}

slurm_install() {
  local missing="" p
  for p in slurmctld slurmd srun munged; do command -v "$p" >/dev/null 2>&1 || [ -x "/usr/sbin/$p" ] || missing="$missing $p"; done
  [ -z "$missing" ] && return 0
  command -v apt-get >/dev/null 2>&1 || die "Slurm is missing ($missing) and there is no apt-get: install $SLURM_PACKAGES"
  say "installing $SLURM_PACKAGES (missing:$missing)"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $SLURM_PACKAGES >"$STATE/slurm-install.log" 2>&1; then
    apt-get update -qq >>"$STATE/slurm-install.log" 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $SLURM_PACKAGES >>"$STATE/slurm-install.log" 2>&1 \
      || die "could not install $SLURM_PACKAGES (log: $STATE/slurm-install.log)"
  fi
}

slurm_up() {
  need_root
  [ -f "$STATE/env" ] || die "no test bed: ci/hosts.sh up N first"
  slurm_install
  slurm_stop
  local sl=$STATE/slurm subnet hosts="" i n=0 cgroup=cgroup/v1 tries=0
  subnet=$(cat "$STATE/subnet")
  n=$(our_namespaces | wc -l)
  rm -rf "$sl" && mkdir -p "$sl/ctld" "$sl/munge" && chmod 711 "$sl" "$sl/munge"
  dd if=/dev/urandom of="$sl/munge/munge.key" bs=1024 count=1 2>/dev/null && chmod 600 "$sl/munge/munge.key"
  # One munged serves every host: they share this machine's filesystem (and so the key).
  /usr/sbin/munged --force --socket="$sl/munge/sock" --key-file="$sl/munge/munge.key" --pid-file="$sl/munge/pid" \
    --log-file="$sl/munge/log" --seed-file="$sl/munge/seed"
  [ "$(stat -f -c %T /sys/fs/cgroup 2>/dev/null)" = cgroup2fs ] && cgroup=cgroup/v2
  printf 'CgroupPlugin=%s\nCgroupMountpoint=/sys/fs/cgroup\n' "$cgroup" > "$sl/cgroup.conf"
  for i in $(seq 1 "$n"); do
    mkdir -p "$sl/d-hvdhost$i" "$sl/tmp-hvdhost$i"
    hosts="$hosts"$'\n'"NodeName=hvdhost$i NodeAddr=$subnet.$((10 + i)) CPUs=2 State=UNKNOWN"
  done
  # Spool and TmpFS per node (%n): the hosts share /tmp, where Slurm's PMIx
  # plugin would otherwise make one directory name for all of them.
  cat > "$sl/slurm.conf" <<CONF
# written by ci/hosts.sh slurm up; removed by 'ci/hosts.sh down'
ClusterName=hvdagent
SlurmctldHost=hvdlauncher($subnet.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sl/munge/sock
StateSaveLocation=$sl/ctld
SlurmdSpoolDir=$sl/d-%n
TmpFS=$sl/tmp-%n
SlurmctldPidFile=$sl/ctld.pid
SlurmdPidFile=$sl/d-%n.pid
SlurmctldLogFile=$sl/ctld.log
SlurmdLogFile=$sl/d-%n.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
SlurmdTimeout=30
MessageTimeout=5
KillWait=5
MpiDefault=none
$hosts
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  unshare --uts sh -c "hostname hvdlauncher && exec slurmctld -f '$sl/slurm.conf' -i"
  for i in $(seq 1 "$n"); do
    ip netns exec "$NS_PREFIX$i" unshare --uts sh -c "hostname hvdhost$i && exec slurmd -f '$sl/slurm.conf' -N hvdhost$i"
  done
  { grep -v '^export SLURM_CONF=' "$STATE/env" || true; echo "export SLURM_CONF=$sl/slurm.conf"; } > "$STATE/env.new"
  mv "$STATE/env.new" "$STATE/env"
  until [ "$(SLURM_CONF=$sl/slurm.conf sinfo -h -N -o '%t' 2>/dev/null | grep -c '^idle')" = "$n" ]; do
    tries=$((tries + 1))
    [ "$tries" -le 60 ] || die "Slurm did not come up: $(SLURM_CONF=$sl/slurm.conf sinfo -N 2>&1); $(tail -n 3 "$sl/ctld.log" "$sl"/d-*.log 2>/dev/null)"
    sleep 1
  done
  say "slurm up: slurmctld on hvdlauncher ($subnet.1), slurmd on $n host(s); SLURM_CONF=$sl/slurm.conf"
}

host_ns() {
  case "${1:-}" in ''|*[!0-9]*) die "expected a host number. Received: ${1:-}";; esac
  ip netns list | awk '{print $1}' | grep -qx "$NS_PREFIX$1" || die "no host $1 (ci/hosts.sh status)"
  echo "$NS_PREFIX$1"
}

cmd=${1:-}
shift || true
case "$cmd" in
  up) up "${1:-2}" "${HVDAGENT_HOSTS_OWNER:-0}" ;;
  down) need_root; down; say "down: nothing of the test bed is left" ;;
  env) [ -f "$STATE/env" ] || die "no test bed (ci/hosts.sh up N)"; cat "$STATE/env" ;;
  status)
    left=$(leftovers)
    if [ -z "$left" ]; then echo "no test bed"; else echo "test bed:$left"; [ -f "$STATE/shape" ] && echo "links limited to $(cat "$STATE/shape") each way"; for ns in $(our_namespaces); do echo "$ns pids: $(ip netns pids "$ns" | tr '\n' ' ')"; done; fi ;;
  kill) ns=$(host_ns "${1:-}"); kill_host_processes "$ns" keep-sshd ;;
  cut) host_ns "${1:-}" >/dev/null; ip link set "$VETH_PREFIX$1" down ;;
  heal) host_ns "${1:-}" >/dev/null; ip link set "$VETH_PREFIX$1" up ;;
  shape) shape "${1:-}" ;;
  exec)
    ns=$(host_ns "${1:-}"); i=$1; shift
    [ "${1:-}" = "--" ] && shift
    [ $# -gt 0 ] || die "usage: ci/hosts.sh exec I -- COMMAND..."
    # `ip netns exec` also puts /etc/netns/$ns/hosts over /etc/hosts.
    exec ip netns exec "$ns" unshare --uts sh -c 'hostname "$0" && exec "$@"' "hvdhost$i" "$@" ;;
  slurm)
    case "${1:-}" in
      up) slurm_up ;;
      down) need_root; slurm_stop; rm -rf "$STATE/slurm"; [ -f "$STATE/env" ] && sed -i '/^export SLURM_CONF=/d' "$STATE/env"; say "slurm down" ;;
      *) die "usage: ci/hosts.sh slurm up|down. Received: ${1:-}" ;;
    esac ;;
  run)
    n=${1:-2}; shift || true
    [ "${1:-}" = "--" ] && shift
    [ $# -gt 0 ] || die "usage: ci/hosts.sh run N -- COMMAND..."
    export HVDAGENT_HOSTS_OWNER=$$
    up "$n" "$$"
    trap 'down' EXIT
    trap 'exit 130' INT TERM
    # shellcheck disable=SC1091
    . "$STATE/env"
    "$@" ;;
  *) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; [ -z "$cmd" ] || [ "$cmd" = help ] || exit 2 ;;
esac

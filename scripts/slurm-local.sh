#!/usr/bin/env bash
# A single-node SLURM on this machine, for the tests and for trying the cluster path:
#
#   sudo scripts/slurm-local.sh up       # install if missing, configure, start; waits for an idle node
#   scripts/slurm-local.sh status        # sinfo + squeue
#   sudo scripts/slurm-local.sh down     # scancel everything, stop the daemons (idempotent)
#
# Needs root and Debian/Ubuntu (apt-get). Everything lives in $GROK_SLURM_DIR (default
# /tmp/grok-slurm): slurm.conf, slurmdbd.conf, cgroup.conf, MariaDB data, state, spool, logs, pid
# files. /etc/slurm/slurm.conf is linked to it (unless a slurm.conf of someone else is there), so
# sinfo/sbatch/submitit find the cluster without SLURM_CONF. Daemons are started directly (no
# systemd) and stopped by PID. Settings and pitfalls: docs/cluster.md.
set -euo pipefail

DIR=${GROK_SLURM_DIR:-/tmp/grok-slurm}
CLUSTER=${GROK_SLURM_CLUSTER:-grok}
DB_PORT=${GROK_SLURM_DB_PORT:-3316}        # MariaDB on 127.0.0.1 only, apart from any system one
PKGS=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
export SLURM_CONF=$DIR/slurm.conf
export PATH=$PATH:/usr/sbin:/sbin

say() { echo "slurm-local: $*" >&2; }
die() { say "error: $*"; exit 1; }

alive() {  # alive PIDFILE: the process the file names is running
  [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

wait_for() {  # wait_for SECONDS WHAT CMD...: poll CMD every 0.1 s
  local limit=$1 what=$2 i
  shift 2
  for ((i = 0; i < limit * 10; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "$what not ready after ${limit}s (logs: $DIR/log)"
}

install_packages() {
  local missing=0 cmd
  for cmd in slurmctld slurmd sinfo sbatch sacctmgr munged slurmdbd mariadbd mariadb-install-db; do
    command -v "$cmd" >/dev/null || missing=1
  done
  ((missing)) || return 0
  say "installing ${PKGS[*]}"
  # Keep package scripts from starting services: we start our own, in $DIR.
  local policy=/usr/sbin/policy-rc.d ours=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && ours=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  local apt=(apt-get install -y -q --no-install-recommends -o Dpkg::Use-Pty=0 "${PKGS[@]}")
  "${apt[@]}" >"$DIR/log/apt.log" 2>&1 || { apt-get update -q >>"$DIR/log/apt.log" 2>&1 && "${apt[@]}" >>"$DIR/log/apt.log" 2>&1; } \
    || { ((ours)) && rm -f "$policy"; tail -20 "$DIR/log/apt.log" >&2; die "apt-get install failed (log: $DIR/log/apt.log)"; }
  ((ours)) && rm -f "$policy"
  return 0
}

write_configs() {
  local cpus mem
  cpus=$(nproc)
  mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
  mem=$((mem * 9 / 10))
  cat >"$DIR/slurm.conf" <<EOF
# Written by scripts/slurm-local.sh: a single-node test cluster. Rewritten on every 'up'.
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# A requeued job waits cred_expire+1 s before it may start again (default 120).
AuthInfo=cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
KillWait=5
ReturnToService=2
InactiveLimit=0
MinJobAge=300
MailProg=/bin/true
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobCompType=jobcomp/none
SlurmctldDebug=info
SlurmdDebug=info
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$DIR/slurmdbd.conf" <<EOF
# Written by scripts/slurm-local.sh.
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
DebugLevel=info
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=root
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$DIR/slurmdbd.conf"
  cat >"$DIR/cgroup.conf" <<EOF
# Written by scripts/slurm-local.sh. Unused: proctrack/linuxproc and task/none need no cgroups.
CgroupAutomount=no
ConstrainCores=no
ConstrainRAMSpace=no
EOF
  # Client commands (and submitit) read /etc/slurm/slurm.conf unless SLURM_CONF says otherwise.
  mkdir -p /etc/slurm
  local etc=/etc/slurm/slurm.conf
  if [[ ! -e $etc || -L $etc ]]; then
    ln -sfn "$DIR/slurm.conf" "$etc"
  elif [[ $(readlink -f "$etc") != "$DIR/slurm.conf" ]]; then
    say "note: $etc belongs to another cluster; use: export SLURM_CONF=$DIR/slurm.conf"
  fi
}

start_munge() {
  # A munged that already answers (the system's, or ours from an earlier 'up') is used as it is.
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
  if [[ ! -s /etc/munge/munge.key ]]; then
    install -d -o munge -g munge -m 0700 /etc/munge
    mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
      || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
  fi
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge "$DIR/munge"
  rm -f /run/munge/munge.socket.2.lock 2>/dev/null || true
  runuser -u munge -- munged --force --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log"
  wait_for 10 munged sh -c 'munge -n | unmunge'
}

start_mariadb() {
  alive "$DIR/run/mariadb.pid" && return 0
  local db=$DIR/mysql
  if [[ ! -d $db/mysql ]]; then
    rm -rf "$db"
    mariadb-install-db --no-defaults --datadir="$db" --user=root --auth-root-authentication-method=normal \
      --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1 \
      || { tail -20 "$DIR/log/mariadb-install.log" >&2; die "mariadb-install-db failed"; }
  fi
  # Small buffers: a few jobs of accounting. Listens on 127.0.0.1 only.
  (umask 077; setsid mariadbd --no-defaults --datadir="$db" --user=root --bind-address=127.0.0.1 \
    --port="$DB_PORT" --socket="$DIR/run/mysqld.sock" --pid-file="$DIR/run/mariadb.pid" \
    --log-error="$DIR/log/mariadb.log" --innodb-buffer-pool-size=32M --innodb-log-file-size=16M \
    --skip-log-bin --skip-name-resolve </dev/null >/dev/null 2>&1 &)
  wait_for 60 MariaDB mariadb-admin --no-defaults --socket="$DIR/run/mysqld.sock" -uroot ping
}

start_slurmdbd() {
  alive "$DIR/run/slurmdbd.pid" || slurmdbd
  wait_for 30 slurmdbd sacctmgr -n list cluster
  if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
  fi
}

node_idle() { [[ $(sinfo -h -n localhost -o %T 2>/dev/null) == idle* ]]; }

up() {
  [[ $EUID -eq 0 ]] || die "run as root (sudo $0 up)"
  local start=$EPOCHREALTIME
  mkdir -p "$DIR"/{state,spool,log,run}
  chmod 755 "$DIR"
  install_packages
  local t_inst=$EPOCHREALTIME
  write_configs
  start_munge
  start_mariadb
  start_slurmdbd
  if alive "$DIR/run/slurmctld.pid"; then scontrol reconfigure >/dev/null 2>&1 || true; else slurmctld; fi
  alive "$DIR/run/slurmd.pid" || slurmd -N localhost
  wait_for 60 "an idle node" node_idle
  say "up in $(awk "BEGIN { printf \"%.1f s (install %.1f s, start %.1f s)\", \
    $EPOCHREALTIME - $start, $t_inst - $start, $EPOCHREALTIME - $t_inst }") (state: $DIR)"
  sinfo
}

stop_all() {  # stop_all PIDFILE...: TERM them all, wait up to 15 s, KILL what is left
  local f pids=() i
  for f; do alive "$f" && pids+=("$(cat "$f")"); rm -f "$f"; done
  ((${#pids[@]})) || return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do kill -0 "${pids[@]}" 2>/dev/null || return 0; sleep 0.1; done
  for f in "${pids[@]}"; do
    kill -0 "$f" 2>/dev/null && { say "pid $f did not stop in 15 s: killing it"; kill -KILL "$f" 2>/dev/null || true; }
  done
  return 0
}

down() {
  [[ -d $DIR ]] || { say "nothing to stop ($DIR absent)"; return 0; }
  if alive "$DIR/run/slurmctld.pid" && [[ -n $(squeue -h -o %A 2>/dev/null) ]]; then
    # shellcheck disable=SC2046  # one argument per job id
    scancel $(squeue -h -o %A) 2>/dev/null || true
    local i
    for ((i = 0; i < 150; i++)); do [[ -z $(squeue -h -o %A 2>/dev/null) ]] && break; sleep 0.1; done
  fi
  # munged only if this script started it (a system munged has no pid file here)
  stop_all "$DIR"/run/{slurmd,slurmctld,slurmdbd,mariadb}.pid "$DIR/munge/munged.pid"
  [[ -L /etc/slurm/slurm.conf && $(readlink /etc/slurm/slurm.conf) == "$DIR/slurm.conf" ]] && rm -f /etc/slurm/slurm.conf
  say "down"
}

status() {
  sinfo && squeue
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status   (state dir: \$GROK_SLURM_DIR, now $DIR)" >&2; exit 2 ;;
esac

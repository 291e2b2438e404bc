#!/usr/bin/env bash
# A single-node Slurm on localhost for the tests: munged + slurmctld + slurmd, no cgroups, no slurmdbd (so the
# Snakemake profile polls with squeue). Runs as root (apt-get installs slurm-wlm and munge when missing).
#
#   PREFIX=/tmp/my-slurm bash tests/slurm/local_slurm.sh start   # configure, start the daemons, smoke test
#   eval "$(PREFIX=/tmp/my-slurm bash tests/slurm/local_slurm.sh env)"   # SLURM_CONF and PATH for clients
#   PREFIX=/tmp/my-slurm bash tests/slurm/local_slurm.sh stop    # stop exactly the daemons it started
#
# A good neighbour: several instances (one PREFIX each) run side by side on one machine.
# - Everything an instance writes or reads lives under $PREFIX: config, munge key and socket, spool, state,
#   logs, PID files, an empty plugstack.conf. Nothing machine-wide is written (apart from apt-get's packages).
# - The controller and slurmd listen on TCP ports that were free when it started (SLURMCTLD_PORT and SLURMD_PORT
#   choose them instead), picked below the ephemeral range so that outgoing connections do not take them.
# - Inside each job, Snakemake's slurm-jobstep plugin (0.6) deletes every SLURM_* variable but the job's identity,
#   SLURM_CONF included, before the `srun` that runs the job's command; that srun would then read the
#   compiled-in /etc/slurm/slurm.conf, which only one instance could own. Instead, $PREFIX/bin/srun runs the real
#   srun with this instance's SLURM_CONF when none is set; put $PREFIX/bin first on the PATH of Snakemake
#   (the `env` command does), and jobs, which inherit that PATH (sbatch --export=ALL), find it.
# - `stop` kills only the PIDs it recorded, and only while each still runs this instance's command line.
# - `start` fails (non-zero, with the daemons' log tails) when the controller does not answer `scontrol ping`
#   or the node does not come up within START_TIMEOUT seconds, and then stops what it started.
set -euo pipefail
PREFIX=${PREFIX:-/tmp/slurm-local}
case "$PREFIX" in /*) ;; *) PREFIX=$(pwd)/$PREFIX ;; esac
NODE=$(hostname -s)
NCPU=${NCPU:-$(nproc)}
MEM_MB=${MEM_MB:-$(( $(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo) - 2048 ))}
GPUS=${GPUS:-0}      # > 0: the node declares that many GPUs, without devices (plan GPU jobs; nothing runs on them)
START_TIMEOUT=${START_TIMEOUT:-60}
export SLURM_CONF=$PREFIX/etc/slurm.conf
MUNGE_SOCK=$PREFIX/munge/munge.socket.2
PIDS=$PREFIX/pids
REAL_SRUN=${REAL_SRUN:-/usr/bin/srun}

log_tails() {
  local file
  for file in "$PREFIX"/log/{slurmctld.log,slurmctld.out,slurmd.log,slurmd.out,munged.log}; do
    [ -s "$file" ] && { echo "--- tail of $file"; tail -n 20 "$file"; }
  done
  return 0
}

fail() {
  echo "local_slurm.sh: $*" >&2
  log_tails >&2
  stop_daemons >&2 || true
  exit 1
}

install_pkgs() {
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    # wait for another instance's apt-get instead of failing on the dpkg lock
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    # slurm-wlm munge: 9 packages, ~3.5 MB, ~6 s
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
  fi
}

# A TCP port in [20000, 32000) that no socket of this machine uses (any state, IPv4 and IPv6), other than $1.
free_port() {
  local used port i
  used=" $(for table in /proc/net/tcp /proc/net/tcp6; do [ -r "$table" ] && tail -n +2 "$table"; done |
           while read -r _ local _; do echo -n "$((16#${local##*:})) "; done)"
  for i in $(seq 200); do
    port=$(( 20000 + RANDOM % 12000 ))
    if [ "$port" != "${1:-}" ] && [[ "$used" != *" $port "* ]]; then echo "$port"; return 0; fi
  done
  echo "no free TCP port found in [20000, 32000)" >&2
  return 1
}

running() {  # running PID: the recorded process is alive and still one of this instance's daemons
  [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' < "/proc/$1/cmdline" | grep -qF -- "$PREFIX/"
}

make_dirs() {
  mkdir -p "$PREFIX"/{bin,etc,munge,log,spool/ctld,spool/d,run}
  chmod 0755 "$PREFIX/munge"
  if [ ! -s "$PREFIX/munge/munge.key" ]; then
    dd if=/dev/urandom of="$PREFIX/munge/munge.key" bs=1 count=1024 status=none
    chmod 0400 "$PREFIX/munge/munge.key"
  fi
}

write_config() {
  : > "$PREFIX/etc/plugstack.conf"
  cat > "$SLURM_CONF" <<EOF
ClusterName=local$(echo -n "$PREFIX" | cksum | cut -d' ' -f1)
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCK
SlurmctldPort=$CTLD_PORT
SlurmdPort=$D_PORT
StateSaveLocation=$PREFIX/spool/ctld
SlurmdSpoolDir=$PREFIX/spool/d
SlurmctldPidFile=$PREFIX/run/slurmctld.pid
SlurmdPidFile=$PREFIX/run/slurmd.pid
SlurmctldLogFile=$PREFIX/log/slurmctld.log
SlurmdLogFile=$PREFIX/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# not the machine-wide /etc/slurm/plugstack.conf
PlugStackConfig=$PREFIX/etc/plugstack.conf
# --- no cgroups anywhere ---
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# no slurmdbd: accounting disabled, so the Snakemake profile polls with squeue
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
# finished jobs also written to a text file
JobCompType=jobcomp/filetxt
JobCompLoc=$PREFIX/log/jobcomp.txt
# keep finished jobs visible to squeue/scontrol for 10 min (snakemake's squeue status mode needs >= 120 s)
MinJobAge=600
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without a default, a job with no --mem gets the whole node's memory and blocks every other job
DefMemPerCPU=1000
# silence 'Configured MailProg is invalid' (no mail program installed)
MailProg=/bin/true
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
InactiveLimit=0
KillWait=30
Waittime=0
# the node as written here, even where NCPU, MEM_MB or GPUS exceed the machine
SlurmdParameters=config_overrides
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$NCPU RealMemory=$MEM_MB $([ "$GPUS" -gt 0 ] && echo "Gres=gpu:$GPUS") State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  # gres.conf, read from the directory of SLURM_CONF: fake GPUs, one empty file each under $PREFIX/dev
  : > "$PREFIX/etc/gres.conf"
  if [ "$GPUS" -gt 0 ]; then
    mkdir -p "$PREFIX/dev"
    for i in $(seq 0 $(( GPUS - 1 ))); do : > "$PREFIX/dev/gpu$i"; done
    echo "NodeName=$NODE Name=gpu File=$PREFIX/dev/gpu[0-$(( GPUS - 1 ))]" > "$PREFIX/etc/gres.conf"
  fi
  # The srun that the slurm-jobstep plugin runs inside each job, without SLURM_CONF (see the header).
  cat > "$PREFIX/bin/srun" <<EOF
#!/bin/sh
# srun of the local Slurm under $PREFIX: its SLURM_CONF when none is set (tests/slurm/local_slurm.sh)
export SLURM_CONF="\${SLURM_CONF:-$SLURM_CONF}"
exec $REAL_SRUN "\$@"
EOF
  chmod 0755 "$PREFIX/bin/srun"
}

start_munged() {
  # munged as root on a private socket (--force: accept running as root with a root-owned key)
  /usr/sbin/munged --foreground --force \
      --socket="$MUNGE_SOCK" --key-file="$PREFIX/munge/munge.key" \
      --pid-file="$PREFIX/munge/munged.pid" --log-file="$PREFIX/log/munged.log" \
      --seed-file="$PREFIX/munge/munged.seed" > "$PREFIX/log/munged.out" 2>&1 &
  echo "munged $!" >> "$PIDS"
  for _ in $(seq 50); do [ -S "$MUNGE_SOCK" ] && break; sleep 0.1; done
  munge --socket="$MUNGE_SOCK" -n | unmunge --socket="$MUNGE_SOCK" >/dev/null || fail "munged did not start"
  echo "munge OK"
}

# Start slurmctld and slurmd; 0 when the controller answers and the node is idle, 2 when a port was taken
# (the caller picks others), 1 on any other failure.
start_slurm() {
  local pid_ctld pid_d deadline
  : > "$PREFIX/log/slurmctld.log"; : > "$PREFIX/log/slurmd.log"
  # -D: stay in the foreground (so $! is the daemon's PID); -i: ignore unreadable state on first start
  /usr/sbin/slurmctld -D -i -f "$SLURM_CONF" > "$PREFIX/log/slurmctld.out" 2>&1 &
  pid_ctld=$!
  echo "slurmctld $pid_ctld" >> "$PIDS"
  deadline=$(( SECONDS + START_TIMEOUT ))
  until scontrol ping 2>/dev/null | grep -q 'is UP'; do
    if ! running "$pid_ctld" || [ $SECONDS -ge $deadline ]; then
      grep -qs 'Address already in use' "$PREFIX"/log/slurmctld.{log,out} && return 2
      echo "slurmctld did not answer 'scontrol ping' within ${START_TIMEOUT}s" >&2; return 1
    fi
    sleep 0.5
  done
  /usr/sbin/slurmd -D -f "$SLURM_CONF" > "$PREFIX/log/slurmd.out" 2>&1 &
  pid_d=$!
  echo "slurmd $pid_d" >> "$PIDS"
  until sinfo -h -o '%T' 2>/dev/null | grep -q '^idle'; do
    if ! running "$pid_d" || [ $SECONDS -ge $deadline ]; then
      grep -qs 'Address already in use' "$PREFIX"/log/slurmd.{log,out} && return 2
      echo "node $NODE did not become idle within ${START_TIMEOUT}s" >&2; return 1
    fi
    sleep 0.5
  done
  return 0
}

stop_slurm() {  # slurmd and slurmctld only (munged stays), for another try on other ports
  local name pid
  while read -r name pid; do
    if [[ "$name" = slurm* ]] && running "$pid"; then kill "$pid"; fi
  done < "$PIDS"
  sleep 1
  while read -r name pid; do
    if [[ "$name" = slurm* ]] && running "$pid"; then kill -9 "$pid"; fi
  done < "$PIDS"
  sed -i '/^slurmd /d; /^slurmctld /d' "$PIDS"
}

start_daemons() {
  local attempt status=0
  if [ -f "$PIDS" ]; then
    while read -r name pid; do
      if running "$pid"; then echo "local_slurm.sh: $name ($pid) of $PREFIX is running; stop it first" >&2; exit 1; fi
    done < "$PIDS"
  fi
  make_dirs
  : > "$PIDS"
  start_munged
  for attempt in 1 2 3; do
    CTLD_PORT=${SLURMCTLD_PORT:-$(free_port)}
    D_PORT=${SLURMD_PORT:-$(free_port "$CTLD_PORT")}
    write_config
    start_slurm && status=0 || status=$?
    [ $status = 0 ] && break
    # a port taken between the choice and the bind: stop and choose again (unless the ports were given)
    if [ $status = 2 ] && [ -z "${SLURMCTLD_PORT:-}${SLURMD_PORT:-}" ] && [ $attempt -lt 3 ]; then
      echo "port $CTLD_PORT or $D_PORT was taken; trying others"
      stop_slurm
      continue
    fi
    fail "Slurm under $PREFIX did not come up (ports $CTLD_PORT, $D_PORT)"
  done
  echo "slurmctld on port $CTLD_PORT, slurmd on port $D_PORT"
  sinfo
}

smoke_test() {
  cd "$PREFIX"
  local jid st="" out
  # the job's inner srun runs without SLURM_CONF, as in a Snakemake job: $PREFIX/bin/srun must find the config
  jid=$(PATH="$PREFIX/bin:$PATH" sbatch --parsable -o "$PREFIX/log/wrap-%j.out" \
        --wrap 'hostname; env -u SLURM_CONF srun -n1 hostname') || fail "sbatch failed"
  for _ in $(seq 120); do
    st=$(scontrol show job "$jid" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
    case "$st" in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY) break ;; esac
    sleep 0.5
  done
  out=$(cat "$PREFIX/log/wrap-$jid.out" 2>/dev/null || true)
  echo "sbatch job $jid: $st; output: $(echo "$out" | tr '\n' ' ')"
  if [ "$st" != COMPLETED ] || [ "$(echo "$out" | grep -cxF "$(hostname)")" != 2 ]; then
    fail "smoke-test job $jid: ${st:-no state}: $out"
  fi
  echo "srun hostname: $(srun -N1 -n1 hostname)"
}

stop_daemons() {
  [ -f "$PIDS" ] || { echo "no pid file under $PREFIX"; return 0; }
  local name pid alive
  # reverse start order: slurmd, slurmctld, munged
  tac "$PIDS" | while read -r name pid; do
    if running "$pid"; then kill "$pid"; echo "stopped $name ($pid)"; fi
  done
  for _ in $(seq 10); do
    alive=0
    while read -r name pid; do if running "$pid"; then alive=1; fi; done < "$PIDS"
    [ $alive = 0 ] && break
    sleep 0.5
  done
  tac "$PIDS" | while read -r name pid; do
    if running "$pid"; then kill -9 "$pid"; echo "killed -9 $name ($pid)"; fi
  done
  rm -f "$PIDS"
}

case "${1:-start}" in
  start) install_pkgs; start_daemons; smoke_test ;;
  stop)  stop_daemons ;;
  env)   echo "export SLURM_CONF=$SLURM_CONF PATH=$PREFIX/bin:\$PATH" ;;
  *) echo "usage: $0 start|stop|env"; exit 2 ;;
esac

#!/usr/bin/env bash
# A single-node Slurm on localhost for the tests: munged + slurmctld + slurmd, no cgroups, no slurmdbd
# (so the Snakemake profile polls with squeue). Everything the daemons write lives under $PREFIX.
# Adapted from the shared single-node recipe; runs as root (apt-get installs slurm-wlm and munge).
#
#   bash tests/slurm/local_slurm.sh start   # install (if needed), configure, start daemons, smoke test
#   bash tests/slurm/local_slurm.sh stop    # stop exactly the daemons it started, by their recorded PIDs
#   eval "$(bash tests/slurm/local_slurm.sh env)"   # export SLURM_CONF
set -euo pipefail
PREFIX=${PREFIX:-/tmp/slurm-local}
NODE=$(hostname -s)
NCPU=${NCPU:-$(nproc)}
MEM_MB=${MEM_MB:-$(( $(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo) - 2048 ))}
export SLURM_CONF=$PREFIX/etc/slurm.conf
MUNGE_SOCK=$PREFIX/munge/munge.socket.2

install_pkgs() {
  local pkgs="slurm-wlm munge"
  local missing=0
  command -v slurmctld >/dev/null && command -v munged >/dev/null || missing=1
  if [ $missing = 1 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # slurm-wlm munge: 9 packages, ~3.5 MB, ~6 s
    apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
  fi
}

write_config() {
  mkdir -p "$PREFIX"/{etc,munge,log,spool/ctld,spool/d,run}
  chmod 0755 "$PREFIX/munge"
  if [ ! -s "$PREFIX/munge/munge.key" ]; then
    dd if=/dev/urandom of="$PREFIX/munge/munge.key" bs=1 count=1024 status=none
    chmod 0400 "$PREFIX/munge/munge.key"
  fi
  cat > "$SLURM_CONF" <<EOF
ClusterName=localcluster
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCK
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$PREFIX/spool/ctld
SlurmdSpoolDir=$PREFIX/spool/d
SlurmctldPidFile=$PREFIX/run/slurmctld.pid
SlurmdPidFile=$PREFIX/run/slurmd.pid
SlurmctldLogFile=$PREFIX/log/slurmctld.log
SlurmdLogFile=$PREFIX/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
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
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$NCPU RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  # The snakemake slurm-jobstep plugin strips every SLURM_* variable (SLURM_CONF included) before the
  # nested `srun` inside each job, so the config must ALSO be found at Slurm's compiled-in default path.
  mkdir -p /etc/slurm
  ln -sfn "$SLURM_CONF" /etc/slurm/slurm.conf
}

start_daemons() {
  : > "$PREFIX/pids"
  # munged as root on a private socket (--force: accept running as root with a root-owned key)
  /usr/sbin/munged --foreground --force \
      --socket="$MUNGE_SOCK" --key-file="$PREFIX/munge/munge.key" \
      --pid-file="$PREFIX/munge/munged.pid" --log-file="$PREFIX/log/munged.log" \
      --seed-file="$PREFIX/munge/munged.seed" > "$PREFIX/log/munged.out" 2>&1 &
  echo "munged $!" >> "$PREFIX/pids"
  for i in $(seq 50); do [ -S "$MUNGE_SOCK" ] && break; sleep 0.1; done
  munge --socket="$MUNGE_SOCK" -n | unmunge --socket="$MUNGE_SOCK" >/dev/null && echo "munge OK"
  # -D: stay in the foreground (so $! is the daemon's PID); -i: ignore unreadable state on first start
  /usr/sbin/slurmctld -D -i -f "$SLURM_CONF" > "$PREFIX/log/slurmctld.out" 2>&1 &
  echo "slurmctld $!" >> "$PREFIX/pids"
  /usr/sbin/slurmd -D -f "$SLURM_CONF" > "$PREFIX/log/slurmd.out" 2>&1 &
  echo "slurmd $!" >> "$PREFIX/pids"
  for i in $(seq 60); do
    if sinfo -h -o '%T' 2>/dev/null | grep -q -E '^idle'; then break; fi
    sleep 0.5
  done
  sinfo
}

smoke_test() {
  cd "$PREFIX"
  local jid st=""
  jid=$(sbatch --parsable -o "$PREFIX/log/wrap-%j.out" --wrap 'hostname')
  for i in $(seq 60); do
    st=$(scontrol show job "$jid" 2>/dev/null | sed -n 's/.*JobState=\([A-Z]*\).*/\1/p')
    if [ "$st" = COMPLETED ] || [ "$st" = FAILED ]; then break; fi
    sleep 0.5
  done
  echo "sbatch job $jid: $st; output: $(cat "$PREFIX/log/wrap-$jid.out")"
  echo "srun hostname: $(srun -N1 -n1 hostname)"
}

stop_daemons() {
  [ -f "$PREFIX/pids" ] || { echo "no pid file"; return 0; }
  # reverse start order: slurmd, slurmctld, munged
  tac "$PREFIX/pids" | while read -r name pid; do
    if kill -0 "$pid" 2>/dev/null; then kill "$pid"; echo "stopped $name ($pid)"; sleep 1; fi
  done
  sleep 2
  tac "$PREFIX/pids" | while read -r name pid; do
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; echo "killed -9 $name ($pid)"; fi
  done
  rm -f "$PREFIX/pids"
  # remove the default-path link if it is ours
  if [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$SLURM_CONF" ]; then rm -f /etc/slurm/slurm.conf; fi
}

case "${1:-start}" in
  start) install_pkgs; write_config; start_daemons; smoke_test ;;
  stop)  stop_daemons ;;
  env)   echo "export SLURM_CONF=$SLURM_CONF" ;;
  *) echo "usage: $0 start|stop|env"; exit 2 ;;
esac

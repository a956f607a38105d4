#!/usr/bin/env bash
# A real single-node SLURM on localhost, for tests/slurm (and for trying docs/slurm.md by hand).
#
# Usage (as root, on Debian 12 / Ubuntu; idempotent: run it again to check or restart):
#   scripts/start_local_slurm.sh          # install if needed, configure, start, wait for `sinfo`
#   scripts/start_local_slurm.sh --stop   # stop the daemons this script starts
#
# What it sets up: munged, MariaDB, slurmdbd (accounting: submitit learns how a dead job ended
# through `sacct`; without it, waiting on a cancelled job never returns), slurmctld and slurmd,
# one node with this machine's CPUs, and two partitions:
#   debug  (default)  PriorityTier=1,  PreemptMode=REQUEUE: its jobs can be preempted
#   high              PriorityTier=10: a job here that needs the CPUs preempts debug's jobs. With
#                     no GraceTime they get their --signal (USR2 from submitit) and SIGTERM at
#                     once, save within KillWait (30 s), and SLURM requeues them.
# The settings below are the ones that mattered on SLURM 22.05 (Debian 12), see issue #12.
set -euo pipefail

CLUSTER=lazydet
CONF_DIR=/etc/slurm
STATE=/var/spool/slurm-lazydet
LOG=/var/log/slurm-lazydet
DB_PASSWORD=lazydet-local-slurm   # a throwaway database on localhost only

say() { echo "start_local_slurm: $*" >&2; }
die() { say "error: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (it installs packages and starts system daemons)."

# A killed daemon lingers as a zombie for a moment: only a process whose state is not Z counts.
running() {
    local pid state
    for pid in $(pgrep -x "$1" || true); do
        state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo Z)
        [[ $state != Z ]] && return 0
    done
    return 1
}

stop() {
    # Only the daemons this script started: their pid files are named in the configs below.
    local name pid
    for name in slurmd slurmctld slurmdbd; do
        pid=$(cat "/run/$name-lazydet.pid" 2>/dev/null || true)
        [[ -n $pid ]] && kill "$pid" 2>/dev/null || true
    done
    for _ in $(seq 50); do
        running slurmd || running slurmctld || running slurmdbd || return 0
        sleep 0.2
    done
    die "SLURM daemons still running after 10 s."
}

if [[ ${1:-} == --stop ]]; then
    stop
    say "stopped slurmd, slurmctld, slurmdbd (munged and MariaDB keep running)."
    exit 0
fi

wait_for() { # wait_for SECONDS WHAT COMMAND...
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq $((seconds * 5))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    die "$what did not come up in ${seconds} s (logs: $LOG/)."
}

# 1. Packages (a few seconds when already installed).
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v slurmdbd >/dev/null || ! command -v munged >/dev/null \
    || ! command -v sinfo >/dev/null || ! command -v mariadbd >/dev/null; then
    say "installing munge, SLURM and MariaDB with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends \
        munge slurmctld slurmd slurm-client slurmdbd mariadb-server >/dev/null
fi
mkdir -p "$CONF_DIR" "$STATE/ctld" "$STATE/d" "$LOG"

# 2. munge (authentication between the daemons and the clients).
if [[ ! -s /etc/munge/munge.key ]]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
install -d -o munge -g munge -m 755 /run/munge
install -d -o munge -g munge -m 700 /var/lib/munge /var/log/munge
if ! running munged; then
    runuser -u munge -- /usr/sbin/munged --force
fi
wait_for 10 munged bash -c 'munge -n | unmunge'

# 3. MariaDB and the accounting database.
install -d -o mysql -g mysql /run/mysqld
if ! running mariadbd && ! running mysqld; then
    if [[ ! -d /var/lib/mysql/mysql ]]; then
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    fi
    (setsid mariadbd --user=mysql --datadir=/var/lib/mysql \
        >"$LOG/mariadb.log" 2>&1 </dev/null &)
fi
wait_for 30 MariaDB mariadb -e 'SELECT 1'
mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

# 4. Configuration. The node gets this machine's CPUs and half of the memory free now
# (RealMemory above what the machine has would leave the node "invalid").
cpus=$(nproc)
memory=$(awk '/MemAvailable/ {print int($2 / 1024 / 2)}' /proc/meminfo)
# Keep the value already configured while it still fits: a new one would restart the daemons.
configured=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' "$CONF_DIR/slurm.conf" 2>/dev/null || true)
if [[ -n $configured && $configured -le $((memory * 2)) ]]; then memory=$configured; fi
node=$(hostname -s)
cat >"$CONF_DIR/slurmdbd.conf.new" <<EOF
# Written by lazydet's scripts/start_local_slurm.sh.
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=/run/slurmdbd-lazydet.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASSWORD
StorageLoc=slurm_acct_db
EOF
cat >"$CONF_DIR/slurm.conf.new" <<EOF
# Written by lazydet's scripts/start_local_slurm.sh: one node on localhost.
ClusterName=$CLUSTER
SlurmctldHost=localhost(127.0.0.1)
CommunicationParameters=NoInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# Credentials expire after 10 s instead of 120: a requeued job waits for that before it starts.
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=/run/slurmctld-lazydet.pid
SlurmdPidFile=/run/slurmd-lazydet.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
# No cgroups in a container: track processes through /proc, bind no tasks.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
MinJobAge=300
KillWait=30
# Preemption that checkpoints: the preempted job gets its --signal (USR2) too, not only SIGTERM.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
SchedulerParameters=sched_interval=5
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE
PartitionName=high Nodes=$node MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
EOF
changed=0
for f in slurm.conf slurmdbd.conf; do
    if ! cmp -s "$CONF_DIR/$f.new" "$CONF_DIR/$f"; then
        mv "$CONF_DIR/$f.new" "$CONF_DIR/$f"
        changed=1
    else
        rm "$CONF_DIR/$f.new"
    fi
done
chmod 600 "$CONF_DIR/slurmdbd.conf"
chmod 644 "$CONF_DIR/slurm.conf"
if [[ $changed == 1 ]]; then
    say "configuration changed: restarting the SLURM daemons"
    stop
fi

# 5. Daemons: slurmdbd, then the cluster in the database, then slurmctld and slurmd.
running slurmdbd || slurmdbd
wait_for 30 slurmdbd sacctmgr -n list cluster
if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi
running slurmctld || slurmctld
running slurmd || slurmd
wait_for 30 slurmctld scontrol ping
state() { sinfo -h -n "$node" -o '%T' 2>/dev/null | head -1; }
for _ in $(seq 150); do
    case $(state) in
    idle | mixed | allocated) break ;;
    down* | drain* | fail*) scontrol update nodename="$node" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.2
done
[[ $(state) =~ ^(idle|mixed|allocated)$ ]] || die "node $node is '$(state)', not idle (logs: $LOG/)."
say "SLURM is up: $(sinfo -h -o '%P %a %D %T' | tr '\n' ';')"

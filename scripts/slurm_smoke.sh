#!/usr/bin/env bash
# The smoke preset end to end through `ltsft slurm submit` on a real, single-node SLURM.
#
# Starts a private munged + slurmctld + slurmd on this machine (localhost, 2 CPUs; config,
# state, sockets and logs in a scratch folder, nothing under /etc changed), clones this
# repository's HEAD into the scratch folder, runs `ltsft preset smoke` and `ltsft slurm submit`
# there, waits for every job, prints each job's state and run time, and checks that
# `dvc status` is clean, that `dvc repro` runs nothing and that a second `ltsft slurm submit`
# has nothing to do. Then breaks one stage (overlap), checks that only what depends on it is
# cancelled, fixes it and checks that a new submission runs just that stage and its dependents.
# Stops the daemons it started (by their pid files) on exit.
#
# Needs: Debian's slurm-wlm and munge (installed with apt-get when missing and run as root),
# and the Python environment this is run from (`pip install -e .` done): the jobs use its
# `ltsft` and `dvc`, with the clone's code first on PYTHONPATH.
#
# Usage: scripts/slurm_smoke.sh [--keep]     (--keep: leave the scratch folder for inspection)
# Env:   SLURM_SMOKE_TIMEOUT (seconds to wait for the jobs, default 5400)
#        SLURM_SMOKE_CPUS    (the node's CPUs, default 2)
set -euo pipefail

keep=0
[[ "${1:-}" == "--keep" ]] && keep=1
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
timeout_s=${SLURM_SMOKE_TIMEOUT:-5400}
cpus=${SLURM_SMOKE_CPUS:-2}
say() { printf '[slurm-smoke %s] %s\n' "$(date +%T)" "$*"; }
die() { say "FAIL: $*"; exit 1; }

command -v ltsft >/dev/null || die "ltsft is not on PATH: activate the project's environment first"
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    [[ $(id -u) == 0 ]] || die "slurm-wlm and munge are missing and this is not root: apt-get install slurm-wlm munge"
    say "installing slurm-wlm and munge"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null
fi
[[ $(id -u) == 0 ]] || die "slurmd must run as root (it starts jobs as their owners)"

scratch=$(mktemp -d /tmp/ltsft-slurm-smoke.XXXXXX)
chmod 755 "$scratch"
mkdir -p "$scratch"/{munge,ctld,spool,log}
chmod 700 "$scratch/munge"
cleanup() {
    local status=$?
    for daemon in slurmd slurmctld munged; do
        if [[ -s "$scratch/$daemon.pid" ]]; then kill "$(cat "$scratch/$daemon.pid")" 2>/dev/null || true; fi
    done
    if [[ $keep == 1 || $status != 0 ]]; then say "scratch folder kept: $scratch"; else rm -rf "$scratch"; fi
}
trap cleanup EXIT

# munge: a private key and socket, so the machine's own munge (if any) is left alone.
dd if=/dev/urandom of="$scratch/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$scratch/munge/munge.key"
munged --force --key-file="$scratch/munge/munge.key" --socket="$scratch/munge/munge.socket" \
    --pid-file="$scratch/munged.pid" --log-file="$scratch/log/munged.log" --seed-file="$scratch/munge/seed"

# One node called localhost; linuxproc/task none: no cgroups needed (containers rarely have them).
# MinJobAge keeps finished jobs in slurmctld's memory for an hour, so `scontrol show job`
# still reports their state and run time without an accounting database.
conf="$scratch/slurm.conf"
cat >"$conf" <<EOF
ClusterName=ltsft-smoke
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$scratch/munge/munge.socket
SlurmctldPort=16817
SlurmdPort=16818
StateSaveLocation=$scratch/ctld
SlurmdSpoolDir=$scratch/spool
SlurmctldPidFile=$scratch/slurmctld.pid
SlurmdPidFile=$scratch/slurmd.pid
SlurmctldLogFile=$scratch/log/slurmctld.log
SlurmdLogFile=$scratch/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MinJobAge=3600
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=smoke Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$conf"
slurmctld -f "$conf"
slurmd -f "$conf" -N localhost
for _ in $(seq 60); do
    state=$(sinfo -h -N -o %T 2>/dev/null || true)
    [[ $state == idle ]] && break
    sleep 1
done
[[ ${state:-} == idle ]] || die "the node did not come up (sinfo: '${state:-}'); see $scratch/log"
say "SLURM up: $(sinfo -h -o '%P %D node(s) %c CPUs %T')"

# A clone of HEAD (what is committed is what is tested), its code first on the import path.
head=$(git -C "$repo" rev-parse HEAD)
git clone -q "$repo" "$scratch/repo"
cd "$scratch/repo"
git checkout -q "$head"
export PYTHONPATH="$scratch/repo${PYTHONPATH:+:$PYTHONPATH}"
# Several 1-CPU jobs share the cores: one thread each avoids OpenMP oversubscription.
export OMP_NUM_THREADS=1
[[ $(python -c 'import stages, os; print(os.path.dirname(os.path.dirname(stages.__file__)))') == "$scratch/repo" ]] \
    || die "the clone's code is not the one imported"
ltsft preset smoke

# Submit what `ltsft slurm submit` plans, wait for every job, print each one's state; sets
# $states ("job=STATE ...") and $wall (seconds from submission to the last job's end).
submit_and_wait() {
    ltsft slurm submit --cpus-per-task 1 --time 2:00:00 | grep -v '^submitted'
    local ids ids_csv start line state runtime node job id times=""
    mapfile -t ids < <(cut -f2 .ltsft/slurm/jobs.tsv)
    say "${#ids[@]} jobs submitted; waiting (up to ${timeout_s}s)"
    start=$(date +%s)
    ids_csv=$(IFS=,; echo "${ids[*]}")
    while [[ -n $(squeue -h -j "$ids_csv" -t PENDING,RUNNING,CONFIGURING,COMPLETING 2>/dev/null) ]]; do
        (( $(date +%s) - start < timeout_s )) || die "jobs still queued after ${timeout_s}s"
        sleep 5
    done
    wall=$(( $(date +%s) - start ))
    say "jobs (id, name, state, run time, node):"
    states=""
    while IFS=$'\t' read -r job id; do
        line=$(scontrol show job -o "$id")
        state=$(grep -o 'JobState=[A-Z_]*' <<<"$line" | cut -d= -f2)
        runtime=$(grep -o 'RunTime=[0-9:-]*' <<<"$line" | cut -d= -f2)
        node=$(grep -o ' NodeList=[^ ]*' <<<"$line" | cut -d= -f2)
        printf '  %-8s %-32s %-10s %-9s %s\n' "$id" "$job" "$state" "$runtime" "${node:-(none)}"
        states+="$job=$state "
        [[ $runtime != 00:00:00 ]] && times+="$(grep -o 'StartTime=[^ ]*' <<<"$line" | cut -d= -f2) $(grep -o 'EndTime=[^ ]*' <<<"$line" | cut -d= -f2)"$'\n'
    done <.ltsft/slurm/jobs.tsv
    # Independent stages really ran at once: the most jobs running at the same moment.
    local most
    most=$(python - "$times" <<'PY'
import sys
from datetime import datetime
events = []
for line in sys.argv[1].split("\n"):
    if line.strip():
        start, end = (datetime.fromisoformat(t).timestamp() for t in line.split())
        events += [(start, 1), (end, -1)]
running = most = 0
for _, step in sorted(events, key=lambda e: (e[0], e[1])):
    running += step
    most = max(most, running)
print(most)
PY
)
    say "wall time from submission to the last job's end: ${wall}s; most jobs running at the same moment: $most"
}

expect_clean() {
    local status repro again
    status=$(dvc status)
    say "dvc status: $status"
    grep -q "up to date" <<<"$status" || die "dvc status is not clean"
    repro=$(dvc repro 2>&1)
    grep -q "Running stage" <<<"$repro" && die "dvc repro ran stages: $repro"
    say "dvc repro: $(grep -c "didn't change, skipping" <<<"$repro") stages skipped, none run"
    again=$(ltsft slurm submit --dry-run)
    say "ltsft slurm submit again: $again"
    grep -q "Nothing to do" <<<"$again" || die "a second submission would still run stages"
}

say "1/3: the whole smoke pipeline"
submit_and_wait
[[ $(grep -o '=[A-Z_]*' <<<"$states" | sort -u) == "=COMPLETED" ]] || die "not every job COMPLETED; logs in $scratch/repo/.ltsft/slurm/"
expect_clean

say "2/3: a stage that fails (stages/overlap.py raises): what reads it is cancelled, the rest stays recorded"
printf '\nraise SystemExit("injected failure (scripts/slurm_smoke.sh)")\n' >>stages/overlap.py
submit_and_wait
for expected in overlap@pos=FAILED report=CANCELLED dvc.check=CANCELLED; do
    grep -q "$expected" <<<"$states" || die "expected $expected, got: $states"
done
say "log of the failed job: $(tail -n 1 .ltsft/slurm/overlap@pos.out)"
say "dvc status now: $(dvc status | grep -o '^[a-z_@.0-9-]*:' | tr '\n' ' ')"

say "3/3: fixed, submitted again: only the failed stage and what is downstream of it"
git checkout -q stages/overlap.py
submit_and_wait
[[ $(cut -f1 .ltsft/slurm/jobs.tsv | tr '\n' ' ') == "overlap@pos report dvc.check " ]] || die "unexpected plan: $(cut -f1 .ltsft/slurm/jobs.tsv | tr '\n' ' ')"
[[ $(grep -o '=[A-Z_]*' <<<"$states" | sort -u) == "=COMPLETED" ]] || die "not every job COMPLETED: $states"
expect_clean
say "OK: every stage ran as a SLURM job, a failure cancelled only what depends on it, and dvc finds everything up to date"

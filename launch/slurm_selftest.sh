#!/usr/bin/env bash
# launch/slurm.sbatch under a real Slurm: a one-node cluster (munged, slurmctld -D, slurmd -D) in
# a temporary folder, two CPU ranks on configs/debug.yaml (three epochs, 192 steps):
#   1. a job trains unbroken (status 0): the numbers every other run must reproduce;
#   2. a second job gets `scancel -s TERM` mid-run (every process of the step, as a preemption
#      or --signal=TERM@120 does): status 130, both ranks saved the same step, no traceback;
#   3. a new job pointed at that run folder is refused (status 2), and so is its requeue;
#   4. `scontrol requeue` of the stopped job resumes the folder; that attempt gets SIGTERM on the
#      batch shell alone (`scancel -b`, as --signal=B:TERM does) and saves again;
#   5. the next attempt is requeued while it runs (`scontrol requeue`: SIGTERM to every process,
#      SIGKILL after KillWait) and saves again; the attempt after it finishes, with exactly the
#      metrics of the unbroken job.
# The daemons are stopped by pid when it ends, also on failure. Status 0: passed; 1: failed;
# 77: cannot run here (no Slurm, not root), with the reason.
#   bash launch/slurm_selftest.sh          # PYTHON=... for another interpreter; KEEP=1 keeps the folder
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY=${PYTHON:-$ROOT/.venv/bin/python}
export PATH="$PATH:/usr/sbin:/sbin"
t0=$SECONDS
skip() { echo "slurm_selftest: skipped: $*"; exit 77; }
for c in munged slurmctld slurmd sbatch scontrol scancel; do
  command -v "$c" >/dev/null || skip "no $c (Debian: apt-get install slurm-wlm munge)"
done
[[ $(id -u) == 0 ]] || skip "slurmd must run as root to start jobs"
[[ -x $PY ]] || skip "no Python at $PY (set PYTHON)"
unset $(compgen -e | grep -E '^(SLURM|SBATCH|SRUN|SALLOC)_' || true)  # an outer job's settings

tmp=$(mktemp -d /tmp/alexnet2012-slurm.XXXXXX)
chmod 755 "$tmp"  # munged wants every directory above its socket searchable
mkdir -p "$tmp"/{state,spool,log,work}
CONF=$tmp/slurm.conf
pids=()  # munged, slurmctld, slurmd
sl() { SLURM_CONF=$CONF "$@"; }
say() { printf '[%3ds] %s\n' $((SECONDS - t0)) "$*"; }

cleanup() {
  local rc=$? p n
  trap - EXIT INT TERM
  if [[ -f $CONF ]] && ((${#pids[@]} > 1)); then
    sl scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 20); do [[ -z $(sl squeue -h 2>/dev/null) ]] && break; sleep 0.5; done
  fi
  for ((n = ${#pids[@]} - 1; n >= 0; n--)); do  # slurmd, slurmctld, munged
    kill -TERM "${pids[n]}" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do
    for _ in $(seq 20); do kill -0 "$p" 2>/dev/null || break; sleep 0.25; done
    kill -KILL "$p" 2>/dev/null || true
  done
  # what our jobs left (slurmstepd outlives slurmd): every process with this cluster's SLURM_CONF
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [[ $p == "$$" ]] && continue
    if tr '\0' '\n' 2>/dev/null <"/proc/$p/environ" | grep -qxF "SLURM_CONF=$CONF"; then
      kill -KILL "$p" 2>/dev/null || true
    fi
  done
  if ((rc != 0 && rc != 77)); then
    for f in "$tmp"/job-*.out "$tmp"/log/*.log; do
      [[ -f $f ]] && { echo "---- $f (end)"; tail -n 40 "$f"; }
    done
  fi
  if [[ ${KEEP:-} == 1 ]] || ((rc != 0 && rc != 77)); then
    echo "slurm_selftest: files kept in $tmp"
  else
    rm -rf "$tmp"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fail() { say "FAILED: $*" >&2; exit 1; }

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'; }
node=$(hostname -s)
cat >"$CONF" <<EOF
ClusterName=selftest
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$tmp/munge.sock
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/log/slurmctld.log
SlurmdLogFile=$tmp/log/slurmd.log
PlugStackConfig=$tmp/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
KillWait=30
NodeName=$node NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=selftest Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
: >"$tmp/plugstack.conf"
dd if=/dev/urandom of="$tmp/munge.key" bs=1024 count=1 status=none
chmod 600 "$tmp/munge.key"
munged -F --socket="$tmp/munge.sock" --key-file="$tmp/munge.key" --pid-file="$tmp/munged.pid" \
  --seed-file="$tmp/munged.seed" --log-file="$tmp/log/munged.log" >"$tmp/log/munged.out" 2>&1 &
pids+=($!)
for _ in $(seq 50); do [[ -S $tmp/munge.sock ]] && break; sleep 0.1; done
[[ -S $tmp/munge.sock ]] || fail "munged did not start: $(cat "$tmp/log/munged.out")"
(cd "$tmp" && SLURM_CONF=$CONF exec slurmctld -D >"$tmp/log/slurmctld.out" 2>&1) &
pids+=($!)
(cd "$tmp" && SLURM_CONF=$CONF exec slurmd -D >"$tmp/log/slurmd.out" 2>&1) &
pids+=($!)
for _ in $(seq 60); do
  [[ $(sl sinfo -h -n "$node" -o %t 2>/dev/null) == idle ]] && break
  sleep 0.5
done
[[ $(sl sinfo -h -n "$node" -o %t 2>/dev/null) == idle ]] || fail "the node did not come up"
say "cluster up: node $node, 2 CPUs ($tmp)"

# --- the jobs: the batch script as a user submits it, the run folder its default
args=(--config "$ROOT/configs/debug.yaml" train.epochs=3 train.log_every=5)
if [[ ! -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ]]; then
  args+=(data.name=synthetic data.synthetic_size=2048)  # no Debian Fashion-MNIST here
fi
export PYTHON=$PY PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} ALEXNET2012_NO_BAR=1
unset ALEXNET2012_RUN_DIR
submit() {  # submit [sbatch options] -- [train arguments]: the job id
  local opts=()
  while [[ $1 != -- ]]; do opts+=("$1"); shift; done
  shift
  MASTER_PORT=$(free_port) sl sbatch --parsable --chdir="$tmp/work" --nodes=1 --time=15 \
    --requeue --open-mode=append --output="$tmp/job-%j.out" "${opts[@]}" \
    "$ROOT/launch/slurm.sbatch" "${args[@]}" "$@"
}
field() { sl scontrol show job -o "$1" | grep -o "$2=[^ ]*" | cut -d= -f2; }
ended() {  # wait for job $1 to end (or go back to pending: a requeue); its state
  local s
  for _ in $(seq 600); do
    s=$(field "$1" JobState)
    case $s in RUNNING | CONFIGURING | COMPLETING | PENDING | REQUEUED) ;; *) echo "$s"; return ;; esac
    [[ $s == PENDING && ${2:-} == requeued ]] && { echo "$s"; return; }
    sleep 0.5
  done
  fail "job $1 did not end (state $s)"
}
last_step() {  # the newest step in a run folder's metrics.jsonl (0: none yet)
  local f=$1/metrics.jsonl
  [[ -f $f ]] && grep -o '"step": [0-9]*' "$f" | tail -n 1 | grep -o '[0-9]*$' || echo 0
}
until_step() {  # wait until run folder $1 logged step $2 while job $3 runs
  for _ in $(seq 600); do
    (($(last_step "$1") >= $2)) && return
    [[ $(field "$3" JobState) =~ ^(PENDING|RUNNING|CONFIGURING)$ ]] || fail "job $3 ended early"
    sleep 0.2
  done
  fail "job $3 did not reach step $2"
}
release() {  # a requeued job waits two minutes before it may start again; start it sooner
  for _ in $(seq 120); do
    [[ $(field "$1" JobState) == PENDING && $(sl sinfo -h -n "$node" -o %t) == idle ]] && break
    sleep 0.5
  done
  sleep 2  # slurmd refuses a job whose credential is as old as its last attempt's end ("revoked")
  sl scontrol update JobId="$1" StartTime=now
}
no_traceback() { ! grep -n -B2 -A8 Traceback "$tmp/job-$1.out" || fail "a traceback in job $1"; }
stops() { grep -o 'stopped by a signal at step [0-9]*' "$tmp/job-$1.out" | grep -o '[0-9]*$' || true; }
check_stop() {  # job $1 stopped by a signal for the $2th time: both ranks saved the same step
  local all step
  all=($(stops "$1"))
  ((${#all[@]} == 2 * $2)) || fail "job $1: ${#all[@]} 'stopped by a signal' lines, want $((2 * $2))"
  step=${all[-1]}
  [[ ${all[-2]} == "$step" ]] || fail "job $1: the ranks stopped at steps ${all[-2]} and $step"
  [[ -f $run/checkpoints/ckpt-$(printf %08d "$step").pt ]] || fail "no checkpoint of step $step"
  (cd "$run/checkpoints" && sha256sum --quiet -c "ckpt-$(printf %08d "$step").pt.sha256") ||
    fail "checkpoint $step does not match its checksum"
  echo "$step"
}

a=$(submit --)
[[ $(ended "$a") == COMPLETED && $(field "$a" ExitCode) == 0:0 ]] ||
  fail "the unbroken job $a: $(field "$a" JobState) $(field "$a" ExitCode)"
grep -q "rank 0/2 on cpu (gloo)" "$tmp/job-$a.out" || fail "job $a did not run two CPU ranks"
no_traceback "$a"
say "job $a: trained unbroken on two CPU ranks (gloo), status 0, runs/slurm-$a"

b=$(submit --)
run=$tmp/work/runs/slurm-$b
until_step "$run" 20 "$b"
sl scancel --signal=TERM "$b"
[[ $(ended "$b") == FAILED && $(field "$b" ExitCode) == 130:0 ]] ||
  fail "job $b after scancel -s TERM: $(field "$b" JobState) $(field "$b" ExitCode), want status 130"
s1=$(check_stop "$b" 1)
grep -q "torchrun: stopped by SIGTERM" "$tmp/job-$b.out" || fail "job $b: no line from torchrun"
no_traceback "$b"
grep -qx "slurm-selftest-$b" <(tr '+' '\n' <"$run/torchrun_job") || fail "run folder not marked"
say "job $b: scancel -s TERM -> both ranks saved step $s1, status 130, no traceback"

before=$(cd "$run" && sha256sum checkpoints/* metrics.jsonl config.yaml)
c=$(MAX_RESTARTS=0 submit -- run.dir="$run")  # torchrun would retry the refusal 3 times
[[ $(ended "$c") == FAILED && $(field "$c" ExitCode) == 2:0 ]] || fail "job $c was not refused"
sl scontrol requeue "$c"
release "$c"
[[ $(ended "$c") == FAILED && $(field "$c" Restarts) == 1 ]] || fail "job $c's requeue ran on"
for _ in $(seq 30); do  # the requeued attempt's lines can reach the file a moment later
  (($(grep -c "already holds a run" "$tmp/job-$c.out") == 4)) && break
  sleep 1
done
(($(grep -c "already holds a run" "$tmp/job-$c.out") == 4)) || fail "job $c: no refusal"
[[ $(cd "$run" && sha256sum checkpoints/* metrics.jsonl config.yaml) == "$before" ]] ||
  fail "job $c changed job $b's run folder"
no_traceback "$c"
say "job $c: a new job on that folder is refused (status 2), also when requeued; folder intact"

sl scontrol requeue "$b"
release "$b"
until_step "$run" $((s1 + 20)) "$b"
grep -q "resumed from .*ckpt-$(printf %08d "$s1").pt at step $s1" "$tmp/job-$b.out" ||
  fail "job $b's requeue did not resume from step $s1"
sl scancel --batch --signal=TERM "$b"
[[ $(ended "$b") == FAILED && $(field "$b" ExitCode) == 130:0 ]] ||
  fail "job $b after scancel -b -s TERM: $(field "$b" JobState) $(field "$b" ExitCode)"
s2=$(check_stop "$b" 2)
say "job $b requeued: resumed at step $s1; SIGTERM to the batch shell -> saved step $s2, status 130"

sl scontrol requeue "$b"
release "$b"
until_step "$run" $((s2 + 20)) "$b"
sl scontrol requeue "$b"
[[ $(ended "$b" requeued) == PENDING ]] || fail "job $b was not requeued"
s3=$(check_stop "$b" 3)
say "job $b requeued again: scontrol requeue while running -> saved step $s3"
release "$b"
[[ $(ended "$b") == COMPLETED && $(field "$b" ExitCode) == 0:0 ]] ||
  fail "job $b's last attempt: $(field "$b" JobState) $(field "$b" ExitCode)"
[[ $(field "$b" Restarts) == 3 ]] || fail "job $b ran $(field "$b" Restarts) requeues, want 3"
no_traceback "$b"
"$PY" - "$tmp/work/runs/slurm-$a" "$run" <<'EOF' || fail "the resumed run differs from job $a's"
import json, sys
from pathlib import Path

def numbers(d):
    rows = [json.loads(line) for line in open(Path(d) / "metrics.jsonl")]
    keep = ("train/loss", "val/loss", "val/top1_err", "val/top5_err")
    summary = json.loads((Path(d) / "summary.json").read_text())
    final = ("steps", "test/loss", "test/top1_err", "test/top5_err", "final_val_loss", "final_lr")
    return ([(r["step"], k, r[k]) for r in rows for k in keep if k in r],
            {k: summary[k] for k in final}, summary["world_size"])

a, b = numbers(sys.argv[1]), numbers(sys.argv[2])
assert a == b, f"{sys.argv[1]} != {sys.argv[2]}"
assert a[1]["steps"] == 192 and a[2] == 2, a[1:]
print(f"same {len(a[0])} logged numbers and final metrics: test/top1_err {a[1]['test/top1_err']}")
EOF
say "job $b's last attempt resumed at step $s3 and ended with the unbroken job's metrics"
say "passed in $((SECONDS - t0)) s"

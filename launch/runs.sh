# Sourced by launch/fullsize.sh and launch/fidelity.sh: the Python that runs, and one training
# run that a second call skips when finished and resumes when interrupted.
# ALEXNET2012_NO_SETUP=1: no .venv set-up; run from the source tree with $PYTHON (default
# python3), as on a GPU machine with torch, numpy and pyyaml but nothing installed.
if [[ -n ${ALEXNET2012_NO_SETUP:-} ]]; then
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  py=${PYTHON:-python3}
  export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
else
  source "$(dirname "${BASH_SOURCE[0]}")/setup.sh" # cd to the repository root, .venv on PATH
  py=python
fi

# train_run DIR RANKS CONFIG key=value...: skip DIR when it has its summary.json, resume it from
# its newest checkpoint, else start CONFIG with the overrides there; RANKS=2 runs one tower per
# process (torchrun), 1 one process
train_run() {
  local dir=$1 ranks=$2 cfg=$3
  shift 3
  if [[ -f $dir/summary.json ]]; then
    echo "== $dir: done, skipped"
    return
  fi
  local args=(train --config "$cfg" "run.dir=$dir" "$@")
  compgen -G "$dir/checkpoints/ckpt-*.pt" >/dev/null && args=(train --resume "$dir")
  if ((ranks == 2)); then
    echo "== $dir: $cfg, two towers, torchrun --nproc_per_node=2"
    "$py" -m torch.distributed.run --standalone --nproc_per_node=2 -m alexnet2012 "${args[@]}"
  else
    echo "== $dir: $cfg, one process"
    "$py" -m alexnet2012 "${args[@]}"
  fi
}

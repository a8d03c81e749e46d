#!/usr/bin/env bash
# The paper's ablations, measured ([P] §3.3-§4.2 claims, ref §4): every variant of one scale,
# once per seed, then one report with the paper's numbers next to these runs'.
#
#   bash launch/fidelity.sh fmnist 1 2 3                  # CPU-sized, Fashion-MNIST
#   FIDELITY_VARIANTS="two_tower half no_lrn" bash launch/fidelity.sh fmnist 1 2   # quick mode
#   DATA_ROOT=/data/ilsvrc2012-256 bash launch/fidelity.sh imagenet 1   # paper scale, GPUs
#
# Variants are configs/fidelity/<scale>_<variant>.yaml. Two-tower variants run one tower per
# process (torchrun, 2 ranks) when there are 2+ GPUs or no GPU (gloo on the CPU); with exactly
# one GPU, and for the one-column half net, in one process (the same maths, ref §1). Runs go to
# runs/fidelity/<scale>/<variant>-s<seed>; a finished run is skipped, an interrupted one resumed.
# The report: runs/fidelity/<scale>/report/report.md. Default seeds: 1 2.
set -euo pipefail
source "$(dirname "$0")/setup.sh" # cd to the repository root, .venv on PATH

scale=${1:-fmnist}
shift || true
seeds=("$@")
[[ ${#seeds[@]} -gt 0 ]] || seeds=(1 2)
case $scale in
  fmnist | imagenet) ;;
  *) echo "usage: launch/fidelity.sh [fmnist|imagenet] [SEEDS...]" >&2; exit 2 ;;
esac
extra=()
if [[ $scale == imagenet ]]; then
  if [[ -z ${DATA_ROOT:-} ]]; then
    echo "set DATA_ROOT to a store made by: alexnet2012 prepare /data/ILSVRC2012 DATA_ROOT" >&2
    exit 2
  fi
  extra+=("data.root=$DATA_ROOT")
fi

if [[ -n ${FIDELITY_VARIANTS:-} ]]; then
  read -r -a variants <<<"$FIDELITY_VARIANTS"
else
  variants=()
  for f in configs/fidelity/"${scale}"_*.yaml; do
    v=$(basename "$f" .yaml)
    v=${v#"${scale}_"}
    [[ $v == base ]] || variants+=("$v")
  done
fi
gpus=$(python -c "import torch; print(torch.cuda.device_count())")
out=runs/fidelity/$scale
dirs=()
for v in "${variants[@]}"; do
  cfg=configs/fidelity/${scale}_${v}.yaml
  [[ -f $cfg ]] || { echo "no such variant: $cfg" >&2; exit 2; }
  for s in "${seeds[@]}"; do
    dir=$out/$v-s$s
    dirs+=("$dir")
    if [[ -f $dir/summary.json ]]; then
      echo "== $dir: done, skipped"
      continue
    fi
    if compgen -G "$dir/checkpoints/ckpt-*.pt" >/dev/null; then
      args=(train --resume "$dir")
    else
      args=(train --config "$cfg" "run.dir=$dir" "run.name=$v-s$s" "seed=$s"
        "wandb.job_type=$v" "${extra[@]}")
    fi
    if [[ $v == half ]] || ((gpus == 1)); then
      echo "== $dir: one process"
      python -m alexnet2012 "${args[@]}"
    else
      echo "== $dir: two towers, torchrun --nproc_per_node=2"
      torchrun --standalone --nproc_per_node=2 -m alexnet2012 "${args[@]}"
    fi
  done
done
python -m alexnet2012 compare "${dirs[@]}" --paper --out "$out/report"
echo "report: $out/report/report.md"

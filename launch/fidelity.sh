#!/usr/bin/env bash
# The paper's ablations, measured ([P] §3.3-§4.2 claims, ref §4): every variant of one scale,
# once per seed, then one report with the paper's numbers next to these runs'.
#
#   bash launch/fidelity.sh fmnist 1 2 3                  # CPU-sized, Fashion-MNIST
#   FIDELITY_VARIANTS="two_tower half no_lrn" bash launch/fidelity.sh fmnist 1 2   # quick mode
#   bash launch/fidelity.sh fullsize 1 2                  # full size at 224, one GPU, ~11 min
#   OVERRIDES="train.epochs=10" bash launch/fidelity.sh fullsize 1 2 3   # the longer form
#   DATA_ROOT=/data/ilsvrc2012-256 bash launch/fidelity.sh imagenet 1   # paper scale, GPUs
#
# Variants are configs/fidelity/<scale>_<variant>.yaml. Two-tower variants run one tower per
# process (torchrun, 2 ranks) when there are 2+ GPUs or no GPU (gloo on the CPU); with exactly
# one GPU, for the one-column half net, and for fullsize without a GPU, in one process (the same
# maths, ref §1). Runs go to runs/fidelity/<scale>/<variant>-s<seed> (OUT=... elsewhere); a
# finished run is skipped, an interrupted one resumed. OVERRIDES (key=value words) go to every
# new run. fullsize first prints the time the runs will take on one H200 at the images/s
# measured there (python -m alexnet2012.report.estimate; RATES="alexnet2012=IMG_S" for another
# GPU or a newer measurement) against its 12-minute budget. The report: <out>/report/report.md.
# Default seeds: 1 2.
# ALEXNET2012_NO_SETUP=1: no .venv set-up; run from the source tree with $PYTHON (default
# python3), as on a GPU machine with torch, numpy and pyyaml but nothing installed.
set -euo pipefail
source "$(dirname "$0")/runs.sh" # $py, train_run

scale=${1:-fmnist}
shift || true
seeds=("$@")
[[ ${#seeds[@]} -gt 0 ]] || seeds=(1 2)
case $scale in
  fmnist | fullsize | imagenet) ;;
  *) echo "usage: launch/fidelity.sh [fmnist|fullsize|imagenet] [SEEDS...]" >&2; exit 2 ;;
esac
read -r -a extra <<<"${OVERRIDES:-}"
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
gpus=$("$py" -c "import torch; print(torch.cuda.device_count())")
out=${OUT:-runs/fidelity/$scale}
for v in "${variants[@]}"; do
  [[ -f configs/fidelity/${scale}_${v}.yaml ]] || { echo "no such variant: $v" >&2; exit 2; }
done
if [[ $scale == fullsize ]]; then
  plan=()
  for v in "${variants[@]}"; do
    for s in "${seeds[@]}"; do
      [[ -f $out/$v-s$s/summary.json ]] ||
        plan+=("configs/fidelity/${scale}_$v.yaml run.dir=$out/$v-s$s seed=$s ${extra[*]}")
    done
  done
  rates=()
  for r in ${RATES:-}; do rates+=(--rate "$r"); done
  ((${#plan[@]} == 0)) || "$py" -m alexnet2012.report.estimate --budget-min 12 "${rates[@]}" \
    "${plan[@]}"
fi
dirs=()
for v in "${variants[@]}"; do
  cfg=configs/fidelity/${scale}_${v}.yaml
  for s in "${seeds[@]}"; do
    dirs+=("$out/$v-s$s")
    ranks=2
    if [[ $v == half ]] || ((gpus == 1)) || [[ $scale == fullsize && $gpus == 0 ]]; then
      ranks=1
    fi
    train_run "$out/$v-s$s" "$ranks" "$cfg" "run.name=$v-s$s" "seed=$s" "wandb.job_type=$v" \
      "${extra[@]}"
  done
done
"$py" -m alexnet2012 compare "${dirs[@]}" --paper --out "$out/report"
echo "report: $out/report/report.md"

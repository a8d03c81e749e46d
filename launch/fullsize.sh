#!/usr/bin/env bash
# Net against recipe at full size: {two towers, streamlined} x {2012 recipe, d2l recipe} on
# Fashion-MNIST at 224, 10 epochs, each cell at every seed, then one report (test error mean ±
# std over seeds, each net's and each recipe's effect against seed noise, time to 85% and 90%
# validation accuracy). The four cells, each config saying why it is as it is:
#   two_tower@2012   configs/fashion_mnist_2012.yaml              (the 2012 code's net and recipe)
#   two_tower@d2l    configs/fashion_mnist_d2l_two_tower.yaml     (the 2012 net as d2l trains)
#   streamlined@2012 configs/fashion_mnist_2012_streamlined.yaml  (d2l's net, the 2012 recipe)
#   streamlined@d2l  configs/fashion_mnist_d2l_xavier.yaml        (d2l 0.17: net, init, recipe)
#
#   bash launch/fullsize.sh              # seeds 1 2: about 11.5 min on one H200 (printed first)
#   bash launch/fullsize.sh 1 2 3 4      # more seeds
#   OVERRIDES="train.amp=true" bash launch/fullsize.sh 1 2    # key=value words for every run
#
# Runs go to $OUT/<net>@<recipe>-s<seed> (OUT default runs/fullsize_grid); a finished run is
# skipped, so a second call after an interruption only runs what is missing. Before it starts it
# prints how long the missing runs take on one H200 at the images/s measured there (python -m
# alexnet2012.report.estimate; RATES="alexnet2012=IMG_S streamlined=IMG_S" for another GPU).
# The two-tower cells run in one process (the same maths as two ranks, ref §1), or on two ranks
# with torchrun when there are 2+ GPUs. ALEXNET2012_NO_SETUP=1: no .venv set-up; run from the
# source tree with $PYTHON (default python3), as on a GPU machine with torch, numpy and pyyaml.
set -euo pipefail
source "$(dirname "$0")/runs.sh" # $py, train_run
seeds=("$@")
((${#seeds[@]} > 0)) || seeds=(1 2)
out=${OUT:-runs/fullsize_grid}
read -r -a extra <<<"${OVERRIDES:-}"
rates=()
for r in ${RATES:-}; do rates+=(--rate "$r"); done
cells=(two_tower@2012 two_tower@d2l streamlined@2012 streamlined@d2l)
declare -A config=(
  [two_tower@2012]=configs/fashion_mnist_2012.yaml
  [two_tower@d2l]=configs/fashion_mnist_d2l_two_tower.yaml
  [streamlined@2012]=configs/fashion_mnist_2012_streamlined.yaml
  [streamlined@d2l]=configs/fashion_mnist_d2l_xavier.yaml
)
plan=()
for c in "${cells[@]}"; do
  for s in "${seeds[@]}"; do
    [[ -f $out/$c-s$s/summary.json ]] ||
      plan+=("${config[$c]} run.dir=$out/$c-s$s seed=$s ${extra[*]}")
  done
done
start=$(date +%s)
if ((${#plan[@]})); then
  "$py" -m alexnet2012.report.estimate --budget-min 12 "${rates[@]}" "${plan[@]}"
fi
gpus=$("$py" -c "import torch; print(torch.cuda.device_count())")
dirs=()
for c in "${cells[@]}"; do
  for s in "${seeds[@]}"; do
    dirs+=("$out/$c-s$s")
    ranks=1
    [[ $c == two_tower@* ]] && ((gpus >= 2)) && ranks=2
    train_run "$out/$c-s$s" "$ranks" "${config[$c]}" "run.name=$c-s$s" "seed=$s" \
      "wandb.group=fullsize_grid" "wandb.job_type=$c" "${extra[@]}"
  done
done
"$py" -m alexnet2012 compare "${dirs[@]}" --out "$out/report"
echo "report: $out/report/report.md"
echo "== done in $(($(date +%s) - start)) s"

#!/usr/bin/env bash
# Do the full-size Fashion-MNIST recipes learn? Trains each shipped full-size recipe as shipped
# (full widths, 224x224, batch 128, real Fashion-MNIST) with only its budget changed, then
# writes a table and curves of training loss and validation error against images seen:
#   1. configs/fashion_mnist_2012.yaml, the two-tower 2012 net on two ranks (torchrun);
#   2. configs/fashion_mnist_d2l.yaml, d2l's streamlined net in one process.
# Not part of the test suite: on a 2-core CPU it takes about 1.5 hours in the background.
#
#   bash launch/fullsize_check.sh                 # 235 steps each (30,080 images)
#   STEPS=30 bash launch/fullsize_check.sh        # a shorter budget
#
# Budget knobs (environment): STEPS (training steps), EVAL_EVERY (steps between validations),
# VAL_SUBSET (validation images per evaluation, from the 10,000 held out; 0 = all),
# TEST_SUBSET (test images for the final evaluation; 0 = all), OUT (folder of the runs).
set -euo pipefail
source "$(dirname "$0")/setup.sh"
STEPS=${STEPS:-235}
EVAL_EVERY=${EVAL_EVERY:-47}
VAL_SUBSET=${VAL_SUBSET:-2000}
TEST_SUBSET=${TEST_SUBSET:-2000}
OUT=${OUT:-runs/fullsize}
budget=(train.max_steps="$STEPS" train.eval_every="$EVAL_EVERY" train.log_every=5
        data.val_subset="$VAL_SUBSET" data.test_subset="$TEST_SUBSET" wandb.mode=disabled)
start=$(date +%s)
mkdir -p "$OUT"
if [[ -e $OUT/two_tower || -e $OUT/streamlined ]]; then
  echo "$OUT already holds runs; move them away or set OUT=another/folder" >&2
  exit 2
fi
nproc=2
echo "== 1/3 two-tower 2012 recipe, $nproc ranks, $STEPS steps: configs/fashion_mnist_2012.yaml"
torchrun --standalone --nproc_per_node=$nproc -m alexnet2012 train \
  --config configs/fashion_mnist_2012.yaml "${budget[@]}" run.dir="$OUT/two_tower" \
  run.name="two-tower 2012 (2 ranks)" "$@"
echo "== 2/3 streamlined d2l recipe, 1 process, $STEPS steps: configs/fashion_mnist_d2l.yaml"
python -m alexnet2012 train --config configs/fashion_mnist_d2l.yaml "${budget[@]}" \
  run.dir="$OUT/streamlined" run.name="streamlined d2l (1 process)" "$@"
echo "== 3/3 table and curves"
python -m alexnet2012 compare "$OUT/two_tower" "$OUT/streamlined" --out "$OUT/report"
echo "report: $OUT/report/report.md"
echo "== done in $(( $(date +%s) - start )) s"

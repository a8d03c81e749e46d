#!/usr/bin/env bash
# The main job: the 2012 two-tower AlexNet on two processes (torchrun) against d2l's streamlined
# AlexNet on one, both on the real Fashion-MNIST, evaluated on the full 10,000-image test set,
# then one comparison table. Runs land in runs/demo/ (W&B offline runs inside them).
#
# On a CPU-only machine both nets are scaled down to finish in minutes (configs/demo/*.yaml say
# what is scaled and why). With one GPU it trains the full-size configs at 224 (the two-tower net
# emulated in one process); with two GPUs the two-tower net runs on two ranks.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
start=$(date +%s)
gpus=$(python -c "import torch; print(torch.cuda.device_count())")
mkdir -p runs/demo

if [[ $gpus -ge 1 ]]; then
  echo "== $gpus GPU(s): full-size Fashion-MNIST comparison at 224x224, 10 epochs each"
  tower_cfg=configs/fashion_mnist_2012.yaml
  base_cfg=configs/fashion_mnist_d2l.yaml
  extra=(run.dir=runs/demo/two_tower)
  base_extra=(run.dir=runs/demo/streamlined)
  if [[ $gpus -ge 2 ]]; then
    launcher=(torchrun --standalone --nproc_per_node=2 -m alexnet2012)
  else
    launcher=(python -m alexnet2012)  # one GPU: NCCL cannot put two ranks on it
  fi
else
  echo "== no GPU: scaled-down CPU comparison (see configs/demo/*.yaml for what is scaled)"
  echo "   two towers: widths 32-64-96-96-64 convs, 256-256 FC, 79x79 inputs, 2 epochs, 2 ranks"
  echo "   streamlined: the same widths and inputs, 2 epochs, 1 process"
  tower_cfg=configs/demo/two_tower_cpu.yaml
  base_cfg=configs/demo/streamlined_cpu.yaml
  extra=()
  base_extra=()
  launcher=(torchrun --standalone --nproc_per_node=2 -m alexnet2012)
fi
rm -rf runs/demo/two_tower runs/demo/streamlined

echo "== 1/3 two-tower AlexNet (2012): ${launcher[*]} train --config $tower_cfg"
"${launcher[@]}" train --config "$tower_cfg" "${extra[@]}" "$@"

echo "== 2/3 streamlined AlexNet (d2l): alexnet2012 train --config $base_cfg"
python -m alexnet2012 train --config "$base_cfg" "${base_extra[@]}" "$@"

echo "== 3/3 comparison on the full test set"
python -m alexnet2012 compare runs/demo/two_tower runs/demo/streamlined --out runs/demo/report
echo "report: runs/demo/report/report.md"
for run in runs/demo/two_tower runs/demo/streamlined; do
  for w in "$run"/wandb/offline-run-*; do [[ -d $w ]] && echo "W&B offline run: wandb sync $w"; done
done
echo "== done in $(( $(date +%s) - start )) s"

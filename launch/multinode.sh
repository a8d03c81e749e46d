#!/usr/bin/env bash
# Many tower pairs: data parallelism across pairs of GPUs, on torchrun's rendezvous.
# Run this on every node, with the same MASTER_ADDR (the first node) and NNODES:
#
#   export RDZV_ID=imagenet-2012-a   # unique to this job; the run folder is runs/$RDZV_ID
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 bash launch/multinode.sh --config configs/imagenet_2012.yaml data.root=/data/store
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=node0 bash launch/multinode.sh --config configs/imagenet_2012.yaml data.root=/data/store
#
# World size 2k means k replicas of the tower pair: ranks 2i and 2i+1 are pair i (same node, so
# the activation exchanges stay on NVLink), each tower's gradients are averaged over the k
# replicas by DDP, and each replica reads its own shard of every global batch of k x
# train.batch_size images. RDZV_ID names this job on every node, and a torchrun restart resumes
# only the run folder its own job started, so give each job its own RDZV_ID. The run folder
# (run.dir; if unset, runs/$RDZV_ID) must be on a filesystem every node sees.
set -euo pipefail
: "${RDZV_ID:?set RDZV_ID to a name unique to this job, the same on every node}"
cd "$(dirname "$0")/.."
export ALEXNET2012_RUN_DIR=${ALEXNET2012_RUN_DIR:-runs/$RDZV_ID}  # used when run.dir is unset
GPUS=${GPUS_PER_NODE:-8}
# on SIGTERM torchrun gives the workers this long to checkpoint before SIGKILL (newer torch
# versions read it; 30 s otherwise)
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-100}
source launch/nccl.sh  # TORCH_NCCL_* settings
exec torchrun \
  --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --nproc_per_node="$GPUS" \
  --rdzv_backend=c10d --rdzv_endpoint="${MASTER_ADDR:-localhost}:${MASTER_PORT:-29500}" \
  --rdzv_id="$RDZV_ID" --max-restarts="${MAX_RESTARTS:-3}" \
  -m alexnet2012 train "$@"

# NCCL's failure settings, sourced by every launch script that may run on GPUs (docs/failures.md,
# "Under NCCL"). The run's own stall watchdog ends a rank whose peer is lost after
# parallel.timeout_s with the project's one-line message; NCCL's watchdog is the backstop at
# twice that (alexnet2012/control/watchdog.py). Values already in the environment win.

# 3 (PyTorch's default, stated because the backstop relies on it): a collective that times out
# or fails makes NCCL's watchdog take the process down (SIGABRT) instead of running on
export TORCH_NCCL_ASYNC_ERROR_HANDLING=${TORCH_NCCL_ASYNC_ERROR_HANDLING:-3}
# 0 (the default): waiting for a collective queues the wait on the GPU stream; 1 would block the
# host in every exchange of every step (a host sync per exchange)
export TORCH_NCCL_BLOCKING_WAIT=${TORCH_NCCL_BLOCKING_WAIT:-0}

#!/usr/bin/env bash
# Launch sepkit training (python -m sepkit.bin.train): one process on the CPU or one GPU, or
# torchrun with one DDP process per GPU, on one machine or several.
#
# Usage: utils/train.sh [options] -- <arguments of python -m sepkit.bin.train>
#   utils/train.sh --ngpu 0 -- --config conf/tuning/chimera.yaml --train-dump ... --outdir exp/x
#   utils/train.sh --ngpu 4 -- ...                                  (4 GPUs, torchrun --standalone)
#   utils/train.sh --ngpu 4 --num_nodes 2 --node_rank 0 --master_addr host0 -- ...   (on host0)
#   utils/train.sh --ngpu 4 --num_nodes 2 --node_rank 1 --master_addr host0 -- ...   (on host1)
# Under SLURM (the recipe's $cuda_cmd is utils/slurm.py and the job holds --num_nodes nodes, e.g.
# SEPKIT_SLURM_OPTS="--nodes 2"), one call is enough: with --num_nodes > 1 inside a SLURM job the
# script starts itself once per node with srun, node ranks from SLURM_NODEID and the master address
# from the first host of the job.
# Every process runs with --device cpu (ngpu 0) or --device cuda; later arguments may override it.
# What a run read is kept in <outdir>/train_inputs (the fingerprints of --train-dump and --valid-dump,
# python -m sepkit.data.fingerprint): a run whose checkpoints or model.pt were made from other
# features (a dump recomputed since) is refused in one line instead of being resumed or taken for
# finished; move its outputs aside (utils/train_exp.sh --overwrite true) or use another --outdir.
# Environment: SEPKIT_PYTHON (the python to run, default: python on PATH),
#              SEPKIT_NPROC_CPU (default of --nproc_cpu).

ngpu=1            # GPUs (processes) per machine; 0 = train on the CPU
num_nodes=1       # number of machines
node_rank=0       # rank of this machine (0 .. num_nodes-1)
master_addr=localhost  # host of node 0 (multi-node only)
master_port=29500      # free TCP port on node 0 (multi-node only; one machine picks a free port itself)
nproc_cpu=${SEPKIT_NPROC_CPU:-1}  # with --ngpu 0: number of gloo processes (tests, debugging DDP on a CPU)

. "$(dirname "${BASH_SOURCE[0]}")/parse_options.sh"
set -euo pipefail

die() { echo "${0##*/}: $*" >&2; exit 1; }
for v in ngpu num_nodes node_rank master_port nproc_cpu; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || die "--$v must be a non-negative integer, got '${!v}'"
done
[ "$num_nodes" -ge 1 ] || die "--num_nodes must be at least 1"
[ "$nproc_cpu" -ge 1 ] || die "--nproc_cpu must be at least 1"
[ "$node_rank" -lt "$num_nodes" ] || die "--node_rank $node_rank is not below --num_nodes $num_nodes"
py=${SEPKIT_PYTHON:-python}

# SLURM: from the batch script, start this script on every node of the job.
if [ "$num_nodes" -gt 1 ] && [ -n "${SLURM_JOB_ID:-}" ] && [ -z "${SEPKIT_TRAIN_SRUN:-}" ]; then
  nodelist=${SLURM_JOB_NODELIST:-${SLURM_NODELIST:-}}
  [ -n "$nodelist" ] || die "inside SLURM job $SLURM_JOB_ID but SLURM_JOB_NODELIST is empty"
  first_host=$(scontrol show hostnames "$nodelist" | sed -n 1p)  # sed reads all: no SIGPIPE under pipefail
  export SEPKIT_TRAIN_SRUN=1
  echo "${0##*/}: SLURM job $SLURM_JOB_ID: srun on $num_nodes nodes, master $first_host:$master_port" >&2
  exec srun --nodes="$num_nodes" --ntasks="$num_nodes" --ntasks-per-node=1 --kill-on-bad-exit=1 \
    bash "${BASH_SOURCE[0]}" --ngpu "$ngpu" --num_nodes "$num_nodes" --master_addr "$first_host" \
    --master_port "$master_port" --nproc_cpu "$nproc_cpu" -- "$@"
fi
if [ -n "${SEPKIT_TRAIN_SRUN:-}" ]; then
  node_rank=${SLURM_NODEID:?SEPKIT_TRAIN_SRUN is set but SLURM_NODEID is not}
fi

# the features this run reads must be those its checkpoints were made from (once, on node 0)
if [ "$node_rank" -eq 0 ]; then
  outdir= dumps=()
  args=("$@")
  for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
      --outdir|--train-dump|--valid-dump) value=${args[i + 1]:-}; opt=${args[i]}; i=$((i + 1)) ;;
      --outdir=*|--train-dump=*|--valid-dump=*) value=${args[i]#*=}; opt=${args[i]%%=*} ;;
      *) continue ;;
    esac
    if [ "$opt" = --outdir ]; then outdir=$value; else dumps+=("$value"); fi
  done
  if [ -n "$outdir" ] && [ ${#dumps[@]} -eq 2 ]; then
    "$py" -m sepkit.data.fingerprint train-inputs "$outdir" "${dumps[@]}" || exit 1
  fi
fi

if [ "$ngpu" -eq 0 ]; then
  device=cpu; nproc=$nproc_cpu
else
  device=cuda; nproc=$ngpu
fi

if [ "$nproc" -le 1 ] && [ "$num_nodes" -le 1 ]; then
  exec "$py" -m sepkit.bin.train --device "$device" "$@"
fi

if [ "$device" = cpu ]; then
  # gloo processes share the CPU: one math thread each unless the caller says otherwise
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
fi
if [ "$num_nodes" -eq 1 ]; then
  rdzv=(--standalone)
else
  rdzv=(--nnodes "$num_nodes" --node_rank "$node_rank" --master_addr "$master_addr" --master_port "$master_port")
fi
exec "$py" -m torch.distributed.run "${rdzv[@]}" --nproc_per_node "$nproc" \
  -m sepkit.bin.train --device "$device" "$@"

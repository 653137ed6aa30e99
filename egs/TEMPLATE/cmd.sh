# How jobs run (Kaldi's cmd.sh). Every parallel stage runs its jobs through one of these:
#   train_cmd   CPU jobs (features);  cuda_cmd  training;  decode_cmd  separation and scoring.
# Local machine by default (utils/run.py). For a SLURM cluster: export SEPKIT_BACKEND=slurm
# (extra sbatch options, e.g. a partition, in SEPKIT_SLURM_OPTS) or edit the lines below.
# The runners take Kaldi's options: --num-threads N, --gpu N, --mem 4G, --time 1:00:00.
case "${SEPKIT_BACKEND:-local}" in
  local)
    train_cmd="utils/run.py"
    cuda_cmd="utils/run.py"
    decode_cmd="utils/run.py"
    ;;
  slurm)
    train_cmd="utils/slurm.py --mem 4G"
    cuda_cmd="utils/slurm.py --mem 32G --time 72:00:00"
    decode_cmd="utils/slurm.py --mem 8G"
    ;;
  *)
    echo "cmd.sh: SEPKIT_BACKEND must be local or slurm, got '${SEPKIT_BACKEND}'" >&2
    return 1
    ;;
esac

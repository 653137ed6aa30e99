#!/usr/bin/env bash
# DSD100 -> DSD100-remix -> DC / MI / Chimera network -> separation -> SI-SDRi and BSS eval scores
# (Luo et al., "Deep clustering and conventional networks for music separation: stronger together",
# ICASSP 2017, Tables 2-4).
#
#   ./run.sh --dsd100 /db/DSD100                        # everything, paper settings (CHI_0.1, MSA)
#   ./run.sh --stage 0 --ngpu 2                         # the same with the corpus linked at downloads/DSD100
#   ./run.sh --dsd100 /db/DSD100 --stage 3 --ngpu 2     # from training on, on 2 GPUs (torchrun, DDP)
#   ./run.sh --dsd100 /db/DSD100 --train_config conf/tuning/train_dc.yaml --stage 2   # another system
#   ./run.sh --dsd100 /db/DSD100 --train_config conf/tuning/train_chimera_tiny.yaml \
#       --train_hours 0.3 --valid_hours 0.05 --nj 2     # a small CPU run
#
# Default training config: conf/tuning/train_chimera_msa_alpha0.1.yaml = 4 x 500 BLSTM, D = 20 (the paper's
#   CHI_0.1); up to 100 epochs of ~4200 steps (15 h of DSD100-remix), early stopping: a GPU's job (one
#   step of 16 x 100 frames takes ~8 s on 2 CPU cores). conf/tuning/train_chimera_tiny.yaml = 2 x 128,
#   D = 10: make demo's (~430 steps, ~5 min on 2 CPU cores).
# Stages (each one skips work that is already done and says so; --overwrite true redoes it):
#   0  data preparation: DSD100 (official layout) -> data/dsd100_dev, data/dsd100_test
#   1  DSD100-remix (section 3.1): silence removal, 16 kHz, 0 dB mixing ->
#      data/train_remix (--train_hours), data/valid_remix (--valid_hours), data/test_remix (30 s per song)
#   2  features (mel magnitudes, kaldiio ark/scp) of the training and validation sets in --nj jobs,
#      CMVN statistics of the training set -> dump/<feat tag>/
#   3  training with --train_config on --ngpu GPUs (0 = CPU) -> exp/<tag>/ (model.pt, train.log, tensorboard/)
#      (--average_last N > 1: stages 4-5 use the weight average of its last N checkpoints, exp/<tag>_avg<N>/)
#   4  separation of the test sets with the --head head(s) -> exp/<tag>/separate_<set>_<head>/
#   5  scoring: SI-SDRi (Tables 2-4) and GNSDR/GSIR/GSAR (MIREX) -> exp/<tag>/score_<set>_<head>/
#      {result.json, per_utt.csv}; oracle mel masks and the mixture -> exp/oracle_<feat tag>/ (--oracle);
#      the table of all results is printed and written to exp/RESULTS.md
# Systems of the paper: conf/tuning/*.yaml (see conf/tuning/README.md); a system that needs other
# input features names them by a link conf/tuning/<name>.feat_conf -> ../feats/<setting>.yaml.
# Jobs run through cmd.sh (local, or SLURM with SEPKIT_BACKEND=slurm); logs under each output's log/.

stage=0               # first stage to run
stop_stage=100        # last stage to run
dsd100=downloads/DSD100  # DSD100 root, official layout: Mixtures/{Dev,Test}/<song>/, Sources/{Dev,Test}/<song>/
ngpu=0                # GPUs for training; 0 = CPU, N > 1 = N processes with DDP (torchrun)
num_nodes=1           # machines for training (> 1: inside a SLURM job of that many nodes, see utils/train.sh)
nj=4                  # parallel jobs of feature extraction, separation and scoring
train_config=conf/tuning/train_chimera_msa_alpha0.1.yaml  # training config, one per system (conf/tuning/)
feat_conf=            # feature settings; empty = the one paired with --train_config, else conf/feats.yaml
tag=                  # experiment name exp/<tag>; empty = the name of --train_config
head=both             # head(s) to separate and score with: mi (mask inference), dc (deep clustering), both
average_last=0        # > 1: separate with the weight average of the last N checkpoints (exp/<tag>_avg<N>); 0 = exp/<tag>/model.pt
train_hours=15        # hours of DSD100-remix training mixtures (paper: 15)
valid_hours=0.5       # hours of DSD100-remix validation mixtures (paper: 0.5)
test_seconds=30       # length of each DSD100-remix test piece, one per song (paper: 30)
remix_args=           # more options of python -m sepkit.bin.remix for training sets, e.g. "--segment-seconds 5"
seed=0                # seed of the remix (which chunks are mixed)
train_args=           # more options of python -m sepkit.bin.train, override the config, e.g. "--epochs 5"
init_model=           # fine-tuning: start from this parent network (model file, exp dir, checkpoint or hub id owner/name); empty = random init
test_sets="test_remix"  # data dirs separated and scored in stages 4-5
inference_ngpu=0      # separate on a GPU (1) or on the CPU (0)
score_bss=true        # also compute BSS eval v3 (GNSDR/GSIR/GSAR); false = SI-SDRi only (faster)
oracle=true           # also score oracle mel masks (IBM, Wiener-like) and the mixture: the reference rows
overwrite=false       # redo the stages that are run even if they are done

. ./path.sh || exit 1
. ./cmd.sh || exit 1
. utils/parse_options.sh
set -euo pipefail
. utils/lib.sh
lock_recipe_dir  # one run at a time in this folder (exp/.run.lock)

[ -n "${feat_conf}" ] || feat_conf=$(utils/feat_conf_of.sh "${train_config}" conf/feats.yaml)
feat_tag=$(basename "${feat_conf}" .yaml)
dumpdir=dump/${feat_tag}
[ -n "${tag}" ] || tag=$(basename "${train_config}" .yaml)
expdir=exp/${tag}
decode_dir=${expdir}  # the model that separates, and where its separations and scores go
if [ "${average_last}" -gt 1 ]; then decode_dir=${expdir}_avg${average_last}; fi

if [ "${stage}" -le 0 ] && [ "${stop_stage}" -ge 0 ]; then
  log "Stage 0: data preparation: DSD100 at '${dsd100}' -> data/dsd100_dev, data/dsd100_test"
  [ -d "${dsd100}" ] || { log "no DSD100 at '${dsd100}': pass --dsd100 DIR (or link the corpus to downloads/DSD100)"; exit 1; }
  utils/prepare_data.sh --corpus dsd100 --overwrite "${overwrite}" "${dsd100}" data dsd100_dev dsd100_test
fi

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ]; then
  log "Stage 1: DSD100-remix: ${train_hours} h training, ${valid_hours} h validation, ${test_seconds} s test pieces"
  utils/remix.sh --mode train --overwrite "${overwrite}" \
    --remix-opts "--hours ${train_hours} --valid-hours ${valid_hours} --seed ${seed} ${remix_args}" \
    data/dsd100_dev data train_remix valid_remix
  utils/remix.sh --mode test --overwrite "${overwrite}" --remix-opts "--test-seconds ${test_seconds} --seed ${seed}" \
    data/dsd100_test data test_remix
fi

if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
  log "Stage 2: features (${feat_conf}) of train_remix and valid_remix in ${nj} jobs -> ${dumpdir}"
  for x in train_remix valid_remix; do
    utils/compute_feats.sh --nj "${nj}" --cmd "${train_cmd}" --feat-conf "${feat_conf}" --overwrite "${overwrite}" \
      "data/${x}" "${dumpdir}/${x}"
  done
  python -m sepkit.bin.compute_cmvn "${dumpdir}/train_remix"
fi

if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ]; then
  log "Stage 3: training ${train_config} on ${ngpu} GPU(s) -> ${expdir}"
  utils/train_exp.sh --ngpu "${ngpu}" --num_nodes "${num_nodes}" --cmd "${cuda_cmd}" --train-args "${train_args}" --init-model "${init_model}" --valid-data data/valid_remix \
    --overwrite "${overwrite}" "${train_config}" "${dumpdir}/train_remix" "${dumpdir}/valid_remix" "${expdir}"
  utils/average_exp.sh --overwrite "${overwrite}" "${average_last}" "${expdir}" "${decode_dir}"
fi

if [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ]; then
  log "Stage 4: separation of ${test_sets} with head(s) ${head} of ${decode_dir}"
  for x in ${test_sets}; do
    utils/separate.sh --nj "${nj}" --cmd "${decode_cmd}" --head "${head}" --ngpu "${inference_ngpu}" \
      --overwrite "${overwrite}" "${decode_dir}" "data/${x}" "${decode_dir}"
  done
fi

if [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 5 ]; then
  log "Stage 5: scoring ${test_sets} (SI-SDRi, GNSDR/GSIR/GSAR) -> ${decode_dir}/score_*; table in exp/RESULTS.md"
  for x in ${test_sets}; do
    utils/score.sh --nj "${nj}" --cmd "${decode_cmd}" --head "${head}" --bss "${score_bss}" \
      --overwrite "${overwrite}" "data/${x}" "${decode_dir}"
    if ${oracle}; then
      utils/score_oracle.sh --nj "${nj}" --cmd "${decode_cmd}" --bss "${score_bss}" \
        --overwrite "${overwrite}" "${feat_conf}" "data/${x}" "exp/oracle_${feat_tag}"
    fi
  done
  python -m sepkit.bin.show_results --title "egs/dsd100/chimera results" --out exp/RESULTS.md exp
fi
log "Finished stages ${stage}-${stop_stage} of $0"

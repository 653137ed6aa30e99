#!/usr/bin/env bash
# @CORPUS@ -> DC / MI / Chimera network -> separation -> SI-SDRi and BSS eval scores (egs/@CORPUS@/@SYSTEM@).
# Made by utils/new_recipe.sh from egs/TEMPLATE: the data preparation (stage 0, local/) is the only
# part written for @CORPUS@; every other stage calls the shared utils/*.sh stage scripts, so a fix
# there reaches every recipe.
#
#   ./run.sh --corpus_dir /db/@CORPUS@                     # everything, the tiny configuration
#   ./run.sh --corpus_dir /db/@CORPUS@ --ngpu 1 --train_config conf/tuning/train_chimera_msa_alpha0.1.yaml
#   ./run.sh --stage 4 --head mi                           # separate and score again with the MI head
#   ./run.sh --model_dir ../../dsd100/chimera/exp/train_chimera_msa_alpha0.1 --stage 4   # another model
#
# Default training config: conf/tuning/train_chimera_tiny.yaml = 2 x 128 BLSTM, D = 10 (CHI_0.5, Adam);
#   500 steps of 16 x 100 frames whatever the corpus size, ~5 min on 2 CPU cores. Also in conf/tuning/
#   (one name = one network in every recipe): train_chimera_cpu.yaml = 3 x 300, D = 20 (CHI_0.1), 1200 steps,
#   ~30 min on 2 CPU cores; train_chimera_msa_alpha0.1.yaml = the paper's 4 x 500, D = 20, for a GPU.
# Stages (each one skips work that is already done and says so; --overwrite true redoes it):
#   0  data preparation (local/data.sh) -> data/train, data/valid, data/test (data dirs, docs/data.md)
#   1  only with --remix_hours H > 0: H hours of 0 dB remixes of the training songs (DSD100-remix,
#      paper section 3.1; sources vocals and accompaniment) -> data/train_remix<H>h, trained on instead
#   2  features (mel magnitudes, kaldiio ark/scp) of the training and validation sets, CMVN statistics
#      of the training set -> dump/<feat tag>/
#   3  training with --train_config on --ngpu GPUs (0 = CPU) -> exp/<tag>/ (model.pt, train.log, tensorboard/)
#   4  separation of the --test_sets with the --head head(s) -> exp/<tag>/separate_<set>_<head>/
#   5  scoring: SI-SDRi and GNSDR/GSIR/GSAR -> exp/<tag>/score_<set>_<head>/{result.json, per_utt.csv};
#      oracle mel masks and the mixture -> exp/oracle_<feat tag>/ (--oracle); table -> exp/RESULTS.md
# With --model_dir (a trained model), stages 1-3 are skipped and stages 4-5 use that model.
# Jobs run through cmd.sh (local, or SLURM with SEPKIT_BACKEND=slurm); logs under each output's log/.

stage=0               # first stage to run
stop_stage=100        # last stage to run
# ---- corpus options: given to local/data.sh in stage 0 (the part of this recipe written for @CORPUS@) ----
corpus_dir=downloads/@CORPUS@  # the corpus, as local/data.sh reads it
# ---- end of corpus options ----
model_dir=            # evaluate this trained model (an exp dir or a model file) instead of training one
remix_hours=0         # > 0: train on this many hours of 0 dB remixes of the training songs (stage 1)
remix_args=           # more options of python -m sepkit.bin.remix, e.g. "--segment-seconds 5"
seed=0                # seed of the remixes
ngpu=0                # GPUs for training; 0 = CPU, N > 1 = N processes with DDP (torchrun)
num_nodes=1           # machines for training (> 1: inside a SLURM job of that many nodes, see utils/train.sh)
nj=2                  # parallel jobs of feature extraction, separation and scoring
train_config=conf/tuning/train_chimera_tiny.yaml  # training config (conf/tuning/)
feat_conf=            # feature settings; empty = the one paired with --train_config, else conf/feats.yaml
tag=                  # experiment name exp/<tag>; empty = the name of --train_config (or of --model_dir)
head=both             # head(s) to separate and score with: mi (mask inference), dc (deep clustering), both
train_args=           # more options of python -m sepkit.bin.train, override the config, e.g. "--epochs 5"
init_model=           # fine-tuning: start from this parent network (model file, exp dir, checkpoint or hub id owner/name); empty = random init
test_sets=test        # data dirs separated and scored in stages 4-5 (those that exist)
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
if [ -n "${model_dir}" ]; then
  [ -n "${tag}" ] || tag=$(basename "${model_dir%/model.pt}" .pt)
  model=${model_dir}
else
  [ -n "${tag}" ] || tag=$(basename "${train_config}" .yaml)
  model=exp/${tag}
fi
expdir=exp/${tag}
train_set=train
[ "${remix_hours}" = 0 ] || train_set=train_remix${remix_hours}h
[ -z "${model_dir}" ] || log "model ${model_dir} given: stages 1-3 (remix, features, training) are skipped"

if [ "${stage}" -le 0 ] && [ "${stop_stage}" -ge 0 ]; then
  log "Stage 0: data preparation (local/data.sh) -> data/train, data/valid, data/test"
  # ---- corpus: stage 0 ----
  local/data.sh --overwrite "${overwrite}" --corpus_dir "${corpus_dir}" data
  # ---- end of corpus: stage 0 ----
fi

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ] && [ "${remix_hours}" != 0 ] && [ -z "${model_dir}" ]; then
  log "Stage 1: ${remix_hours} h of 0 dB remixes of the training songs -> data/${train_set}"
  utils/remix.sh --mode train --overwrite "${overwrite}" \
    --remix-opts "--hours ${remix_hours} --valid-hours 0 --seed ${seed} --train-name ${train_set} ${remix_args}" \
    data/train data "${train_set}"
fi

if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ] && [ -z "${model_dir}" ]; then
  log "Stage 2: features (${feat_conf}) of ${train_set} and valid in ${nj} jobs -> ${dumpdir}"
  for x in "${train_set}" valid; do
    utils/compute_feats.sh --nj "${nj}" --cmd "${train_cmd}" --feat-conf "${feat_conf}" --overwrite "${overwrite}" \
      "data/${x}" "${dumpdir}/${x}"
  done
  python -m sepkit.bin.compute_cmvn "${dumpdir}/${train_set}"
fi

if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ] && [ -z "${model_dir}" ]; then
  log "Stage 3: training ${train_config} on ${ngpu} GPU(s) -> ${expdir}"
  utils/train_exp.sh --ngpu "${ngpu}" --num_nodes "${num_nodes}" --cmd "${cuda_cmd}" --train-args "${train_args}" --init-model "${init_model}" --valid-data data/valid \
    --overwrite "${overwrite}" "${train_config}" "${dumpdir}/${train_set}" "${dumpdir}/valid" "${expdir}"
fi

if [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ]; then
  log "Stage 4: separation of ${test_sets} with head(s) ${head} of ${model}"
  for x in ${test_sets}; do
    [ -f "data/${x}/wav.scp" ] || { log "no data/${x} (stage 0 made no ${x} set): not separated"; continue; }
    utils/separate.sh --nj "${nj}" --cmd "${decode_cmd}" --head "${head}" --ngpu "${inference_ngpu}" \
      --overwrite "${overwrite}" "${model}" "data/${x}" "${expdir}"
  done
fi

if [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 5 ]; then
  log "Stage 5: scoring ${test_sets} (SI-SDRi, GNSDR/GSIR/GSAR) -> ${expdir}/score_*; table in exp/RESULTS.md"
  for x in ${test_sets}; do
    [ -f "data/${x}/wav.scp" ] || { log "no data/${x}: not scored"; continue; }
    utils/score.sh --nj "${nj}" --cmd "${decode_cmd}" --head "${head}" --bss "${score_bss}" \
      --overwrite "${overwrite}" "data/${x}" "${expdir}"
    if ${oracle}; then
      utils/score_oracle.sh --nj "${nj}" --cmd "${decode_cmd}" --bss "${score_bss}" \
        --overwrite "${overwrite}" "${feat_conf}" "data/${x}" "exp/oracle_${feat_tag}"
    fi
  done
  python -m sepkit.bin.show_results --title "egs/@CORPUS@/@SYSTEM@ results" --out exp/RESULTS.md exp
fi
log "Finished stages ${stage}-${stop_stage} of $0"

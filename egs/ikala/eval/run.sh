#!/usr/bin/env bash
# Mismatched evaluation on the public iKala set (Luo et al., ICASSP 2017, Tables 2-4, "iKala" columns):
# separate iKala with a model trained by another recipe (e.g. egs/dsd100/chimera) with both heads,
# and score it like the training recipe does (SI-SDRi; GNSDR/GSIR/GSAR as in MIREX).
#
#   ./run.sh --ikala /db/iKala --model_dir ../../dsd100/chimera/exp/train_chimera_msa_alpha0.1
#   ./run.sh --ikala /db/iKala --model_dir /models/chimera.pt --head mi --nj 8
#
# Stages (each one skips work that is already done and says so; --overwrite true redoes it):
#   0  data preparation: iKala (official layout: Wavfile/<id>_<verse|chorus>.wav, left channel = music,
#      right channel = vocals, mixture = their sum) -> data/ikala
#   1  separation with the --head head(s) of --model_dir -> exp/<tag>/separate_ikala_<head>/
#   2  scoring -> exp/<tag>/score_ikala_<head>/{result.json, per_utt.csv}; oracle mel masks and the
#      mixture -> exp/oracle_feats/ (--oracle); the table of all results is printed and written to exp/RESULTS.md
# Jobs run through cmd.sh (local, or SLURM with SEPKIT_BACKEND=slurm); logs under each output's log/.

stage=0               # first stage to run
stop_stage=100        # last stage to run
ikala=downloads/iKala  # iKala root, official layout: Wavfile/<5-digit id>_<verse|chorus>.wav
model_dir=            # trained model: an exp dir of another recipe (its model.pt) or a model file
tag=                  # experiment name exp/<tag>; empty = the name of --model_dir
head=both             # head(s) to separate and score with: mi (mask inference), dc (deep clustering), both
nj=4                  # parallel jobs of separation and scoring
inference_ngpu=0      # separate on a GPU (1) or on the CPU (0)
score_bss=true        # also compute BSS eval v3 (GNSDR/GSIR/GSAR); false = SI-SDRi only (faster)
oracle=true           # also score oracle mel masks (IBM, Wiener-like) and the mixture: the reference rows
oracle_feat_conf=conf/feats.yaml  # features of the oracle masks (the model's own features are in its model file)
overwrite=false       # redo the stages that are run even if they are done

. ./path.sh || exit 1
. ./cmd.sh || exit 1
. utils/parse_options.sh
set -euo pipefail
. utils/lib.sh
lock_recipe_dir  # one run at a time in this folder (exp/.run.lock)

if [ "${stop_stage}" -ge 1 ] && [ -z "${model_dir}" ]; then
  log "--model_dir is required for stages 1-2 (an exp dir of egs/dsd100/chimera, or a model file)"
  exit 1
fi
[ -n "${tag}" ] || tag=$(basename "${model_dir%/model.pt}" .pt)
expdir=exp/${tag}

if [ "${stage}" -le 0 ] && [ "${stop_stage}" -ge 0 ]; then
  log "Stage 0: data preparation: iKala at '${ikala}' -> data/ikala"
  [ -d "${ikala}" ] || { log "no iKala at '${ikala}': pass --ikala DIR (or link the corpus to downloads/iKala)"; exit 1; }
  utils/prepare_data.sh --corpus ikala --overwrite "${overwrite}" "${ikala}" data ikala
fi

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ]; then
  log "Stage 1: separation of data/ikala with head(s) ${head} of ${model_dir} -> ${expdir}"
  utils/separate.sh --nj "${nj}" --cmd "${decode_cmd}" --head "${head}" --ngpu "${inference_ngpu}" \
    --overwrite "${overwrite}" "${model_dir}" data/ikala "${expdir}"
fi

if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
  log "Stage 2: scoring data/ikala (SI-SDRi, GNSDR/GSIR/GSAR) -> ${expdir}/score_ikala_*; table in exp/RESULTS.md"
  utils/score.sh --nj "${nj}" --cmd "${decode_cmd}" --head "${head}" --bss "${score_bss}" \
    --overwrite "${overwrite}" data/ikala "${expdir}"
  if ${oracle}; then
    utils/score_oracle.sh --nj "${nj}" --cmd "${decode_cmd}" --bss "${score_bss}" --overwrite "${overwrite}" \
      "${oracle_feat_conf}" data/ikala "exp/oracle_$(basename "${oracle_feat_conf}" .yaml)"
  fi
  python -m sepkit.bin.show_results --title "egs/ikala/eval results" --out exp/RESULTS.md exp
fi
log "Finished stages ${stage}-${stop_stage} of $0"

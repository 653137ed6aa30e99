#!/usr/bin/env bash
# MUSDB18 / MUSDB18-HQ -> Chimera network (vocals vs accompaniment, or MUSDB18's 4 stems) -> separation
# of the test tracks -> BSS eval v4 medians (the MUSDB18 convention) beside BSS eval v3 GNSDR/GSIR/GSAR,
# SI-SDRi and oracle rows.
#
#   ./run.sh --musdb /db/musdb18                      # .stem.mp4 files (decoded once with PyAV)
#   ./run.sh --musdb /db/musdb18 --stems 4            # vocals, drums, bass, other (quality not yet measured)
#   ./run.sh --musdb /db/musdb18hq --hq true          # MUSDB18-HQ wav folders
#   ./run.sh --musdb ../../../../shared/data/musdb18-7s --holdout_test 4   # the 7-s sample set (train/ only)
#   ./run.sh --musdb /db/musdb18 --init_model ../../mir1k/chimera/exp/<tag> --tag ft  # fine-tune a MIR-1K model (RESULTS.md)
#
# Default training config: conf/tuning/train_chimera_cpu.yaml = 3 x 300 BLSTM, D = 20 (CHI_0.1, Adam);
#   500 steps of 16 x 100 frames whatever the corpus size (5 epochs x steps_per_epoch 100), ~12 min on
#   2 CPU cores. The paper's 4 x 500 network: conf/tuning/train_chimera_msa_alpha0.1.yaml, for a GPU.
#   With --stems 4 the default is conf/tuning/train_chimera_cpu_4stems.yaml (the same network, 4 outputs).
# Stems: --stems 2 (default) = sources vocals, accompaniment (= drums + bass + other) in data/musdb18_{train,
#   valid,test}; --stems 4 = vocals, drums, bass, other in data/musdb18_4stems_{train,valid,test}. Every
#   later output is named after those sets (dump/<feat tag>/<set>, separate_<set>_<head>, score_<set>_<head>,
#   exp/oracle_<feat tag>/score_<set>_<head>) and the default exp tag after the config, so 2- and 4-stem runs
#   never share a data dir, a dump, a model or a score; stage 0 keeps one marker per setting
#   (data/.prepare_musdb18.done, data/.prepare_musdb18_4stems.done), and a data dir's fingerprint holds its
#   source list, so a stage whose input changed its stems is redone or refused.
# Stages (each skips work already done and says so; --overwrite true redoes it):
#   0  data preparation: {train,test}/*.stem.mp4 (streams 0 mixture, 1 drums, 2 bass, 3 other, 4 vocals) or
#      MUSDB18-HQ {train,test}/<track>/*.wav -> data/musdb18_train, data/musdb18_valid (--valid_fraction of
#      train), data/musdb18_test (--stems 4: data/musdb18_4stems_*); sources vocals and accompaniment =
#      drums + bass + other (--stems 4: vocals, drums, bass, other). With
#      --holdout_test N (a corpus without test/), N train tracks become the test set (corpus/ holds links).
#   1  augmentation (--aug_hours > 0, 2 stems only): 0 dB remixes of vocals with another track's
#      accompaniment (silence removed, 16 kHz mono; sepkit.bin.remix --cross-song) added to the training tracks
#   2  features (conf/feats.yaml) of the training and validation sets, CMVN -> dump/<feat tag>/
#   3  training with --train_config -> exp/<tag>/
#      (--dynamic_mix true: examples mixed on the fly from the stems of data/<sets>_train, any --stems; exp tag <config>_dm)
#      (--average_last N > 1: stages 4-5 use the weight average of its last N checkpoints, exp/<tag>_avg<N>/)
#   4  separation of data/musdb18_test (stereo, 44.1 kHz out) -> exp/<tag>/separate_musdb18_test_<head>/
#      (one wav per source)
#   5  scoring: BSS eval v4 per source (images, 1 s frames, median over frames then tracks) and, over several
#      sources, their mean (the SiSEC figure) -> score_*/result_v4.json,
#      BSS eval v3 + SI-SDRi -> score_*/result.json; the same for the oracle mel masks and the mixture
#      (exp/oracle_<feat tag>/); tables exp/RESULTS_v4.md and exp/RESULTS.md
# Same shared stage scripts as egs/dsd100/chimera (utils/); only the data preparation differs.

stage=0               # first stage to run
stop_stage=100        # last stage to run
musdb=                # MUSDB18 root (holds train/ and test/)
hq=false              # MUSDB18-HQ layout (wav folders) instead of .stem.mp4 files
holdout_test=0        # corpus without test/ (the 7-s sample set): hold out this many train tracks as the test set
valid_fraction=0.1    # fraction of the training tracks held out for validation
mixture=file          # mixture: file (the official mixture) or sum (sum of the four stems)
stems=2               # sources: 2 = vocals, accompaniment; 4 = vocals, drums, bass, other (data/musdb18_4stems_*)
aug_hours=0           # hours of cross-track 0 dB remixes added to the training tracks; 0 = none
aug_segment_seconds=4 # length of each remixed training mixture (s)
dynamic_mix=false     # true: stage 3 mixes every training example on the fly from stems of different training tracks (random gains 0.25-1.25, channel swaps, offsets; sepkit/data/dynamic_mix.py, docs/data.md); the mixture is the SUM of the stems, not the official mix
seed=0                # seed of the validation split and the remixes
ngpu=0                # GPUs for training; 0 = CPU
num_nodes=1           # machines for training (> 1: inside a SLURM job of that many nodes, see utils/train.sh)
nj=2                  # parallel jobs of feature extraction, separation and scoring
train_config=conf/tuning/train_chimera_cpu.yaml  # training config (conf/tuning/); not given with --stems 4: train_chimera_cpu_4stems.yaml
feat_conf=            # feature settings; empty = the one paired with --train_config, else conf/feats.yaml
tag=                  # experiment name exp/<tag>; empty = the name of --train_config
head=both             # head(s) to separate and score with: mi, dc or both
average_last=0        # > 1: separate with the weight average of the last N checkpoints (exp/<tag>_avg<N>); 0 = exp/<tag>/model.pt
separate_opts=        # options of sepkit.bin.separate_data, e.g. "--segment-frames 2000" (default: training length)
train_args=           # more options of python -m sepkit.bin.train, override the config, e.g. "--epochs 5"
init_model=           # fine-tuning: start from this parent network (model file, exp dir, checkpoint or hub id owner/name); empty = random init
inference_ngpu=0      # separate on a GPU (1) or on the CPU (0)
score_bss=true        # also BSS eval v3 (GNSDR/GSIR/GSAR) in result.json; false = SI-SDRi only
oracle=true           # score the oracle-mask and mixture reference rows in stage 5
overwrite=false       # redo the stages that are run even if they are done

# --stems 4 with no --train_config on the command line trains conf/tuning/train_chimera_cpu_4stems.yaml
case " $* " in *" --train_config"*|*" --train-config"*) config_given=true ;; *) config_given=false ;; esac

. ./path.sh || exit 1
. ./cmd.sh || exit 1
. utils/parse_options.sh
set -euo pipefail
. utils/lib.sh

case "${stems}" in
  2) sets=musdb18; marker_suffix= ;;
  4) sets=musdb18_4stems; marker_suffix=_4stems ;;
  *) echo "$0: --stems ${stems}: MUSDB18 gives 2 stems (vocals, accompaniment) or 4 (vocals, drums, bass, other)" >&2; exit 1 ;;
esac
if [ "${aug_hours}" != 0 ] && [ "${stems}" != 2 ]; then
  echo "$0: --aug_hours ${aug_hours}: the remix stage makes vocals/accompaniment pairs only; use it with --stems 2" >&2
  exit 1
fi
lock_recipe_dir  # one run at a time in this folder (exp/.run.lock)

if [ "${stems}" != 2 ] && ! "${config_given}"; then
  train_config=conf/tuning/train_chimera_cpu_${stems}stems.yaml
fi
[ -n "${feat_conf}" ] || feat_conf=$(utils/feat_conf_of.sh "${train_config}" conf/feats.yaml)
feat_tag=$(basename "${feat_conf}" .yaml)
dumpdir=dump/${feat_tag}
if [ -z "${tag}" ]; then
  tag=$(basename "${train_config}" .yaml)
  if [ "${dynamic_mix}" = true ]; then tag=${tag}_dm; fi
fi
expdir=exp/${tag}
decode_dir=${expdir}  # the model that separates, and where its separations and scores go
if [ "${average_last}" -gt 1 ]; then decode_dir=${expdir}_avg${average_last}; fi
if [ "${aug_hours}" = 0 ]; then
  train_set=${sets}_train
else
  train_set=${sets}_train_aug${aug_hours}h
fi

if [ "${stage}" -le 0 ] && [ "${stop_stage}" -ge 0 ]; then
  log "Stage 0: data preparation: MUSDB18 (hq=${hq}, ${stems} stems) at '${musdb}' -> data/${sets}_{train,valid,test}"
  [ -n "${musdb}" ] || { log "--musdb DIR is required for stage 0"; exit 1; }
  root=${musdb}
  if [ "${holdout_test}" -gt 0 ]; then
    root=corpus/musdb18_holdout${holdout_test}
    local/holdout_test.sh "${musdb}" "${holdout_test}" "${root}"
  fi
  opts="--valid-fraction ${valid_fraction} --seed ${seed} --mixture ${mixture} --stems ${stems}"
  ${hq} && opts="--hq ${opts}"
  utils/prepare_data.sh --corpus musdb18 --overwrite "${overwrite}" --prepare-opts "${opts}" \
    --marker-suffix "${marker_suffix}" "${root}" data "${sets}_train" "${sets}_valid" "${sets}_test"
fi

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ] && [ "${aug_hours}" != 0 ]; then
  log "Stage 1: augmentation: ${aug_hours} h of cross-track 0 dB remixes of data/${sets}_train -> data/${train_set}"
  utils/remix.sh --mode train --overwrite "${overwrite}" \
    --remix-opts "--hours ${aug_hours} --valid-hours 0 --segment-seconds ${aug_segment_seconds} --cross-song --seed ${seed} --train-name ${sets}_train_remix${aug_hours}h" \
    data/${sets}_train data "${sets}_train_remix${aug_hours}h"
  utils/combine_data.sh --overwrite "${overwrite}" "data/${train_set}" data/${sets}_train "data/${sets}_train_remix${aug_hours}h"
fi

if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
  log "Stage 2: features (${feat_conf}) of ${train_set} and ${sets}_valid in ${nj} jobs -> ${dumpdir}"
  for x in "${train_set}" ${sets}_valid; do
    utils/compute_feats.sh --nj "${nj}" --cmd "${train_cmd}" --feat-conf "${feat_conf}" --overwrite "${overwrite}" \
      "data/${x}" "${dumpdir}/${x}"
  done
  python -m sepkit.bin.compute_cmvn "${dumpdir}/${train_set}"
fi

if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ]; then
  log "Stage 3: training ${train_config} on ${ngpu} GPU(s) -> ${expdir}"
  targs=${train_args}
  if [ "${dynamic_mix}" = true ]; then targs="${train_args} --dynamic_mix true --dm_data data/${sets}_train"; fi
  utils/train_exp.sh --ngpu "${ngpu}" --num_nodes "${num_nodes}" --cmd "${cuda_cmd}" --train-args "${targs}" --init-model "${init_model}" --valid-data data/${sets}_valid \
    --overwrite "${overwrite}" "${train_config}" "${dumpdir}/${train_set}" "${dumpdir}/${sets}_valid" "${expdir}"
  utils/average_exp.sh --overwrite "${overwrite}" "${average_last}" "${expdir}" "${decode_dir}"
fi

if [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ]; then
  log "Stage 4: separation of ${sets}_test with head(s) ${head} of ${decode_dir}"
  utils/separate.sh --nj "${nj}" --cmd "${decode_cmd}" --head "${head}" --ngpu "${inference_ngpu}" \
    --separate-opts "${separate_opts}" --overwrite "${overwrite}" "${decode_dir}" data/${sets}_test "${decode_dir}"
fi

if [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 5 ]; then
  log "Stage 5: scoring ${sets}_test: BSS eval v4 medians, BSS eval v3 and SI-SDRi, oracle rows; exp/RESULTS_v4.md, exp/RESULTS.md"
  local/score_v4.sh --nj "${nj}" --cmd "${decode_cmd}" --head "${head}" --overwrite "${overwrite}" data/${sets}_test "${decode_dir}"
  utils/score.sh --nj "${nj}" --cmd "${decode_cmd}" --head "${head}" --bss "${score_bss}" \
    --overwrite "${overwrite}" data/${sets}_test "${decode_dir}"
  if "${oracle}"; then
    oracle_overwrite=
    ${overwrite} && oracle_overwrite=--overwrite
    python -m sepkit.bin.oracle --feat-conf "${feat_conf}" --nj "${nj}" --bss "${score_bss}" --v4 true \
      ${oracle_overwrite} data/${sets}_test "exp/oracle_${feat_tag}"
  fi
  python -m sepkit.bin.score_v4 --show --out exp/RESULTS_v4.md exp
  python -m sepkit.bin.show_results --title "egs/musdb18/chimera results (${sets}_test)" --out exp/RESULTS.md exp
fi
log "Finished stages ${stage}-${stop_stage} of $0"

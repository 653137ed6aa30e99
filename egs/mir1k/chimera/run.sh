#!/usr/bin/env bash
# MIR-1K (Hsu & Jang 2010) -> Chimera network -> separation of unseen singers -> GNSDR/GSIR/GSAR, SI-SDRi,
# beside the oracle mel masks. The split is that of Huang et al. 2014 (the MIR-1K benchmark): train on the
# clips of abjones and amy, test on every clip of every other singer present.
#
#   ./run.sh --mir1k /db/MIR-1K                               # everything, the CPU configuration (~42 min training)
#   ./run.sh --mir1k /db/MIR-1K --ngpu 1 --train_config conf/tuning/train_chimera_msa_alpha0.1.yaml  # paper net
#   ./run.sh --mir1k /db/MIR-1K --stage 4 --head mi           # separate and score again with the MI head
#
# Default training config: conf/tuning/train_chimera_cpu_w1024_drop.yaml = 3 x 300 BLSTM, D = 20 (CHI_0.1, Adam,
#   cosine learning-rate decay, dropout 0.2) on Table 4's 16k-1024-256-mel200 features (its .feat_conf link ->
#   conf/feats_w1024_mel200.yaml); 3600 steps of 16 x 100 frames, 42 min on a 2-core AMD EPYC (~2300 frames/s).
#   RESULTS.md: vocals GNSDR on a singer used for no choice 8.31 dB (MI) / 8.14 (DC), vs 6.94 / 6.70 with
#   conf/tuning/train_chimera_cpu.yaml (1200 steps, paper features; the default until 2026-11-30, 11-29 min).
#   The paper's 4 x 500 network: conf/tuning/train_chimera_msa_alpha0.1.yaml, for a GPU.
# Stages (each skips work already done and says so; --overwrite true redoes it):
#   0  data preparation: MIR-1K (Wavfile/<singer>_<song>_<n>.wav, 16 kHz stereo, left = accompaniment,
#      right = voice; mixture = left + right) -> data/mir1k_train, data/mir1k_valid (--valid_fraction of
#      the training singers' songs), data/mir1k_test (all other singers)
#   1  augmentation (--aug_hours > 0): 0 dB remixes of the training clips' voices with the accompaniment
#      of ANOTHER clip (silence removed, random offsets; sepkit.bin.remix --cross-song) added to them ->
#      data/mir1k_train_aug<H>h = mir1k_train + mir1k_train_remix<H>h
#   2  features (the --feat_conf paired with --train_config, else conf/feats.yaml = the paper's 16 kHz, 512/128,
#      mel 150 + deltas) of the training and validation sets, CMVN of the training set -> dump/<feat tag>/
#   3  training with --train_config -> exp/<tag>/; then (--average_last N > 1) the average of the weights of
#      its last N checkpoints -> exp/<tag>_avg<N>/model.pt, the model stages 4-5 use
#   4  separation of data/mir1k_test with the --head head(s) -> exp/<tag>[_avg<N>]/separate_mir1k_test_<head>/
#   5  scoring (GNSDR/GSIR/GSAR = BSS eval v3 length-weighted means, SI-SDRi) -> exp/<tag>/score_*/,
#      reference rows (oracle mel IBM, oracle mel Wiener-like mask, the mixture itself) ->
#      exp/oracle_<feat tag>/score_*/, table of everything -> exp/RESULTS.md
# Same shared stage scripts as egs/dsd100/chimera (utils/); only the data preparation differs.

stage=0               # first stage to run
stop_stage=100        # last stage to run
mir1k=                # MIR-1K root (holds Wavfile/)
train_singers=abjones,amy  # training singers (Huang et al. 2014); every other singer is the test set
valid_fraction=0.1    # fraction of the training singers' songs held out for validation (by song)
aug_hours=2           # hours of cross-clip 0 dB remixes added to the training clips; 0 = no augmentation
aug_segment_seconds=4 # length of each remixed training mixture (s)
seed=0                # seed of the validation split and the remixes
ngpu=0                # GPUs for training; 0 = CPU
num_nodes=1           # machines for training (> 1: inside a SLURM job of that many nodes, see utils/train.sh)
nj=2                  # parallel jobs of feature extraction, separation and scoring
train_config=conf/tuning/train_chimera_cpu_w1024_drop.yaml  # training config (conf/tuning/)
feat_conf=            # feature settings; empty = the one paired with --train_config, else conf/feats.yaml
tag=                  # experiment name exp/<tag>; empty = the name of --train_config
head=both             # head(s) to separate and score with: mi, dc or both
average_last=3        # separate with the weight average of the last N checkpoints (exp/<tag>_avg<N>); 0 = exp/<tag>/model.pt
                      # (+0.55 dB vocals GNSDR over the best single checkpoint here, see RESULTS.md)
separate_opts="--segment-frames 2000"  # options of sepkit.bin.separate_data; 2000 frames = whole MIR-1K clips (<= 16 s: 32 s at hop 256, 16 s at hop 128)
train_args=           # more options of python -m sepkit.bin.train, override the config, e.g. "--epochs 5"
init_model=           # fine-tuning: start from this parent network (model file, exp dir, checkpoint or hub id owner/name); empty = random init
inference_ngpu=0      # separate on a GPU (1) or on the CPU (0)
score_bss=true        # also BSS eval v3 (GNSDR/GSIR/GSAR); false = SI-SDRi only
oracle=true           # score the oracle-mask and mixture reference rows in stage 5
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
if [ "${aug_hours}" = 0 ]; then
  train_set=mir1k_train
else
  train_set=mir1k_train_aug${aug_hours}h
fi

if [ "${stage}" -le 0 ] && [ "${stop_stage}" -ge 0 ]; then
  log "Stage 0: data preparation: MIR-1K at '${mir1k}', training singers ${train_singers} -> data/mir1k_{train,valid,test}"
  [ -n "${mir1k}" ] || { log "--mir1k DIR is required for stage 0"; exit 1; }
  utils/prepare_data.sh --corpus mir1k --overwrite "${overwrite}" \
    --prepare-opts "--train-singers ${train_singers} --valid-fraction ${valid_fraction} --seed ${seed}" \
    "${mir1k}" data mir1k_train mir1k_valid mir1k_test
fi

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ] && [ "${aug_hours}" != 0 ]; then
  log "Stage 1: augmentation: ${aug_hours} h of cross-clip 0 dB remixes of data/mir1k_train -> data/${train_set}"
  utils/remix.sh --mode train --overwrite "${overwrite}" \
    --remix-opts "--hours ${aug_hours} --valid-hours 0 --segment-seconds ${aug_segment_seconds} --cross-song --seed ${seed} --train-name mir1k_train_remix${aug_hours}h" \
    data/mir1k_train data "mir1k_train_remix${aug_hours}h"
  utils/combine_data.sh --overwrite "${overwrite}" "data/${train_set}" data/mir1k_train "data/mir1k_train_remix${aug_hours}h"
fi

if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
  log "Stage 2: features (${feat_conf}) of ${train_set} and mir1k_valid in ${nj} jobs -> ${dumpdir}"
  for x in "${train_set}" mir1k_valid; do
    utils/compute_feats.sh --nj "${nj}" --cmd "${train_cmd}" --feat-conf "${feat_conf}" --overwrite "${overwrite}" \
      "data/${x}" "${dumpdir}/${x}"
  done
  python -m sepkit.bin.compute_cmvn "${dumpdir}/${train_set}"
fi

if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ]; then
  log "Stage 3: training ${train_config} on ${ngpu} GPU(s) -> ${expdir}"
  utils/train_exp.sh --ngpu "${ngpu}" --num_nodes "${num_nodes}" --cmd "${cuda_cmd}" --train-args "${train_args}" --init-model "${init_model}" --valid-data data/mir1k_valid \
    --overwrite "${overwrite}" "${train_config}" "${dumpdir}/${train_set}" "${dumpdir}/mir1k_valid" "${expdir}"
  utils/average_exp.sh --overwrite "${overwrite}" "${average_last}" "${expdir}" "${decode_dir}"
fi

if [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ]; then
  log "Stage 4: separation of mir1k_test with head(s) ${head} of ${decode_dir}"
  utils/separate.sh --nj "${nj}" --cmd "${decode_cmd}" --head "${head}" --ngpu "${inference_ngpu}" \
    --separate-opts "${separate_opts}" --overwrite "${overwrite}" "${decode_dir}" data/mir1k_test "${decode_dir}"
fi

if [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 5 ]; then
  log "Stage 5: scoring mir1k_test (GNSDR/GSIR/GSAR, SI-SDRi) and the oracle rows; table in exp/RESULTS.md"
  utils/score.sh --nj "${nj}" --cmd "${decode_cmd}" --head "${head}" --bss "${score_bss}" \
    --overwrite "${overwrite}" data/mir1k_test "${decode_dir}"
  if "${oracle}"; then
    utils/score_oracle.sh --nj "${nj}" --cmd "${decode_cmd}" --bss "${score_bss}" --overwrite "${overwrite}" \
      "${feat_conf}" data/mir1k_test "exp/oracle_${feat_tag}"
  fi
  python -m sepkit.bin.show_results --title "egs/mir1k/chimera results (mir1k_test: singers other than ${train_singers})" \
    --out exp/RESULTS.md exp
fi
log "Finished stages ${stage}-${stop_stage} of $0"

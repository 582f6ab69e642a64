#!/usr/bin/env bash
# Issue 22, item 4 (text as an input) and its results: on a small demo written as a manifest with
# captions, paired over seeds 0, 1, 2 (tuning/compare.py): tags vs captions vs both as the text, a
# shared vs a separate text branch, and contextual vs text-only vs image-only vs late fusion, with
# per-class mAP, per-photo mAP and F1@3 (the demo's labels are exhaustive). Then, if there is time,
# contextual vs tags-only vs image-only vs late fusion on the same scenes in the NUS-WIDE layout.
# Unattended and resumable: re-run it after a kill; finished runs and evaluations are reused.
#
#   bash tuning/issue22.sh      # results: tuning/runs/issue22/*/compare.md, tuning/runs/issue22-nuswide/
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD
SIZE=${SIZE:-1200}
EPOCHS=${EPOCHS:-15}
OUT=tuning/runs/issue22
COMMON="--epochs $EPOCHS --image-size 32"
[ -d tfrecords/demo-manifest-$SIZE ] || python app/prepare.py --demo --demo-size "$SIZE" --demo-format manifest \
    --out tfrecords/demo-manifest-$SIZE --no-progress
compare() { python tuning/compare.py --no-progress --out "$OUT" "$@"; }  # a later --out wins

# 1. Which text a contextual model reads, and through which branch.
compare --data tfrecords/demo-manifest-$SIZE --name text-input --control "--text-input tags $COMMON" \
    --method "--text-input both --text-branch shared $COMMON" \
    --references "captions: --text-input text $COMMON; both-separate: --text-input both --text-branch separate $COMMON;\
 tags-only: --model tags $COMMON; image-only: --model image $COMMON"
# 2. Contextual (tags + captions) vs text-only (tags + captions), captions-only, image-only and late
#    fusion (of the text-only and image-only runs).
#    Scored on the test split only (the settings were chosen in 1, on validation; it saves time).
compare --data tfrecords/demo-manifest-$SIZE --name text-models --splits test \
    --control "--model tags --text-input both --text-branch shared $COMMON" \
    --method "--text-input both --text-branch shared $COMMON" \
    --references "image-only: --model image $COMMON; captions-only: --model tags --text-input text $COMMON;\
 tags-only: --model tags $COMMON"
# 3. The NUS-WIDE layout of the same scenes (tags only: NUS-WIDE has no captions).
[ -d tfrecords/demo-nuswide-$SIZE ] || python app/prepare.py --demo --demo-size "$SIZE" --demo-format nuswide \
    --out tfrecords/demo-nuswide-$SIZE --no-progress
compare --data tfrecords/demo-nuswide-$SIZE --out "$OUT-nuswide" --name nuswide-layout --splits test --control "--model tags $COMMON" \
    --method "$COMMON" --references "image-only: --model image $COMMON"

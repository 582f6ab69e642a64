#!/usr/bin/env bash
# Issue 14, capabilities 1 (a photo without an image) and 2 (many languages): every paired
# comparison of the README's result tables, on the default demo world, 3 seeds each.
# Unattended and resumable: re-run it after a kill; finished runs and evaluations are reused.
#
#   python app/prepare.py --demo --out tfrecords/demo   # once
#   bash tuning/issue14.sh                             # results: tuning/runs/compare/*/compare.md
set -euo pipefail
cd "$(dirname "$0")/.."

CONTROL="--no-image-presence --tag-normalization none"
REFS="tags: --model tags --tag-normalization none; image: --model image --no-image-presence"
compare() { python tuning/compare.py --no-progress --control "$CONTROL" "$@"; }

# 1. A photo without an image: image-presence input + learned missing-image embedding + image dropout.
compare --name image-dropout-0.5 --method "--image-presence --image-dropout 0.5 --tag-normalization none" --references "$REFS"
# 2. Many languages: Snowball stemming per photo language.
compare --name snowball --method "--no-image-presence --tag-normalization snowball" --references "$REFS"
compare --name snowball-vs-stemmed-fusion --method "--no-image-presence --tag-normalization snowball" \
    --references "tags-snowball: --model tags --tag-normalization snowball; image: --model image --no-image-presence"
# Ablations: a lower image dropout; the presence input alone, without image dropout.
compare --name image-dropout-0.25 --method "--image-presence --image-dropout 0.25 --tag-normalization none" --references "$REFS"
compare --name image-presence-only --method "--image-presence --tag-normalization none" --references "$REFS"

#!/usr/bin/env bash
# Issue 12 at reduced scale: MEMBERS mono networks (seeds 0..MEMBERS-1), a student distilled from them,
# and the comparison table (single = member 0, the ensemble, the student) in domain and out of it.
# Resumable: a finished run (final.pt present) is skipped, an interrupted one resumes.
#   bash benchmarks/uncertainty_small.sh            # MEMBERS=5 by default
set -euo pipefail
cd "$(dirname "$0")/.."
MEMBERS=${MEMBERS:-5}
CONFIG=config/train/uncertainty_mono_small.yaml
OUT=runs/uncertainty
train() {  # train OUTPUT_DIR [--set ...]
  local dir=$1; shift
  if [[ -f $dir/final.pt ]]; then echo "$dir: done"; return; fi
  mtl-perception train --config "$CONFIG" --resume --set "train.output_dir=$dir" "$@"
}
members=()
for ((seed = 0; seed < MEMBERS; seed++)); do
  train "$OUT/mono_s$seed" --set "train.seed=$seed"
  members+=("$OUT/mono_s$seed/final.pt")
done
teachers=$(IFS=,; echo "${members[*]}")
train "$OUT/mono_student" --set "distill.teachers=[$teachers]"
python benchmarks/uncertainty_table.py \
  --model "mono/single=${members[0]}" \
  --model "mono/ensemble=$teachers" \
  --model "mono/student=$OUT/mono_student/final.pt" \
  --json benchmarks/results/uncertainty_mono_small.json "$@"

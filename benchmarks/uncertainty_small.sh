#!/usr/bin/env bash
# Issue 12 at reduced scale: ENSEMBLES deep ensembles of MEMBERS networks each (ensemble e holds seeds
# e*MEMBERS .. e*MEMBERS+MEMBERS-1) of config/train/uncertainty_${MODE}_small.yaml, one student
# distilled from each ensemble, and the comparison table: every member as a single network, every
# ensemble, every student; the table prints each row kind as the mean ± std over its repeats (the
# seed-to-seed spread the issue's targets compare with).
# Resumable: a finished run (final.pt present) is skipped, an interrupted one resumes.
#   bash benchmarks/uncertainty_small.sh                 # MODE=mono ENSEMBLES=3 MEMBERS=5 by default
#   MODE=stereo ENSEMBLES=1 bash benchmarks/uncertainty_small.sh
#   STAGE=train bash benchmarks/uncertainty_small.sh     # the trainings only (STAGE=table: the table only)
#   ONLY="1 2" STAGE=train bash benchmarks/uncertainty_small.sh
#                  # trains ensembles 1 and 2 only: one invocation per free core trains ensembles side by side
# Arguments go to benchmarks/uncertainty_table.py (for example --photos-dir).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${MODE:-mono}
ENSEMBLES=${ENSEMBLES:-3}
MEMBERS=${MEMBERS:-5}
STAGE=${STAGE:-all}
ONLY=${ONLY:-$(seq -s ' ' 0 $((ENSEMBLES - 1)))}
CONFIG=config/train/uncertainty_${MODE}_small.yaml
OUT=runs/uncertainty
train() {  # train OUTPUT_DIR [--set ...]
  local dir=$1; shift
  if [[ -f $dir/final.pt ]]; then echo "$dir: done"; return; fi
  mtl-perception train --config "$CONFIG" --resume --set "train.output_dir=$dir" "$@"
}
rows=()
for ((e = 0; e < ENSEMBLES; e++)); do
  fit=false
  [[ $STAGE != table && " $ONLY " == *" $e "* ]] && fit=true
  members=()
  for ((m = 0; m < MEMBERS; m++)); do
    seed=$((e * MEMBERS + m))
    if $fit; then train "$OUT/${MODE}_s$seed" --set "train.seed=$seed"; fi
    members+=("$OUT/${MODE}_s$seed/final.pt")
    rows+=(--model "$MODE/single@$seed=$OUT/${MODE}_s$seed/final.pt")
  done
  teachers=$(IFS=,; echo "${members[*]}")
  # The student's own seed lies beyond every member's.
  if $fit; then
    train "$OUT/${MODE}_student_e$e" --set "distill.teachers=[$teachers]" \
      --set "train.seed=$((ENSEMBLES * MEMBERS + e))"
  fi
  rows+=(--model "$MODE/ensemble@$e=$teachers" --model "$MODE/student@$e=$OUT/${MODE}_student_e$e/final.pt")
done
[[ $STAGE == train ]] && exit 0
python benchmarks/uncertainty_table.py "${rows[@]}" --json "benchmarks/results/uncertainty_${MODE}_small.json" "$@"

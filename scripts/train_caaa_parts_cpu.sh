#!/usr/bin/env bash
# Small, fast CPU training of the three CAAAv2 parts on synthetic pairs made from real photos (COCO128),
# one after another, then export into one folder readable by `webiml annotate --checkpoint` and
# benchmarks/caaa_annotation_quality.py --checkpoint-dir.
#   OMP_NUM_THREADS=1 bash scripts/train_caaa_parts_cpu.sh [out_dir] [minutes_per_part]
# Environment: PHOTOS (photo folder), ROOT (work folder), PAIRS (generated pairs, default ROOT/pairs), SIZE (training side), STEPS (steps per part;
# the cosine schedule is planned for them, so set minutes high enough to reach them), NUM_TRAIN
# (generated training pairs), LABEL_TOL (mask label tolerance in levels, see
# webiml.data.pair_synthesis.make_spg_pair), SPG_REFINE (width of the SPG segmenter's full-resolution refinement
# head, 0 = none), PARTS (which parts, e.g. "classifier spg": run two in parallel on two cores).
set -euo pipefail
OUT=${1:-runs/caaa-parts}
MIN=$(printf %02d "${2:-8}")
PHOTOS=${PHOTOS:-../shared/data/natural/coco128/images}
ROOT=${ROOT:-runs/caaa-fast}
PAIRS=${PAIRS:-$ROOT/pairs}
SIZE=${SIZE:-160}
STEPS=${STEPS:-400}
NUM_TRAIN=${NUM_TRAIN:-384}
PARTS=${PARTS:-classifier spg sdg}
LABEL_TOL=${LABEL_TOL:-0}
SPG_REFINE=${SPG_REFINE:-0}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=1
common=(--data.init_args.photos "$PHOTOS" --data.init_args.root "$PAIRS" --data.init_args.synth_size "$SIZE"
        --data.init_args.size "$SIZE" --data.init_args.num_train "$NUM_TRAIN" --data.init_args.num_val 32 --data.init_args.label_tolerance "$LABEL_TOL"
        --data.init_args.num_workers 0 --data.init_args.batch_size 8
        --trainer.max_epochs 1000 --trainer.max_steps "$STEPS" --trainer.max_time "00:00:${MIN}:00"
        --trainer.accelerator cpu --trainer.enable_progress_bar false)
for part in $PARTS; do
  cfg=configs/caaa/$part.yaml; [ -f "$cfg" ] || cfg=configs/caaa/${part}_segmenter.yaml
  extra=()
  [ "$part" = classifier ] && extra=(--model.init_args.net.init_args.input_size "$SIZE")
  [ "$part" = spg ] && extra=(--model.init_args.net.init_args.refine_channels "$SPG_REFINE")
  echo "== $part ($cfg) $(date -u +%T)"
  python -c 'import torch; torch.set_num_threads(1); from webiml.cli import main; raise SystemExit(main())' \
    fit --config "$cfg" --trainer.default_root_dir "$ROOT/$part" "${common[@]}" "${extra[@]}"
  ckpt=$(ls -t "$ROOT/$part"/lightning_logs/version_*/checkpoints/last.ckpt | head -1)
  python -c "import sys; from webiml.tasks.pairs import export_pair_checkpoint as e; print(e(sys.argv[1], sys.argv[2]))" "$ckpt" "$OUT/$part"
done
echo "== done $(date -u +%T)"

#!/usr/bin/env bash
# The embedded model's recipe (configs/embedded/unet_lite0_online.yaml) with GPU-sized settings, then export and
# verdict calibration, in one script. Needs ../shared/data beside the repository.
#   bash scripts/train_online_gpu.sh [OUT] [EPOCHS]
set -euo pipefail
OUT=${1:-runs/online-gpu}
EPOCHS=${2:-12}
webiml fit --config configs/embedded/unet_lite0_online.yaml --trainer.default_root_dir "$OUT" \
  --trainer.max_epochs "$EPOCHS" --trainer.precision bf16-mixed \
  --data.init_args.batch_size 48 --data.init_args.crop_size 384 --data.init_args.gen_size 512 \
  --data.init_args.num_workers 12 --data.init_args.samples_per_epoch 24576 --data.init_args.pin_memory true
ckpt=$(ls -t "$OUT"/lightning_logs/version_*/checkpoints/last.ckpt | head -1)
webiml export "$ckpt" "$OUT/model" --half
webiml calibrate "$OUT/model" --authentic coco-panoptic:../shared/data/natural/coco128 bsds:../shared/data/natural/bsds500 \
  --check data/manifests/casia1-samples.jsonl data/manifests/noso.jsonl -o "$OUT/model-calibrated" --half

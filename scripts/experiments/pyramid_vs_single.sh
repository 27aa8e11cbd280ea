#!/usr/bin/env bash
# The pyramid-vs-single experiment (docs/pyramid_vs_single.md): the quickstart recipe (the paper's, from the
# pretrained demo parts in playground/demo_parts), same synthetic data, same steps, three vision towers:
#   (a) piip             PIIP, CLIP-shaped ViT @64 px + a smaller ConvNeXt @128 px, with interactions
#   (b) single           the ViT alone @96 px (vision FLOPs >= the pyramid's)
#                        (its LLM part is llm_144, pretrained on its own 12x12 layout of visual tokens)
#   (c) no_interactions  the pyramid with its interactions frozen at the zero-gate init (branches independent)
# then a table and a plot in docs/.
#
#   bash scripts/experiments/pyramid_vs_single.sh            # one seed
#   OUT=/tmp/pvs SEEDS="0 1 2" bash scripts/experiments/pyramid_vs_single.sh
set -euo pipefail
OUT=${OUT:-playground/experiments/pyramid_vs_single}
SEEDS=${SEEDS:-0}
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1

for seed in $SEEDS; do
  # DEMO_ARGS=--from-scratch gives the earlier, all-random recipe
  common=(--data "$OUT/data-$seed" --seed "$seed" --no-serve ${DEMO_ARGS:-})
  $PY -m piip_llava demo --output "$OUT/seed$seed/piip" "${common[@]}"
  $PY -m piip_llava demo --output "$OUT/seed$seed/single" --tower demo-clip_96 "${common[@]}"
  $PY -m piip_llava demo --output "$OUT/seed$seed/no_interactions" \
    --parts stage2=projector,vision_branches,llm "${common[@]}"
done
$PY scripts/experiments/report_pyramid_vs_single.py "$OUT" --plot docs/pyramid_vs_single.png

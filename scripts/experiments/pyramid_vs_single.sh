#!/usr/bin/env bash
# The pyramid-vs-single experiment (docs/pyramid_vs_single.md): the quickstart recipe (the paper's, from the
# pretrained demo parts in playground/demo_parts), same synthetic data, same steps, three vision towers:
#   (a) piip             PIIP, CLIP-shaped ViT @64 px + a smaller ConvNeXt @128 px, with interactions
#   (b) single           the ViT alone @96 px (vision FLOPs >= the pyramid's)
#                        (its LLM part is llm_144, pretrained on its own 12x12 layout of visual tokens)
#   (c) no_interactions  the pyramid with its interactions frozen at the zero-gate init (branches independent)
#   (b') single_llm64    (b) with the pyramid's LLM part `llm` (8x8 layout): only when named in ARMS
# then a table and a plot in docs/.
#
#   bash scripts/experiments/pyramid_vs_single.sh            # one seed, one run at a time
#   OUT=/tmp/pvs SEEDS="0 1 2" JOBS=2 ARMS="piip single no_interactions single_llm64" \
#     bash scripts/experiments/pyramid_vs_single.sh          # JOBS runs at a time, one thread each
set -euo pipefail
OUT=${OUT:-playground/experiments/pyramid_vs_single}
SEEDS=${SEEDS:-0}
ARMS=${ARMS:-piip single no_interactions}
JOBS=${JOBS:-1}
SCALE=${SCALE:-1}  # data sizes (a quick try: SCALE=0.02)
PLOT=${PLOT:-docs/pyramid_vs_single.png}
PY=${PY:-.venv/bin/python}
PARTS=${PARTS:-playground/demo_parts}
export HF_HUB_OFFLINE=1
if [ "$JOBS" -gt 1 ]; then export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1; fi

arm_args() {
  case $1 in
    piip) ;;
    single) echo --tower demo-clip_96 ;;
    no_interactions) echo --parts stage2=projector,vision_branches,llm ;;
    single_llm64) echo --tower demo-clip_96 --parts-dir "$OUT/parts_without_llm_144" ;;
    *) echo "unknown arm $1" >&2; return 1 ;;
  esac
}

for arm in $ARMS; do arm_args "$arm" > /dev/null; done  # an unknown arm stops here
mkdir -p "$OUT"
if [[ " $ARMS " == *" single_llm64 "* ]] && [ ! -d "$OUT/parts_without_llm_144" ]; then
  cp -r "$PARTS" "$OUT/parts_without_llm_144" && rm -r "$OUT/parts_without_llm_144/llm_144"
fi
for seed in $SEEDS; do  # each seed's data once, before its arms share it
  $PY -c "import sys; from pathlib import Path; from piip_llava.demo import DemoConfig, step_data
step_data(DemoConfig(output=Path(sys.argv[1]), data=Path(sys.argv[2]), seed=int(sys.argv[3]), scale=float(sys.argv[4])))" \
    "$OUT/seed$seed" "$OUT/data-$seed" "$seed" "$SCALE"
done

pids=()
for seed in $SEEDS; do
  for arm in $ARMS; do
    # DEMO_ARGS=--from-scratch gives the earlier, all-random recipe
    # shellcheck disable=SC2046
    $PY -m piip_llava demo --output "$OUT/seed$seed/$arm" --data "$OUT/data-$seed" --seed "$seed" --no-serve \
      --scale "$SCALE" $(arm_args "$arm") ${DEMO_ARGS:-} > "$OUT/seed$seed-$arm.log" 2>&1 &
    pids+=($!)
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 5; done
  done
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=$((failed + 1)); done
if [ "$failed" -gt 0 ]; then echo "$failed run(s) failed: see $OUT/seed*-*.log" >&2; exit 1; fi
$PY scripts/experiments/report_pyramid_vs_single.py "$OUT" --plot "$PLOT"

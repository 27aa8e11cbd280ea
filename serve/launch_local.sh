#!/usr/bin/env bash
# Controller + model worker + OpenAI-compatible API + Gradio web demo for one local model directory, on 127.0.0.1.
# Ctrl-C stops all four. Logs go to serve_logs/ (override with --log-dir).
#   bash serve/launch_local.sh MODEL_DIR [--device auto|cpu|cuda] [--dtype auto|float32|bfloat16|float16] [--api-port 8000] [--web-port 7860] [--api-key KEY] [--no-web]
set -euo pipefail
if [ $# -lt 1 ]; then
    echo "usage: bash serve/launch_local.sh MODEL_DIR [options of python -m piip_llava.serve.launch]" >&2
    exit 2
fi
PYTHON=${PYTHON:-.venv/bin/python}
exec "$PYTHON" -m piip_llava.serve.launch --model-path "$1" "${@:2}"

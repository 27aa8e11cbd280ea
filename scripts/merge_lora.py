"""Merge a LoRA run into a plain PIIP-LLaVA directory (loads with ``from_pretrained``, no PEFT needed).

python scripts/merge_lora.py --adapter out/finetune_lora --output out/merged [--base out/stage1]
"""

import argparse

from piip_llava.train.lora import merge_lora

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", required=True, help="output_dir of a --lora_enable run")
    parser.add_argument("--output", required=True)
    parser.add_argument("--base", help="base model dir (default: the one recorded in adapter_config.json)")
    args = parser.parse_args()
    print(merge_lora(args.adapter, args.output, args.base))

"""Write the tiny synthetic colour dataset (LLaVA format) to a folder.

python playground/make_color_data.py playground/data/tiny [--count 12] [--bad] [--jsonl]
"""

import argparse

from piip_llava.data.synthetic import write_color_dataset

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--count", type=int, default=12)
    parser.add_argument("--bad", action="store_true", help="add a corrupt image, a missing image, a malformed record")
    parser.add_argument("--jsonl", action="store_true")
    args = parser.parse_args()
    print(write_color_dataset(args.folder, args.count, args.bad, ".jsonl" if args.jsonl else ".json"))

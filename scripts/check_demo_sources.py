"""Read every pinned demo source and print its sizes (pipeline/sources/demo_sources.py).

    python scripts/check_demo_sources.py CACHE_DIR

CACHE_DIR holds the pinned archives (fetched there, sha256-verified, if absent).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from pipeline.sources.demo_sources import check  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache_dir", help="cache directory of pinned archives (fetched there if absent)")
    args = parser.parse_args()
    try:
        check(args.cache_dir)
    except (RuntimeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

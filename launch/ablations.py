"""Controlled comparisons (ASD/WSD ablations, recipe options) over seeds; `--help` explains the variants.

    python launch/ablations.py --dataset digits --epochs 15 --batch-size 64 --seeds 0 1 2 3 4
"""

import sys

from sdbnn.engine.ablations import main

if __name__ == "__main__":
    sys.exit(main())

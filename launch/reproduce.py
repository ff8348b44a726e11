"""Reproduce one row of the paper: train its recipe, then print achieved vs published accuracy; `--help` for more.

    python launch/reproduce.py --list
    accelerate launch launch/reproduce.py cifar10_resnet20 --data-dir ~/data
"""

import sys

from sdbnn.engine.reproduce import main

if __name__ == "__main__":
    sys.exit(main())

"""Train an SD-BNN on CIFAR (or a small real dataset) with the paper's recipe; `--help` lists every flag.

    accelerate launch launch/cifar.py --model resnet20 --data-dir ~/data          # the paper's recipe, one GPU
    accelerate launch launch/cifar.py --model resnet20 --dataset digits --epochs 15 --batch-size 64
"""

import sys

from sdbnn.engine.cli import cifar_main

if __name__ == "__main__":
    sys.exit(cifar_main())

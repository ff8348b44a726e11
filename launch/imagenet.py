"""Two-stage ImageNet training of the Bi-Real SD-BNN ResNet-18 with distillation from ResNet-34; `--help` lists
every flag.

    accelerate launch --multi_gpu --num_processes 2 launch/imagenet.py --data-dir ~/imagenet \\
        --teacher-weights resnet34.pth --stage both
"""

import sys

from sdbnn.engine.cli import imagenet_main

if __name__ == "__main__":
    sys.exit(imagenet_main())

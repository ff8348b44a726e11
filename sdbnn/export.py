"""``sdbnn.export``: the 1-bit packed export of a trained model, its exact reload, and ONNX, as functions and a
command line. The packed format lives in `sdbnn.deploy.packed` (its layout is described there), ONNX in
`sdbnn.deploy.onnx_export`, the command line in `sdbnn.deploy.cli`.

    python -m sdbnn.export RUN_DIR model.sdbnn.safetensors            # packed (default); reloaded and checked
    python -m sdbnn.export RUN_DIR model.onnx --format onnx           # ONNX, checked with onnxruntime if installed

    sdbnn.export_packed(model, "model.sdbnn.safetensors", config=run_config)
    model = sdbnn.load_packed("model.sdbnn.safetensors")              # logits equal the trained model's (eval, CPU)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from sdbnn.deploy.inference import InferenceSDConv2d, folded_weight, inference_model
from sdbnn.deploy.onnx_export import agreement, export_onnx, onnx_logits, onnx_op_types
from sdbnn.deploy.packed import export_packed, load_packed, pack_signs, packed_tensors, read_packed, unpack_signs

__all__ = ["InferenceSDConv2d", "agreement", "export_onnx", "export_packed", "folded_weight", "inference_model",
           "load_packed", "main", "onnx_logits", "onnx_op_types", "pack_signs", "packed_tensors", "read_packed",
           "unpack_signs"]


def main(argv: Sequence[str] | None = None) -> int:
    from sdbnn.deploy.cli import export_main

    return export_main(argv)


if __name__ == "__main__":
    sys.exit(main())

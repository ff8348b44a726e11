"""Deployment of trained models: what they cost, a 1-bit packed file, an ONNX graph, and their command lines.

One module per job; each imports only the ones listed above it (tests/test_structure.py checks the package has no
import cycle):

    inference.py    the inference form of a model: unwrapped, WSD folded into the weights, SD convs as plain ops
    cost_table.py   ModelSummary / LayerCost: the cost table's rows and totals, and how they print
    cost.py         the counting: summary(), model_cost(), run_cost() (``sdbnn.summary`` is this module's API)
    packed.py       the 1-bit packed file: export_packed, read_packed, load_packed
    onnx_export.py  the ONNX graph and its agreement check with onnxruntime
    cli.py          ``python -m sdbnn.summary`` and ``python -m sdbnn.export`` on models and run directories

Nothing is imported here, so ``python -m sdbnn.summary`` / ``-m sdbnn.export`` find no module of theirs loaded.
"""

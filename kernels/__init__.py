"""Triton kernels of the SD-BNN ops, one file per op (installed as ``sdbnn.kernels``).

The fused act_sign / weight_sign kernels and their launchers land here with the op layer; until then every
SD conv runs the eager reference math in `sdbnn.reference`.
"""

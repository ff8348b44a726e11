"""Triton kernels of the SD-BNN ops, one file per op (installed as ``sdbnn.kernels``): `act_sign`, `weight_sign`
(kernels and launchers), `surrogates` (shared device functions), `layouts` (memory layouts and output allocation),
`tiles` (launch tile sizes, switchable by tests).
"""

"""One budgeted GPU session: what a lent GPU runs, in priority order, in about 6 minutes on an H100.

    bash benchmarks/gpu_session.sh                    # the GPU machine: results into $OUT, else benchmarks/results
    bash benchmarks/gpu_session.sh --tiny             # CPU, tiny sizes: the test suite runs this
    python -m benchmarks.gpu_session --only training trainer --budget training=240   # a rerun of what was skipped

The stages, in priority order (what each measures and its budget: docs/benchmarks.md §The GPU session):
preflight, correctness, fused_ops (`benchmarks.kernels` on the ResNet-18 layers), training (`benchmarks.training`
on the pairs the README's targets need), trainer, predictions (against `benchmarks.cuda_graph`), gpu_tests
(`pytest -m gpu`, only with --budget gpu_tests=SECONDS) and targets. stages.py and targets.py hold them, plan.py what
they share (the GPU and tiny plans, the session, the Stage record); __main__.py runs them through
`benchmarks.common.run_sections`, the runner of `python -m benchmarks` too.

A stage may use its own budget plus whatever earlier stages left unused, never what later stages reserve; within a
stage, work starts only while its estimated cost fits (what did not is listed as skipped). Models compiled in the
correctness stage are reused by the training stage (each model compiles once). The JSON and markdown are rewritten
after every stage and every measured item. On CPU (--tiny) the compiled paths use the "aot_eager" backend (Inductor's
C++ compiles would dominate 2 cores) and the Trainer runs without compile; the output says so.
"""

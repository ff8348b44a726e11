"""One budgeted GPU session: what a lent GPU runs, in priority order, in about 6 minutes on an H100.

    bash benchmarks/gpu_session.sh                    # the GPU machine: results into $OUT, else benchmarks/results
    bash benchmarks/gpu_session.sh --tiny             # CPU, tiny sizes: the test suite runs this
    python -m benchmarks.gpu_session --only training trainer --budget training=240   # a rerun of what was skipped

One module per stage, each with what it measures, its budget (GPU and --tiny) and its report rows:
  preflight.py      versions, device, imports of every module the later stages use, one compile of each Triton kernel
  correctness.py    both ops against float64 on the ResNet-18 layer shapes; resnet20 and resnet18_imagenet compiled
                    with the fused ops against the reference backend, both under bf16 autocast
  fused_ops.py      Triton vs eager reference vs Inductor-compiled reference on the ResNet-18 layers, GB/s next to
                    the copy bandwidth measured here
  training_step.py  training-step img/s: resnet18_imagenet fused+compiled vs eager fp32 reference vs its
                    full-precision twin vs compiled reference; resnet20 with and without CUDA graphs
  trainer.py        the real Trainer, 2 epochs of synthetic CIFAR kept on the device: its img/s next to the bare step
  predictions.py    the measured steps (and one profiled ResNet-20 step's kernels) against benchmarks.cuda_graph's
                    predictions made without a GPU
  gpu_tests.py      `pytest -m gpu`, only when given a budget (--budget gpu_tests=SECONDS)
  targets.py        the README's targets against what this run measured
plan.py holds what they share (the GPU and tiny plans, the session, the Stage record); __main__.py runs them in order.

A stage may use its own budget plus whatever earlier stages left unused, never what later stages reserve; within a
stage, work starts only while its estimated cost fits (what did not is listed as skipped). Models compiled in the
correctness stage are reused by the training stage (each model compiles once). The JSON and markdown are rewritten
after every stage and every measured item (`benchmarks.common.Report`). On CPU (--tiny) the compiled paths use the
"aot_eager" backend (Inductor's C++ compiles would dominate 2 cores) and the Trainer runs without compile; the
output says so.
"""

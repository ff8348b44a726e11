"""One budgeted GPU session: what a lent GPU runs, in priority order, in about 6 minutes on an H100.

    bash benchmarks/gpu_session.sh                    # the GPU machine: results into $OUT, else benchmarks/results
    bash benchmarks/gpu_session.sh --tiny             # CPU, tiny sizes: the test suite runs this
    python -m benchmarks.gpu_session --only training trainer --budget training=240   # a rerun of what was skipped

The stages, each with what it measures, its budget (GPU and --tiny) and its report rows:
  preflight    versions, device, imports of every module the later stages use, one compile of each Triton kernel
  correctness  both ops against float64 on the ResNet-18 layer shapes; resnet20 and resnet18_imagenet compiled with
               the fused ops against the reference backend, both under bf16 autocast
  fused_ops    Triton vs eager reference vs Inductor-compiled reference on the ResNet-18 layers (`benchmarks.kernels`),
               GB/s next to the copy bandwidth measured here, and the launch configurations measured
  training     training-step img/s (`benchmarks.training`): resnet18_imagenet fused+compiled vs eager fp32 reference
               vs its full-precision twin vs compiled reference; resnet20 with and without CUDA graphs
  trainer      the real Trainer, 2 epochs of synthetic CIFAR kept on the device: its img/s next to the bare step
  predictions  the measured steps (and one profiled ResNet-20 step's kernels) against benchmarks.cuda_graph's
               predictions made without a GPU
  gpu_tests    `pytest -m gpu`, only when given a budget (--budget gpu_tests=SECONDS)
  targets      the README's targets against what this run measured
stages.py holds the measuring stages, targets.py the last two checks, plan.py what they share (the GPU and tiny plans,
the session, the Stage record); __main__.py lists them in order for `benchmarks.common.run_sections`, the runner of
`python -m benchmarks` too.

A stage may use its own budget plus whatever earlier stages left unused, never what later stages reserve; within a
stage, work starts only while its estimated cost fits (what did not is listed as skipped). Models compiled in the
correctness stage are reused by the training stage (each model compiles once). The JSON and markdown are rewritten
after every stage and every measured item (`benchmarks.common.Report`). On CPU (--tiny) the compiled paths use the
"aot_eager" backend (Inductor's C++ compiles would dominate 2 cores) and the Trainer runs without compile; the
output says so.
"""

"""CPU bf16 autocast: its own convolutions against the Trainer's emulation of them, and fp32, in one run.

    python -m studies.precision_emulation                    # resnet20, batch 32, 32×32
    python -m studies.precision_emulation --batch-size 64 --rounds 5

On a CPU without bf16 instructions, CPU autocast's bf16 convolutions take a slow reference kernel; the Trainer then
emulates them (`sdbnn/engine/precision.py`). This measures, on one model and one batch: the training-step speed of
fp32, native CPU bf16 autocast and emulated bf16 autocast (interleaved rounds; medians, and each mode against fp32
as the median of the rounds' ratios), and how far the emulation's logits and gradients are from native bf16's (and,
for scale, how far bf16's are from fp32's). Writes ``precision-emulation-<model>-<date>.{json,md}`` to ``--out``
(default ``studies/results/precision``).
"""

from __future__ import annotations

import contextlib
import datetime
import statistics
import time

import torch
import torch.nn.functional as F

import sdbnn
from sdbnn import provenance
from sdbnn.engine.precision import emulated_bf16_convolutions, native_bf16_convolutions
from benchmarks.common import interleaved_rounds, median_ratio, write_named_results
from studies.common import model_step_command, model_step_parser

MODES = ("fp32", "bf16_native", "bf16_emulated")


def precision_context(mode: str):
    if mode == "fp32":
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(torch.autocast("cpu", dtype=torch.bfloat16))
    if mode == "bf16_emulated":
        stack.enter_context(emulated_bf16_convolutions())
    return stack


def forward_backward(model, images, labels, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    with precision_context(mode):
        logits = model(images)
    F.cross_entropy(logits.float(), labels).backward()
    return logits.float(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def run(model_name: str, batch_size: int, rounds: int, steps: int, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = sdbnn.create_model(model_name)
    sdbnn.set_ede(model, 2.0, 0.5)
    images = torch.randn(batch_size, 3, 32, 32)
    labels = torch.randint(0, 10, (batch_size,))
    outputs = {mode: forward_backward(model, images, labels, mode) for mode in MODES}  # also the warm-up

    def rate(mode: str, _round: int) -> dict:
        started = time.perf_counter()
        for _ in range(steps):
            forward_backward(model, images, labels, mode)
        return {"images_per_s": steps * batch_size / (time.perf_counter() - started)}

    per_round = interleaved_rounds(rate, MODES, rounds)
    rates = {mode: [measured["images_per_s"] for measured in per_round[mode]] for mode in MODES}
    medians = {mode: statistics.median(values) for mode, values in rates.items()}
    (fp32_logits, fp32_grads), (native_logits, native_grads), (emulated_logits, emulated_grads) = (
        outputs[mode] for mode in MODES)
    return {
        "benchmark": "precision_emulation", "model": model_name, "batch_size": batch_size, "rounds": rounds,
        "steps_per_round": steps, "native_bf16_convolutions": native_bf16_convolutions(torch.device("cpu")),
        "images_per_s": rates, "median_images_per_s": medians,
        "speed_vs_fp32": {mode: median_ratio(per_round, mode, "fp32", "images_per_s")[1] for mode in MODES},
        "emulated_vs_native": {
            "logits_bit_identical": torch.equal(emulated_logits, native_logits),
            "logits_max_abs_difference": (emulated_logits - native_logits).abs().max().item(),
            "gradients_relative_difference": relative(emulated_grads, native_grads)},
        "native_bf16_vs_fp32": {"logits_relative_difference": relative(native_logits, fp32_logits),
                                "gradients_relative_difference": relative(native_grads, fp32_grads)},
        "date": datetime.date.today().isoformat(), "environment": provenance.environment(),
    }


def markdown(result: dict) -> str:
    env = result["environment"]
    agreement, scale = result["emulated_vs_native"], result["native_bf16_vs_fp32"]
    lines = [
        f"# CPU bf16 autocast: native vs emulated convolutions ({result['model']}, batch {result['batch_size']})", "",
        f"`{result['command']}` — commit `{env['commit']}`"
        f"{' (with uncommitted changes)' if env['uncommitted_changes'] else ''}, {env['cpu_model']}, "
        f"{env['cpu_cores']} cores, {env['torch_threads']} torch threads, torch {env['torch']}, {result['date']}. "
        f"bf16 convolution kernels on this CPU: {'yes' if result['native_bf16_convolutions'] else 'no'}. "
        f"Eager, the CPU training path (fused-op layer); {result['rounds']} interleaved rounds of "
        f"{result['steps_per_round']} forward+backward steps.", "",
        "| mode | img/s per round | median img/s | ÷ fp32 |", "|---|---|---|---|"]
    for mode in MODES:
        per_round = ", ".join(f"{value:.0f}" for value in result["images_per_s"][mode])
        lines.append(f"| {mode} | {per_round} | {result['median_images_per_s'][mode]:.0f} | "
                     f"{result['speed_vs_fp32'][mode]:.2f}× |")
    lines += [
        "", "Agreement on the first batch (before any timing step):", "",
        f"- emulated vs native bf16: logits bit-identical: {agreement['logits_bit_identical']} (largest difference "
        f"{agreement['logits_max_abs_difference']:.3g}); gradients' relative difference "
        f"{agreement['gradients_relative_difference']:.3g}",
        f"- native bf16 vs fp32 (for scale): logits' relative difference "
        f"{scale['logits_relative_difference']:.3g}, gradients' {scale['gradients_relative_difference']:.3g}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    prog = "python -m studies.precision_emulation"
    args = model_step_parser(prog, __doc__, batch_size=32, steps=2, out="precision").parse_args(argv)
    result = run(args.model, args.batch_size, args.rounds, args.steps)
    result["command"] = model_step_command(prog, args)
    text = markdown(result)
    print(text)
    write_named_results(args.out, f"precision-emulation-{args.model}-{result['date']}", result, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

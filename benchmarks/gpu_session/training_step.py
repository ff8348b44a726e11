"""d. Training step: img/s of one optimizer step under bf16 autocast, channels_last — resnet18_imagenet fused and
compiled vs the eager fp32 reference vs its full-precision twin vs the compiled reference; resnet20 with and without
CUDA graphs, with the 500-epoch recipe projected (`benchmarks.training` measures; this stage picks the rows). Models
the correctness stage compiled are reused."""

from __future__ import annotations

from benchmarks.common import Section, log, rate_text
from benchmarks.gpu_session.plan import COMPILE_S, Plan, Session, Stage

# Priority order: the README's targets first (ResNet-18 vs eager fp32 and vs its twin, ResNet-20's schedule).
TRAINING_ORDER = [("resnet18_imagenet", "sdbnn"), ("resnet18_imagenet", "reference_fp32"),
                  ("resnet18_imagenet", "full_precision"), ("resnet20", "sdbnn"), ("resnet20", "sdbnn_cudagraphs"),
                  ("resnet18_imagenet", "reference_compiled")]
EAGER_S = {"resnet18_imagenet": 15}  # building and warming an eager model on the GPU
EVAL_COMPILE_S = 15  # the evaluation graph of a CIFAR model whose recipe is projected


def steps(plan: Plan, variant: str) -> tuple[int, int]:
    """(warm-up, timed) steps of a variant: few for the slow eager fp32 reference."""
    if plan.tiny:
        return 1, 2
    return (2, 5) if variant == "reference_fp32" else (5, 30)


def _estimate(plan: Plan, model: str, variant: str, reused: bool) -> float:
    from benchmarks.training import VARIANTS

    kind = VARIANTS[variant]
    estimate = 0.0 if reused else plan.estimate(COMPILE_S[model] if kind.compiled else EAGER_S.get(model, 0))
    if plan.model_cases[model][3] and kind.binary and kind.backend == "ops":
        estimate += plan.estimate(EVAL_COMPILE_S)
    return estimate


def training_stage(section: Section, session: Session) -> None:
    from benchmarks import training

    plan, device, data = session.plan, session.device, section.data
    data.update(compile_backend=plan.compile_backend, precision="bf16 autocast", rows=[])
    if plan.tiny:
        data["note"] = (f"CPU tiny run: compiled with {plan.compile_backend}; CUDA graphs need CUDA, so the "
                        "cudagraphs variant runs without them")
    for model, variant in TRAINING_ORDER:
        label = f"{model} {variant}"
        reused = (model, variant) in session.prepared
        if not section.allows(label, _estimate(plan, model, variant, reused)):
            continue
        try:
            prepared = session.prepared.pop((model, variant), None) or training.prepare(
                model, plan.model_cases[model], variant, device, compile_backend=plan.compile_backend, autocast=True)
            row = training.measure(prepared, plan.tiny, steps(plan, variant))
            row["compiled_in"] = "correctness stage" if reused else "this stage"
            data["rows"].append(row)
            training.add_ratios(data["rows"])
            log(f"training: {model} {variant}: {rate_text(row['train_images_per_s'])} img/s"
                + (f" (first step {row['first_step_s']:.1f} s)" if row.get("first_step_s") else ""))
        except Exception as error:  # noqa: BLE001 - the next variant still runs
            section.error(label, error)
        finally:
            prepared = None
            training.release()
        section.save()


def training_table(data: dict) -> str:
    from benchmarks import training

    note = f"{data['note']}.\n\n" if data.get("note") else ""
    firsts = [f"{row['model']} {row['variant']} {row['first_step_s']:.0f} s" for row in data["rows"]
              if row.get("first_step_s") is not None]
    return (note + training.markdown_table(data) + ("\nFirst step (compilation included): " + ", ".join(firsts) + ".\n"
                                                    if firsts else ""))


STAGE = Stage("training", "d. Training step", training_stage, training_table, budget_s=100, tiny_budget_s=600)

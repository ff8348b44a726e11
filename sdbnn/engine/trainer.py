"""The Trainer: one engine for every launcher, on Accelerate (bf16 autocast or fp32 — by default bf16 on GPU, fp32 on
CPU —, DDP across ranks).

A run writes into ``output_dir``: ``config.yaml`` (resolved), ``metrics.jsonl`` / ``metrics.csv`` (one line per
epoch), ``training_curve.png``, ``checkpoint.pt`` (atomically, every epoch and every ``checkpoint_every_min``
minutes; resumable exactly, mid-epoch too; the one before is kept as ``checkpoint.previous.pt``) and, at the end,
``model.safetensors`` and ``summary.json`` (final and best top-1/top-5 on the full held-out set, the precision, and
the commit, machine and library versions that produced the run: `sdbnn.provenance`). Rank 0 holds the directory's
lock (`sdbnn.engine.run_lock`) from before its first write to the end; the epoch metrics also go to the trackers of
``report_to`` (Accelerate's: TensorBoard in ``tensorboard/``, Weights & Biases, MLflow).

The training loop never waits for the GPU: losses, accuracy counts and the finite-loss check stay on the device
and are read once every `CHECK_EVERY` steps (progress bar, divergence stop) and once per epoch. Those reads are also
where all ranks agree to stop on SIGTERM/SIGUSR1 or to write a periodic checkpoint (one process decides every step).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

import sdbnn
from sdbnn import provenance
from sdbnn.checkpoints import load_state_dict_file, save_weights
from sdbnn.engine.config import TrainConfig
from sdbnn.engine.diagnostics import TrainingDiagnostics
from sdbnn.engine.distill import distillation_loss
from sdbnn.engine.kill_points import kill_point
from sdbnn.engine.metrics import MetricsLog, topk_correct
from sdbnn.engine.precision import autocast_context, native_bf16_convolutions
from sdbnn.engine.preemption import Preempted, StopSignals, ignore_stop_signals
from sdbnn.engine.run_lock import hold_on_main_process, release_run_directory
from sdbnn.engine.runs import Run
from sdbnn.engine.state import CHECKPOINT, latest_training_state, restore_training_state, save_training_state
from sdbnn.engine.trackers import finish_trackers, log_epoch, project_configuration, start_trackers
from sdbnn.io import atomic_write, remove_stale_temporary_files
from sdbnn.pipelines.loaders import build_loaders
from sdbnn.pipelines.transforms import batch_memory_format
from sdbnn.reference import ede_schedule

CHECK_EVERY = 10  # steps between reads of the running loss (progress bar, divergence check)


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def parameter_groups(model: torch.nn.Module, config: TrainConfig) -> list[dict]:
    """Weight decay on every parameter, or (ImageNet recipe) on conv weights only."""
    if config.weight_decay_on == "all":
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": config.weight_decay}]
    decay, rest = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.dim() == 4 else rest).append(parameter)
    return [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameter_groups(model, config), lr=config.lr, momentum=config.momentum)
    return torch.optim.Adam(parameter_groups(model, config), lr=config.lr)


def lr_factor(config: TrainConfig, steps_per_epoch: int):
    """The learning-rate multiplier of optimizer step ``step`` (the scheduler is stepped after every optimizer
    step): cosine to 0, constant within an epoch; or linear to 0 over every step."""
    total = config.epochs * steps_per_epoch
    if config.lr_schedule == "cosine":
        return lambda step: 0.5 * (1 + math.cos(math.pi * (step // steps_per_epoch) / config.epochs))
    return lambda step: 1 - step / total


class Trainer:
    def __init__(self, config: TrainConfig, *, resume: bool = False, stop_after_epoch: int | None = None):
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState

        config.check_runnable()
        self.config, self.resume, self.stop_after_epoch = config, resume, stop_after_epoch
        cuda = torch.cuda.is_available()
        self.precision = config.resolved_precision(cuda)
        # One process may train several runs (the ablation runner), each with its own precision: Accelerate keeps
        # the mixed-precision choice in a process-wide state, so forget the previous run's (the process group stays).
        AcceleratorState._reset_state()
        self.output_dir = Path(config.output_dir)
        self.trackers = config.trackers()
        self.accelerator = Accelerator(cpu=not cuda, mixed_precision="bf16" if self.precision == "bf16" else "no",
                                       gradient_accumulation_steps=config.accumulation_steps,
                                       log_with=self.trackers or None,
                                       project_config=project_configuration(self.output_dir))
        self.device, self.world_size = self.accelerator.device, self.accelerator.num_processes
        self.main = self.accelerator.is_main_process
        self.run_lock = hold_on_main_process(self.accelerator, self.output_dir)  # before anything is written or read
        try:
            self._build(cuda)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Give the run directory back (the end of `fit`; a process that dies gives it back anyway)."""
        if self.run_lock is not None:
            release_run_directory(self.run_lock)
            self.run_lock = None

    def _build(self, cuda: bool) -> None:
        from accelerate.utils import set_seed

        config = self.config
        # bf16 on a CPU without bf16 convolution kernels: emulate them (sdbnn.engine.precision)
        self.emulated_bf16_convolutions = self.precision == "bf16" and not native_bf16_convolutions(self.device)
        if config.batch_size % (self.world_size * config.accumulation_steps):
            raise ValueError(f"batch size {config.batch_size} does not split over {self.world_size} processes × "
                             f"{config.accumulation_steps} accumulation steps")
        if cuda:
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest convolutions
        set_seed(config.seed)
        self.compile = config.compile if config.compile is not None else cuda
        self.memory_format = batch_memory_format(self.device)

        self.model = self._student().to(self.device, memory_format=self.memory_format)
        self.teacher = self._teacher()
        self.train_loader, self.val_loader = build_loaders(config, self.accelerator.process_index, self.world_size,
                                                           self.device, worker_init_fn=ignore_stop_signals)
        self.steps_per_epoch = len(self.train_loader)
        if self.steps_per_epoch == 0:
            raise ValueError(f"the training set holds fewer images than one global batch of {config.batch_size}")
        self.optimizer = build_optimizer(self.model, config)
        self.lr_factor = lr_factor(config, self.steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.lr_factor)
        # compile the bare model before prepare: a compiled DDP wrapper cannot be one graph
        forward_model = self._compiled(self.model) if self.compile else self.model
        self.forward_model, self.optimizer = self.accelerator.prepare(forward_model, self.optimizer)
        self.diagnostics = TrainingDiagnostics(self.model) if config.diagnostics else None
        self.diagnostic_batch = None  # the first held-out batch, taken when diagnostics first need it
        self.best: dict = {}  # the best epoch's record so far
        self.stop_signals, self.stopping = StopSignals(), False  # a signal received; all ranks agreed to stop
        self.last_checkpoint = time.monotonic()

    # --- construction -----------------------------------------------------------------------------------------

    def _student(self) -> torch.nn.Module:
        model = sdbnn.create_model(self.config.model, **self.config.model_options)
        if self.config.init_from:
            state = load_state_dict_file(self.config.init_from)
            try:
                model.load_state_dict(state)
            except RuntimeError as error:
                raise sdbnn.CheckpointError(f"{self.config.init_from} does not fit {self.config.model}: {error}") from None
        return model

    def _teacher(self):
        """The frozen teacher: eval mode, no gradients; bf16 when training in bf16; channels_last and compiled on
        CUDA."""
        if not self.config.teacher:
            return None
        teacher = sdbnn.create_model(self.config.teacher, weights=self.config.teacher_weights).eval()
        teacher.requires_grad_(False)
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        teacher.to(self.device, dtype=dtype, memory_format=self.memory_format)
        return self._compiled(teacher) if self.compile else teacher

    def _compiled(self, model: torch.nn.Module):
        return torch.compile(model, fullgraph=True, mode=self.config.compile_mode)

    # --- the run ----------------------------------------------------------------------------------------------

    def fit(self) -> dict:
        """Resume (or start), then per epoch: EDE schedule → train → evaluate → log → checkpoint. SIGTERM or
        SIGUSR1 end it at the next step boundary with a checkpoint of that point (`Preempted`). A finished run (on
        resume) returns its summary without training. The run directory is given back at the end, however it ends."""
        try:
            start = self._start()
            if "finished" in start:
                return start["finished"]
            if self.trackers:
                start_trackers(self.accelerator, self.config, self.output_dir)
            try:
                return self._train(start)
            finally:
                finish_trackers(self.accelerator)
        finally:
            self.release()

    def _train(self, start: dict) -> dict:
        metrics, first_batch, progress = start["metrics"], start["batch"], start["progress"]
        with sdbnn.backend(self.config.backend), self.stop_signals:
            for epoch in range(start["epoch"], self.config.epochs):
                k, t = self._set_ede(epoch)
                lr = self.config.lr * self.lr_factor(epoch * self.steps_per_epoch)  # the epoch's first step's
                record = {"epoch": epoch, "lr": lr, "k": k, "t": t}
                record.update(self.train_epoch(epoch, first_batch, progress))
                first_batch, progress = 0, {}
                if self.config.bn_recalibration:
                    self.recalibrate_batchnorm(epoch)
                record.update(self.evaluate())
                record["seconds"] = record["train_seconds"] + record["eval_seconds"]
                record["images_per_s"] = self.steps_per_epoch * self.config.batch_size / record["seconds"]
                if self.diagnostics is not None:
                    record.update(self.diagnostics.end_epoch(*self._diagnostic_batch(), t))
                self._log(record, metrics)
                self._save_checkpoint(epoch + 1)
                if self.stopping and epoch + 1 < self.config.epochs:
                    raise self._preempted(epoch + 1, 0)
                if self.stop_after_epoch is not None and self.stop_after_epoch <= epoch + 1 < self.config.epochs:
                    return {"stopped_after_epoch": epoch + 1}
        return self._finish(metrics)

    def _start(self) -> dict:
        """Where this invocation starts: ``epoch``, ``batch`` (steps of it already taken), ``progress`` (that epoch's
        running totals) and ``metrics``; or ``finished`` (the summary) for a finished run resumed. The main process
        reads the run directory (other nodes need not have it) and every rank restores what it found."""
        found = self._read_run_directory() if self.main else None
        if self.world_size > 1:
            from accelerate.utils import broadcast_object_list

            found = broadcast_object_list([found])[0]
        if "error" in found:
            raise found["error"]
        if "finished" in found:
            if self.main:
                print(f"{self.output_dir} holds a finished run: nothing to train", flush=True)
            return found
        epoch, batch, progress = 0, 0, {}
        if "state" in found:
            info = restore_training_state(found["state"], model_name=self.config.model, model=self.model,
                                          optimizer=self.optimizer, scheduler=self.scheduler, source=found["path"])
            epoch, batch, progress, self.best = info["epoch"], info["batch"], info["progress"], info["best"]
        metrics = MetricsLog.load(self.output_dir) if "state" in found else MetricsLog(self.output_dir)
        metrics.records = metrics.records[:epoch]
        if self.main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temporary_files(self.output_dir)  # a killed run's half-written files (we hold the directory)
            self.config.save(self.output_dir / "config.yaml")
            if "state" in found:
                print(f"resuming from {found['path']}: epoch {epoch + 1}, step {batch} of {self.steps_per_epoch}",
                      flush=True)
            print(f"{self.config.model} on {self.config.dataset}: world size {self.world_size}, device {self.device}, "
                  f"epochs {epoch}..{self.config.epochs}, global batch {self.config.batch_size}, {self.precision_text()}"
                  f"{', compiled' if self.compile else ''}", flush=True)
        return {"epoch": epoch, "batch": batch, "progress": progress, "metrics": metrics}

    def _read_run_directory(self) -> dict:
        """(main process) {"finished": summary}, {"state": newest checkpoint, "path": its path}, {} for a new run,
        or {"error": exception} that every rank raises."""
        try:
            run = Run(self.output_dir)
            if self.resume and run.finished:
                return {"finished": run.summary()}
            latest = latest_training_state(self.output_dir)
            if latest is not None and not self.resume:
                raise FileExistsError(f"{self.output_dir} already holds a run; pass --resume or choose another "
                                      "--output-dir")
        except (OSError, ValueError) as error:  # file problems and CheckpointError: one clear error on every rank
            return {"error": error}
        return {} if latest is None else {"state": latest[0], "path": latest[1]}

    def _set_ede(self, epoch: float) -> tuple[float, float]:
        k, t = ede_schedule(epoch, self.config.epochs, self.config.t_min, self.config.t_max, self.config.t_cap)
        sdbnn.set_ede(self.model, k, t)  # fills buffers in place: no recompilation, no host sync
        return k, t

    def train_epoch(self, epoch: int, first_batch: int = 0, progress: dict | None = None) -> dict:
        """One pass over the training set, from step ``first_batch`` on (a resumed epoch, with the running totals of
        its first part in ``progress``); returns the epoch's mean training loss and its speed."""
        config, accelerator = self.config, self.accelerator
        started = time.perf_counter()
        self.train_loader.set_epoch(epoch, first_batch)
        if self.diagnostics is not None:
            self.diagnostics.start_epoch()
        progress = progress or {}
        loss_sum = torch.tensor(self._own_loss_sum(progress.get("loss_sums")), dtype=torch.float64, device=self.device)
        first_bad = torch.full((2,), -1.0, dtype=torch.float64, device=self.device)  # step and value of a bad loss
        # a live bar on a terminal; none in a log file (the epoch's line follows)
        bar = tqdm(self.train_loader, total=self.steps_per_epoch, initial=first_batch, leave=False,
                   disable=None if self.main else True, desc=f"epoch {epoch + 1}/{config.epochs}")
        for batch_index, (images, labels) in enumerate(bar, start=first_batch):
            if config.ede_per_step:
                self._set_ede(epoch + batch_index / self.steps_per_epoch)
            loss = self.train_step(images, labels)
            bad = ~torch.isfinite(loss) & (first_bad[0] < 0)
            first_bad = torch.where(bad, torch.stack([torch.full_like(loss, batch_index), loss]), first_bad)
            loss_sum += loss
            done = batch_index + 1
            if done == self.steps_per_epoch:
                continue  # the epoch's end: the check below, then evaluation and the epoch's checkpoint
            if done % CHECK_EVERY == 0 or (self.world_size == 1 and (self.stop_signals.received or
                                                                     self._checkpoint_due())):
                loss_sums, checkpoint = self._check(first_bad, loss, loss_sum, epoch, bar)
                if checkpoint or self.stopping:
                    seconds = progress.get("seconds", 0.0) + time.perf_counter() - started
                    self._save_checkpoint(epoch, done, {"loss_sums": loss_sums, "seconds": seconds})
                if self.stopping:
                    raise self._preempted(epoch, done)
        self._check(first_bad, loss, loss_sum, epoch)
        train_loss = accelerator.reduce(loss_sum, reduction="mean").item() / self.steps_per_epoch
        seconds = progress.get("seconds", 0.0) + time.perf_counter() - started
        return {"train_loss": train_loss, "train_seconds": seconds,
                "train_images_per_s": self.steps_per_epoch * config.batch_size / seconds}

    def _own_loss_sum(self, loss_sums: list[float] | None) -> float:
        """This rank's running loss sum of a resumed epoch (their mean when the number of processes changed)."""
        if not loss_sums:
            return 0.0
        return loss_sums[self.accelerator.process_index] if len(loss_sums) == self.world_size else \
            sum(loss_sums) / len(loss_sums)

    def _checkpoint_due(self) -> bool:
        minutes = self.config.checkpoint_every_min
        return minutes is not None and time.monotonic() - self.last_checkpoint >= 60 * minutes

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One optimizer step on one batch (split into micro-batches when accumulating); the loss, on the device.

        Accelerate skips the all-reduce, step and zero_grad until the last micro-batch and scales each micro-batch
        loss by 1 / accumulation_steps."""
        steps = self.config.accumulation_steps
        loss = torch.zeros((), dtype=torch.float64, device=self.device)
        for micro_images, micro_labels in zip(images.chunk(steps), labels.chunk(steps)):
            with self.accelerator.accumulate(self.forward_model):
                micro_loss = self._loss(micro_images, micro_labels)
                self.accelerator.backward(micro_loss)
                if self.accelerator.sync_gradients:
                    if self.diagnostics is not None:
                        self.diagnostics.after_backward()  # the norms before clipping
                    if self.config.grad_clip_norm is not None:
                        self.accelerator.clip_grad_norm_(self.model.parameters(), self.config.grad_clip_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            loss += micro_loss.detach().double() / steps
        self.scheduler.step()  # the one place the learning rate changes
        return loss

    def precision_text(self) -> str:
        return self.precision + (" (convolutions emulated: no bf16 convolution kernels on this CPU)"
                                 if self.emulated_bf16_convolutions else "")

    def _autocast(self):
        return autocast_context(self.accelerator, self.emulated_bf16_convolutions)

    def _loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.config.compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # a new step: earlier graph outputs may be overwritten
        with self._autocast():
            logits = self.forward_model(images)
            if self.teacher is None:
                return F.cross_entropy(logits, labels)
            with torch.no_grad():
                teacher_logits = self.teacher(images)
            return distillation_loss(logits, teacher_logits, labels, self.config.kd_temperature, self.config.kd_alpha)

    def _check(self, first_bad: torch.Tensor, loss: torch.Tensor, loss_sum: torch.Tensor, epoch: int,
               bar=None) -> tuple[list[float], bool]:
        """One read of the device state, on every rank so that all act together: raise on a non-finite loss; agree
        to stop (any rank received a stop signal: `stopping`) and whether a periodic checkpoint is due (rank 0's
        clock); show the latest loss. Returns (every rank's running loss sum, checkpoint due)."""
        flags = [float(self.stop_signals.received is not None), float(self._checkpoint_due())]
        state = torch.cat([first_bad, loss.reshape(1), loss_sum.reshape(1),
                           torch.tensor(flags, dtype=torch.float64, device=self.device)])[None]
        rows = (self.accelerator.gather(state) if self.world_size > 1 else state).tolist()
        for bad_step, bad_loss, *_ in rows:
            if bad_step >= 0:
                raise TrainingDiverged(
                    f"loss became {bad_loss} at epoch {epoch + 1}, step {int(bad_step) + 1}; the last good "
                    f"checkpoint ({self.output_dir / CHECKPOINT}) is kept")
        self.stopping = any(row[4] for row in rows)
        if bar is not None and self.main:
            bar.set_postfix(loss=f"{rows[0][2]:.3f}")
        return [row[3] for row in rows], bool(rows[0][5])

    def _preempted(self, epochs_done: int, batch: int) -> Preempted:
        signal_name = self.stop_signals.received or "a stop signal (on another rank)"
        stopped = Preempted(signal_name, self.output_dir / CHECKPOINT, epochs_done, batch)
        if self.main:
            print(stopped, file=sys.stderr, flush=True)
        return stopped

    @torch.no_grad()
    def recalibrate_batchnorm(self, epoch: int) -> None:
        """Replace every BatchNorm's running statistics by their exact average over the training set, computed
        with the current weights (forward passes in training mode, no gradients): evaluation then normalises
        with statistics of the weights it evaluates, not a lagging moving average."""
        norms = [m for m in self.model.modules()
                 if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        momenta = [m.momentum for m in norms]
        self.train_loader.set_epoch(epoch)  # the whole epoch, as trained (a resumed epoch started later)
        for module in norms:
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the batches that follow
        try:
            for images, _ in self.train_loader:
                if self.config.compile_mode == "reduce-overhead":
                    torch.compiler.cudagraph_mark_step_begin()
                with self._autocast():
                    self.forward_model(images)
        finally:
            for module, momentum in zip(norms, momenta):
                module.momentum = momentum

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Loss, top-1 and top-5 over the WHOLE held-out set (each rank scores its shard; counts are summed)."""
        started = time.perf_counter()
        self.forward_model.eval()
        kill_point("evaluation")  # test-only (tests/test_long_runs.py kills runs here)
        totals = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss sum, top-1, top-5
        count = 0
        for images, labels in self.val_loader:
            if self.config.compile_mode == "reduce-overhead":
                torch.compiler.cudagraph_mark_step_begin()
            with self._autocast():
                logits = self.forward_model(images).float()
            hits = topk_correct(logits, labels, (1, 5))
            totals += torch.stack([F.cross_entropy(logits, labels, reduction="sum"), hits[1], hits[5]]).double()
            count += len(labels)
        totals = torch.cat([totals, totals.new_full((1,), count)])
        loss_sum, top1, top5, total = self.accelerator.reduce(totals, reduction="sum").tolist()
        self.forward_model.train()
        return {"val_loss": loss_sum / total, "val_top1": top1 / total, "val_top5": top5 / total,
                "val_samples": int(total), "eval_seconds": time.perf_counter() - started}

    def _diagnostic_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first held-out batch, the same every epoch."""
        if self.diagnostic_batch is None:
            self.diagnostic_batch = next(iter(self.val_loader))
        return self.diagnostic_batch

    def _log(self, record: dict, metrics: MetricsLog) -> None:
        if record["val_top1"] >= self.best.get("val_top1", -1.0):
            self.best = {"epoch": record["epoch"], "val_top1": record["val_top1"], "val_top5": record["val_top5"]}
        if self.trackers:
            log_epoch(self.accelerator, record)
        if self.main:
            metrics.append(record)
            metrics.plot(title=f"{self.config.model} on {self.config.dataset}")
            print(f"epoch {record['epoch'] + 1}/{self.config.epochs} loss {record['train_loss']:.4f} "
                  f"top-1 {record['val_top1']:.4f} top-5 {record['val_top5']:.4f} lr {record['lr']:.4g} "
                  f"t {record['t']:.3g} ({record['images_per_s']:.0f} img/s)", flush=True)

    def _save_checkpoint(self, epochs_done: int, batch: int = 0, progress: dict | None = None) -> None:
        """The state after ``epochs_done`` epochs and ``batch`` steps of the next (with its running totals)."""
        if self.main:
            save_training_state(self.output_dir / CHECKPOINT, model_name=self.config.model, model=self.model,
                                optimizer=self.optimizer, scheduler=self.scheduler, epoch=epochs_done, batch=batch,
                                step=epochs_done * self.steps_per_epoch + batch, progress=progress,
                                config=self.config.to_dict(), best=self.best, keep_previous=True)
        self.last_checkpoint = time.monotonic()
        self.accelerator.wait_for_everyone()

    def _finish(self, metrics: MetricsLog) -> dict:
        summary = {"final": metrics.records[-1] if metrics.records else {}, "best": self.best,
                   "precision": self.precision_text(), "environment": provenance.environment()}
        if self.main:
            from sdbnn.summary import run_cost

            summary["cost"] = cost = run_cost(self.model, self.config)
            print(f"cost at {'×'.join(map(str, cost['input_size']))}: {cost['binary_params']:,} binary and "
                  f"{cost['real_params']:,} real parameters, {cost['bops']:.3g} BOPs + {cost['flops']:.3g} FLOPs = "
                  f"{cost['ops']:.3g} OPs; {cost['size_bytes'] / 2**10:,.1f} KiB"
                  + (f", {cost['compression']:.1f}× smaller than {cost['twin']}" if cost["compression"] else ""),
                  flush=True)
            save_weights(self.model, self.output_dir / "model.safetensors")
            text = json.dumps(summary, indent=2) + "\n"
            atomic_write(self.output_dir / "summary.json", lambda tmp: tmp.write_text(text))
        self.accelerator.wait_for_everyone()  # every rank returns once the final files exist (stage 2 reads them)
        return summary


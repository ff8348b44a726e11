"""The Trainer: one engine for every launcher, on Accelerate (bf16 autocast on GPU, fp32 on CPU, DDP across ranks).

A run writes into ``output_dir``: ``config.yaml`` (resolved), ``metrics.jsonl`` / ``metrics.csv`` (one line per
epoch), ``training_curve.png``, ``checkpoint.pt`` (atomically, every epoch: resumable exactly) and, at the end,
``model.safetensors`` and ``summary.json`` (final and best top-1/top-5 on the full held-out set).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

import sdbnn
from sdbnn.checkpoints import atomic_write, load_state_dict_file, save_weights
from sdbnn.engine.config import TrainConfig
from sdbnn.engine.distill import distillation_loss
from sdbnn.engine.metrics import MetricsLog, topk_correct
from sdbnn.engine.state import load_training_state, save_training_state
from sdbnn.reference import ede_schedule

CHECKPOINT = "checkpoint.pt"


def _tensorboard(directory: Path):
    """A TensorBoard writer into ``directory/tensorboard`` when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(directory / "tensorboard"))


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def build_loaders(config: TrainConfig, rank: int, world_size: int, device: torch.device):
    """(train loader, held-out loader) sharded for this rank; each yields device batches."""
    from sdbnn.pipelines import DeviceResidentLoader, load_digits, load_image_folder, load_mnist5k, read_cifar
    from sdbnn.pipelines.loaders import imagenet_loader

    per_rank = config.batch_size // world_size
    if config.dataset == "imagenet":
        root = Path(config.data_dir or "")
        pick = lambda split: root / f"{split}.beton" if (root / f"{split}.beton").is_file() else root / split  # noqa: E731
        make = lambda split, train: imagenet_loader(  # noqa: E731
            pick(split), per_rank, train, device=device, workers=config.workers, distributed=world_size > 1,
            seed=config.seed, resolution=config.resolution,
        )
        return make("train", True), make("val", False)
    augment = config.dataset in ("cifar10", "cifar100", "imagefolder")
    if config.dataset == "digits":
        train, val = load_digits(seed=config.seed)
    elif config.dataset == "mnist5k":
        train, val = load_mnist5k(seed=config.seed)
    else:
        if not config.data_dir or not Path(config.data_dir).is_dir():
            raise FileNotFoundError(f"data directory {config.data_dir!r} does not exist (--data-dir)")
        if config.dataset == "imagefolder":
            train, val = (load_image_folder(Path(config.data_dir) / split) for split in ("train", "val"))
        else:
            train, val = (read_cifar(config.data_dir, split, config.dataset) for split in (True, False))
    shard = dict(device=device, seed=config.seed, rank=rank, world_size=world_size, augment=augment)
    return DeviceResidentLoader(train, per_rank, True, **shard), DeviceResidentLoader(val, per_rank, False, **shard)


def parameter_groups(model: torch.nn.Module, config: TrainConfig) -> list[dict]:
    """Weight decay on every parameter, or (ImageNet recipe) on conv weights only."""
    if config.weight_decay_on == "all":
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": config.weight_decay}]
    decay, rest = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.dim() == 4 else rest).append(parameter)
    return [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}]


class Trainer:
    def __init__(self, config: TrainConfig, *, resume: bool = False, stop_after_epoch: int | None = None):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.config, self.resume, self.stop_after_epoch = config, resume, stop_after_epoch
        cuda = torch.cuda.is_available()
        self.accelerator = Accelerator(cpu=not cuda, mixed_precision="bf16" if cuda else "no",
                                       gradient_accumulation_steps=config.accumulation_steps)
        self.world_size = self.accelerator.num_processes
        if config.batch_size % (self.world_size * config.accumulation_steps):
            raise ValueError(f"batch size {config.batch_size} does not split over {self.world_size} processes × "
                             f"{config.accumulation_steps} accumulation steps")
        set_seed(config.seed)
        self.output_dir = Path(config.output_dir)
        self.model = sdbnn.create_model(config.model, **config.model_options)
        if config.init_from:
            state = load_state_dict_file(config.init_from)
            try:
                self.model.load_state_dict(state)
            except RuntimeError as error:
                raise sdbnn.CheckpointError(f"{config.init_from} does not fit {config.model}: {error}") from None
        self.teacher = None
        if config.teacher:
            self.teacher = sdbnn.create_model(config.teacher, weights=config.teacher_weights).eval()
            self.teacher.requires_grad_(False)
            self.teacher.to(self.accelerator.device)
        self.train_loader, self.val_loader = build_loaders(
            config, self.accelerator.process_index, self.world_size, self.accelerator.device
        )
        self.model.to(self.accelerator.device)
        forward_model = torch.compile(self.model, fullgraph=True) if config.compile else self.model  # before prepare
        optimizer_class = torch.optim.SGD if config.optimizer == "sgd" else torch.optim.Adam
        extra = {"momentum": config.momentum} if config.optimizer == "sgd" else {}
        self.optimizer = optimizer_class(parameter_groups(self.model, config), lr=config.lr, **extra)
        steps = config.epochs * len(self.train_loader)
        if config.lr_schedule == "cosine":  # stepped per epoch, to 0
            schedule = lambda epoch: 0.5 * (1 + math.cos(math.pi * epoch / config.epochs))  # noqa: E731
        else:  # stepped per step, linearly to 0
            schedule = lambda step: 1 - step / steps  # noqa: E731
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.forward_model, self.optimizer = self.accelerator.prepare(forward_model, self.optimizer)
        self.main = self.accelerator.is_main_process

    def _set_ede(self, epoch: float) -> tuple[float, float]:
        k, t = ede_schedule(epoch, self.config.epochs, self.config.t_min, self.config.t_max)
        sdbnn.set_ede(self.model, k, t)
        return k, t

    def _loss(self, images, labels):
        with self.accelerator.autocast():
            logits = self.forward_model(images)
            if self.teacher is None:
                return F.cross_entropy(logits, labels)
            with torch.no_grad():
                teacher_logits = self.teacher(images)
            return distillation_loss(logits, teacher_logits, labels, self.config.kd_temperature, self.config.kd_alpha)

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Loss, top-1 and top-5 over the WHOLE held-out set (each rank scores its shard; counts are summed)."""
        self.forward_model.eval()
        totals = torch.zeros(4, dtype=torch.float64, device=self.accelerator.device)  # loss sum, top1, top5, n
        for images, labels in self.val_loader:
            with self.accelerator.autocast():
                logits = self.forward_model(images).float()
            hits = topk_correct(logits, labels, (1, 5))
            totals += torch.tensor([F.cross_entropy(logits, labels, reduction="sum").item(), hits[1], hits[5],
                                    len(labels)], dtype=torch.float64, device=totals.device)
        totals = self.accelerator.reduce(totals, reduction="sum")
        self.forward_model.train()
        return {"val_loss": totals[0].item() / totals[3].item(), "val_top1": totals[1].item() / totals[3].item(),
                "val_top5": totals[2].item() / totals[3].item(), "val_samples": int(totals[3].item())}

    def fit(self) -> dict:
        config, accelerator = self.config, self.accelerator
        start_epoch, step, best = 0, 0, {}
        checkpoint = self.output_dir / CHECKPOINT
        if self.resume:
            info = load_training_state(checkpoint, model_name=config.model, model=self.model,
                                       optimizer=self.optimizer, scheduler=self.scheduler)
            start_epoch, step, best = info["epoch"], info["step"], info["best"]
        elif checkpoint.exists():
            raise FileExistsError(f"{self.output_dir} already holds a run; pass --resume or choose another --output-dir")
        metrics = MetricsLog.load(self.output_dir) if self.resume else MetricsLog(self.output_dir)
        metrics.records = metrics.records[:start_epoch]
        if self.main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            config.save(self.output_dir / "config.yaml")
            print(f"{config.model} on {config.dataset}: world size {self.world_size}, device {accelerator.device}, "
                  f"epochs {start_epoch}..{config.epochs}, global batch {config.batch_size}", flush=True)
        steps_per_epoch = len(self.train_loader)
        board = _tensorboard(self.output_dir) if self.main else None
        with sdbnn.backend(config.backend):
            for epoch in range(start_epoch, config.epochs):
                started = time.perf_counter()
                self.train_loader.set_epoch(epoch)
                k, t = self._set_ede(epoch)
                lr = self.optimizer.param_groups[0]["lr"]
                loss_sum = torch.zeros((), dtype=torch.float64, device=accelerator.device)
                bar = tqdm(self.train_loader, total=steps_per_epoch, disable=not self.main, leave=False,
                           desc=f"epoch {epoch + 1}/{config.epochs}")
                for batch_index, (images, labels) in enumerate(bar):
                    if config.ede_per_step:
                        k, t = self._set_ede(epoch + batch_index / steps_per_epoch)
                    # one optimizer step per batch; Accelerate skips the all-reduce, step and zero_grad until the
                    # last micro-batch and scales each micro-batch loss by 1 / accumulation_steps
                    loss = torch.zeros((), dtype=torch.float64, device=accelerator.device)
                    for micro_images, micro_labels in zip(images.chunk(config.accumulation_steps),
                                                          labels.chunk(config.accumulation_steps)):
                        with accelerator.accumulate(self.forward_model):
                            micro_loss = self._loss(micro_images, micro_labels)
                            if not torch.isfinite(micro_loss):
                                raise TrainingDiverged(
                                    f"loss became {micro_loss.item()} at epoch {epoch + 1}, step {batch_index + 1}; "
                                    f"the last good checkpoint ({checkpoint}) is kept"
                                )
                            accelerator.backward(micro_loss)
                            self.optimizer.step()
                            self.optimizer.zero_grad(set_to_none=True)
                        loss += micro_loss.detach().double() / config.accumulation_steps
                    step += 1
                    if config.lr_schedule == "linear":
                        self.scheduler.step()
                    loss_sum += loss
                    if self.main and batch_index % 10 == 0:
                        bar.set_postfix(loss=f"{loss.item():.3f}")
                if config.lr_schedule == "cosine":
                    self.scheduler.step()
                train_loss = accelerator.reduce(loss_sum, reduction="mean").item() / steps_per_epoch
                seconds = time.perf_counter() - started
                record = {"epoch": epoch, "lr": lr, "k": k, "t": t, "train_loss": train_loss, **self.evaluate(),
                          "seconds": seconds, "images_per_s": steps_per_epoch * config.batch_size / seconds}
                if record["val_top1"] >= best.get("val_top1", -1.0):
                    best = {"epoch": epoch, "val_top1": record["val_top1"], "val_top5": record["val_top5"]}
                if board is not None:
                    for key in ("train_loss", "val_loss", "val_top1", "val_top5", "lr", "t", "images_per_s"):
                        board.add_scalar(key, record[key], epoch)
                    board.flush()
                if self.main:
                    metrics.append(record)
                    metrics.plot(title=f"{config.model} on {config.dataset}")
                    save_training_state(checkpoint, model_name=config.model, model=self.model,
                                        optimizer=self.optimizer, scheduler=self.scheduler, epoch=epoch + 1,
                                        step=step, config=config.to_dict(), best=best)
                    print(f"epoch {epoch + 1}/{config.epochs} loss {train_loss:.4f} top-1 {record['val_top1']:.4f} "
                          f"top-5 {record['val_top5']:.4f} lr {lr:.4g} t {t:.3g} ({record['images_per_s']:.0f} img/s)",
                          flush=True)
                accelerator.wait_for_everyone()
                if self.stop_after_epoch is not None and epoch + 1 >= self.stop_after_epoch and epoch + 1 < config.epochs:
                    return {"stopped_after_epoch": epoch + 1}
        summary = {"final": metrics.records[-1] if metrics.records else {}, "best": best}
        if self.main:
            save_weights(self.model, self.output_dir / "model.safetensors")
            text = json.dumps(summary, indent=2) + "\n"
            atomic_write(self.output_dir / "summary.json", lambda tmp: tmp.write_text(text))
        accelerator.wait_for_everyone()  # every rank returns once the final files exist (stage 2 reads them)
        return summary

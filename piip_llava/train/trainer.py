"""``Trainer`` subclass: modality-grouped sampling, a projector learning rate, skipped-sample accounting, and
JSONL loss logging. Everything else (DeepSpeed, checkpoints, resume, gradient accumulation) is HF ``Trainer``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch.utils.data import Sampler
from transformers import Trainer, TrainerCallback

logger = logging.getLogger(__name__)


class ModalityGroupedSampler(Sampler):
    """Every optimiser step's batch holds one modality (image+text or text-only) and samples of similar length.

    Like LLaVA's: shuffle each modality, cut mega-batches, sort each by length, cut global batches, shuffle the
    batch order. Deterministic per (seed, epoch), so a resumed run sees the same order.
    """

    def __init__(self, lengths: list[int], global_batch: int, seed: int, megabatch_factor: int = 16) -> None:
        self.lengths = lengths
        self.global_batch = global_batch
        self.seed = seed
        self.megabatch = global_batch * megabatch_factor
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        batches, leftovers = [], []
        for group in (
            [i for i, n in enumerate(self.lengths) if n > 0],
            [i for i, n in enumerate(self.lengths) if n <= 0],
        ):
            order = [group[j] for j in torch.randperm(len(group), generator=generator).tolist()]
            for start in range(0, len(order), self.megabatch):
                mega = sorted(order[start : start + self.megabatch], key=lambda i: -abs(self.lengths[i]))
                for cut in range(0, len(mega), self.global_batch):
                    batch = mega[cut : cut + self.global_batch]
                    (batches if len(batch) == self.global_batch else leftovers).append(batch)
        batches = [batches[j] for j in torch.randperm(len(batches), generator=generator).tolist()]
        batches.append([i for leftover in leftovers for i in leftover])
        for batch in batches:
            yield from batch


class JsonlLogCallback(TrainerCallback):
    """Appends every log record (loss, lr, grad norm, …) as one JSON line to ``output_dir/log.jsonl``."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            with open(Path(args.output_dir) / "log.jsonl", "a") as handle:
                handle.write(json.dumps({"step": state.global_step, **logs}) + "\n")


class PiipLlavaTrainer(Trainer):
    def __init__(self, *args, modality_lengths: list[int] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.modality_lengths = modality_lengths
        self.skipped_samples: list[dict] = []

    def _get_train_sampler(self, *args, **kwargs):
        if self.args.group_by_modality_length and self.modality_lengths is not None:
            # The optimiser's batch (processes x accumulation steps, as LLaVA's LengthGroupedSampler): one modality per
            # optimiser step, and the same samples in each step whatever the split of that batch.
            global_batch = (
                self.args.per_device_train_batch_size * self.args.world_size * self.args.gradient_accumulation_steps
            )
            return ModalityGroupedSampler(self.modality_lengths, global_batch, self.args.seed)
        return super()._get_train_sampler(*args, **kwargs)

    def create_optimizer(self, *args, **kwargs):
        """A separate parameter group for the projector when ``--projector_lr`` is set."""
        if self.optimizer is not None or self.args.projector_lr is None:
            return super().create_optimizer(*args, **kwargs)
        projector = {id(p) for p in self.model_projector().parameters()}
        trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        decay = set(self.get_decay_parameter_names(self.model))
        groups = []
        for is_projector in (False, True):
            for with_decay in (True, False):
                params = [
                    p for n, p in trainable if (id(p) in projector) == is_projector and (n in decay) == with_decay
                ]
                if params:
                    group = {"params": params, "weight_decay": self.args.weight_decay if with_decay else 0.0}
                    if is_projector:
                        group["lr"] = self.args.projector_lr
                    groups.append(group)
        optimizer_class, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
        self.optimizer = optimizer_class(groups, **optimizer_kwargs)
        return self.optimizer

    def model_projector(self) -> torch.nn.Module:
        model = self.model
        while not hasattr(model, "multi_modal_projector") and hasattr(model, "model"):
            model = model.model  # PEFT wrappers
        return model.multi_modal_projector

    def compute_loss(self, model, inputs, *args, **kwargs):
        skipped = inputs.pop("skipped", None)
        if skipped:
            self.skipped_samples.extend(skipped)
            for entry in skipped:
                logger.warning("skipped sample %s (index %s): %s", entry["id"], entry["index"], entry["reason"])
        return super().compute_loss(model, inputs, *args, **kwargs)

    def report_skipped(self) -> dict:
        """Unique skipped samples seen by all processes; written to ``output_dir/skipped_samples.json``."""
        entries = self.skipped_samples
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[list[dict]] = [[] for _ in range(torch.distributed.get_world_size())]
            torch.distributed.all_gather_object(gathered, entries)
            entries = [entry for rank_entries in gathered for entry in rank_entries]
        unique = {entry["index"]: entry for entry in entries}
        report = {"count": len(unique), "samples": sorted(unique.values(), key=lambda e: e["index"])}
        if self.args.should_save:
            Path(self.args.output_dir).mkdir(parents=True, exist_ok=True)
            (Path(self.args.output_dir) / "skipped_samples.json").write_text(json.dumps(report, indent=2))
        logger.info("skipped %d bad samples: %s", report["count"], [(e["id"], e["reason"]) for e in report["samples"]])
        return report

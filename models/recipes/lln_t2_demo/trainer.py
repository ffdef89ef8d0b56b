"""Short-schedule nnU-Net v2 trainer for the synthetic lateral-lymph-node demo model.

``nnUNetTrainer_LLNDemo`` only shortens the schedule of ``nnUNetTrainerNoMirroring``
(mirroring off in augmentation and at inference, as in the study: left and right must
not be swapped). It builds exactly the same network, so the slimmed checkpoint records
``trainer_name: nnUNetTrainerNoMirroring``, which stock nnU-Net finds in its own package;
no code from this folder is needed at inference.

To train with the nnU-Net CLI instead of ``train.py``, point nnU-Net's external trainer
search at this folder: ``nnUNet_extTrainer=models/recipes/lln_t2_demo nnUNetv2_train ...
-tr nnUNetTrainer_LLNDemo``.
"""

from __future__ import annotations

import os
import time

import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring import (
    nnUNetTrainerNoMirroring,
)


class nnUNetTrainer_LLNDemo(nnUNetTrainerNoMirroring):  # noqa: N801 (nnU-Net naming)
    """``nnUNetTrainerNoMirroring`` with a CPU-sized schedule.

    Epochs and iterations come from ``LLN_DEMO_EPOCHS`` / ``LLN_DEMO_ITERS`` (defaults
    40 and 50). ``LLN_DEMO_MAX_MINUTES`` (default: none) ends training after the epoch in
    which the wall-clock budget runs out, so a shared CPU still yields a checkpoint in
    time; the epochs actually run are recorded in the model card. Validation uses 5
    iterations per epoch; only the final and best checkpoints are written.

    AdamW (lr 3e-3, poly decay) replaces nnU-Net's SGD (lr 1e-2, momentum 0.99), which is
    tuned for 250,000 iterations: in a first run of 600 SGD iterations the nodes had not
    appeared yet (validation pseudo-Dice 0 for labels 4 and 5); with AdamW, 16 epochs of
    40 gave regions (Dice 0.95) but still no nodes, 40 epochs of 50 gave both.
    """

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cpu"),  # noqa: B008 (nnU-Net signature)
    ) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = int(os.environ.get("LLN_DEMO_EPOCHS", "40"))
        self.num_iterations_per_epoch = int(os.environ.get("LLN_DEMO_ITERS", "50"))
        self.num_val_iterations_per_epoch = 5
        self.save_every = 10_000
        self.initial_lr = 3e-3
        budget = os.environ.get("LLN_DEMO_MAX_MINUTES")
        self.max_seconds = float(budget) * 60.0 if budget else None

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, PolyLRScheduler]:
        """AdamW with nnU-Net's polynomial learning-rate decay."""
        optimizer = torch.optim.AdamW(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    def run_training(self) -> None:
        """nnU-Net's training loop, ending early when ``LLN_DEMO_MAX_MINUTES`` is spent."""
        start = time.monotonic()
        self.on_train_start()
        for _ in range(self.current_epoch, self.num_epochs):
            self.on_epoch_start()
            self.on_train_epoch_start()
            outputs = [self.train_step(next(self.dataloader_train)) for _ in range(self.num_iterations_per_epoch)]
            self.on_train_epoch_end(outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                outputs = [
                    self.validation_step(next(self.dataloader_val)) for _ in range(self.num_val_iterations_per_epoch)
                ]
                self.on_validation_epoch_end(outputs)
            self.on_epoch_end()
            if self.max_seconds is not None and time.monotonic() - start > self.max_seconds:
                self.print_to_log_file(f"time budget spent after {self.current_epoch} epochs")
                break
        self.on_train_end()

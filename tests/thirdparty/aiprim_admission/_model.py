"""Logistic regression, a thin LightningModule over a plain ``nn.Linear``."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class AdmissionData(L.LightningDataModule):
    def __init__(self, requests, features, batch_size: int, seed: int):
        super().__init__()
        x = requests[list(features)].to_numpy(np.float64)
        self.mean, self.std = x.mean(axis=0), x.std(axis=0) + 1e-9
        x = torch.tensor((x - self.mean) / self.std, dtype=torch.float32)
        y = torch.tensor(requests["reused"].to_numpy(np.float32))
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        cut = int(len(x) * 0.8)
        self.train_set = TensorDataset(x[order[:cut]], y[order[:cut]])
        self.val_set = TensorDataset(x[order[cut:]], y[order[cut:]])
        self.batch_size = batch_size

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=len(self.val_set))


class AdmissionModule(L.LightningModule):
    def __init__(self, n_features: int, lr: float):
        super().__init__()
        self.save_hyperparameters()
        self.linear = nn.Linear(n_features, 1)

    def _loss(self, batch):
        x, y = batch
        return nn.functional.binary_cross_entropy_with_logits(self.linear(x)[:, 0], y)

    def training_step(self, batch, _):
        loss = self._loss(batch)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, _):
        self.log("val/loss", self._loss(batch))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

"""The Lightning callback that logs every epoch's metrics to the training's MLflow run.

A module of its own, imported only when a training starts (it imports Lightning), so that the
class has a module-level name: DDP's spawned processes unpickle it by that name.
"""

from __future__ import annotations

import mlflow
from lightning.pytorch.callbacks import Callback


class EpochMetricsToMlflow(Callback):
    """Names its run and store itself, and only the first process logs: under DDP the epochs end in
    spawned processes, which know no active run."""

    def __init__(self, run_id: str, tracking_uri: str):
        self.run_id, self.tracking_uri = run_id, tracking_uri

    def on_validation_epoch_end(self, trainer, module):
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        if mlflow.get_tracking_uri() != self.tracking_uri:
            mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.log_metrics(metrics, step=trainer.current_epoch, run_id=self.run_id)

"""Feature maps of the balancer kernel, shared by training (torch) and the runtime (numpy)."""

from __future__ import annotations

import numpy as np

N_CLASS_FEATURES = 5


def class_features(mean_cost: np.ndarray) -> np.ndarray:
    """Features of request classes from their mean cost vectors (C, 3) -> (C, 5): demand mix, log size, 1."""
    total = mean_cost.sum(axis=1, keepdims=True)
    share = mean_cost / np.maximum(total, 1e-12)
    return np.hstack([share, np.log(np.maximum(total, 1e-12)), np.ones_like(total)]).astype(np.float32)


def server_features(capacity: np.ndarray, class_index: np.ndarray, n_classes: int, log_cap_reference: np.ndarray) -> np.ndarray:
    """(S, 3 + n_classes + 1): log capacity against a fixed reference, one-hot class (last slot: unseen)."""
    onehot = np.zeros((len(capacity), n_classes + 1), dtype=np.float32)
    onehot[np.arange(len(capacity)), np.where(class_index < 0, n_classes, class_index)] = 1.0
    return np.hstack([np.log(capacity) - log_cap_reference, onehot]).astype(np.float32)



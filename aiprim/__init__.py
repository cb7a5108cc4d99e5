"""aiprim: learned system primitives, trained, validated and shipped by one pipeline.

>>> from aiprim import load_runtime
>>> balancer = load_runtime("balancer")            # the champion of deployment "default"
>>> server_ids = balancer.route(requests_df, servers_df)

Sub-packages: ``aiprim.primitives`` (the contract and the primitives),
``aiprim.registry`` (MLflow access and promotion), ``aiprim.flows`` (the
pipeline: steps, Prefect flows, command line), ``aiprim.settings`` (where
things live), ``aiprim.testing`` (the contract tests, for primitives of your own).
Importing this package imports nothing heavy.
"""

from __future__ import annotations

__version__ = "0.2.0"
__all__ = ["load_runtime"]


def load_runtime(name: str, alias: str = "champion", deployment: str = "default"):
    """The runtime of a primitive's registered model, by alias, version number or run id;
    ``champion`` (``challenger``) is that of ``deployment``.

    Imports numpy, pandas and MLflow's client only: never torch, Lightning,
    Prefect, Optuna or Great Expectations.
    """
    from .registry import load_runtime as _load

    return _load(name, alias, deployment)

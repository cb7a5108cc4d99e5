"""Learned system primitives: one contract, one registry.

>>> from aiprim import primitives
>>> primitives.names()
['balancer', 'compiler', 'query', 'sharder']
>>> balancer = primitives.get("balancer")

A primitive of your own subclasses ``Primitive``, registers with
``@register`` (or the ``aiprim.primitives`` entry point of its distribution)
and passes ``aiprim.testing.PrimitiveContract``.
"""

from ._base import Guardrail, Primitive, Runtime, UnknownPrimitiveError, get, load_weights, mlp_forward, names, register, save_weights
from ._params import ParamsError, TrainParams, TuneParams
from ._report import EvaluationReport, Peer, Scores
from ._schema import Column, Rule, Schema, Table
from ._split import Groups, Hashed, HoldOut, Newest

__all__ = [
    "Column",
    "EvaluationReport",
    "Groups",
    "Guardrail",
    "Hashed",
    "HoldOut",
    "Newest",
    "ParamsError",
    "Peer",
    "Primitive",
    "Rule",
    "Runtime",
    "Schema",
    "Scores",
    "Table",
    "TrainParams",
    "TuneParams",
    "UnknownPrimitiveError",
    "get",
    "load_weights",
    "mlp_forward",
    "names",
    "register",
    "save_weights",
]

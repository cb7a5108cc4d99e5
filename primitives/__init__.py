"""Learned system primitives: one contract, one registry.

>>> import primitives
>>> primitives.names()
['balancer']
>>> balancer = primitives.get("balancer")
"""

from ._base import Guardrail, Primitive, Runtime, UnknownPrimitiveError, get, names, register
from ._schema import Column, Rule, Schema, Table

__all__ = [
    "Column",
    "Guardrail",
    "Primitive",
    "Rule",
    "Runtime",
    "Schema",
    "Table",
    "UnknownPrimitiveError",
    "get",
    "names",
    "register",
]

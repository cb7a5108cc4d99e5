"""The MLflow pyfunc face of a primitive's runtime (for serving and the UI).

``predict`` routes/chooses with the context the model was trained with (for
the balancer: the fleet); systems that bring their own context use
``registry.load_runtime`` instead.
"""

from __future__ import annotations

import mlflow.pyfunc
import pandas as pd


class PrimitivePyfunc(mlflow.pyfunc.PythonModel):
    def __init__(self, primitive: str | None = None):
        self.primitive = primitive
        self.runtime = None
        self.context_tables = {}

    def load_context(self, context):
        from aiprim import primitives

        self.primitive = (context.model_config or {}).get("primitive", self.primitive)
        self.runtime = primitives.get(self.primitive).load_runtime(context.artifacts["runtime"])
        self.context_tables = {k: pd.read_parquet(v) for k, v in context.artifacts.items() if k != "runtime"}

    # The DataFrame hint tells MLflow what the input is (it warns on an unhinted predict); the signature
    # still comes from the input example logged with the model.
    def predict(self, context, model_input: pd.DataFrame, params=None):
        return self.runtime.predict_frame(model_input, self.context_tables)

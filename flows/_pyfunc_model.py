"""MLflow "model from code" entry point for every primitive.

MLflow executes this file when it logs or loads a model (aiprim never imports
it): it names the PythonModel, and the primitive comes from the model config.
Logging from code instead of a pickled object keeps arbitrary code out of the
model files.
"""

from mlflow.models import set_model

from aiprim.flows.pyfunc import PrimitivePyfunc

set_model(PrimitivePyfunc())

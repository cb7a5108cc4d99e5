"""The pipeline: plain step functions (``flows.steps``), their Prefect flows
(``flows.retrain``) and the command line (``flows.cli``).

Nothing is imported here, so ``flows.config`` stays light.
"""

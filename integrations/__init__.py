"""Glue to the tools around the library: DVC (dvc_store), git, Great Expectations (expectations), MLflow
tracking (mlflow_tracking), model logging and loading (mlflow_models), the registry's stages and promotions
(model_registry), ``models:/`` URIs (model_uri) and where distillation teachers come from (teacher_sources).

Steps and the CLI call these; ``udon_core`` never does.
"""

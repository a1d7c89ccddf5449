"""Built-in algorithms of the catalog (``chalicelib/catalog/algorithms.json``).

Each is a module run as ``python -m runners.algorithms.<name> --hp value ...`` inside a
training, reading the job contract (``EM_DATASET_<NAME>``, ``EM_MODEL_DIR``, ...) and
printing ``step=<n> metric=value`` lines that a hyperparameter tuning collects.
"""

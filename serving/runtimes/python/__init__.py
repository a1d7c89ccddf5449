"""The Python runtime: one scikit-learn, Hugging Face or TensorFlow model on KServe's ModelServer.

KServe's ``ModelServer`` owns the protocol (OIP v1 ``instances`` -> ``predictions``, OIP v2
``inputs`` -> ``outputs`` with health and metadata); this package only loads a model from a
local directory and turns its requests into framework calls. Start it with
``python -m serving.runtimes.python --model_name NAME --model_dir DIR --framework SKLEARN``.
"""

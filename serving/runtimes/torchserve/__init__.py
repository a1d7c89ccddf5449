"""The PyTorch runtime: a real TorchServe behind a small OIP v1/v2 front, one model per pod.

``python -m serving.runtimes.torchserve --model-name iris --model-dir DIR --http-port 8080``
archives the model directory when needed (:mod:`.archive`), starts TorchServe (Java) with
every API on loopback and token authorization on (:mod:`.torchserve`), registers the model
through the management API, and serves the pod's routes on ``--http-port``
(:mod:`.front`, :mod:`.oip`). TorchServe's tokens never leave the process.
"""

"""Leaves many files in EM_MODEL_DIR, so that publishing them takes a while."""

import os

model_dir = os.environ["EM_MODEL_DIR"]
for index in range(int(os.environ.get("EM_HP_FILES", "300"))):
    with open(os.path.join(model_dir, f"shard-{index:04d}.bin"), "wb") as handle:
        handle.write(os.urandom(64 * 1024))
print("model written", flush=True)

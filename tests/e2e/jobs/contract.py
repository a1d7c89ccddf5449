"""Writes what the job contract gave it (argv and EM_* variables) into EM_MODEL_DIR."""

import json
import os
import sys
from pathlib import Path

model_dir = Path(os.environ["EM_MODEL_DIR"])
seen = {
    "argv": sys.argv[1:],
    "env": {k: v for k, v in os.environ.items() if k.startswith("EM_")},
    "cwd": os.getcwd(),
    "dataset_files": {
        name: sorted(
            p.name for p in Path(os.environ[f"EM_DATASET_{name}"]).rglob("*") if p.is_file()
        )
        for name in ("TRAIN", "VALID_SET")
        if f"EM_DATASET_{name}" in os.environ
    },
    "checkpoint_input": sorted(
        p.name for p in Path(os.environ["EM_CHECKPOINT_INPUT_DIR"]).rglob("*") if p.is_file()
    ),
    "secrets_visible": [k for k in os.environ if k.startswith("OPENMAKER_")],
}
(model_dir / "contract.json").write_text(json.dumps(seen))
(model_dir / "weights").mkdir()
(model_dir / "weights" / "w.bin").write_bytes(b"\x00" * 1024)
Path(os.environ["EM_CHECKPOINT_DIR"], "ckpt-0001").write_text("checkpoint")
for step in range(3):
    print(f"step={step} loss={1 / (step + 1):.3f}")
print("contract written", flush=True)

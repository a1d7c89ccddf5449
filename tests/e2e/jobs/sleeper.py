import argparse
import os
import time
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--seconds", type=float, default=60)
parser.add_argument("--marker", default="")
args = parser.parse_args()
if args.marker:  # one line per run of the entry point: proves it ran once
    with open(args.marker, "a") as handle:
        handle.write(f"{os.getpid()}\n")
print("sleeping", args.seconds, flush=True)
time.sleep(args.seconds)
Path(os.environ["EM_MODEL_DIR"], "done.txt").write_text("done")
print("woke up", flush=True)

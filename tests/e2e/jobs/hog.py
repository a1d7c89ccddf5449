"""Takes more memory than the flavor offers (2 GiB on m2.c1m2), a page at a time."""

import time

chunks = []
for _ in range(40):
    chunks.append(bytearray(100 * 2**20))  # zero-filled: resident at once
    time.sleep(0.05)
print("still alive", len(chunks))
time.sleep(30)

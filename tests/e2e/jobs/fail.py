import sys

print("loading data")
print("something went wrong: bad column 'age'", file=sys.stderr)
sys.exit(3)

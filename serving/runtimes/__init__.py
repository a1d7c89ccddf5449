"""Model runtimes: the processes an endpoint stage's pods run (one model each)."""

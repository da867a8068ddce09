"""A fake runtime for the peak-memory probe (``sparse_runtime/memory.py``), importable in its child process."""

"""Parts of the INT8 graph writer (``sparse_runtime/quantize.py``): one concern per module."""

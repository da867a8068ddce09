"""Executors run cells and yield their rows; the runner stores them. ``local`` is the default."""

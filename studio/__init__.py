"""FineTune Studio: the UI process, the CLI, dataset intake and the method advisor (no torch here)."""

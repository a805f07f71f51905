"""One module per tab; each exposes ``render(shell)`` and module-level handlers (testable without a browser)."""

"""Command-line entry points (thin: they parse options and call the package)."""

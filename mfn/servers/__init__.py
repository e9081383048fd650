"""Local server processes: where their binaries are, how they are launched and stopped."""

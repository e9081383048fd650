"""A helper module whose name is the one Triton's stub gives mfn's adapter."""

LABELS_FILE = "labels.txt"

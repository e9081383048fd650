"""The mfn command line."""

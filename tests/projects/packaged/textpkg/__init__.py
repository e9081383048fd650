"""A handler inside an importable package, referenced as textpkg.mod:Tripler."""

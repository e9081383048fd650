"""The closed lists of names mfn's layers and its command line share: one definition each (standard library only,
so the CLI can offer them as choices without importing the layers that act on them), and how a name that is not
among the ones served is answered."""

from enum import Enum


class StrEnum(str, Enum):
    """Names that compare equal to their strings (records hold the strings) and print as them (enum.StrEnum,
    which this Python may lack)."""

    def __str__(self) -> str:
        return str(self.value)


SERVERS = ("triton", "torchserve")
PROTOCOLS = ("http", "grpc")
DEPLOY_TARGETS = ("local", "kubernetes")
ARCHIVE_FORMATS = ("default", "no-archive", "tgz")
TENSOR_ENCODINGS = ("binary", "json")
EXPORT_FORMATS = ("onnx", "torchscript", "tflite")
QUANTIZATIONS = ("dynamic-range", "int8")


def served_names_hint(name: str, served: list[str] | tuple[str, ...], what: str = "served models") -> str:
    """"<what>: a, b; did you mean 'a'?" for a name not among `served` (the closest match, if one is close)."""
    import difflib

    closest = difflib.get_close_matches(name, served, n=1)
    guess = f"; did you mean {closest[0]!r}?" if closest else ""
    return f"{what}: {', '.join(sorted(served)) or 'none'}{guess}"

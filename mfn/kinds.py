"""The closed lists of names mfn's layers and its command line share: one definition each (standard library only,
so the CLI can offer them as choices without importing the layers that act on them), and how a name that is not
among the ones served is answered."""

from collections.abc import Sequence
from enum import Enum


class StrEnum(str, Enum):
    """Names that compare equal to their strings (records hold the strings) and print as them (enum.StrEnum,
    which this Python may lack)."""

    def __str__(self) -> str:
        return str(self.value)


class Server(StrEnum):
    """The model servers mfn packages for and runs."""

    TRITON = "triton"
    TORCHSERVE = "torchserve"


class Target(StrEnum):
    """Where `mfn deploy` puts a package: server processes on this machine, or a Kubernetes cluster (the chart)."""

    LOCAL = "local"
    KUBERNETES = "kubernetes"


SERVERS = tuple(server.value for server in Server)
PROTOCOLS = ("http", "grpc")
DEPLOY_TARGETS = tuple(target.value for target in Target)
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


def listing(versions: Sequence[int]) -> str:
    """Versions as people read them: "v1, v3", or "none"."""
    return ", ".join(f"v{version}" for version in sorted(versions)) or "none"


def what_exists(model: str, served: Sequence[int], packaged: Sequence[int]) -> str:
    """`model`'s versions, said for an error: those served and those packaged but not loaded."""
    waiting = sorted(set(packaged) - set(served))
    text = f"it serves {listing(served)}"
    if waiting:
        text += f"; packaged, not loaded: {listing(waiting)} (`mfn load {model} --version {waiting[-1]}` loads one)"
    return text

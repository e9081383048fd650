"""What a deploy path holds: a Triton model repository (or one model directory) or a TorchServe model store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mfn.errors import MfnError


@dataclass(frozen=True)
class Store:
    """What a deploy path holds: which server it is for and the models in it."""

    server: str
    root: Path
    models: dict[str, list[Path]]


def discover(path: Path) -> Store:
    """Recognise a Triton model repository (or one model directory) or a TorchServe model store."""
    from mfn.archiver.reading import archive_info, is_archive, store_archives

    path = Path(path).resolve()
    if (path / "config.pbtxt").is_file():
        return Store("triton", path.parent, {path.name: [path]})
    if is_archive(path):
        return Store("torchserve", path.parent, {archive_info(path).name: [path]})
    if not path.is_dir():
        raise MfnError(f"{path} is not a directory; give a model repository or model store written by `mfn package`")
    triton_models = {child.name: [child] for child in sorted(path.iterdir()) if (child / "config.pbtxt").is_file()}
    archives = store_archives(path)
    if triton_models and archives:
        raise MfnError(f"{path} mixes Triton models and TorchServe archives; keep one kind per directory")
    if triton_models:
        return Store("triton", path, triton_models)
    if archives:
        models: dict[str, list[Path]] = {}
        for archive in archives:
            models.setdefault(archive_info(archive).name, []).append(archive)
        return Store("torchserve", path, models)
    raise MfnError(
        f"{path} holds no models (no <name>/config.pbtxt, no .mar archives); run `mfn package ... --output {path}` first"
    )

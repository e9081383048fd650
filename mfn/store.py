"""What a deploy path holds: a Triton model repository (or one model directory) or a TorchServe model store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mfn.errors import MfnError
from mfn.kinds import Server
from mfn.manifest import SPEC_FILE

if TYPE_CHECKING:  # loaded where specs are read: a supervisor starts its server before it needs them
    from mfn.handlers.declarations import VersionPolicy
    from mfn.spec import ModelSpec


@dataclass(frozen=True)
class Store:
    """What a deploy path holds: which server it is for and the models in it.

    `models` maps each model to its package units (see mfn.manifest): its Triton model directory, or its
    TorchServe archives, one per version.
    """

    server: str
    root: Path
    models: dict[str, list[Path]]

    def version_bundles(self, models: list[str] | None = None) -> list[Path]:
        """Where each mfn-packaged version's bundle (mfn.json, requirements, mfn's wheel) lies: a Triton version
        directory, or a TorchServe archive (read with mfn.archiver.reading.read_member). Versions written by
        other tools (Triton's native models, hand-made archives) have none and are left out."""
        from mfn.archiver.reading import read_member

        units = [unit for model in (models or list(self.models)) for unit in self.models[model]]
        if self.server == Server.TRITON:
            return [spec_file.parent for unit in units for spec_file in sorted(unit.glob(f"*/{SPEC_FILE}"))]
        return [unit for unit in units if read_member(unit, SPEC_FILE) is not None]

    def packaged_versions(self, model: str) -> list[int]:
        """The versions of `model` in the repository or store, oldest first (Triton: its numbered directories)."""
        from mfn.archiver.reading import archive_info

        if model not in self.models:
            return []
        if self.server == Server.TRITON:
            return sorted(int(child.name) for child in self.models[model][0].iterdir() if child.is_dir() and child.name.isdigit())
        return sorted({archive_info(archive).version for archive in self.models[model]})

    def version_policy(self, model: str) -> VersionPolicy:
        """The version policy `model`'s package gives: Triton's config.pbtxt (the one its versions share), or
        TorchServe's newest archive; the newest version only where it gives none."""
        from mfn.archiver.reading import archive_info
        from mfn.handlers.declarations import VersionPolicy

        if self.server == Server.TRITON:
            return _triton_policy(self.models[model][0] / "config.pbtxt")
        newest = max(self.models[model], key=lambda archive: archive_info(archive).version)
        return archive_info(newest).version_policy or VersionPolicy()

    def specs(self, models: list[str] | None = None) -> list[ModelSpec]:
        """The spec of every mfn-packaged version of `models` (default: all)."""
        from mfn.archiver.reading import read_member
        from mfn.spec import ModelSpec

        return [ModelSpec.from_json(read_member(bundle, SPEC_FILE).decode())  # type: ignore[union-attr]
                for bundle in self.version_bundles(models)]


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


def triton_config(config_file: Path) -> dict:
    """A Triton config.pbtxt as the JSON dict Triton's load API takes (model_config.proto's field names).

    Raises:
        MfnError: naming the file, when it is not a valid model config.
    """
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    try:
        config = text_format.Parse(config_file.read_text(), model_config_pb2.ModelConfig())
    except (OSError, text_format.ParseError) as error:
        raise MfnError(f"{config_file} is not a Triton model config ({error}); package the model again") from None
    return json_format.MessageToDict(config, preserving_proto_field_name=True)


def _triton_policy(config_file: Path) -> VersionPolicy:
    from mfn.handlers.declarations import VersionPolicy

    policy = triton_config(config_file).get("version_policy", {})
    if "all" in policy:
        return VersionPolicy(kind="all")
    if "specific" in policy:
        return VersionPolicy(kind="specific", versions=tuple(int(v) for v in policy["specific"].get("versions", [])))
    return VersionPolicy(latest=int(policy.get("latest", {}).get("num_versions", 1)))

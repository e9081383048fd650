"""`mfn sign` / `mfn verify`: digests and signatures of model packages before a server loads them.

Every package unit (a Triton model directory, a TorchServe archive; see mfn.manifest) carries a digest
manifest from `mfn package`. `sign` adds an OpenSSF model signature (the `model-signing` library, an
elliptic-curve key pair, no network) over the whole unit, manifest included: a directory's signature is the
file `mfn-signature.sig` inside it, an archive's is `<archive>.sig` beside it. `verify` checks the manifest
and, given the public key, the signature.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from mfn.errors import MfnError
from mfn.manifest import SIGNATURE, ManifestError, check, server_written

SIGNING_HINT = "signing needs the model-signing library: pip install 'mfn-serve[signing]'"


@dataclass(frozen=True)
class Checked:
    """One unit that passed: its path and whether a signature was checked too."""

    unit: Path
    signed: bool


def package_units(path: Path) -> list[Path]:
    """The units in a repository, model store, model directory or archive."""
    from mfn.store import discover

    store = discover(Path(path))
    return [unit for units in store.models.values() for unit in units]


def signature_path(unit: Path) -> Path:
    return unit / SIGNATURE if unit.is_dir() else unit.with_name(f"{unit.name}.sig")


def prepare_for_serving(units: list[Path], public_key: Path | str | None = None, verify: bool = True) -> list[Checked]:
    """What a deploy does before a server loads `units`: delete their bytecode caches (a planted one would run in
    place of the packaged source; the server writes fresh ones), then check them as `verify_units` does.

    Raises:
        MfnError: as `verify_units`.
    """
    for unit in units:
        for cache in reversed(server_written(unit)):
            if cache.is_dir():
                shutil.rmtree(cache, ignore_errors=True)
            else:
                cache.unlink(missing_ok=True)
    return verify_units(units, public_key) if verify or public_key is not None else []


def sign(path: Path | str, private_key: Path | str, password: str | None = None) -> list[Path]:
    """Sign every unit under `path` with an elliptic-curve private key (PEM); returns the signature files.

    Raises:
        MfnError: a unit fails its manifest (it is not signed then), the key cannot be read, or
            model-signing is missing.
    """
    signing, hashing_config = _model_signing()
    written = []
    for unit in package_units(Path(path)):
        _check_manifest(unit)
        target = signature_path(unit)
        config = signing.Config().set_hashing_config(hashing_config(unit))
        try:
            config.use_elliptic_key_signer(private_key=Path(private_key), password=password).sign(unit, target)
        except (ValueError, TypeError, OSError) as error:
            raise MfnError(f"cannot sign {unit.name} with {private_key}: {error}") from None
        written.append(target)
    return written


def verify(path: Path | str, public_key: Path | str | None = None) -> list[Checked]:
    """Check every unit under `path` against its manifest and, with `public_key` (PEM), its signature.

    Raises:
        MfnError: naming the unit and the file that changed, or the signature that is missing or does not match.
    """
    return verify_units(package_units(Path(path)), public_key)


def verify_units(units: list[Path], public_key: Path | str | None = None) -> list[Checked]:
    """`verify` for the given units. It only reads them: bytecode caches a server wrote are not compared."""
    checked = []
    for unit in units:
        _check_manifest(unit)
        if public_key is not None:
            _check_signature(unit, Path(public_key))
        checked.append(Checked(unit, public_key is not None))
    return checked


def _check_manifest(unit: Path) -> None:
    try:
        check(unit)
    except ManifestError as error:
        raise MfnError(f"{error}; repackage it (or deploy with --no-verify to serve it anyway)") from None


def _check_signature(unit: Path, public_key: Path) -> None:
    verifying, hashing_config = _model_signing(verifier=True)
    signature = signature_path(unit)
    if not signature.is_file():
        raise MfnError(f"{unit.name} is not signed ({signature.name} is missing): sign it with `mfn sign` or deploy without a key")
    config = verifying.Config().set_hashing_config(hashing_config(unit))
    try:
        config.use_elliptic_key_verifier(public_key=public_key).verify(unit, signature)
    except ValueError as error:
        raise MfnError(f"{unit.name}: the signature {signature.name} does not match: {_mismatch(str(error))}") from None


def _mismatch(message: str) -> str:
    # model-signing lists the files inside a repr of a list of strings, so a name's quotes may come escaped.
    changed = re.findall(r"Hash mismatch for \\?['\"]([^'\"\\]+)", message)
    if changed:
        return f"changed after signing: {', '.join(changed)}"
    missing = re.findall(r"(?:Extra|Missing)[^'\"]*\\?['\"]([^'\"\\]+)", message)
    if missing:
        return f"files added or removed after signing: {', '.join(missing)}"
    if "Key mismatch" in message:
        return "it was signed with another key"
    return message.splitlines()[0][:200]


def _model_signing(verifier: bool = False):
    try:
        import model_signing.hashing
        import model_signing.signing
        import model_signing.verifying
    except ImportError:
        raise MfnError(SIGNING_HINT) from None

    def hashing_config(unit: Path):
        # The signature and the bytecode caches are not part of the package; git paths neither.
        ignored = [signature_path(unit), *server_written(unit)] if unit.is_dir() else []
        return model_signing.hashing.Config().set_ignored_paths(paths=ignored, ignore_git_paths=True)

    return (model_signing.verifying if verifier else model_signing.signing), hashing_config

"""Find a handler class from a reference such as `examples/mlp/handler.py:MLP` or `pkg.module:Class`."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
import traceback
from pathlib import Path
from types import ModuleType

from mfn.errors import HandlerError, SpecError
from mfn.handlers.base import Handler


def load_handler(ref: str) -> type[Handler]:
    """Import the module a reference names and return its handler class.

    Raises:
        HandlerError: the reference is malformed, the module fails to import, or the attribute is not a Handler.
    """
    target, sep, attribute = ref.rpartition(":")
    if not sep or not target or not attribute:
        raise HandlerError(f"handler reference {ref!r} must look like 'path/to/handler.py:ClassName' or 'package.module:ClassName'")
    module = import_handler_file(Path(target)) if target.endswith(".py") else _import_module(target)
    return handler_class(module, attribute, ref)


def import_handler_file(path: Path) -> ModuleType:
    """Import a handler source file by path, under a module name unique to that file, its directory first on
    sys.path so that the modules beside it import by their own names."""
    path = path.resolve()
    if not path.is_file():
        raise HandlerError(f"handler file {path} does not exist")
    put_on_path(path.parent)
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    module_name = f"mfn_handler_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[module_name]
        declaration = _declaration_error(error, path)
        if declaration:
            raise SpecError(declaration) from None
        raise HandlerError(f"importing {path} failed:\n{_user_traceback(error, path)}") from error
    return module


def import_entrypoint(handler_dir: Path, file: str, package: str | None) -> ModuleType:
    """Import a packaged handler: `handler_dir` (the shipped project) first on sys.path, then `file` by path, or
    as a module of `package` when the handler was referenced as package.module:Class."""
    if package is None:
        return import_handler_file(handler_dir / file)
    put_on_path(handler_dir)
    return _import_module(package if file == "__init__.py" else f"{package}.{file.removesuffix('.py')}")


def handler_package(cls: type[Handler]) -> str | None:
    """The dotted package holding the module that defines `cls`; None for a file imported by path or a top-level
    module (the handler then lies at the top of its directory)."""
    if handler_source_file(cls).name == "__init__.py":
        return cls.__module__
    return cls.__module__.rpartition(".")[0] or None


def put_on_path(root: Path) -> None:
    """Put a handler's directory first on sys.path. A module of the same name as one of its own, imported earlier
    from elsewhere (another handler's helpers, the `model` that Triton's stub imported mfn's adapter as), is
    forgotten first, so that the handler's own is the one it imports."""
    root = root.resolve()
    if str(root) in sys.path:
        sys.path.remove(str(root))
    sys.path.insert(0, str(root))
    names = {path.stem if path.suffix == ".py" else path.name for path in root.iterdir()
             if path.suffix == ".py" or (path.is_dir() and path.name.isidentifier())}
    for name in names - set(sys.stdlib_module_names) - {"mfn"}:
        for loaded in [key for key in sys.modules if key == name or key.startswith(f"{name}.")]:
            source = getattr(sys.modules[loaded], "__file__", None)
            if source and not Path(source).resolve().is_relative_to(root):
                del sys.modules[loaded]


def _import_module(name: str) -> ModuleType:
    # As `python -m` does: a package in the current directory imports without being installed.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except Exception as error:
        raise HandlerError(f"importing module {name!r} failed:\n{_user_traceback(error, None)}") from error


def handler_class(module: ModuleType, attribute: str, ref: str) -> type[Handler]:
    """Return `module.attribute`, checked to be a complete Handler subclass."""
    candidate = getattr(module, attribute, None)
    if candidate is None:
        found = sorted(
            name for name, value in vars(module).items() if inspect.isclass(value) and issubclass(value, Handler) and value is not Handler
        )
        raise HandlerError(f"{ref}: no attribute {attribute!r}; handlers in that module: {', '.join(found) or 'none'}")
    if not (inspect.isclass(candidate) and issubclass(candidate, Handler)):
        raise HandlerError(f"{ref}: {attribute} is not a subclass of mfn.Handler (decorate functions with @mfn.function)")
    if candidate.predict is Handler.predict:
        raise HandlerError(f"{ref}: {attribute} has no predict method; define predict(self, inputs) returning a dict of arrays")
    return candidate


def handler_source_file(cls: type[Handler]) -> Path:
    """Return the source file that defines a handler class."""
    module = sys.modules.get(cls.__module__)
    source = getattr(module, "__file__", None)
    if source is None:
        raise HandlerError(f"{cls.__qualname__} is not defined in a source file; move it into a .py file")
    return Path(source).resolve()


def _declaration_error(error: BaseException, path: Path) -> str | None:
    """One line for a declaration mfn refused while the handler file ran (a misspelt dtype, a bad shape): where
    it is in the file, which class declares it, and what to write; None for any other error."""
    from pydantic import ValidationError

    if not isinstance(error, (ValidationError, SpecError)):
        return None
    here = [frame for frame in traceback.extract_tb(error.__traceback__) if Path(frame.filename).resolve() == path]
    if not here:
        return None
    frame = here[-1]
    # Code at a class body's top level runs in a frame named after the class; the line says which attribute.
    assigned = re.match(r"\s*(\w+)\s*(?::[^=]*)?=", frame.line or "")
    owner = f"{frame.name}.{assigned.group(1)}" if assigned and frame.name != "<module>" else frame.name
    where = f"{path.name}, line {frame.lineno}" + (f", {owner}" if owner != "<module>" else "")
    if isinstance(error, SpecError):  # e.g. an unknown keyword of @mfn.function
        return f"{where}: {error}"
    # A declaration's own checks name what they refuse ("Tensor 'x' shape: ..."); pydantic's need the type and field.
    problems = "; ".join(
        item["msg"].removeprefix("Value error, ") if not item["loc"]
        else f"{error.title} {'.'.join(str(part) for part in item['loc'])}: {item['msg'].removeprefix('Value error, ')}"
        for item in error.errors()
    )
    return f"{where}: {problems}"


def _user_traceback(error: BaseException, path: Path | None) -> str:
    """Format an import failure from the user's frames on, dropping importlib's own."""
    frames = traceback.extract_tb(error.__traceback__)
    user_frames = [frame for frame in frames if "importlib" not in frame.filename and "mfn/handlers/loading" not in frame.filename]
    lines = traceback.format_list(user_frames) + traceback.format_exception_only(type(error), error)
    hint = ""
    if isinstance(error, ModuleNotFoundError):
        hint = (
            f"Hint: install {error.name!r} where mfn runs (and list it in the handler's requirements), or put it in "
            "the handler's directory: mfn ships that directory with the handler and imports from it."
        )
    return "".join(lines).rstrip() + (f"\n{hint}" if hint else "")

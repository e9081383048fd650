"""Find a handler class from a reference such as `examples/mlp/handler.py:MLP` or `pkg.module:Class`."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
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
    """Import a handler source file by path, under a module name unique to that file."""
    path = path.resolve()
    if not path.is_file():
        raise HandlerError(f"handler file {path} does not exist")
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


def _import_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except Exception as error:
        raise HandlerError(f"importing module {name!r} failed: {type(error).__name__}: {error}") from error


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

    if not isinstance(error, ValidationError):
        return None
    here = [frame for frame in traceback.extract_tb(error.__traceback__) if Path(frame.filename).resolve() == path]
    if not here:
        return None
    frame = here[-1]
    # Code at a class body's top level runs in a frame named after the class; the line says which attribute.
    assigned = re.match(r"\s*(\w+)\s*(?::[^=]*)?=", frame.line or "")
    owner = f"{frame.name}.{assigned.group(1)}" if assigned and frame.name != "<module>" else frame.name
    where = f"{path.name}, line {frame.lineno}" + (f", {owner}" if owner != "<module>" else "")
    problems = "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or 'value'}: {item['msg'].removeprefix('Value error, ')}"
        for item in error.errors()
    )
    return f"{where}: {error.title}: {problems}"


def _user_traceback(error: BaseException, path: Path) -> str:
    """Format an import failure from the user's frames on, dropping importlib's own."""
    frames = traceback.extract_tb(error.__traceback__)
    user_frames = [frame for frame in frames if "importlib" not in frame.filename]
    lines = traceback.format_list(user_frames) + traceback.format_exception_only(type(error), error)
    hint = ""
    if isinstance(error, ModuleNotFoundError):
        hint = (
            f"Hint: install {error.name!r} where mfn runs; mfn ships only the handler file itself, "
            "so helper modules beside it must be installed packages."
        )
    return "".join(lines).rstrip() + (f"\n{hint}" if hint else "")

"""The names `mfn` exports stay what they are however the package is imported."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_deploy_stays_the_function_after_the_internal_packages_are_imported():
    # A submodule import binds its name on the parent package; an internal package called `deploy` once
    # replaced the function with itself after the first `mfn.Client(...)`.
    script = (
        "import mfn, mfn.client, mfn.local.deployments, mfn.local.state, mfn.kubernetes.helm\n"
        "from mfn.local.deployments import deploy, undeploy\n"
        "assert mfn.deploy is deploy, mfn.deploy\n"
        "assert mfn.undeploy is undeploy, mfn.undeploy\n"
        "assert callable(mfn.package) and callable(mfn.verify) and callable(mfn.sign)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr


def test_every_lazy_export_resolves_to_a_callable_or_class():
    import mfn

    for name in mfn.__all__:
        assert callable(getattr(mfn, name)) or name == "DONE", name


def test_import_mfn_and_the_cli_load_neither_numpy_nor_pydantic_until_a_name_needs_them():
    """`mfn status` and `mfn invoke --help` do not pay for the handler contract."""
    script = ("import sys, mfn, mfn.cli.main\n"
              "print(sorted(name for name in ('numpy', 'pydantic', 'mfn.handlers') if name in sys.modules))\n"
              "mfn.Tensor('x', 'FP32', [1])\n"
              "print(sorted(name for name in ('numpy', 'pydantic', 'mfn.handlers') if name in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == ["[]", "['mfn.handlers', 'numpy', 'pydantic']"]


@pytest.mark.parametrize("module", ["mfn.spec", "mfn.handlers.declarations", "mfn.store", "mfn.runtime.loop",
                                    "mfn.local.supervisor", "mfn.proxy.controller", "mfn.kubernetes.probe"])
def test_each_process_entry_module_imports_first_in_a_fresh_interpreter(module):
    """With every name of mfn and mfn.handlers loaded on use, import order is each entry point's own: a cycle through
    a package's __init__ shows only when its module is the first import."""
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]

"""The names `mfn` exports stay what they are however the package is imported."""

from __future__ import annotations

import subprocess
import sys


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
    """`mfn status`, `mfn invoke --help` and a supervisor's start do not pay for the handler contract."""
    import subprocess
    import sys

    script = ("import sys, mfn, mfn.cli.main\n"
              "print(sorted(name for name in ('numpy', 'pydantic', 'mfn.handlers') if name in sys.modules))\n"
              "mfn.Tensor('x', 'FP32', [1])\n"
              "print(sorted(name for name in ('numpy', 'pydantic', 'mfn.handlers') if name in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == ["[]", "['mfn.handlers', 'numpy', 'pydantic']"]

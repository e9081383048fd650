"""The records of local deployments, so any shell can find, query and stop them.

Each deployment has one directory, `$MFN_HOME/deployments/NAME/`, and one lock (`lock` in it):

- `deployment.json`: the record, written by the deployment's supervisor alone;
- `prometheus.json`: the Prometheus `mfn deploy --prometheus` started for it (mfn.monitoring.local);
- `defaults.json`: the operator's default versions, kept across redeploys (mfn.local.versions);
- `route/`: the rollout proxy's record, key, configuration and logs (mfn.proxy.routes), kept across the
  restart a promotion makes;
- `server/`: what one server start owns (plan, status, logs, operator mailbox, cold-start phases, server keys
  and configs), made new by each deploy.

The directory goes with the last of the record, the route and the defaults.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from mfn.files import private_dir, write_json
from mfn.home import mfn_home
from mfn.errors import MfnError
from mfn.servers.process import is_running


def home_tag(home: Path | None = None) -> str:
    """A short tag for `home` (default: this MFN_HOME), put in the names of shared-memory regions so each home
    can find its own."""
    return hashlib.sha1(str((home or mfn_home()).resolve()).encode()).hexdigest()[:6]


def deployments_dir() -> Path:
    return mfn_home() / "deployments"


# A DNS-1123 label, as Kubernetes wants release and object names: a name is also a directory and file name
# under $MFN_HOME, and this rule leaves no room for "/", "..", or hidden files.
_NAME = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
NAME_RULE = "1 to 63 lower-case letters, digits and '-', starting and ending with a letter or digit (a DNS-1123 label)"


def check_name(name: object, what: str = "deployment name") -> str:
    """`name` if it is a valid deployment (or release) name.

    Raises:
        MfnError: naming the value and the rule, before any file is touched.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise MfnError(f"{what} {name!r} is not valid: use {NAME_RULE}, e.g. 'my-models'")
    return name


def name_from(text: str) -> str:
    """A valid name made from `text` (e.g. a directory's name): lower case, other characters as '-'."""
    name = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", text.lower())).strip("-")[:63].strip("-")
    return name or "mfn"


RECORD_FILE = "deployment.json"
PROMETHEUS_FILE = "prometheus.json"
DEFAULTS_FILE = "defaults.json"
LOCK_FILE = "lock"
ROUTE_DIR = "route"
SERVER_DIR = "server"


def deployment_dir(name: str) -> Path:
    """Everything of deployment `name`, under $MFN_HOME, which only mfn writes and deletes."""
    return inside_home(deployments_dir() / check_name(name))


def work_dir(name: str) -> Path:
    """What one server start of deployment `name` owns; a deploy makes it new."""
    return deployment_dir(name) / SERVER_DIR


def lasts(name: str) -> bool:
    """Whether the deployment's directory holds anything that outlives a lock holder: record, route or defaults."""
    directory = deployments_dir() / name
    return any((directory / part).exists() for part in (RECORD_FILE, ROUTE_DIR, DEFAULTS_FILE))


def inside_home(path: Path) -> Path:
    """`path` if, with symlinks resolved, it lies inside $MFN_HOME.

    Raises:
        MfnError: for a path outside it, which mfn never writes or deletes.
    """
    home = mfn_home().resolve()
    if not path.resolve().is_relative_to(home):
        raise MfnError(f"{path} resolves to {path.resolve()}, outside MFN_HOME ({home}): mfn writes and deletes only there")
    return path


@dataclass
class Prometheus:
    """The Prometheus a deployment started for itself (mfn.monitoring.local)."""

    pid: int
    start_time: int | None
    url: str


@dataclass
class Deployment:
    """One running server and the models it serves."""

    name: str
    server: str
    pid: int
    start_time: int | None
    host: str
    ports: dict[str, int]
    models: list[str]
    repository: str
    log_file: str
    workdir: str
    shm_prefix: str = ""
    # The servers' key file (one layout for both: read_key), "" where inference and management need no key.
    key_file: str = ""
    # The settings the deployment was made with, for later commands (None: the default of the version that reads it).
    drain_timeout_s: float | None = None
    load_timeout_s: float | None = None
    max_request_bytes: int | None = None  # the server's body limit, where it has one (TorchServe)
    response_cache_bytes: int = 0  # Triton's server-wide response cache
    track_of: str | None = None  # a canary track's record: the deployment whose rollout it serves (mfn.proxy.rollout)
    prometheus: Prometheus | None = None  # `mfn deploy --prometheus`
    # Where the first start's time went: server_start_s, and per model its load split (see mfn.runtime.cold_start).
    cold_start: dict = field(default_factory=dict)
    # Public ports of the front that owns them when the server stops while idle (mfn.local.front); `ports` are
    # then the server's own, which only mfn talks to.
    front: dict[str, int] = field(default_factory=dict)
    # The rollout proxy's ports once the deployment has had a rollout (mfn.proxy.routes): filled in when the
    # record is read for callers (mfn.local.deployments.status), never saved by the supervisor.
    proxy: dict[str, int] = field(default_factory=dict)
    # model -> {"versions": [...], "default_version": N}: what mfn's version rule serves (mfn.local.versions), written
    # by the supervisor after each change; clients read the default and the versions for their hints from it.
    versions: dict[str, dict] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return is_running(self.pid, self.start_time)

    @property
    def http_url(self) -> str:
        """The server's own HTTP address (mfn's management calls); clients use `public_port`."""
        return f"http://{self.host}:{self.ports['http']}"

    @property
    def grpc_url(self) -> str:
        """The server's own gRPC address; clients use `public_port`."""
        return f"{self.host}:{self.ports['grpc']}"

    def public_port(self, protocol: str) -> int:
        """Where clients send `protocol` ("http", "grpc") requests: the rollout proxy's or the idle front's port when
        there is one."""
        return self.proxy.get(protocol) or self.front.get(protocol) or self.ports[protocol]

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.ports['metrics']}/metrics"

    def endpoints(self) -> dict[str, str]:
        endpoints = {"http": f"http://{self.host}:{self.public_port('http')}", "grpc": f"{self.host}:{self.public_port('grpc')}",
                     "metrics": self.metrics_url}
        if self.prometheus is not None:
            endpoints["prometheus"] = self.prometheus.url
        return endpoints

    def to_json(self) -> dict:
        return {**asdict(self), "endpoints": self.endpoints(), "running": self.running}


def state_file(name: str) -> Path:
    return deployment_dir(name) / RECORD_FILE


# Kept elsewhere or filled in for callers, never in the record: the Prometheus has its own file and writer, the
# proxy's ports are the route's.
_NOT_RECORDED = ("prometheus", "proxy")


def save(deployment: Deployment) -> None:
    """Write the record atomically, so a reader never sees half a file; only the deployment's supervisor does."""
    record = asdict(deployment)
    for key in _NOT_RECORDED:
        record.pop(key)
    _private_dir(deployment.name)
    write_json(state_file(deployment.name), record)


def _private_dir(name: str) -> Path:
    """The deployment's directory, made 0700 (with $MFN_HOME's) where it is not there yet."""
    return private_dir(deployment_dir(name))


def save_prometheus(name: str, prometheus: Prometheus | None) -> None:
    """Record (or with None forget) the Prometheus started for deployment `name`."""
    path = deployment_dir(name) / PROMETHEUS_FILE
    if prometheus is None:
        path.unlink(missing_ok=True)
    else:
        write_json(path, asdict(prometheus))


def load(name: str) -> Deployment | None:
    refuse_older_layout(name)
    return _read(deployments_dir() / check_name(name))


def _read(directory: Path) -> Deployment | None:
    path = directory / RECORD_FILE
    try:
        deployment = from_record(json.loads(path.read_text()), path)
    except FileNotFoundError:
        return None
    try:
        deployment.prometheus = Prometheus(**json.loads((directory / PROMETHEUS_FILE).read_text()))
    except FileNotFoundError:
        pass
    return deployment


def refuse_older_layout(name: str | None = None) -> None:
    """Refuse to act beside records an older mfn wrote (one `NAME.json` beside each deployment's directory, routes
    under `.routes/`): its running supervisors would keep writing there.

    Raises:
        MfnError: naming the record and what to do.
    """
    directory = deployments_dir()
    older = [directory / f"{name}.json"] if name is not None else sorted(directory.glob("*.json"))
    for path in older:
        if path.is_file():
            raise MfnError(f"{path} is a deployment record written by an older mfn, which laid out {directory} "
                           f"differently: undeploy {path.stem!r} with that mfn (`mfn undeploy {path.stem}`), or, if "
                           f"its processes are gone, delete {path} and {directory / path.stem}")


# Settings an older mfn kept as strings in the record's "extra" map, and the typed field each is now.
_EXTRA_FIELDS = {"key_file": str, "drain_timeout_s": float, "load_timeout_s": float, "max_request_bytes": int,
                 "response_cache_bytes": int, "track_of": str}


def from_record(document: dict, path: Path) -> Deployment:
    """A deployment record as written by this mfn or an older one (typed settings then travelled as strings in
    "extra"); a record with fields this mfn does not know is refused, naming them and the file.

    Raises:
        MfnError: a record from a newer or foreign writer.
    """
    extra = document.pop("extra", None) or {}
    for key, kind in _EXTRA_FIELDS.items():
        if extra.get(key) not in (None, ""):
            document[key] = kind(extra[key])
    if extra.get("prometheus_pid"):
        document["prometheus"] = {"pid": int(extra["prometheus_pid"]), "url": extra.get("prometheus_url", ""),
                                  "start_time": int(extra["prometheus_start_time"]) if extra.get("prometheus_start_time") else None}
    if isinstance(document.get("prometheus"), dict):
        document["prometheus"] = Prometheus(**document["prometheus"])
    unknown = sorted(set(document) - {f.name for f in fields(Deployment)})
    if unknown:
        raise MfnError(f"{path} has fields this mfn does not know ({', '.join(unknown)}): it was written by a newer "
                       f"mfn; manage that deployment with the mfn that made it, or undeploy it there")
    return Deployment(**document)


def remove(name: str) -> None:
    """Forget the deployment's record (the caller holds its lock and stopped its processes)."""
    state_file(name).unlink(missing_ok=True)


def all_deployments() -> list[Deployment]:
    directory = deployments_dir()
    if not directory.is_dir():
        return []
    refuse_older_layout()
    found = (_read(child) for child in sorted(directory.iterdir()) if child.is_dir() and _NAME.fullmatch(child.name))
    return [deployment for deployment in found if deployment is not None]


def get(name: str) -> Deployment:
    """The named deployment, or an error listing the ones that exist."""
    deployment = load(name)
    if deployment is None:
        known = ", ".join(d.name for d in all_deployments()) or "none"
        serving = serving_model(name)
        model = f"; {name!r} is a model, of deployment {' and '.join(serving)}: give the deployment's name" if serving else ""
        raise MfnError(f"no deployment named {name!r} (deployments: {known}){model}; see `mfn status`")
    return deployment


def serving_model(model: str) -> list[str]:
    """The names of the deployments whose records list `model`."""
    return [deployment.name for deployment in all_deployments() if model in deployment.models]


def read_key(deployment: Deployment, api: str) -> str | None:
    """The deployment's current key for `api` ("inference" or "management"), or None where it needs none.

    Both servers keep them in a key file of one layout: TorchServe writes its own (new keys on every start),
    mfn writes Triton's once per deployment.
    """
    key_file = deployment.key_file
    if not key_file:
        return None
    try:
        entry = json.loads(Path(key_file).read_text()).get(api)
    except (OSError, ValueError, AttributeError) as error:
        raise MfnError(f"cannot read the deployment's key file {key_file}: {error}") from None
    return entry.get("key") if isinstance(entry, dict) else None


def find_serving(model: str, choose: str = "--deployment {name}", elsewhere: str = "--url") -> Deployment:
    """The running deployment that serves `model`.

    Args:
        choose: How the caller names a deployment, with `{name}` for one of them (the CLI's `--deployment NAME`,
            the client's `mfn.Client("NAME")`).
        elsewhere: How the caller names a server that is not a local deployment.
    """
    from mfn.kinds import served_names_hint

    # A rollout's canary track serves the model too; callers reach it through the deployment it belongs to.
    running = [d for d in all_deployments() if d.running and d.track_of is None]
    serving = [d for d in running if model in d.models]
    if not serving:
        served = sorted({name for d in running for name in d.models})
        raise MfnError(f"no running deployment serves model {model!r} ({served_names_hint(model, served)}); deploy it "
                       f"with `mfn deploy`, or pass {elsewhere}")
    if len(serving) > 1:
        names = ", ".join(d.name for d in serving)
        raise MfnError(f"model {model!r} is served by several deployments ({names}); choose one with "
                       f"{choose.format(name=serving[0].name)}")
    return serving[0]


def defaults_file(name: str) -> Path:
    """Where `mfn set-default` choices of deployment `name` are kept: outside the server's directory, so that a
    later deployment of the same name (a redeploy) serves the same default versions."""
    return deployment_dir(name) / DEFAULTS_FILE


def answering_version(name: str, model: str) -> int | None:
    """The version of `model` that answers mfn's clients when they name none in deployment `name`: the default its
    version rule serves (mfn.local.versions), as the supervisor recorded it."""
    record = load(name)
    return (record.versions.get(model) or {}).get("default_version") if record is not None else None


def recorded_defaults(name: str) -> dict[str, int]:
    """model -> version chosen with `mfn set-default` for deployment `name` (an older mfn kept them in
    `$MFN_HOME/defaults/NAME.json`, read where the deployment has none of its own yet)."""
    for path in (defaults_file(name), mfn_home() / "defaults" / f"{name}.json"):
        try:
            return {model: int(version) for model, version in json.loads(path.read_text()).items()}
        except FileNotFoundError:
            continue
        except (OSError, ValueError, AttributeError):
            return {}
    return {}


def record_default(name: str, model: str, version: int | None) -> None:
    """Keep (or with None forget) the default version of `model` in deployment `name`."""
    defaults = recorded_defaults(name)
    if version is None:
        defaults.pop(model, None)
    else:
        defaults[model] = version
    path = defaults_file(name)
    if defaults:
        _private_dir(name)
        write_json(path, defaults)
    else:
        path.unlink(missing_ok=True)

"""The helm/ chart: lint, render over a values matrix, validate every object, golden dry-runs, schema errors."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

import mfn
from mfn.cli.main import cli
from mfn.kubernetes.helm import chart_path, values_for
from mfn.kubernetes.values import DRAIN_TIMEOUT_S
from tests.conftest import EXAMPLES, GOLDEN, HANDLERS, assert_matches_golden

KUBERNETES_VERSIONS = ["1.27.0", "1.37.0"]
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject"}
# Knative's kind has the name of a core one: its schema file goes by another.
CRD_FILES = {("serving.knative.dev/v1", "Service"): "KnativeService"}
CRD_SCHEMAS = Path(sys.prefix) / "share" / "mfn-crd-schemas"  # written by `make setup` (scripts/fetch_crd_schemas.py)


def validate_custom_resource(document: dict) -> None:
    schema_file = CRD_SCHEMAS / f"{CRD_FILES.get((document['apiVersion'], document['kind']), document['kind'])}.json"
    assert schema_file.is_file(), f"{schema_file} is missing: run `make setup`"
    jsonschema.Draft7Validator(json.loads(schema_file.read_text())).validate(document)


@pytest.fixture(scope="module")
def packaged(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("k8s")
    mfn.package(f"{EXAMPLES / 'mlp' / 'handler.py'}:MLP", root / "triton")
    mfn.package(f"{EXAMPLES / 'text_stats' / 'handler.py'}:text_stats", root / "torchserve", server="torchserve")
    return {"triton": root / "triton", "torchserve": root / "torchserve"}


def helm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["helm", *args], capture_output=True, text=True)


def render(values: dict, *sets: str) -> list[dict]:
    values_file = Path(values["__file__"])
    result = helm("template", "demo", str(chart_path()), "--namespace", "serving", "--values", str(values_file),
                  "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor", *itertools.chain.from_iterable(("--set", s) for s in sets))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def write_values(packaged: dict[str, Path], server: str, tmp_path: Path, gpu: bool, delivery: str) -> dict:
    values = values_for(
        packaged[server], "demo",
        model_uri="https://models.example.com/store.tar.gz" if delivery == "uri" else None,
        pvc="models-pvc" if delivery == "pvc" else None,
    )
    if gpu:
        values["gpu"] = {"count": 2}
    path = tmp_path / f"{server}-{gpu}-{delivery}.json"
    path.write_text(json.dumps(values))
    return {**values, "__file__": str(path)}


MATRIX = [
    # server, gpu, scaling, servicemonitor, delivery
    ("triton", False, "hpa", True, "uri"),
    ("triton", True, "keda", False, "pvc"),
    ("triton", False, "none", False, "pvc"),
    ("torchserve", True, "hpa", False, "uri"),
    ("torchserve", False, "keda", True, "pvc"),
    ("torchserve", False, "none", True, "uri"),
]


def test_helm_lint_strict_passes_with_mfn_values(packaged, tmp_path):
    for server in ("triton", "torchserve"):
        values = write_values(packaged, server, tmp_path, gpu=False, delivery="uri")
        result = helm("lint", "--strict", str(chart_path()), "--values", values["__file__"])
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("server", "gpu", "scaling", "service_monitor", "delivery"), MATRIX)
def test_rendered_objects_validate_against_kubernetes_schemas(packaged, tmp_path, server, gpu, scaling, service_monitor, delivery):
    values = write_values(packaged, server, tmp_path, gpu, delivery)
    sets = [
        f"autoscaling.enabled={str(scaling == 'hpa').lower()}",
        f"autoscaling.queueTime.enabled={str(scaling == 'hpa').lower()}",
        f"keda.enabled={str(scaling == 'keda').lower()}",
        f"metrics.serviceMonitor.enabled={str(service_monitor).lower()}",
        f"metrics.prometheusRule.enabled={str(service_monitor).lower()}",
        "replicaCount=2",
    ]
    documents = render(values, *sets)
    kinds = sorted(doc["kind"] for doc in documents)
    expected = {"ConfigMap", "Deployment", "Service", "NetworkPolicy", "PodDisruptionBudget"}
    expected |= {"HorizontalPodAutoscaler"} if scaling == "hpa" else {"ScaledObject"} if scaling == "keda" else set()
    expected |= {"ServiceMonitor", "PrometheusRule"} if service_monitor else set()
    expected |= {"Secret"} if server == "triton" else set()
    assert set(kinds) == expected
    for document in documents:
        if document["kind"] in CRD_KINDS:
            validate_custom_resource(document)
            continue
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(document, version, strict=True)
    deployment = next(doc for doc in documents if doc["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == values["command"]
    limits = container.get("resources", {}).get("limits", {})
    assert limits.get("nvidia.com/gpu") == (2 if gpu else None)
    volumes = {volume["name"]: volume for volume in deployment["spec"]["template"]["spec"]["volumes"]}
    assert ("persistentVolumeClaim" in volumes["models"]) == (delivery == "pvc")


def test_custom_resource_schemas_reject_a_misspelt_field():
    monitor = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "m"},
               "spec": {"selector": {}, "endpoints": [{"port": "metrics", "intervall": "15s"}]}}
    with pytest.raises(jsonschema.ValidationError, match="'intervall' was unexpected"):
        validate_custom_resource(monitor)


def test_gpu_instance_groups_become_gpu_limits(tmp_path):
    handler = EXAMPLES / "mlp" / "handler.py"
    mfn.package(f"{handler}:MLP", tmp_path / "gpu", instances=[{"kind": "gpu", "count": 1, "gpus": [0, 1]}])
    values = values_for(tmp_path / "gpu", "gpu-demo", model_uri="https://x/y.tar.gz", pvc=None)
    assert values["gpu"] == {"count": 2}
    assert "--pinned-memory-pool-byte-size=0" not in values["args"]


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("replicaCount=-1", "at '/replicaCount': minimum: got -1, want 0"),
        ("server=onnx", "at '/server': value must be one of 'triton', 'torchserve'"),
        ("gpu.count=two", "at '/gpu/count': got string, want integer"),
        ("replicas=3", "additional properties 'replicas' not allowed"),
        ("models.uri=ftp://host/model.tgz", "at '/models/uri'"),
        ("drainTimeoutSeconds=0", "at '/drainTimeoutSeconds': minimum: got 0, want 1"),
        ("terminationGracePeriodSeconds=30", "additional properties 'terminationGracePeriodSeconds' not allowed"),
    ],
)
def test_values_schema_rejects_bad_values_readably(packaged, tmp_path, assignment, message):
    values = write_values(packaged, "triton", tmp_path, gpu=False, delivery="uri")
    result = helm("template", "demo", str(chart_path()), "--values", values["__file__"], "--set", assignment)
    assert result.returncode != 0
    assert message in result.stderr


def server_container(documents: list[dict]) -> tuple[dict, dict]:
    pod = next(doc for doc in documents if doc["kind"] == "Deployment")["spec"]["template"]["spec"]
    return pod, pod["containers"][0]


@pytest.mark.parametrize("server", ["triton", "torchserve"])
def test_every_probe_sends_each_model_a_sample_request(packaged, tmp_path, server):
    values = write_values(packaged, server, tmp_path, gpu=False, delivery="uri")
    _, container = server_container(render(values, "probes.timeoutSeconds=7"))
    for name in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = container[name]["exec"]["command"]
        assert command[:3] == ["python3", "-m", "mfn.kubernetes.probe"]
        assert f"--server={server}" in command and f"--port={values['ports']['http']}" in command
        assert [arg for arg in command if arg.startswith("--model=")] == [f"--model={m}" for m in values["models"]["names"]]
        assert "--timeout-s=7" in command and container[name]["timeoutSeconds"] > 7
    assert ("--key-file=/tmp/key_file.json" in command) == (server == "torchserve")
    assert ("--key-env=MFN_INFERENCE_KEY" in command) == (server == "triton")
    # Liveness tolerates a failing model far longer than readiness does.
    readiness, liveness = container["readinessProbe"], container["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 4 * readiness["periodSeconds"] * readiness["failureThreshold"]


@pytest.mark.parametrize("server", ["triton", "torchserve"])
def test_one_drain_timeout_drives_the_grace_period_and_the_server(packaged, tmp_path, server):
    values = write_values(packaged, server, tmp_path, gpu=False, delivery="uri")
    pod, container = server_container(render(values, "drainTimeoutSeconds=60", "preStopDelaySeconds=10"))
    assert pod["terminationGracePeriodSeconds"] == 10 + 60 + 15
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    if server == "triton":
        assert pre_stop == ["sleep", "10"]
        assert [arg for arg in container["args"] if arg.startswith("--exit-timeout-secs")] == ["--exit-timeout-secs=60"]
    else:
        script = pre_stop[2]
        assert pre_stop[:2] == ["sh", "-c"]
        assert script.index("sleep 10;") < script.index("mfn.kubernetes.drain") < script.index("ts.model_server --stop")
        assert f"--metrics-port={values['ports']['metrics']} --timeout-s=60" in script


def test_the_values_default_drain_matches_the_chart():
    defaults = yaml.safe_load((chart_path() / "values.yaml").read_text())
    assert defaults["drainTimeoutSeconds"] == DRAIN_TIMEOUT_S


def test_a_release_without_model_names_is_refused(packaged, tmp_path):
    values = write_values(packaged, "triton", tmp_path, gpu=False, delivery="uri")
    result = helm("template", "demo", str(chart_path()), "--values", values["__file__"], "--set", "models.names=null")
    assert result.returncode != 0 and "models.names is empty" in result.stderr


@pytest.mark.parametrize("server", ["triton", "torchserve"])
def test_deploy_dry_run_matches_golden(packaged, server, tmp_path):
    # The packaged paths differ per run; the manifests must not depend on them.
    result = CliRunner().invoke(cli, [
        "deploy", str(packaged[server]), "--target", "kubernetes", "--release", "demo", "--namespace", "serving",
        "--model-uri", "https://models.example.com/store.tar.gz", "--dry-run",
    ])
    assert result.exit_code == 0, result.output
    assert_matches_golden(environment_independent(result.output), GOLDEN / "kubernetes" / f"{server}.yaml")


def environment_independent(manifests: str) -> str:
    """Rendered manifests without what depends on this machine: the pins (versions installed here, checked
    by their own test) and the digests of files that change with mfn's source (its wheel)."""
    manifests = re.sub(r'(?m)^(\s+- --\n)(\s+- "[^"]+==[^"]+"\n)+', r'\1      <pinned requirements>\n', manifests)
    return re.sub(r"[0-9a-f]{64}", "<sha256>", manifests)


def test_kubernetes_target_needs_a_release_a_model_source_and_a_cluster(packaged, monkeypatch, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["deploy", str(packaged["triton"]), "--target", "kubernetes"])
    assert result.exit_code == 2 and "--target kubernetes needs --release NAME" in result.output
    result = runner.invoke(cli, ["deploy", str(packaged["triton"]), "--target", "kubernetes", "--release", "r"])
    assert result.exit_code == 1 and "--model-uri" in result.output
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    result = runner.invoke(cli, ["deploy", str(packaged["triton"]), "--target", "kubernetes", "--release", "r", "--pvc", "p"])
    assert result.exit_code == 1 and "no kubeconfig at" in result.output


def test_the_chart_ships_inside_the_wheel(tmp_path):
    import zipfile

    from tests.conftest import ROOT

    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), str(ROOT)], check=True)
    (wheel,) = tmp_path.glob("mfn_serve-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    chart_files = {str(path.relative_to(chart_path())) for path in chart_path().rglob("*") if path.is_file()}
    assert {f"mfn/kubernetes/chart/{name}" for name in chart_files} <= names


def test_torchserve_management_stays_inside_the_pod(packaged, tmp_path):
    values = write_values(packaged, "torchserve", tmp_path, gpu=False, delivery="uri")
    documents = render(values)
    properties = config_properties(documents)
    # Registering a model runs its code: the management APIs listen on the pod's loopback only.
    assert properties["management_address"].startswith("http://127.0.0.1:")
    assert properties["grpc_management_address"] == "127.0.0.1"
    assert properties["inference_address"].startswith("http://0.0.0.0:")
    service = next(doc for doc in documents if doc["kind"] == "Service")
    exposed = {port["port"] for port in service["spec"]["ports"]}
    assert exposed == {values["ports"][name] for name in ("http", "grpc", "metrics")}


def config_properties(documents: list[dict]) -> dict[str, str]:
    config = next(doc for doc in documents if doc["kind"] == "ConfigMap" and "config.properties" in doc.get("data", {}))
    return dict(line.split("=", 1) for line in config["data"]["config.properties"].splitlines() if "=" in line)


def restricted(container: dict) -> dict[str, list[str]]:
    """Triton's restriction arguments by flag: '<api groups>:<header>=<value>'."""
    found: dict[str, list[str]] = {}
    for arg in container["args"]:
        flag, _, value = arg.partition("=")
        if flag in ("--http-restricted-api", "--grpc-restricted-protocol"):
            found.setdefault(flag, []).append(value)
    return found


def test_triton_admin_and_inference_apis_need_keys_from_a_secret_by_default(packaged, tmp_path):
    from mfn.servers.triton import launch as triton

    values = write_values(packaged, "triton", tmp_path, gpu=False, delivery="uri")
    documents = render(values)
    pod, container = server_container(documents)
    expected = [f"{triton.ADMIN_APIS}:authorization=Bearer $(MFN_ADMIN_KEY)",
                f"{triton.INFERENCE_APIS}:authorization=Bearer $(MFN_INFERENCE_KEY)"]
    assert restricted(container) == {"--http-restricted-api": expected, "--grpc-restricted-protocol": expected}
    secret = next(doc for doc in documents if doc["kind"] == "Secret")
    assert secret["metadata"]["name"] == "demo-mfn-keys" and set(secret["data"]) == {"admin", "inference"}
    assert secret["data"]["admin"] != secret["data"]["inference"]
    env = {item["name"]: item["valueFrom"]["secretKeyRef"] for item in container["env"] if "valueFrom" in item}
    assert env == {"MFN_ADMIN_KEY": {"name": "demo-mfn-keys", "key": "admin"},
                   "MFN_INFERENCE_KEY": {"name": "demo-mfn-keys", "key": "inference"}}
    # Kubernetes expands $(VAR) in args only from variables the container defines.
    assert all(f"$({name})" in " ".join(container["args"]) for name in env)


def test_triton_inference_opens_with_auth_off_but_the_admin_apis_never_do(packaged, tmp_path):
    from mfn.servers.triton import launch as triton

    values = write_values(packaged, "triton", tmp_path, gpu=False, delivery="uri")
    documents = render(values, "auth.inference=false", "auth.secretName=my-keys")
    _, container = server_container(documents)
    only_admin = [f"{triton.ADMIN_APIS}:authorization=Bearer $(MFN_ADMIN_KEY)"]
    assert restricted(container) == {"--http-restricted-api": only_admin, "--grpc-restricted-protocol": only_admin}
    assert not [doc for doc in documents if doc["kind"] == "Secret"], "a given Secret is used, not generated"
    env = {item["name"]: item["valueFrom"]["secretKeyRef"] for item in container["env"] if "valueFrom" in item}
    assert env == {"MFN_ADMIN_KEY": {"name": "my-keys", "key": "admin"}}
    assert not any(arg.startswith("--key-env") for arg in container["readinessProbe"]["exec"]["command"])


def test_torchserve_token_authorization_is_on_by_default_and_follows_auth_inference(packaged, tmp_path):
    values = write_values(packaged, "torchserve", tmp_path, gpu=False, delivery="uri")
    assert config_properties(render(values))["disable_token_authorization"] == "false"
    assert config_properties(render(values, "auth.inference=false"))["disable_token_authorization"] == "true"
    assert not [doc for doc in render(values) if doc["kind"] == "Secret"]


@pytest.mark.parametrize("server", ["triton", "torchserve"])
def test_the_network_policy_is_on_by_default_and_admits_only_the_serving_ports(packaged, tmp_path, server):
    values = write_values(packaged, server, tmp_path, gpu=False, delivery="uri")
    (policy,) = [doc for doc in render(values) if doc["kind"] == "NetworkPolicy"]
    inference, metrics = policy["spec"]["ingress"]
    assert [port["port"] for port in inference["ports"]] == ["http", "grpc"]
    assert inference["from"] == [{"podSelector": {}}]
    assert [port["port"] for port in metrics["ports"]] == ["metrics"]
    assert metrics["from"] == [{"podSelector": {}},
                               {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    peers = [{"podSelector": {"matchLabels": {"app": "gateway"}}}]
    (policy,) = [doc for doc in render(values, "networkPolicy.from[0].podSelector.matchLabels.app=gateway",
                                       "networkPolicy.monitoringNamespace=") if doc["kind"] == "NetworkPolicy"]
    assert [rule["from"] for rule in policy["spec"]["ingress"]] == [peers, peers]
    assert not [doc for doc in render(values, "networkPolicy.enabled=false") if doc["kind"] == "NetworkPolicy"]


@pytest.mark.parametrize("server", ["triton", "torchserve"])
def test_pods_install_mfn_from_the_wheel_in_the_package_never_by_name(packaged, tmp_path, server):
    import hashlib

    from mfn.archiver.reading import read_member
    from mfn.environment import WHEEL_DIR, build_wheel_bytes, wheel_name

    values = write_values(packaged, server, tmp_path, gpu=False, delivery="uri")
    pod, _ = server_container(render(values))
    (init,) = [container for container in pod["initContainers"] if container["name"] == "build-env"]
    args = init["args"]
    source = "mlp/1" if server == "triton" else "text_stats.mar"
    digest = hashlib.sha256(build_wheel_bytes()).hexdigest()
    assert f"--wheel=/models/{source}:{WHEEL_DIR}/{wheel_name()}:{digest}" in args
    pins = args[args.index("--") + 1:]
    packaged_pins = read_member(packaged[server] / source, "requirements.txt").decode().split()
    assert pins == sorted(packaged_pins) and all("==" in pin for pin in pins)
    assert not [pin for pin in pins if re.match(r"mfn\b", pin, re.IGNORECASE)], "mfn must never be installed by name"
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in init["volumeMounts"]


def test_the_schema_refuses_mfn_by_name_from_an_index(packaged, tmp_path):
    values = write_values(packaged, "triton", tmp_path, gpu=False, delivery="uri")
    result = helm("template", "demo", str(chart_path()), "--values", values["__file__"],
                  "--set", "requirements.packages={mfn==0.1.0}")
    assert result.returncode != 0 and "/requirements/packages/0" in result.stderr, result.stderr


def test_a_package_without_this_mfns_wheel_is_refused_naming_it(packaged, tmp_path):
    import shutil

    from mfn.environment import WHEEL_DIR
    from mfn.errors import MfnError

    copy = tmp_path / "repo"
    shutil.copytree(packaged["triton"], copy)
    shutil.rmtree(copy / "mlp" / "1" / WHEEL_DIR)
    with pytest.raises(MfnError, match=r"mlp/1 carries no mfn .* wheel .*repackage"):
        values_for(copy, "demo", model_uri="https://x/y.tar.gz", pvc=None)


def test_undeploy_all_on_kubernetes_asks_the_cluster_instead_of_failing(monkeypatch, tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "nowhere",
        "clusters": [{"name": "nowhere", "cluster": {"server": "https://127.0.0.1:9"}}],
        "contexts": [{"name": "nowhere", "context": {"cluster": "nowhere", "user": "nobody"}}],
        "users": [{"name": "nobody", "user": {}}],
    }))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    result = CliRunner().invoke(cli, ["undeploy", "--all", "--target", "kubernetes"])
    # No cluster answers here: the command gets as far as asking helm for the releases, and says so in one line.
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert "helm list" in result.output and "127.0.0.1:9" in result.output


def test_the_values_file_documents_every_top_level_key_of_the_schema():
    defaults = yaml.safe_load((chart_path() / "values.yaml").read_text())
    schema = json.loads((chart_path() / "values.schema.json").read_text())
    # `global` is Helm's own, for parent charts: allowed, never set here.
    assert set(schema["properties"]) - {"global"} == set(defaults), "values.yaml and values.schema.json disagree on the keys"


def test_torchserve_pods_get_the_environment_local_deploys_use(packaged, tmp_path):
    from mfn.servers.torchserve import launch as torchserve

    values = write_values(packaged, "torchserve", tmp_path, gpu=False, delivery="uri")
    _, container = server_container(render(values))
    env = {item["name"]: item["value"] for item in container["env"] if "value" in item}
    assert torchserve.server_settings("/tmp", "/tmp/logs").items() <= env.items()


@pytest.mark.parametrize("server", ["triton", "torchserve"])
def test_pods_get_resources_and_a_bounded_shm_from_the_packages(packaged, tmp_path, server):
    from mfn.kubernetes.values import BASE_MEMORY_MIB, SHM_FLOOR_MIB

    values = write_values(packaged, server, tmp_path, gpu=False, delivery="uri")
    pod, container = server_container(render(values))
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    memory = int(requests["memory"].removesuffix("Mi"))
    assert memory > BASE_MEMORY_MIB and limits["memory"] == f"{2 * memory}Mi" and int(requests["cpu"]) >= 1
    (shm,) = [volume for volume in pod["volumes"] if volume["name"] == "shm"]
    assert shm["emptyDir"]["medium"] == "Memory" and int(shm["emptyDir"]["sizeLimit"].removesuffix("Mi")) >= SHM_FLOOR_MIB
    # Values given at install replace mfn's.
    _, container = server_container(render(values, "resources.requests.memory=3Gi"))
    assert container["resources"]["requests"]["memory"] == "3Gi"


def test_gpu_pods_tolerate_the_gpu_taint_and_cpu_pods_do_not(packaged, tmp_path):
    values = write_values(packaged, "triton", tmp_path, gpu=True, delivery="uri")
    pod, _ = server_container(render(values, "gpu.nodeSelector.accelerator=h100"))
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["nodeSelector"] == {"accelerator": "h100"}
    values = write_values(packaged, "triton", tmp_path, gpu=False, delivery="uri")
    pod, _ = server_container(render(values, "gpu.nodeSelector.accelerator=h100"))
    assert "tolerations" not in pod and "nodeSelector" not in pod


def test_the_model_download_installs_nothing_and_streams(tmp_path):
    script = chart_path() / "files" / "fetch_model.py"
    # Installing anything would take a subprocess; streaming is copyfileobj's chunks.
    assert "subprocess" not in script.read_text() and "copyfileobj" in script.read_text()
    # Without fsspec in the image (-S: no site-packages), s3:// is refused with what to do, before any download.
    result = subprocess.run([sys.executable, "-S", str(script)], env={"MODEL_URI": "s3://bucket/models.tar.gz"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "needs fsspec and s3fs in models.fetchImage" in result.stderr
    assert "presigned https:// URL" in result.stderr


@pytest.mark.parametrize("server", ["triton", "torchserve"])
def test_a_streaming_model_renders_validates_and_is_probed_by_name(tmp_path, server):
    from tests.conftest import HANDLERS

    mfn.package(f"{HANDLERS / 'streamer.py'}:Streamer", tmp_path / server, server=server)
    values = write_values({server: tmp_path / server}, server, tmp_path, gpu=False, delivery="uri")
    documents = render(values)
    for document in documents:
        if document["kind"] not in CRD_KINDS:
            kubernetes_validate.validate(document, KUBERNETES_VERSIONS[-1], strict=True)
    _, container = server_container(documents)
    assert "--model=streamer" in container["readinessProbe"]["exec"]["command"]


# Paths Knative refuses as volume mounts (its validation's reserved paths).
KNATIVE_RESERVED_PATHS = {"/", "/dev", "/dev/log", "/tmp", "/var", "/var/log"}


@pytest.mark.parametrize("server", ["triton", "torchserve"])
def test_serverless_renders_one_knative_service_that_scales_to_zero_and_validates(packaged, tmp_path, server):
    values = write_values(packaged, server, tmp_path, gpu=False, delivery="uri")
    documents = render(values, "serverless.enabled=true", "serverless.idleTimeout=90s", "serverless.holdTimeout=300")
    kinds = sorted((doc["apiVersion"], doc["kind"]) for doc in documents)
    expected = [("networking.k8s.io/v1", "NetworkPolicy"), ("serving.knative.dev/v1", "Service"), ("v1", "ConfigMap")]
    assert kinds == sorted(expected + ([("v1", "Secret")] if server == "triton" else []))
    service = next(doc for doc in documents if doc["kind"] == "Service")
    validate_custom_resource(service)
    for document in documents:
        if document is not service:
            for version in KUBERNETES_VERSIONS:
                kubernetes_validate.validate(document, version, strict=True)
    template = service["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/min-scale"] == "0"
    assert annotations["autoscaling.knative.dev/metric"] == "concurrency"
    assert annotations["autoscaling.knative.dev/target"] == str(values["concurrency"]["fromPackages"])
    assert annotations["autoscaling.knative.dev/scale-to-zero-pod-retention-period"] == "90s"
    spec = template["spec"]
    assert spec["timeoutSeconds"] == 300
    # One port in the pod, named h2c so gRPC (HTTP/2) reaches it; the server's container has none.
    ported = [container for container in spec["containers"] if container.get("ports")]
    assert [container["name"] for container in ported] == ["mux"]
    assert ported[0]["ports"] == [{"name": "h2c", "containerPort": 8080}]
    server_container = next(container for container in spec["containers"] if container["name"] == server)
    # Ready only once every model answers its sample request (setup and warm-up done); no hooks Knative refuses.
    assert server_container["readinessProbe"]["exec"]["command"][:3] == ["python3", "-m", "mfn.kubernetes.probe"]
    assert "startupProbe" not in server_container and "lifecycle" not in server_container
    assert server_container["livenessProbe"]["initialDelaySeconds"] >= 600
    mounts = [mount["mountPath"] for container in spec["containers"] + spec["initContainers"] for mount in container["volumeMounts"]]
    assert not set(mounts) & KNATIVE_RESERVED_PATHS
    caddyfile = next(doc for doc in documents if doc["kind"] == "ConfigMap")["data"]["Caddyfile"]
    assert f"reverse_proxy @grpc h2c://127.0.0.1:{values['ports']['grpc']}" in caddyfile
    assert f"reverse_proxy 127.0.0.1:{values['ports']['http']}" in caddyfile
    policy = next(doc for doc in documents if doc["kind"] == "NetworkPolicy")
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": 8080, "protocol": "TCP"}]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "knative-serving"}}} in policy["spec"]["ingress"][0]["from"]


@pytest.mark.parametrize(("assignment", "message"), [
    ("keda.enabled=true", "Knative scales the pods itself"),
    ("autoscaling.enabled=true", "Knative scales the pods itself"),
    ("metrics.serviceMonitor.enabled=true", "Knative owns the Services"),
])
def test_serverless_refuses_other_scalers_and_service_monitors(packaged, tmp_path, assignment, message):
    values = write_values(packaged, "triton", tmp_path, gpu=False, delivery="uri")
    result = helm("template", "demo", str(chart_path()), "--values", values["__file__"], "--set", "serverless.enabled=true",
                  "--set", assignment, "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor")
    assert result.returncode != 0 and message in result.stderr


def test_the_schema_accepts_only_the_knative_engine(packaged, tmp_path):
    values = write_values(packaged, "triton", tmp_path, gpu=False, delivery="uri")
    result = helm("template", "demo", str(chart_path()), "--values", values["__file__"], "--set", "serverless.enabled=true",
                  "--set", "serverless.engine=keda-http")
    assert result.returncode != 0 and "/serverless/engine': value must be 'knative'" in result.stderr


@pytest.mark.parametrize("server", ["triton", "torchserve"])
def test_autoscaling_follows_requests_in_flight_per_replica(packaged, tmp_path, server):
    values = write_values(packaged, server, tmp_path, gpu=False, delivery="uri")
    # mlp: batches of 32 rows on 2 instances; text_stats: 16 rows on one (the example packages' declarations).
    assert values["concurrency"]["fromPackages"] == {"triton": 64, "torchserve": 16}[server]
    scaled = render(values, "keda.enabled=true")
    trigger = next(doc for doc in scaled if doc["kind"] == "ScaledObject")["spec"]["triggers"][0]["metadata"]
    assert trigger["threshold"] == str(values["concurrency"]["fromPackages"])
    assert "rate(mfn_inflight_request_seconds_total{" in trigger["query"] and 'namespace="serving"' in trigger["query"]
    queue = {"triton": "nv_inference_queue_duration_us", "torchserve": "ts_queue_latency_microseconds"}[server]
    assert queue in trigger["query"]
    hpa = next(doc for doc in render(values, "autoscaling.enabled=true", "concurrency.target=3") if doc["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["metrics"] == [{"type": "Pods", "pods": {"metric": {"name": "mfn_concurrency"},
                                                                 "target": {"type": "AverageValue", "averageValue": "3"}}}]
    with_cpu = render(values, "autoscaling.enabled=true", "autoscaling.targetCPUUtilizationPercentage=70")
    metrics = next(doc for doc in with_cpu if doc["kind"] == "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert [metric["type"] for metric in metrics] == ["Pods", "Resource"]


def test_keda_never_scales_to_zero(packaged, tmp_path):
    values = write_values(packaged, "triton", tmp_path, gpu=False, delivery="uri")
    result = helm("template", "demo", str(chart_path()), "--values", values["__file__"], "--set", "keda.enabled=true",
                  "--set", "keda.minReplicaCount=0")
    assert result.returncode != 0 and "minReplicaCount" in result.stderr


@pytest.mark.parametrize("server", ["triton", "torchserve"])
def test_a_redis_cache_takes_its_url_from_a_secret_and_a_local_one_sizes_tritons_cache(tmp_path, server):
    handler = f"{HANDLERS / 'counted.py'}:CountedFixed"
    mfn.package(handler, tmp_path / "store", server=server, name="local_cached", cache=mfn.Cache(kind="local", size_mb=16))
    mfn.package(handler, tmp_path / "store", server=server, name="redis_cached", cache=mfn.Cache(kind="redis"))
    values = values_for(tmp_path / "store", "demo", model_uri="https://models.example.com/store.tar.gz", pvc=None)
    assert values["cache"]["redisModels"] == {"redis_cached": False}
    path = tmp_path / "values.json"
    path.write_text(json.dumps(values))
    values["__file__"] = str(path)
    refused = helm("template", "demo", str(chart_path()), "--values", str(path))
    assert refused.returncode != 0
    assert "redis_cached caches answers in Redis and its package names no URL: set cache.redis.urlSecret.name" in refused.stderr
    documents = render(values, "cache.redis.urlSecret.name=redis-credentials")
    (deployment,) = [doc for doc in documents if doc["kind"] == "Deployment"]
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == server]
    assert {"name": "MFN_CACHE_REDIS_URL", "valueFrom": {"secretKeyRef": {"name": "redis-credentials", "key": "url"}}} \
        in container["env"]
    for document in documents:
        if document["kind"] in CRD_KINDS:
            validate_custom_resource(document)
        else:
            kubernetes_validate.validate(document, KUBERNETES_VERSIONS[-1], strict=True)
    if server == "triton":  # one server-wide cache, as big as the local caches together
        assert f"--cache-config=local,size={16 << 20}" in container["args"]
    # The pod asks for the memory the local cache may fill.
    mfn.package(handler, tmp_path / "uncached", server=server, name="local_cached", cache="off")
    mfn.package(handler, tmp_path / "uncached", server=server, name="redis_cached", cache=mfn.Cache(kind="redis"))
    uncached = values_for(tmp_path / "uncached", "demo", model_uri="https://models.example.com/store.tar.gz", pvc=None)
    memory = [int(v["resources"]["requests"]["memory"].removesuffix("Mi")) for v in (values, uncached)]
    assert memory[0] - memory[1] == 16, memory

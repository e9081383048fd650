"""Write JSON schemas for the custom resources the chart renders (ServiceMonitor, PrometheusRule, ScaledObject,
Knative's Service as KnativeService, Gateway API's HTTPRoute and GRPCRoute, Argo Rollouts' Rollout and
AnalysisTemplate).

They come from npm packages that carry each CRD's openAPIV3Schema as a JSON literal inside a
CommonJS module (pinned: later versions ship compiled validators instead). The schemas are made
strict (unknown fields rejected, like `kubernetes-validate --strict`), and OpenAPI's `nullable`
is turned into JSON Schema's null type. Used by `make setup` for the chart tests.
"""

import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SOURCES = {
    "@kubernetes-models/prometheus-operator@4.0.0": {
        "ServiceMonitor": "package/monitoring.coreos.com/v1/ServiceMonitor.js",
        "PrometheusRule": "package/monitoring.coreos.com/v1/PrometheusRule.js",
    },
    "@kubernetes-models/keda@0.3.2": {
        "ScaledObject": "package/keda.sh/v1alpha1/ScaledObject.js",
    },
    "@kubernetes-models/knative@2.1.0": {
        "KnativeService": "package/serving.knative.dev/v1/Service.js",
    },
    # The last release that ships schema literals; it has GRPCRoute only as v1alpha2, whose spec v1 kept.
    "@kubernetes-models/gateway-api@0.5.1": {
        "HTTPRoute": "package/gateway.networking.k8s.io/v1/HTTPRoute.js",
        "GRPCRoute": "package/gateway.networking.k8s.io/v1alpha2/GRPCRoute.js",
    },
    "@kubernetes-models/argo-rollouts@0.3.2": {
        "Rollout": "package/argoproj.io/v1alpha1/Rollout.js",
        "AnalysisTemplate": "package/argoproj.io/v1alpha1/AnalysisTemplate.js",
    },
}


def strict(node):
    """Reject unknown fields wherever the schema lists properties, and accept null where it says nullable."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: strict(value) for key, value in node.items()}
    if node.get("$ref", "").startswith("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"):
        return {"type": "object"}
    if node.pop("nullable", False) and "type" in node:
        node["type"] = [node["type"], "null"]
    # An empty property list stands for fields the CRD keeps as given (x-kubernetes-preserve-unknown-fields).
    if node.get("properties") and "additionalProperties" not in node:
        node["additionalProperties"] = False
    return node


def main(destination: Path) -> None:
    destination.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        for package, kinds in SOURCES.items():
            subprocess.run(["npm", "pack", package, "--pack-destination", scratch, "--silent"], check=True, capture_output=True)
        for tarball in Path(scratch).glob("*.tgz"):
            with tarfile.open(tarball) as archive:
                for package, kinds in SOURCES.items():
                    for kind, member in kinds.items():
                        if member in archive.getnames():
                            source = archive.extractfile(member).read().decode()
                            literal = re.search(r"^const schema = (\{.*?^\});$", source, re.S | re.M).group(1)
                            schema = strict(json.loads(literal))
                            (destination / f"{kind}.json").write_text(json.dumps(schema, indent=1, sort_keys=True))
    missing = [kind for kinds in SOURCES.values() for kind in kinds if not (destination / f"{kind}.json").exists()]
    if missing:
        sys.exit(f"schemas not found for {missing}")
    print(f"CRD schemas in {destination}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

"""mfn.Client finds local deployments through the resolver it is given: the address, key, versions and hints all
come from it, and a URL target asks it nothing."""

from __future__ import annotations

import pytest

import mfn
from mfn.client.versions import default_version, version_hint
from mfn.errors import MfnError
from mfn.local.resolver import Located


class Recorded:
    """A resolver over one made-up deployment, counting what the client asks."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def locate(self, model: str, deployment: str | None, protocol: str) -> Located:
        self.asked.append(f"locate {model} {deployment} {protocol}")
        if model != "mlp":
            raise MfnError(f"no running deployment serves model {model!r}")
        return Located(address="127.0.0.1:9", server="triton", read_key=lambda: "the-key", max_request_bytes=1024,
                       repository="/nowhere", deployment="made-up")

    def served_models(self, deployment: str) -> list[str] | None:
        return ["mlp"]

    def versions(self, deployment: str) -> dict[str, dict]:
        self.asked.append(f"versions {deployment}")
        return {"mlp": {"versions": [1, 2], "default_version": 1}}

    def packaged_versions(self, deployment: str, model: str) -> list[int] | None:
        return [1, 2, 3]

    def packaged_spec(self, deployment: str, model: str, version: int | None) -> None:
        return None


def test_a_local_endpoint_is_what_the_resolver_located_with_its_key_and_versions(empty_mfn_home):
    resolver = Recorded()
    with mfn.Client(protocol="grpc", resolver=resolver) as client:
        endpoint = client.endpoint("mlp")
        assert (endpoint.address, endpoint.server, endpoint.token(), endpoint.max_request_bytes) == ("127.0.0.1:9", "triton", "the-key", 1024)
        assert endpoint.local and endpoint.deployment == "made-up" and endpoint.source is resolver
        assert client.endpoint("mlp") is endpoint  # looked up once
        with pytest.raises(MfnError, match="no running deployment serves model 'other'"):
            client.endpoint("other")
    assert default_version(endpoint, "mlp") == 1  # the operator's older default, which Triton cannot choose
    assert version_hint("mlp", "Request for unknown model: 'mlp' version 3 is not at ready state", endpoint) == (
        "; mlp v3 is packaged but not loaded in made-up (it serves v1, v2; packaged, not loaded: v3 "
        "(`mfn load mlp --version 3` loads one)): `mfn load mlp --version 3` loads it")
    assert resolver.asked[:2] == ["locate mlp None grpc", "locate other None grpc"]
    assert not list(empty_mfn_home.iterdir())  # the records in $MFN_HOME were not read


def test_a_url_target_asks_the_resolver_nothing():
    resolver = Recorded()
    with mfn.Client("http://127.0.0.1:9", resolver=resolver) as client:
        endpoint = client.endpoint("mlp")
    assert (endpoint.address, endpoint.local, endpoint.source) == ("127.0.0.1:9", False, None)
    assert default_version(endpoint, "mlp") is None and resolver.asked == []

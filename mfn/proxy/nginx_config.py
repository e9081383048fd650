"""The rollout proxy's nginx configuration, rendered from one typed `ProxyConfig` by a pure function.

nginx stands in front of a deployment during and after a rollout (mfn.proxy.rollout): one HTTP and one gRPC
listener (HTTP/2, cleartext) route each request to the `primary` track (the deployment itself) or the `canary`
track (the new package) by the strategy, and every answer carries `X-Mfn-Track` naming the track that produced
it. Why nginx: of the proxies installable here it is the one with weighted and header routing, consistent
hashing and request mirroring for both HTTP and gRPC (`mirror`, with `grpc_pass` in the mirror location);
Caddy has no mirroring in its standard modules and HAProxy mirrors only HTTP, through an external agent.

Keys: callers present the proxy's own inference key; nginx checks it and speaks to each track with that track's
key, so tracks keep their own keys (TorchServe makes new ones at every start) and callers never need them.
Health (Triton's `/v2/health/*` and gRPC ServerLive/ServerReady/ModelReady, TorchServe's `/ping` and gRPC Ping)
stays open, as on the servers themselves.

Guard: in front of Triton's HTTP endpoint, nginx runs mfn/proxy/guard.js (njs) on each request's body
before passing it on: tritonserver 2.51 aborts on some bodies (shapes whose element count overflows memory, deep
JSON, gzip that expands without bound) and has no setting to refuse them. The guard answers those with a 4xx.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

STRATEGIES = ("canary", "blue-green", "ab", "shadow")
TRACK_HEADER = "X-Mfn-Track"
# The header each server reads a gRPC caller's key from (Triton prefixes a restricted protocol's header).
GRPC_KEY_HEADER = {"triton": "triton-grpc-protocol-authorization", "torchserve": "authorization"}
_HTTP_HEALTH = r"^/(v2/health/|ping$)"
_GRPC_HEALTH = r"^/(inference\.GRPCInferenceService/(ServerLive|ServerReady|ModelReady)|org\.pytorch\.serve\.grpc\.inference\.InferenceAPIsService/Ping)$"
_HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,64}")
# What a long prediction or stream may take between two bytes; the servers' own limits apply first.
READ_TIMEOUT_S = 3600
# A shadow copy must never cost its caller: nginx finishes a request (and serves the next one on its connection)
# only once its mirror has ended, so the mirror gives up on the shadow's answer, which nobody reads, almost at
# once. The shadow track still gets and runs the whole request. Its connections are bounded: past the bound a copy
# is dropped at once rather than queued, so a slow or failing shadow cannot take the connections callers need.
IDLE_HEADER_TIMEOUT_S = 10
KEEPALIVE_TIMEOUT_S = 30
SHADOW_CONNECT_TIMEOUT_MS = 500
SHADOW_SEND_TIMEOUT_MS = 1000
SHADOW_ANSWER_WAIT_MS = 50
SHADOW_MAX_CONNECTIONS = 32


@dataclass(frozen=True)
class Track:
    """Where one track's server listens, and the inference key it wants (None: it wants none)."""

    http: str  # host:port
    grpc: str
    key: str | None


@dataclass(frozen=True)
class Routing:
    """Which track answers a request.

    canary: `weight` percent of requests, at random, to the canary. blue-green: all to one track (`weight` 0 or
    100). ab: requests whose `header` equals `header_value` to the canary; without a value, `weight` percent of
    the header's values, hashed, so one caller's requests stay on one track. shadow: all to the primary, and a
    copy of each to the canary whose answer is dropped.
    """

    strategy: str
    weight: float = 0.0
    header: str | None = None
    header_value: str | None = None


@dataclass(frozen=True)
class Guard:
    """The njs module nginx loads and the guard script it runs (see the module's docstring)."""

    module: str
    script: str


@dataclass(frozen=True)
class ProxyConfig:
    server: str  # "triton" or "torchserve": the gRPC key header
    host: str
    http_port: int
    grpc_port: int
    key: str | None  # the callers' key; None leaves inference open, as the deployment's own servers do
    body_limit_bytes: int
    directory: str  # pid file, error log and nginx's temporary files
    primary: Track
    canary: Track | None
    routing: Routing
    # Started as root, nginx would run its workers as `nobody`, which cannot enter the route's private directory
    # (request bodies over the memory buffer are written there): name the user the servers run as instead.
    worker_user: str | None = None
    # Triton's HTTP endpoint only: TorchServe and gRPC refuse such bodies themselves.
    guard: Guard | None = None


def check_routing(routing: Routing, has_canary: bool) -> None:
    """Raises ValueError naming the field when `routing` cannot be rendered."""
    if routing.strategy not in STRATEGIES:
        raise ValueError(f"strategy {routing.strategy!r}: use one of {', '.join(STRATEGIES)}")
    if not 0 <= routing.weight <= 100 or round(routing.weight, 2) != routing.weight:
        raise ValueError(f"weight {routing.weight}: a percentage from 0 to 100, at most two decimals")
    if routing.strategy == "blue-green" and routing.weight not in (0, 100):
        raise ValueError(f"weight {routing.weight}: blue-green sends all traffic to one track (0 or 100)")
    if routing.strategy == "ab":
        if not routing.header or not _HEADER_NAME.fullmatch(routing.header):
            raise ValueError(f"header {routing.header!r}: A/B routing needs a header name (letters, digits, '-')")
        if routing.header_value is not None and not re.fullmatch(r"[\x21-\x7e]{1,256}", routing.header_value):
            raise ValueError(f"header value {routing.header_value!r}: printable characters without spaces or quotes")
        if routing.header_value is not None and any(c in routing.header_value for c in "\"'\\;{}$"):
            raise ValueError(f"header value {routing.header_value!r}: no quotes, '\\', ';', braces or '$'")
    if not has_canary and (routing.weight or routing.strategy == "shadow"):
        raise ValueError("no canary track to route to")


def render(config: ProxyConfig) -> str:
    """nginx.conf for `config`."""
    check_routing(config.routing, config.canary is not None)
    tracks = {"primary": config.primary, **({"canary": config.canary} if config.canary else {})}
    directory = config.directory
    lines = [
        "# Rendered by mfn (mfn.proxy.nginx_config); `mfn rollout` writes it again at every change.",
        *([f"load_module {config.guard.module};"] if config.guard else []),
        *([f"user {config.worker_user};"] if config.worker_user else []),
        "worker_processes 1;",
        f"pid {directory}/nginx.pid;",
        f"error_log {directory}/error.log warn;",
        "events { worker_connections 4096; }",
        "http {",
        "    access_log off;",
        "    server_tokens off;",
        # A connection that sends nothing, or idles after its answer, is closed soon: idle clients, which need no
        # key to connect, cost the proxy descriptors for seconds, not for ever.
        f"    client_header_timeout {IDLE_HEADER_TIMEOUT_S}s;",
        f"    keepalive_timeout {KEEPALIVE_TIMEOUT_S}s;",
        *(f"    {kind}_temp_path {directory}/temp/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")),
        f"    client_max_body_size {config.body_limit_bytes};",
        # Bodies up to this size stay in memory (a mirror needs the whole body; the guard reads it there).
        f"    client_body_buffer_size {config.body_limit_bytes if config.guard else '1m'};",
        *([f"    js_import mfn_guard from {config.guard.script};"] if config.guard else []),
        "    http2_max_concurrent_streams 1024;",
    ]
    for track, where in tracks.items():
        for protocol in ("http", "grpc"):
            lines.append(f"    upstream mfn_{protocol}_{track} {{ server {getattr(where, protocol)}; keepalive 64; }}")
    if config.routing.strategy == "shadow":
        for protocol in ("http", "grpc"):
            lines.append(f"    upstream mfn_{protocol}_shadow {{ server {getattr(config.canary, protocol)} "
                         f"max_conns={SHADOW_MAX_CONNECTIONS}; keepalive {SHADOW_MAX_CONNECTIONS}; }}")
    lines += [f"    {line}" for line in _choice(config.routing)]
    lines += [f"    {line}" for line in _keys(config, tracks)]
    lines += _server(config, "http")
    lines += _server(config, "grpc")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _choice(routing: Routing) -> list[str]:
    """`$mfn_track`: the track that answers this request."""
    variable = "$http_" + (routing.header or "").lower().replace("-", "_")  # A/B routes by a header (check_routing)
    if routing.strategy == "ab" and routing.header_value is not None:
        return [f"map {variable} $mfn_track {{ \"{routing.header_value}\" canary; default primary; }}"]
    if routing.strategy == "shadow" or routing.weight in (0, 100):
        return [f"map $request_id $mfn_track {{ default {'canary' if routing.weight == 100 and routing.strategy != 'shadow' else 'primary'}; }}"]
    if routing.strategy == "ab":  # sticky: the header's value decides; requests without it are spread at random
        key = [f"map {variable} $mfn_split_key {{ \"\" $request_id; default {variable}; }}"]
        return key + [f"split_clients \"$mfn_split_key\" $mfn_track {{ {routing.weight:g}% canary; * primary; }}"]
    return [f"split_clients \"$request_id\" $mfn_track {{ {routing.weight:g}% canary; * primary; }}"]


def _keys(config: ProxyConfig, tracks: dict[str, Track]) -> list[str]:
    """`$mfn_caller_ok_*`: the caller presented the proxy's key; `$mfn_track_key`: what the chosen track wants."""
    lines = ["map $mfn_track $mfn_track_key {"]
    lines += [f"    {track} \"{_bearer(where.key)}\";" for track, where in tracks.items()]
    lines.append("}")
    for protocol, header in (("http", "authorization"), ("grpc", GRPC_KEY_HEADER[config.server])):
        variable = "$http_" + header.replace("-", "_")
        accepted = f" \"{_bearer(config.key)}\" 1;" if config.key else ""
        lines.append(f"map {variable} $mfn_caller_ok_{protocol} {{{accepted} default {0 if config.key else 1}; }}")
    return lines


def _bearer(key: str | None) -> str:
    return f"Bearer {key}" if key else ""


def _server(config: ProxyConfig, protocol: str) -> list[str]:
    grpc = protocol == "grpc"
    port = config.grpc_port if grpc else config.http_port
    header = GRPC_KEY_HEADER[config.server] if grpc else "Authorization"
    health = _GRPC_HEALTH if grpc else _HTTP_HEALTH
    lines = ["    server {", f"        listen {config.host}:{port}{' http2' if grpc else ''};"]
    lines += [f"        location ~ \"{health}\" {{", *_pass(protocol, "$mfn_track", header, "$mfn_track_key"), "        }"]
    lines += ["        location / {",
              f"            if ($mfn_caller_ok_{protocol} = 0) {{ return 401 \"the proxy's inference key is missing or wrong\\n\"; }}"]
    if config.guard and not grpc:  # the guard passes what it accepts on to @mfn_pass
        lines += ["            js_content mfn_guard.check;", "        }", "        location @mfn_pass {"]
    shadowed = config.routing.strategy == "shadow" and config.canary is not None
    if shadowed:
        lines += ["            mirror /_mfn_shadow;", "            mirror_request_body on;"]
    lines += [*_pass(protocol, "$mfn_track", header, "$mfn_track_key"), "        }"]
    if shadowed:
        assert config.canary is not None
        canary_key = f"\"{_bearer(config.canary.key)}\""
        lines += ["        location = /_mfn_shadow {", "            internal;"]
        # The mirror subrequest's own URI is /_mfn_shadow: the original path goes upstream (gRPC's :path).
        lines += ["            rewrite ^ $request_uri break;"] if grpc else []
        lines += _shadow_pass(protocol, header, canary_key, config.directory)
        lines.append("        }")
    lines.append("    }")
    return lines


def _shadow_pass(protocol: str, header: str, key: str, directory: str) -> list[str]:
    """The mirror's way to the shadow track: bounded connections, and no waiting for its answer (see above)."""
    prefix = "grpc" if protocol == "grpc" else "proxy"
    lines = ["grpc_pass grpc://mfn_grpc_shadow;", f"grpc_set_header {header} {key};"] if protocol == "grpc" else [
        "proxy_pass http://mfn_http_shadow$request_uri;", "proxy_http_version 1.1;", "proxy_set_header Connection \"\";",
        f"proxy_set_header {header} {key};", "proxy_buffering off;"]
    lines += [f"{prefix}_connect_timeout {SHADOW_CONNECT_TIMEOUT_MS}ms;", f"{prefix}_send_timeout {SHADOW_SEND_TIMEOUT_MS}ms;",
              f"{prefix}_read_timeout {SHADOW_ANSWER_WAIT_MS}ms;",
              # Each copy given up on would log an error: only what the proxy cannot survive is logged here.
              f"error_log {directory}/error.log crit;"]
    return [" " * 12 + line for line in lines]


def _pass(protocol: str, track: str, header: str, key: str, timeout_s: int = READ_TIMEOUT_S, uri: str = "") -> list[str]:  # noqa: PLR0913
    indent = " " * 12
    if protocol == "grpc":
        lines = [f"grpc_pass grpc://mfn_grpc_{track};", f"grpc_set_header {header} {key};",
                 f"grpc_read_timeout {timeout_s}s;", f"grpc_send_timeout {timeout_s}s;"]
    else:
        lines = [f"proxy_pass http://mfn_http_{track}{uri};", "proxy_http_version 1.1;",
                 "proxy_set_header Connection \"\";", f"proxy_set_header {header} {key};",
                 # Streams (chunked, SSE) pass as they come; bodies are not held back either.
                 "proxy_buffering off;", f"proxy_read_timeout {timeout_s}s;", f"proxy_send_timeout {timeout_s}s;"]
    if track == "$mfn_track":
        lines.append(f"add_header {TRACK_HEADER} $mfn_track always;")
    return [indent + line for line in lines]

{{/* Names and labels follow the app.kubernetes.io conventions. */}}
{{- define "mfn.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "mfn.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mfn.labels" -}}
{{ include "mfn.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: {{ .Values.server }}
app.kubernetes.io/part-of: mfn
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The official image of the chosen server, GPU flavour when GPUs are requested. */}}
{{- define "mfn.image" -}}
{{- $repository := .Values.image.repository -}}
{{- $tag := .Values.image.tag -}}
{{- if eq .Values.server "triton" -}}
{{- $repository = default "nvcr.io/nvidia/tritonserver" $repository -}}
{{- $tag = default "24.10-py3" $tag -}}
{{- else -}}
{{- $repository = default "pytorch/torchserve" $repository -}}
{{- $tag = default (ternary "0.12.0-gpu" "0.12.0-cpu" (gt (int .Values.gpu.count) 0)) $tag -}}
{{- end -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}

{{/* The model probe's command line (mfn/kubernetes/probe.py); it runs in the server container. */}}
{{- define "mfn.probeCommand" -}}
- python3
- -m
- mfn.kubernetes.probe
- --server={{ .Values.server }}
- --port={{ .Values.ports.http }}
- --models-dir=/models
- --cache=/tmp/mfn-probe.json
- --timeout-s={{ .Values.probes.timeoutSeconds }}
{{- if eq .Values.server "torchserve" }}
{{- /* TorchServe writes its keys into its working directory when token authorization is on. */}}
- --key-file=/tmp/key_file.json
{{- else if .Values.auth.inference }}
- --key-env=MFN_INFERENCE_KEY
{{- end }}
{{- range .Values.models.names }}
- --model={{ . }}
{{- end }}
{{- end -}}

{{/* The preStop hook: keep serving while endpoints are removed; TorchServe is then drained and stopped here. */}}
{{- define "mfn.preStopCommand" -}}
{{- if eq .Values.server "triton" -}}
- sleep
- {{ .Values.preStopDelaySeconds | quote }}
{{- else -}}
- sh
- -c
- >-
  sleep {{ .Values.preStopDelaySeconds }};
  python3 -m mfn.kubernetes.drain --metrics-port={{ .Values.ports.metrics }} --timeout-s={{ .Values.drainTimeoutSeconds }};
  python3 -m ts.model_server --stop --foreground
{{- end -}}
{{- end -}}

{{- define "mfn.authSecret" -}}
{{- default (printf "%s-keys" (include "mfn.fullname" .)) .Values.auth.secretName -}}
{{- end -}}

{{/* Requests in flight per replica that autoscaling aims at. */}}
{{- define "mfn.targetConcurrency" -}}
{{- .Values.concurrency.target | default .Values.concurrency.fromPackages -}}
{{- end }}

{{/*
The release's average requests in flight over the last minute, from Prometheus: time in the model's hands
(mfn_inflight_request_seconds_total) plus time in the server's queue, as rates (Little's law). The second form
covers a server that has no queue series yet.
*/}}
{{- define "mfn.concurrencyQuery" -}}
{{- $selector := printf "namespace=%q, pod=~%q" .Release.Namespace (printf "%s-.*" (include "mfn.fullname" .)) -}}
{{- $inFlight := printf "sum(rate(mfn_inflight_request_seconds_total{%s}[1m]))" $selector -}}
{{- $queueMetric := ternary "nv_inference_queue_duration_us" "ts_queue_latency_microseconds" (eq .Values.server "triton") -}}
{{- $queue := printf "sum(rate(%s{%s}[1m])) / 1e6" $queueMetric $selector -}}
{{- printf "(%s + %s) or %s" $inFlight $queue $inFlight -}}
{{- end }}

{{/* The serverless pod's one serving port: Caddy, HTTP/1.1 and h2c, in front of the server's two ports. */}}
{{- define "mfn.muxContainer" -}}
name: mux
image: {{ .Values.serverless.muxImage }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
command: [caddy, run, --config, /config/Caddyfile, --adapter, caddyfile]
ports:
  - {name: h2c, containerPort: {{ .Values.serverless.port }}}
env:
  - {name: HOME, value: /tmp}
  - {name: XDG_CONFIG_HOME, value: /tmp}
  - {name: XDG_DATA_HOME, value: /tmp}
resources:
  {{- toYaml .Values.serverless.muxResources | nindent 2 }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
volumeMounts:
  - {name: scripts, mountPath: /config, readOnly: true}
{{- end }}

{{/* Caddy's configuration for the mux: gRPC by content type to the gRPC port, the rest to the HTTP port. */}}
{{- define "mfn.muxConfig" -}}
{
	admin off
	persist_config off
	auto_https off
	servers {
		protocols h1 h2c
	}
}
:{{ .Values.serverless.port }} {
	@grpc header Content-Type application/grpc*
	reverse_proxy @grpc h2c://127.0.0.1:{{ .Values.ports.grpc }}
	reverse_proxy 127.0.0.1:{{ .Values.ports.http }} {
		flush_interval -1
	}
}
{{- end }}

{{/* One track's backendRef in a Gateway API route; every answer names the track that produced it. */}}
{{- define "mfn.trackBackend" -}}
- name: {{ .service }}
  port: {{ .port }}
  weight: {{ .weight }}
  filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{name: X-Mfn-Track, value: {{ .track }}}]
{{- end -}}

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

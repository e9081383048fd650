{{/* The Deployment; the Knative Service (serverless) takes its pod template from it. */}}
{{- define "mfn.deployment" -}}
{{- if not .Values.command }}
{{- fail "command is empty: deploy with `mfn deploy PATH --target kubernetes`, which writes the server command line" }}
{{- end }}
{{- if not .Values.models.names }}
{{- fail "models.names is empty: deploy with `mfn deploy PATH --target kubernetes`, which lists the models the probes check" }}
{{- end }}
{{- if and (not .Values.models.uri) (not .Values.models.pvc.claimName) }}
{{- fail "models.uri or models.pvc.claimName must say where the packaged models come from" }}
{{- end }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "mfn.fullname" . }}
  labels:
    {{- include "mfn.labels" . | nindent 4 }}
spec:
  {{- if not (or .Values.autoscaling.enabled .Values.keda.enabled) }}
  {{- /* With Argo Rollouts, the Rollout runs this template's pods (workloadRef). */}}
  replicas: {{ if and .Values.rollout.enabled (eq .Values.rollout.engine "argo") }}0{{ else }}{{ .Values.replicaCount }}{{ end }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "mfn.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "mfn.labels" . | nindent 8 }}
        {{- with .Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
        {{- if .Values.metrics.scrapeAnnotations }}
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ .Values.ports.metrics | quote }}
        prometheus.io/path: /metrics
        {{- end }}
        {{- with .Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      automountServiceAccountToken: false
      {{- /*
      Stopping a pod, in order:
       1. The pod is marked for deletion: Services and load balancers start removing its endpoints, and
          at the same time the kubelet runs the preStop hook.
       2. The hook first sleeps preStopDelaySeconds, so requests routed before the removal took effect
          still find a serving server.
       3. Triton: the hook returns and the kubelet sends SIGTERM; Triton lets requests in flight finish
          for up to drainTimeoutSeconds (its --exit-timeout-secs), then exits.
          TorchServe has no drain of its own (on SIGTERM it closes every connection) and, started by
          Python as PID 1, would not even see SIGTERM: the hook waits until no request arrives or
          finishes (at most drainTimeoutSeconds), then stops the server itself.
       4. The kubelet kills what is left when the grace period ends: the delay, the drain timeout and a
          margin for the server's own shutdown.
      */}}
      terminationGracePeriodSeconds: {{ add .Values.preStopDelaySeconds .Values.drainTimeoutSeconds 15 }}
      {{- with .Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml .Values.podSecurityContext | nindent 8 }}
      initContainers:
        {{- if .Values.models.uri }}
        - name: fetch-model
          image: {{ .Values.models.fetchImage }}
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          command: [python3, /scripts/fetch_model.py]
          env:
            - name: MODEL_URI
              value: {{ .Values.models.uri | quote }}
            - name: HOME
              value: /tmp
          {{- with .Values.models.credentialsSecret }}
          envFrom:
            - secretRef:
                name: {{ . }}
          {{- end }}
          securityContext:
            {{- toYaml .Values.securityContext | nindent 12 }}
          volumeMounts:
            - {name: models, mountPath: /models}
            - {name: scripts, mountPath: /scripts, readOnly: true}
            - {name: tmp, mountPath: /tmp}
        {{- end }}
        {{- if .Values.models.verify }}
        {{- if not .Values.models.manifests }}
        {{- fail "models.manifests is empty: deploy with `mfn deploy PATH --target kubernetes`, which records them, or set models.verify=false" }}
        {{- end }}
        {{- /* The packages as fetched (or on the PVC) against the manifests mfn verified before the install. */}}
        - name: verify-models
          image: {{ .Values.models.fetchImage }}
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          command: [python3, /scripts/manifest.py, /models]
          args:
            {{- range .Values.models.manifests }}
            - {{ printf "%s=%s" .path .sha256 | quote }}
            {{- end }}
          env:
            - {name: PYTHONDONTWRITEBYTECODE, value: "1"}
          securityContext:
            {{- toYaml .Values.securityContext | nindent 12 }}
          volumeMounts:
            - {name: models, mountPath: /models, readOnly: true{{ with .Values.models.pvc.subPath }}, subPath: {{ . }}{{ end }}}
            - {name: scripts, mountPath: /scripts, readOnly: true}
        {{- end }}
        {{- if ne .Values.requirements.mode "image" }}
        {{- with .Values.requirements.wheel }}
        {{- if not .from }}
        {{- fail "requirements.wheel is empty: no model in this release carries mfn's wheel (repackage with `mfn package`), or set requirements.mode=image with an image that has mfn" }}
        {{- end }}
        {{- end }}
        - name: build-env
          image: {{ include "mfn.image" . }}
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          command: [python3, /scripts/build_env.py]
          args:
            - --mode={{ .Values.requirements.mode }}
            - --env-dir=/env
            - --scratch=/tmp
            {{- with .Values.requirements.wheel }}
            - --wheel=/models/{{ .from }}:{{ .member }}:{{ .sha256 }}
            {{- end }}
            {{- if eq .Values.requirements.mode "bundle" }}
            {{- if not .Values.requirements.environments }}
            {{- fail "requirements.mode=bundle needs environments: package with `mfn package --bundle-env`" }}
            {{- end }}
            {{- range .Values.requirements.environments }}
            - --environment=/models/{{ .from }}:{{ .member }}:{{ .sha256 }}
            {{- end }}
            {{- else }}
            - --
            {{- range concat .Values.requirements.pipArgs .Values.requirements.packages }}
            - {{ . | quote }}
            {{- end }}
            {{- end }}
          env:
            - {name: HOME, value: /tmp}
          securityContext:
            {{- toYaml .Values.securityContext | nindent 12 }}
          volumeMounts:
            - {name: env, mountPath: /env}
            - {name: models, mountPath: /models, readOnly: true{{ with .Values.models.pvc.subPath }}, subPath: {{ . }}{{ end }}}
            - {name: scripts, mountPath: /scripts, readOnly: true}
            - {name: tmp, mountPath: /tmp}
        {{- end }}
      containers:
        - name: {{ .Values.server }}
          image: {{ include "mfn.image" . }}
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          workingDir: /tmp
          command:
            {{- toYaml .Values.command | nindent 12 }}
          {{- /* The chart's drain timeout replaces the one mfn wrote, so --set drainTimeoutSeconds=N holds. */}}
          {{- $args := list }}
          {{- range .Values.args }}
          {{- $args = append $args (ternary (printf "--exit-timeout-secs=%d" (int $.Values.drainTimeoutSeconds)) . (hasPrefix "--exit-timeout-secs=" .)) }}
          {{- end }}
          {{- /* Kubernetes puts the keys into $(MFN_...) from the container's environment. */}}
          {{- if eq .Values.server "triton" }}
          {{- $restricted := list (printf "%s:authorization=Bearer $(MFN_ADMIN_KEY)" .Values.triton.adminApis) }}
          {{- if .Values.auth.inference }}
          {{- $restricted = append $restricted (printf "%s:authorization=Bearer $(MFN_INFERENCE_KEY)" .Values.triton.inferenceApis) }}
          {{- end }}
          {{- range $restricted }}
          {{- $args = concat $args (list (printf "--http-restricted-api=%s" .) (printf "--grpc-restricted-protocol=%s" .)) }}
          {{- end }}
          {{- end }}
          {{- with $args }}
          args:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          env:
            {{- if ne .Values.requirements.mode "image" }}
            - name: PATH
              value: /env/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin{{ if eq .Values.server "torchserve" }}:/home/venv/bin{{ end }}
            {{- end }}
            - {name: HOME, value: /tmp}
            {{- if eq .Values.server "torchserve" }}
            {{- /* TorchServe's settings, written by mfn from the same function local deploys use. */}}
            {{- range $name, $value := .Values.torchserve.env }}
            - {name: {{ $name }}, value: {{ $value | quote }}}
            {{- end }}
            {{- else }}
            - {name: TMPDIR, value: /tmp}
            - {name: PYTHONDONTWRITEBYTECODE, value: "1"}
            {{- end }}
            {{- if eq .Values.server "triton" }}
            {{- range $key := ternary (list "admin" "inference") (list "admin") .Values.auth.inference }}
            - name: MFN_{{ upper $key }}_KEY
              valueFrom:
                secretKeyRef:
                  name: {{ include "mfn.authSecret" $ }}
                  key: {{ $key }}
            {{- end }}
            {{- end }}
            {{- with .Values.cache.redis.urlSecret }}
            {{- if .name }}
            - name: MFN_CACHE_REDIS_URL
              valueFrom:
                secretKeyRef: {name: {{ .name | quote }}, key: {{ .key | quote }}}
            {{- else }}
            {{- range $model, $packagedUrl := $.Values.cache.redisModels }}
            {{- if not $packagedUrl }}
            {{- fail (printf "%s caches answers in Redis and its package names no URL: set cache.redis.urlSecret.name to a Secret holding the URL" $model) }}
            {{- end }}
            {{- end }}
            {{- end }}
            {{- end }}
            {{- with .Values.env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            - {name: http, containerPort: {{ .Values.ports.http }}, protocol: TCP}
            - {name: grpc, containerPort: {{ .Values.ports.grpc }}, protocol: TCP}
            - {name: metrics, containerPort: {{ .Values.ports.metrics }}, protocol: TCP}
          {{- /*
          Every probe sends each model a sample request (mfn.kubernetes.probe): the servers' health
          endpoints answer 200 while a model's Python stub or worker is dead. Startup allows for slow
          model loads; readiness takes the pod out of Services within seconds of a model failing;
          liveness restarts it only when a model stays unable to answer far longer than a worker
          restart or reload takes. The kubelet's timeout adds time for the interpreter to start.
          */}}
          {{- $probeTimeout := add .Values.probes.timeoutSeconds 5 }}
          startupProbe:
            exec:
              command:
                {{- include "mfn.probeCommand" . | nindent 16 }}
            timeoutSeconds: {{ $probeTimeout }}
            periodSeconds: {{ .Values.probes.startup.periodSeconds }}
            failureThreshold: {{ .Values.probes.startup.failureThreshold }}
          readinessProbe:
            exec:
              command:
                {{- include "mfn.probeCommand" . | nindent 16 }}
            timeoutSeconds: {{ $probeTimeout }}
            periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
            failureThreshold: {{ .Values.probes.readiness.failureThreshold }}
          livenessProbe:
            exec:
              command:
                {{- include "mfn.probeCommand" . | nindent 16 }}
            timeoutSeconds: {{ $probeTimeout }}
            periodSeconds: {{ .Values.probes.liveness.periodSeconds }}
            failureThreshold: {{ .Values.probes.liveness.failureThreshold }}
          lifecycle:
            preStop:
              exec:
                command:
                  {{- include "mfn.preStopCommand" . | nindent 18 }}
          resources:
            {{- $resources := deepCopy .Values.resources }}
            {{- if gt (int .Values.gpu.count) 0 }}
            {{- $limits := merge (dict "nvidia.com/gpu" (int .Values.gpu.count)) (default (dict) $resources.limits) }}
            {{- $_ := set $resources "limits" $limits }}
            {{- end }}
            {{- toYaml $resources | nindent 12 }}
          securityContext:
            {{- toYaml .Values.securityContext | nindent 12 }}
          volumeMounts:
            - {name: models, mountPath: /models, readOnly: true{{ with .Values.models.pvc.subPath }}, subPath: {{ . }}{{ end }}}
            - {name: tmp, mountPath: /tmp}
            - {name: shm, mountPath: /dev/shm}
            {{- if ne .Values.requirements.mode "image" }}
            - {name: env, mountPath: /env, readOnly: true}
            {{- end }}
            {{- if eq .Values.server "torchserve" }}
            - {name: scripts, mountPath: /config, readOnly: true}
            {{- end }}
      volumes:
        {{- if .Values.models.pvc.claimName }}
        - name: models
          persistentVolumeClaim:
            claimName: {{ .Values.models.pvc.claimName }}
            readOnly: true
        {{- else }}
        - name: models
          emptyDir: {}
        {{- end }}
        - name: scripts
          configMap:
            name: {{ include "mfn.fullname" . }}
        - name: tmp
          emptyDir: {}
        {{- /* Memory-backed, so bounded: what it holds counts against the pod's memory. */}}
        - name: shm
          emptyDir:
            medium: Memory
            sizeLimit: {{ .Values.shmSizeLimit }}
        {{- if ne .Values.requirements.mode "image" }}
        - name: env
          emptyDir: {}
        {{- end }}
      {{- $onGpu := gt (int .Values.gpu.count) 0 }}
      {{- with merge (deepCopy .Values.nodeSelector) (ternary .Values.gpu.nodeSelector (dict) $onGpu) }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with concat .Values.tolerations (ternary .Values.gpu.tolerations (list) $onGpu) }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}

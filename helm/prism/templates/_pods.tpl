{{/*
The Ray pods' templates (the head's and each worker group's), and what the chart's other
pods share with them: the scratch volumes of a read-only root filesystem, sidecars.
Pod-level helpers take (dict "root" $ "group" <head or a worker group> "head" <bool>).
*/}}

{{/* The emptyDirs behind a read-only root filesystem: /tmp, and the image's writable directories. */}}
{{- define "prism.scratchVolumes" -}}
- name: tmp
  emptyDir:
    {{- with .Values.scratch.tmpSizeLimit }}
    sizeLimit: {{ . }}
    {{- else }} {}
    {{- end }}
{{- if .Values.scratch.writableDirs }}
- name: cache
  emptyDir: {}
{{- end }}
{{- end -}}

{{- define "prism.scratchMounts" -}}
- name: tmp
  mountPath: /tmp
{{- range .Values.scratch.writableDirs }}
- name: cache
  mountPath: {{ . }}
  subPath: {{ trimPrefix "/" . | replace "/" "_" }}
{{- end }}
{{- end -}}

{{/* Extra containers; one that brings no securityContext gets the chart's. */}}
{{- define "prism.sidecars" -}}
{{- $default := .default -}}
{{- range .sidecars }}
{{- $sidecar := deepCopy . }}
{{- if not (hasKey $sidecar "securityContext") }}
{{- $_ := set $sidecar "securityContext" $default }}
{{- end }}
- {{ toYaml $sidecar | nindent 2 | trim }}
{{- end }}
{{- end -}}

{{/* The environment of a Ray container: Prism's settings and secrets, then the extras. */}}
{{- define "prism.env" -}}
{{- $root := .root -}}
- name: PYTHONUNBUFFERED
  value: "1"
# Serve's proxies and replicas run handle routers and replica code on Serve's own event
# loop (docs/architecture.md, "Serving path latency").
- name: RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD
  value: "0"
- name: RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP
  value: "0"
{{- if include "prism.redisSecret" $root }}
- name: PRISM_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "prism.redisSecret" $root }}
      key: {{ include "prism.redisSecretKey" $root }}
{{- end }}
{{- if include "prism.apiKeySecret" $root }}
- name: PRISM_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "prism.apiKeySecret" $root }}
      key: {{ include "prism.apiKeySecretKey" $root }}
{{- end }}
{{- if .head }}
{{- include "prism.monitoringEnv" $root }}
{{- end }}
{{- with $root.Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- with .group.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Where the Ray dashboard finds Grafana and Prometheus (head only). */}}
{{- define "prism.monitoringEnv" -}}
{{- with .Values.monitoring.grafana.host }}
- name: RAY_GRAFANA_HOST
  value: {{ . | quote }}
- name: RAY_GRAFANA_IFRAME_HOST
  value: {{ default . $.Values.monitoring.grafana.iframeHost | quote }}
{{- end }}
{{- with .Values.monitoring.grafana.orgId }}
- name: RAY_GRAFANA_ORG_ID
  value: {{ . | quote }}
{{- end }}
{{- with .Values.monitoring.prometheus.host }}
- name: RAY_PROMETHEUS_HOST
  value: {{ . | quote }}
{{- end }}
{{- with .Values.monitoring.prometheus.name }}
- name: RAY_PROMETHEUS_NAME
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{/*
Volumes of a Ray pod: shared memory, the scratch emptyDirs, the model cache, the extras.
The head mounts the cache too: Serve may place an ingress replica (no CPUs) there, which
loads the tokenizer.
*/}}
{{- define "prism.volumes" -}}
{{- $root := .root -}}
- name: shm
  emptyDir:
    medium: Memory
    sizeLimit: {{ $root.Values.sharedMemory.sizeLimit }}
{{ include "prism.scratchVolumes" $root }}
- name: models
{{- if include "prism.modelCacheClaim" $root }}
  persistentVolumeClaim:
    claimName: {{ include "prism.modelCacheClaim" $root }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- with $root.Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- with .group.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The Ray container's mounts; the model cache is read-only (downloads happen elsewhere). */}}
{{- define "prism.volumeMounts" -}}
{{- $root := .root -}}
- name: shm
  mountPath: /dev/shm
{{ include "prism.scratchMounts" $root }}
- name: models
  mountPath: {{ $root.Values.modelCache.mountPath }}
  readOnly: true
{{- with $root.Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- with .group.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "prism.probeTiming" -}}
initialDelaySeconds: {{ .initialDelaySeconds }}
periodSeconds: {{ .periodSeconds }}
timeoutSeconds: {{ .timeoutSeconds }}
failureThreshold: {{ .failureThreshold }}
{{- end -}}

{{/*
Probes of a Ray container. Readiness of a worker: its own Serve proxy (GET /-/healthz on
the HTTP port). Readiness of the head, and liveness of both: the dashboard agent's
/api/healthz (the raylet; on the head also the GCS). Set here, so KubeRay injects none.
*/}}
{{- define "prism.probes" -}}
{{- $root := .root -}}
{{- $agentPort := int (default "52365" (index (default dict .group.rayStartParams) "dashboard-agent-listen-port")) -}}
readinessProbe:
  {{- if .head }}
  httpGet: {path: /api/healthz, port: {{ $agentPort }}}
  {{- include "prism.probeTiming" $root.Values.probes.headReadiness | nindent 2 }}
  {{- else }}
  httpGet: {path: /-/healthz, port: {{ $root.Values.service.httpPort }}}
  {{- include "prism.probeTiming" $root.Values.probes.workerReadiness | nindent 2 }}
  {{- end }}
livenessProbe:
  httpGet: {path: /api/healthz, port: {{ $agentPort }}}
  {{- include "prism.probeTiming" $root.Values.probes.liveness | nindent 2 }}
{{- end -}}

{{/* A worker group's container resources, with its GPUs as nvidia.com/gpu. */}}
{{- define "prism.workerResources" -}}
{{- $resources := deepCopy (default dict .resources) -}}
{{- if gt (int .gpus) 0 -}}
{{- $limits := default dict $resources.limits -}}
{{- $_ := set $limits "nvidia.com/gpu" (int .gpus) -}}
{{- $_ := set $resources "limits" $limits -}}
{{- end -}}
{{- toYaml $resources -}}
{{- end -}}

{{/*
The init containers of a Ray pod. downloadMode job: wait until the download Job has left
its marker on the model cache volume. perPod: download into this pod's volume.
*/}}
{{- define "prism.rayInitContainers" -}}
{{- $root := .root -}}
{{- with $root.Values.huggingFace -}}
{{- if .download -}}
{{- if eq .downloadMode "job" }}
- name: wait-for-models
  image: {{ include "prism.image" $root }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  command: ["/bin/sh", "-ec"]
  args:
    - |
      until [ -f {{ include "prism.downloadMarker" $root | quote }} ]; do
        echo "waiting for the model download Job to finish ({{ include "prism.downloadMarker" $root }})"
        sleep 10
      done
  resources:
    {{- toYaml .waitResources | nindent 4 }}
  securityContext:
    {{- toYaml $root.Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: models
      mountPath: {{ $root.Values.modelCache.mountPath }}
      readOnly: true
{{- else }}
- name: download-models
  image: {{ include "prism.image" $root }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  command: ["/bin/sh", "-ec"]
  args:
    - |
      {{- include "prism.downloadScript" $root | trim | nindent 6 }}
  env:
    {{- include "prism.downloadEnv" $root | nindent 4 }}
  resources:
    {{- toYaml .resources | nindent 4 }}
  securityContext:
    {{- toYaml $root.Values.securityContext | nindent 4 }}
  volumeMounts:
    {{- include "prism.scratchMounts" $root | nindent 4 }}
    - name: models
      mountPath: {{ $root.Values.modelCache.mountPath }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* A Ray pod's template: the head's (head: true) or a worker group's. */}}
{{- define "prism.rayPodTemplate" -}}
{{- $root := .root -}}
{{- $group := .group -}}
{{- $values := $root.Values -}}
metadata:
  labels:
    {{- include "prism.labels" $root | nindent 4 }}
    {{- if .head }}
    app.kubernetes.io/component: ray-head
    {{- else }}
    app.kubernetes.io/component: ray-worker
    prism.dev/worker-group: {{ $group.name }}
    {{- end }}
    {{- with $group.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $group.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- with include "prism.serviceAccountName" $root }}
  serviceAccountName: {{ . }}
  {{- end }}
  {{- /* The autoscaler, a sidecar of the head, talks to the Kubernetes API; nothing else does. */}}
  automountServiceAccountToken: {{ and .head $values.autoscaler.enabled }}
  {{- with $values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $values.podSecurityContext | nindent 4 }}
  {{- with $group.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with include "prism.rayInitContainers" . | trim }}
  initContainers:
    {{- . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ ternary "ray-head" "ray-worker" .head }}
      image: {{ include "prism.image" $root }}
      imagePullPolicy: {{ $values.image.pullPolicy }}
      ports:
        {{- if .head }}
        - {name: gcs-server, containerPort: 6379}
        - {name: dashboard, containerPort: 8265}
        - {name: client, containerPort: 10001}
        {{- end }}
        - {name: metrics, containerPort: 8080}
        - {name: serve, containerPort: {{ $values.service.httpPort }}}
        {{- if include "prism.grpcEnabled" $root }}
        - {name: grpc, containerPort: {{ $values.service.grpcPort }}}
        {{- end }}
      env:
        {{- include "prism.env" . | nindent 8 }}
      {{- with concat $values.envFrom (default list $group.envFrom) }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      resources:
        {{- if .head }}
        {{- toYaml $group.resources | nindent 8 }}
        {{- else }}
        {{- include "prism.workerResources" $group | nindent 8 }}
        {{- end }}
      securityContext:
        {{- toYaml $values.securityContext | nindent 8 }}
      {{- include "prism.probes" . | nindent 6 }}
      volumeMounts:
        {{- include "prism.volumeMounts" . | nindent 8 }}
    {{- with $group.sidecars }}
    {{- include "prism.sidecars" (dict "sidecars" . "default" $values.securityContext) | nindent 4 }}
    {{- end }}
  volumes:
    {{- include "prism.volumes" . | nindent 4 }}
  {{- with $group.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $group.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $group.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $group.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* Names and labels. */}}
{{- define "prism.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "prism.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "prism.selectorLabels" -}}
app.kubernetes.io/name: {{ include "prism.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "prism.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "prism.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: prism
{{- end -}}

{{- define "prism.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The Redis the prefix index uses: URL, and the Secret holding its password (if any). */}}
{{- define "prism.redisUrl" -}}
{{- if .Values.redis.enabled -}}
{{- printf "redis://%s-redis:6379/0" (include "prism.fullname" .) -}}
{{- else -}}
{{- .Values.externalRedis.url -}}
{{- end -}}
{{- end -}}

{{- define "prism.redisSecret" -}}
{{- if .Values.redis.enabled -}}
{{- default (printf "%s-redis" (include "prism.fullname" .)) .Values.redis.auth.existingSecret -}}
{{- else -}}
{{- .Values.externalRedis.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "prism.redisSecretKey" -}}
{{- if .Values.redis.enabled -}}
{{- .Values.redis.auth.existingSecretKey -}}
{{- else -}}
{{- .Values.externalRedis.existingSecretKey -}}
{{- end -}}
{{- end -}}

{{- define "prism.apiKeySecret" -}}
{{- if .Values.apiKey.existingSecret -}}
{{- .Values.apiKey.existingSecret -}}
{{- else if .Values.apiKey.value -}}
{{- printf "%s-api-key" (include "prism.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "prism.apiKeySecretKey" -}}
{{- if .Values.apiKey.existingSecret -}}
{{- .Values.apiKey.existingSecretKey -}}
{{- else -}}
api-key
{{- end -}}
{{- end -}}

{{- define "prism.modelCacheClaim" -}}
{{- if .Values.modelCache.existingClaim -}}
{{- .Values.modelCache.existingClaim -}}
{{- else if .Values.modelCache.create.enabled -}}
{{- printf "%s-models" (include "prism.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* What Serve's gRPC proxy registers: prism.serving.grpc_service.GRPC_SERVICERS. */}}
{{- define "prism.grpcServicers" -}}
- prism.proto.prism.v1.generation_pb2_grpc.add_GenerationServicer_to_server
- grpc_health.v1.health_pb2_grpc.add_HealthServicer_to_server
{{- end -}}

{{/* The environment of every Ray container. */}}
{{- define "prism.env" -}}
- name: PYTHONUNBUFFERED
  value: "1"
# Serve's proxies and replicas run handle routers and replica code on Serve's own event
# loop (docs/architecture.md, "Serving path latency").
- name: RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD
  value: "0"
- name: RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP
  value: "0"
{{- if include "prism.redisSecret" . }}
- name: PRISM_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "prism.redisSecret" . }}
      key: {{ include "prism.redisSecretKey" . }}
{{- end }}
{{- if include "prism.apiKeySecret" . }}
- name: PRISM_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "prism.apiKeySecret" . }}
      key: {{ include "prism.apiKeySecretKey" . }}
{{- end }}
{{- if .Values.huggingFace.tokenSecret }}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.huggingFace.tokenSecret }}
      key: {{ .Values.huggingFace.tokenSecretKey }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Volumes and mounts of every Ray pod: shared memory and the model cache. The head mounts the
cache too: Serve may place an ingress replica (no CPUs) there, which loads the tokenizer.
*/}}
{{- define "prism.volumes" -}}
- name: shm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .Values.sharedMemory.sizeLimit }}
- name: models
{{- if include "prism.modelCacheClaim" . }}
  persistentVolumeClaim:
    claimName: {{ include "prism.modelCacheClaim" . }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end -}}

{{- define "prism.volumeMounts" -}}
- name: shm
  mountPath: /dev/shm
- name: models
  mountPath: {{ .Values.modelCache.mountPath }}
{{- end -}}

{{- define "prism.probeTiming" -}}
initialDelaySeconds: {{ .Values.probes.initialDelaySeconds }}
periodSeconds: {{ .Values.probes.periodSeconds }}
timeoutSeconds: {{ .Values.probes.timeoutSeconds }}
failureThreshold: {{ .Values.probes.failureThreshold }}
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


{{/* The init container that downloads huggingFace.download onto the model cache. */}}
{{- define "prism.downloadInit" -}}
{{- if .Values.huggingFace.download -}}
- name: download-models
  image: {{ include "prism.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: ["/bin/sh", "-ec"]
  args:
    - |
      {{- range .Values.huggingFace.download }}
      hf download {{ .repo | quote }} --revision {{ default "main" .revision | quote }} --local-dir {{ printf "%s/%s" $.Values.modelCache.mountPath (default (base .repo) .dir) | quote }}
      {{- end }}
  env:
    {{- include "prism.env" . | nindent 4 }}
  volumeMounts:
    {{- include "prism.volumeMounts" . | nindent 4 }}
{{- end -}}
{{- end -}}

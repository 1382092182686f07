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


{{- define "prism.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "prism.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
GCS fault tolerance: on when asked for and a Redis is there for it (the chart's, or the
one at gcsFaultTolerance.redisAddress). Its address and the password's Secret reference.
*/}}
{{- define "prism.gcsFaultTolerance" -}}
{{- with .Values.gcsFaultTolerance -}}
{{- if and .enabled (or .redisAddress $.Values.redis.enabled) -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{- define "prism.gcsRedisAddress" -}}
{{- default (printf "%s-redis:6379" (include "prism.fullname" .)) .Values.gcsFaultTolerance.redisAddress -}}
{{- end -}}

{{- define "prism.gcsRedisPasswordRef" -}}
{{- with .Values.gcsFaultTolerance -}}
{{- if .redisAddress -}}
{{- if .passwordSecret -}}
{{- toYaml (dict "name" .passwordSecret "key" .passwordSecretKey) -}}
{{- end -}}
{{- else -}}
{{- toYaml (dict "name" (include "prism.redisSecret" $) "key" (include "prism.redisSecretKey" $)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The Secret of the chart's Redis that the chart itself makes (from redis.auth.password). */}}
{{- define "prism.redisSecretCreated" -}}
{{- with .Values.redis -}}
{{- if and .enabled .auth.password (not .auth.existingSecret) -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The model download: a digest of what is downloaded and where (it names the marker file the
download leaves on the volume when it is complete), and the shell script that downloads.
*/}}
{{- define "prism.downloadDigest" -}}
{{- list .Values.huggingFace.download .Values.modelCache.mountPath | toJson | sha256sum | trunc 10 -}}
{{- end -}}

{{- define "prism.downloadMarker" -}}
{{- printf "%s/.prism-downloads/%s.done" .Values.modelCache.mountPath (include "prism.downloadDigest" .) -}}
{{- end -}}

{{- define "prism.downloadScript" -}}
{{- range .Values.huggingFace.download }}
hf download {{ .repo | quote }} --revision {{ default "main" .revision | quote }} --local-dir {{ printf "%s/%s" $.Values.modelCache.mountPath (default (base .repo) .dir) | quote }}
{{- end }}
{{- if eq .Values.huggingFace.downloadMode "job" }}
mkdir -p {{ dir (include "prism.downloadMarker" .) | quote }}
touch {{ include "prism.downloadMarker" . | quote }}
{{- end }}
{{- end -}}

{{- define "prism.downloadEnv" -}}
- name: PYTHONUNBUFFERED
  value: "1"
- name: HF_HUB_DISABLE_TELEMETRY
  value: "1"
{{- if .Values.huggingFace.tokenSecret }}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.huggingFace.tokenSecret }}
      key: {{ .Values.huggingFace.tokenSecretKey }}
{{- end }}
{{- end -}}

{{- define "prism.downloadJobName" -}}
{{- printf "%s-download-%s" (include "prism.fullname" .) (include "prism.downloadJobSpec" . | sha256sum | trunc 10) -}}
{{- end -}}

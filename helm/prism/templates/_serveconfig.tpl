{{/*
The Serve config (serveConfigV2): Prism's application built by prism.serving.app:platform_app
from the platform config in .Values.platform, with the addresses the chart decides.
*/}}
{{- define "prism.platformConfig" -}}
{{- $platform := deepCopy .Values.platform -}}
{{- /* Ingress replicas ask for the resource only worker nodes declare (prism.workerRayStartParams). */}}
{{- $http := merge (dict "host" "0.0.0.0" "port" (int .Values.service.httpPort) "api_key_env" "PRISM_API_KEY") (default dict $platform.http) (dict "ingress_resources" (dict "prism-ingress" 1)) -}}
{{- $grpc := merge (dict "port" (int .Values.service.grpcPort)) (default dict $platform.grpc) -}}
{{- $redis := merge (dict "url" (include "prism.redisUrl" .)) (default dict $platform.redis) -}}
{{- if include "prism.redisSecret" . -}}
{{- $_ := set $redis "password_env" "PRISM_REDIS_PASSWORD" -}}
{{- end -}}
{{- $_ := set $platform "http" $http -}}
{{- $_ := set $platform "grpc" $grpc -}}
{{- $_ := set $platform "redis" $redis -}}
{{- toYaml $platform -}}
{{- end -}}

{{- define "prism.grpcEnabled" -}}
{{- $grpc := default dict .Values.platform.grpc -}}
{{- if or (not (hasKey $grpc "enabled")) $grpc.enabled -}}true{{- end -}}
{{- end -}}

{{- define "prism.serveConfig" -}}
proxy_location: EveryNode
http_options:
  host: 0.0.0.0
  port: {{ .Values.service.httpPort }}
{{- if include "prism.grpcEnabled" . }}
grpc_options:
  port: {{ .Values.service.grpcPort }}
  grpc_servicer_functions:
    {{- include "prism.grpcServicers" . | nindent 4 }}
{{- end }}
applications:
  - name: prism
    route_prefix: /
    import_path: prism.serving.app:platform_app
    args:
      {{- include "prism.platformConfig" . | nindent 6 }}
{{- end -}}

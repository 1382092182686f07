{{/*
Checks across values that values.schema.json cannot express (it sees one object at a time).
Each failure names the values involved.
*/}}
{{- define "prism.validate" -}}
{{- $names := dict -}}
{{- range .Values.workerGroups -}}
{{- if hasKey $names .name -}}
{{- fail (printf "workerGroups: the name %q is used twice" .name) -}}
{{- end -}}
{{- $_ := set $names .name true -}}
{{- if or (gt (int .minReplicas) (int .replicas)) (gt (int .replicas) (int .maxReplicas)) -}}
{{- fail (printf "workerGroups %q: need minReplicas <= replicas <= maxReplicas (got %d, %d, %d)" .name (int .minReplicas) (int .replicas) (int .maxReplicas)) -}}
{{- end -}}
{{- end -}}
{{- range $index, $model := .Values.platform.models -}}
{{- include "prism.validateModelFits" (dict "where" (printf "platform.models[%d] (%s)" $index $model.id) "model" $model "groups" $.Values.workerGroups) -}}
{{- end -}}
{{- if not (semverCompare ">=2.53.0-0" .Values.rayVersion) -}}
{{- fail (printf "rayVersion %s: the probes use the dashboard agent's /api/healthz, which Ray has from 2.53.0 on" .Values.rayVersion) -}}
{{- end -}}
{{- with .Values.huggingFace -}}
{{- if and .download (eq .downloadMode "job") (not (include "prism.modelCacheClaim" $)) -}}
{{- fail "huggingFace.downloadMode job downloads once onto a shared claim: set modelCache.create.enabled or modelCache.existingClaim (or downloadMode perPod)" -}}
{{- end -}}
{{- end -}}
{{- with .Values.gcsFaultTolerance -}}
{{- if and (include "prism.gcsFaultTolerance" $) .externalStorageNamespace (eq $.Values.upgradeStrategy.type "NewCluster") -}}
{{- fail "gcsFaultTolerance.externalStorageNamespace with upgradeStrategy NewCluster: the new cluster's GCS would share the old one's state in Redis; leave it empty (KubeRay then uses each RayCluster's UID)" -}}
{{- end -}}
{{- $prefix := (default dict $.Values.platform.redis).key_prefix | default "prism" -}}
{{- if and (include "prism.gcsFaultTolerance" $) (not .redisAddress) (hasPrefix "RAY" $prefix) -}}
{{- fail (printf "platform.redis.key_prefix %q: keys starting with RAY are the GCS's in the chart's Redis; choose another prefix" $prefix) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
A replica (all its ranks: one pod) must fit some worker group's pods: GPUs that its
tensor-parallel GPUs divide (or, with one rank, enough GPUs), and enough CPUs.
*/}}
{{- define "prism.validateModelFits" -}}
{{- $engine := default dict .model.engine -}}
{{- $resources := default dict .model.resources -}}
{{- $tp := int (default 1 $engine.tensor_parallel_size) -}}
{{- $rankGpus := float64 (default 0 $resources.num_gpus) -}}
{{- $rankCpus := 1.0 -}}
{{- if hasKey $resources "num_cpus" -}}{{- $rankCpus = float64 $resources.num_cpus -}}{{- end -}}
{{- $replicaGpus := mul $tp (int $rankGpus) -}}
{{- $replicaCpus := mulf $tp $rankCpus -}}
{{- $gpuGroups := list -}}
{{- $fittingCpus := list -}}
{{- $fits := false -}}
{{- range .groups -}}
{{- $gpus := int .gpus -}}
{{- if gt $gpus 0 -}}{{- $gpuGroups = append $gpuGroups $gpus -}}{{- end -}}
{{- $gpusFit := true -}}
{{- if gt $rankGpus 0.0 -}}
{{- if eq $tp 1 -}}
{{- $gpusFit = ge (float64 $gpus) $rankGpus -}}
{{- else -}}
{{- $gpusFit = and (gt $gpus 0) (eq (mod $gpus $replicaGpus) 0) -}}
{{- end -}}
{{- end -}}
{{- if $gpusFit -}}
{{- $cpus := float64 (include "prism.podCpus" .) -}}
{{- $fittingCpus = append $fittingCpus $cpus -}}
{{- if or (lt $cpus 0.0) (ge $cpus $replicaCpus) -}}{{- $fits = true -}}{{- end -}}
{{- end -}}
{{- end -}}
{{- if not $fits -}}
{{- if and (gt $rankGpus 0.0) (not $gpuGroups) -}}
{{- fail (printf "%s asks for GPUs, but no worker group has gpus > 0" .where) -}}
{{- else if and (gt $rankGpus 0.0) (not $fittingCpus) (eq $tp 1) -}}
{{- fail (printf "%s: a replica needs %v GPUs, more than any worker group's pods have (%v)" .where $rankGpus $gpuGroups) -}}
{{- else if and (gt $rankGpus 0.0) (not $fittingCpus) -}}
{{- fail (printf "%s: tensor_parallel_size %d x %d GPU(s) per rank = %d GPUs per replica, all on one pod; it must divide the gpus of a worker group's pods, and none does (%v)" .where $tp (int $rankGpus) $replicaGpus $gpuGroups) -}}
{{- else -}}
{{- fail (printf "%s: a replica needs %v CPUs on one pod (tensor_parallel_size %d x num_cpus %v), more than the CPU limit of any worker group it could use (%v)" .where $replicaCpus $tp $rankCpus $fittingCpus) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A worker group's CPUs per pod, as Ray counts them (its CPU limit, else its request); -1: unknown. */}}
{{- define "prism.podCpus" -}}
{{- $resources := default dict .resources -}}
{{- $cpu := "" -}}
{{- with (default dict $resources.requests).cpu }}{{ $cpu = toString . }}{{ end -}}
{{- with (default dict $resources.limits).cpu }}{{ $cpu = toString . }}{{ end -}}
{{- if not $cpu -}}
-1
{{- else if hasSuffix "m" $cpu -}}
{{- divf (trimSuffix "m" $cpu | float64) 1000 -}}
{{- else -}}
{{- $cpu -}}
{{- end -}}
{{- end -}}

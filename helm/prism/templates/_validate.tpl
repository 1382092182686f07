{{/*
Checks across values that values.schema.json cannot express (it sees one object at a time).
Each failure names the values involved.
*/}}
{{- define "prism.validate" -}}
{{- $groupGpus := list -}}
{{- $names := dict -}}
{{- range .Values.workerGroups -}}
{{- if hasKey $names .name -}}
{{- fail (printf "workerGroups: the name %q is used twice" .name) -}}
{{- end -}}
{{- $_ := set $names .name true -}}
{{- if or (gt (int .minReplicas) (int .replicas)) (gt (int .replicas) (int .maxReplicas)) -}}
{{- fail (printf "workerGroups %q: need minReplicas <= replicas <= maxReplicas (got %d, %d, %d)" .name (int .minReplicas) (int .replicas) (int .maxReplicas)) -}}
{{- end -}}
{{- if gt (int .gpus) 0 -}}
{{- $groupGpus = append $groupGpus (int .gpus) -}}
{{- end -}}
{{- end -}}
{{- range $index, $model := .Values.platform.models -}}
{{- $engine := default dict $model.engine -}}
{{- $tp := int (default 1 $engine.tensor_parallel_size) -}}
{{- $perRank := float64 (default 0 (default dict $model.resources).num_gpus) -}}
{{- if gt $perRank 0.0 -}}
{{- $where := printf "platform.models[%d] (%s)" $index $model.id -}}
{{- if not $groupGpus -}}
{{- fail (printf "%s asks for GPUs, but no worker group has gpus > 0" $where) -}}
{{- end -}}
{{- $fits := false -}}
{{- if eq $tp 1 -}}
{{- range $groupGpus -}}
{{- if ge (float64 .) $perRank -}}{{- $fits = true -}}{{- end -}}
{{- end -}}
{{- if not $fits -}}
{{- fail (printf "%s: a replica needs %v GPUs, more than any worker group's pods have (%v)" $where $perRank $groupGpus) -}}
{{- end -}}
{{- else -}}
{{- $replicaGpus := mul $tp (int $perRank) -}}
{{- range $groupGpus -}}
{{- if eq (mod . $replicaGpus) 0 -}}{{- $fits = true -}}{{- end -}}
{{- end -}}
{{- if not $fits -}}
{{- fail (printf "%s: tensor_parallel_size %d x %d GPU(s) per rank = %d GPUs per replica, all on one pod; it must divide the gpus of a worker group's pods, and none does (%v)" $where $tp (int $perRank) $replicaGpus $groupGpus) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

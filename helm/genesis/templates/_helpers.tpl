{{/*
Names and labels shared by every template.
*/}}

{{/* The chart name, overridable only through the chart itself. */}}
{{- define "genesis.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The base name of every object: the release name when it already contains the
chart name (`helm install genesis ...` gives "genesis"), else
"<release>-genesis". 63 characters is the DNS label limit.
*/}}
{{- define "genesis.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "genesis.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select the orchestrator's pods; never change across upgrades. */}}
{{- define "genesis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "genesis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: orchestrator
{{- end -}}

{{/* Labels on every object. */}}
{{- define "genesis.labels" -}}
helm.sh/chart: {{ include "genesis.chart" . }}
app.kubernetes.io/name: {{ include "genesis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: genesis
{{- end -}}

{{- define "genesis.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "genesis.postgresSecret" -}}
{{- if and .Values.postgresql.url .Values.postgresql.existingSecret -}}
{{- fail "set postgresql.url or postgresql.existingSecret, not both" -}}
{{- end -}}
{{- default (printf "%s-postgres" (include "genesis.fullname" .)) .Values.postgresql.existingSecret -}}
{{- end -}}

{{- define "genesis.natsSecret" -}}
{{- if and .Values.nats.url .Values.nats.existingSecret -}}
{{- fail "set nats.url or nats.existingSecret, not both" -}}
{{- end -}}
{{- default (printf "%s-nats" (include "genesis.fullname" .)) .Values.nats.existingSecret -}}
{{- end -}}

{{/*
The Secret holding the API's tokens file (key tokens.yaml): the user's
existingSecret, or the one the chart makes from tokensYaml. Exposing the API
without tokens is refused here, as genesis itself refuses a non-loopback bind
without a tokens file.
*/}}
{{- define "genesis.apiTokensSecret" -}}
{{- $tokens := .Values.api.tokens -}}
{{- if and $tokens.existingSecret $tokens.tokensYaml -}}
{{- fail "set api.tokens.existingSecret or api.tokens.tokensYaml, not both" -}}
{{- end -}}
{{- if not (or $tokens.existingSecret $tokens.tokensYaml) -}}
{{- fail "the API needs bearer tokens: set api.tokens.existingSecret (a Secret with key tokens.yaml) or api.tokens.tokensYaml (see `genesis tokens create`), or api.enabled=false" -}}
{{- end -}}
{{- with $tokens.tokensYaml -}}
{{- $file := fromYaml . -}}
{{- if or (hasKey $file "Error") (not (kindIs "slice" $file.tokens)) -}}
{{- fail "api.tokens.tokensYaml is not a tokens file: a YAML mapping with a list `tokens` (see `genesis tokens create`)" -}}
{{- end -}}
{{- end -}}
{{- if eq (int .Values.api.port) (int .Values.metrics.port) -}}
{{- fail "api.port and metrics.port must differ" -}}
{{- end -}}
{{- default (printf "%s-api-tokens" (include "genesis.fullname" .)) $tokens.existingSecret -}}
{{- end -}}

{{/* Where the tokens Secret is mounted, as a directory: a subPath mount would never see an update. */}}
{{- define "genesis.apiTokensDir" -}}
/etc/genesis-tokens
{{- end -}}

{{/*
The container securityContext of the orchestrator and the migration Job:
non-root, no privilege escalation, read-only root, no capabilities.
*/}}
{{- define "genesis.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 1000
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Environment shared by the orchestrator and the migration Job. */}}
{{- define "genesis.databaseEnv" -}}
- name: GENESIS_HOME
  value: /var/lib/genesis
- name: GENESIS_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "genesis.postgresSecret" . }}
      key: url
{{- end -}}

{{- define "genesis.natsEnv" -}}
- name: GENESIS_NATS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "genesis.natsSecret" . }}
      key: url
{{- range $key, $env := dict "user" "GENESIS_NATS_USER" "password" "GENESIS_NATS_PASSWORD" "token" "GENESIS_NATS_TOKEN" }}
- name: {{ $env }}
  valueFrom:
    secretKeyRef:
      name: {{ include "genesis.natsSecret" $ }}
      key: {{ $key }}
      optional: true
{{- end }}
{{- end -}}

{{/*
genesis.yaml, the orchestrator's settings (orchestrator/settings.py). The
database and NATS URLs and credentials arrive as environment variables from
the Secrets, never here.
*/}}
{{- define "genesis.config" -}}
{{- $k8s := dict "namespace" .Values.sandboxes.namespace -}}
{{- with .Values.sandboxes.runtimeClassName }}{{ $_ := set $k8s "runtime_class" . }}{{ end -}}
{{- with .Values.kubernetes.registry }}{{ $_ := set $k8s "registry" . }}{{ end -}}
{{- with .Values.kubernetes.imagePullPolicy }}{{ $_ := set $k8s "image_pull_policy" . }}{{ end -}}
{{- with .Values.kubernetes.imagePullSecrets }}{{ $_ := set $k8s "image_pull_secrets" . }}{{ end -}}
{{- with .Values.sandboxes.podPidsLimit }}{{ $_ := set $k8s "pod_pids_limit" (int .) }}{{ end -}}
{{- with .Values.sandboxes.egressExcept }}{{ $_ := set $k8s "egress_except" . }}{{ end -}}
{{- $gpus := list -}}
{{- if .Values.gpu.enabled -}}
{{- range $i := until (int .Values.gpu.count) }}{{ $gpus = append $gpus (toString $i) }}{{ end -}}
{{- $_ := set $k8s "gpu_resource" .Values.gpu.resource -}}
{{- $_ := set $k8s "gpu_node_selector" .Values.gpu.nodeSelector -}}
{{- $_ := set $k8s "gpu_tolerations" .Values.gpu.tolerations -}}
{{- end -}}
{{- $config := dict
  "runtime" "kubernetes"
  "home" "/var/lib/genesis"
  "images_dir" "/opt/genesis/images"
  "metrics_address" "0.0.0.0"
  "metrics_port" (int .Values.metrics.port)
  "max_concurrent" (int .Values.sandboxes.maxConcurrent)
  "cpu_budget" (float64 .Values.sandboxes.quota.cpu)
  "memory_budget" (toString .Values.sandboxes.quota.memory)
  "installation" .Values.genesis.installation
  "gpus" $gpus
  "sandbox_egress" (.Values.sandboxes.egress | default false)
  "repos" .Values.genesis.repos
  "kubernetes" $k8s
-}}
{{- if not .Values.nats.enabled }}{{ $_ := set $config "nats" (dict "url" nil) }}{{ end -}}
{{- if .Values.api.enabled -}}
{{- $_ := set $config "api" (dict
  "address" "0.0.0.0"
  "port" (int .Values.api.port)
  "tokens_file" (printf "%s/tokens.yaml" (include "genesis.apiTokensDir" .))
  "rate_limit_per_s" (float64 .Values.api.rateLimitPerSecond)
  "rate_limit_burst" (int .Values.api.rateLimitBurst)
) -}}
{{- else -}}
{{- $_ := set $config "api" (dict "port" 0) -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

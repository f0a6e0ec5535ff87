{{/*
Names, labels and the few fixed facts every template shares.
*/}}

{{- define "inngest-cancellation-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name, at most 63 characters: Service names are DNS labels. */}}
{{- define "inngest-cancellation-exporter.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "inngest-cancellation-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "inngest-cancellation-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "inngest-cancellation-exporter.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "inngest-cancellation-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "inngest-cancellation-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "inngest-cancellation-exporter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "inngest-cancellation-exporter.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The port the server listens on in the container: the exporter's default and the Dockerfile's EXPOSE. */}}
{{- define "inngest-cancellation-exporter.containerPort" -}}9469{{- end }}

{{/* Where the state volume is mounted: the Dockerfile's EXPORTER_STATE_DIR and VOLUME. */}}
{{- define "inngest-cancellation-exporter.stateDir" -}}/var/lib/inngest-cancellation-exporter{{- end }}

{{- define "inngest-cancellation-exporter.configDir" -}}/etc/inngest-cancellation-exporter{{- end }}

{{/*
A setting's value as the environment holds it. Helm reads numbers in values files as floats,
which print as 1e+06: whole numbers are written as integers.
*/}}
{{- define "inngest-cancellation-exporter.envValue" -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) }}
{{- int64 . }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/* The Secret the pod's secretKeyRefs name: the user's, or the chart's own. */}}
{{- define "inngest-cancellation-exporter.secretName" -}}
{{- default (include "inngest-cancellation-exporter.fullname" .) .Values.existingSecret }}
{{- end }}

{{/* "true" when the chart renders its own Secret: no existingSecret, and at least one value set. */}}
{{- define "inngest-cancellation-exporter.ownSecret" -}}
{{- if and (not .Values.existingSecret) (compact (values .Values.secrets)) }}true{{ end }}
{{- end }}

{{/*
Hardening shared by the exporter and the `helm test` pod: non-root, read-only root filesystem,
no privilege escalation, no capabilities, the runtime's default seccomp profile.
*/}}
{{- define "inngest-cancellation-exporter.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "inngest-cancellation-exporter.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
The files the chart takes from the repository's dashboards/ (through the files/dashboards link):
`dashboardFiles` every *.json, `ruleFiles` every YAML file with top-level `groups`. Each yields
a dict path -> content (as JSON, so templates can range over it); fails when the feature is on
and nothing is found, so a missing dashboards/ never renders a silent nothing.
*/}}
{{- define "inngest-cancellation-exporter.dashboardFiles" -}}
{{- $found := dict }}
{{- range $path, $_ := .Files.Glob "files/dashboards/*.json" }}
{{- $_ := set $found $path ($.Files.Get $path) }}
{{- end }}
{{- if not $found }}
{{- fail "dashboards.enabled: no dashboards/*.json found in the chart (files/dashboards links to the repository's dashboards/)" }}
{{- end }}
{{- toJson $found }}
{{- end }}

{{- define "inngest-cancellation-exporter.ruleFiles" -}}
{{- $found := dict }}
{{- range $path, $_ := .Files.Glob "files/dashboards/*.{yml,yaml}" }}
{{- $text := $.Files.Get $path }}
{{- if hasKey (fromYaml $text) "groups" }}
{{- $_ := set $found $path $text }}
{{- end }}
{{- end }}
{{- if not $found }}
{{- fail "prometheusRule.enabled: no rules file (YAML with top-level groups) in dashboards/ found in the chart (files/dashboards links to the repository's dashboards/)" }}
{{- end }}
{{- toJson $found }}
{{- end }}

{{/*
A Kubernetes object name for a file taken from dashboards/: <fullname>-<base name>, the base name
without a leading chart name (inngest-cancellation-exporter-health.json: <fullname>-health).
*/}}
{{- define "inngest-cancellation-exporter.fileObjectName" -}}
{{- $base := base .path | trimSuffix (ext .path) | lower | replace "_" "-" | replace "." "-" | trimPrefix (printf "%s-" .root.Chart.Name) }}
{{- printf "%s-%s" (include "inngest-cancellation-exporter.fullname" .root) $base | trunc 253 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of the `helm test` pod: not the exporter's selector labels, so the Service never routes to it.
*/}}
{{- define "inngest-cancellation-exporter.testSelectorLabels" -}}
app.kubernetes.io/name: {{ include "inngest-cancellation-exporter.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Chart name, truncated to 63 characters (a DNS label). */}}
{{- define "logbook.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: the release name, with the chart name appended unless the release name already
contains it. Truncated so "<fullname>-headless" and pod names "<fullname>-N" stay valid.
*/}}
{{- define "logbook.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The headless Service that gives each pod a stable DNS name (gossip and Raft). */}}
{{- define "logbook.headlessName" -}}
{{- printf "%s-headless" (include "logbook.fullname" .) }}
{{- end }}

{{- define "logbook.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "logbook.selectorLabels" -}}
app.kubernetes.io/name: {{ include "logbook.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "logbook.labels" -}}
helm.sh/chart: {{ include "logbook.chart" . }}
{{ include "logbook.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "logbook.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "logbook.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* min(3, replicas): a partition never has more replicas than there are nodes. */}}
{{- define "logbook.replicationFactor" -}}
{{- min 3 (int .Values.replicas) }}
{{- end }}

{{/* Config checks that the schema cannot express. */}}
{{- define "logbook.validate" -}}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) }}
{{- fail "tls.enabled needs tls.secretName (a Secret with tls.crt, tls.key and ca.crt)" }}
{{- end }}
{{- if and .Values.acl.enabled (not .Values.tls.enabled) }}
{{- fail "acl.enabled needs tls.enabled: ACL subjects are client certificate names" }}
{{- end }}
{{- end }}

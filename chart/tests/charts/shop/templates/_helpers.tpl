{{/* The full name: release and chart, at most 63 characters. */}}
{{- define "shop.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "shop.labels" -}}
{{ include "common.labels" . }}
app.kubernetes.io/component: web
{{- end }}

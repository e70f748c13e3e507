{{- define "ns" -}}{{ default .Release.Namespace .Values.namespaceOverride }}{{- end -}}

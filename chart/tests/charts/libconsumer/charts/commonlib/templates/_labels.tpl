{{- define "commonlib.labels" -}}
app: {{ .name }}
release: {{ .root.Release.Name }}
{{- range $k, $v := .extra }}
{{ $k }}: {{ $v | quote }}
{{- end }}
{{- end -}}

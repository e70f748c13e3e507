{{- define "commonlib.deployment" -}}
{{- $defaults := dict "replicas" 1 "image" "nginx:stable" -}}
{{- $cfg := mergeOverwrite (deepCopy $defaults) .config -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .name }}
  labels:
    {{- include "commonlib.labels" (dict "name" .name "root" .root "extra" .config.extraLabels) | nindent 4 }}
spec:
  replicas: {{ $cfg.replicas }}
  selector:
    matchLabels: {app: {{ .name }}}
  template:
    metadata:
      labels: {app: {{ .name }}}
    spec:
      containers:
      - name: {{ .name }}
        image: {{ $cfg.image }}
        ports:
        - containerPort: {{ .port }}
{{- end -}}

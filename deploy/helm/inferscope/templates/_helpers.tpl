{{- define "inferscope.name" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "inferscope.labels" -}}
app.kubernetes.io/name: {{ include "inferscope.name" . }}
{{- end -}}

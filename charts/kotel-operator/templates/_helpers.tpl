{{- define "kotel.name" -}}kotel-operator{{- end -}}
{{- define "kotel.fullname" -}}{{ .Release.Name | trunc 40 | trimSuffix "-" }}-kotel-operator{{- end -}}
{{- define "kotel.labels" -}}
app.kubernetes.io/name: {{ include "kotel.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
{{- define "kotel.selector" -}}
app.kubernetes.io/name: {{ include "kotel.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

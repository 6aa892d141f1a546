{{/* The release's name for every object. */}}
{{- define "kubechat-agent.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "kubechat-agent.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Labels that select the agent's pods. */}}
{{- define "kubechat-agent.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The Secret the agent keeps its credentials in. */}}
{{- define "kubechat-agent.stateSecret" -}}
{{- printf "%s-state" (include "kubechat-agent.fullname" .) -}}
{{- end -}}

{{/* The Secret holding the bootstrap token. */}}
{{- define "kubechat-agent.bootstrapSecret" -}}
{{- if .Values.existingBootstrapSecret.name -}}
{{- .Values.existingBootstrapSecret.name -}}
{{- else -}}
{{- printf "%s-bootstrap" (include "kubechat-agent.fullname" .) -}}
{{- end -}}
{{- end -}}

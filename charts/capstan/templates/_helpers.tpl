{{/* Name of the namespaced objects (Deployment, ServiceAccount, Role, PDB, HPA). */}}
{{- define "capstan.name" -}}capstan{{- end }}

{{/* Cluster-scoped objects carry the namespace, as Istio's `istiod-clusterrole-<ns>`, so that
one control plane per namespace can be installed. */}}
{{- define "capstan.clusterName" -}}capstan-{{ .Release.Namespace }}{{- end }}

{{/* The Service in front of the pods. Fixed to istiod's name: the CA's serving certificate is
for istiod.<ns>.svc and injected proxies dial it. */}}
{{- define "capstan.service" -}}istiod{{- end }}

{{/* Istio's validating webhook configuration name (`istio-validator-<ns>`). */}}
{{- define "capstan.validatorName" -}}istio-validator-{{ .Release.Namespace }}{{- end }}

{{/* Istio's injector configuration name: bare in istio-system, suffixed elsewhere. */}}
{{- define "capstan.injectorName" -}}
{{- if eq .Release.Namespace "istio-system" -}}istio-sidecar-injector{{- else -}}istio-sidecar-injector-{{ .Release.Namespace }}{{- end -}}
{{- end }}

{{- define "capstan.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "capstan.selectorLabels" -}}
app.kubernetes.io/name: capstan
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "capstan.labels" -}}
{{ include "capstan.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

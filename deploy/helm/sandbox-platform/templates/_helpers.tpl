{{- define "sandbox-platform.fullname" -}}
{{- printf "%s-sandboxd" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sandbox-platform.labels" -}}
app.kubernetes.io/name: sandboxd
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The label the sandboxes' NetworkPolicy lets in: keep it as the runtime's spec.rs says. */}}
{{- define "sandbox-platform.selector" -}}
app.kubernetes.io/name: sandboxd
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sandbox-platform.secret" -}}
{{- printf "%s-settings" (include "sandbox-platform.fullname" .) -}}
{{- end -}}

{{/* The Pod Security level of the sandbox namespace: sandboxes.podSecurity if set; else
     "restricted", or with the second layer "baseline" on 1.35+ (which lets a pod with a user
     namespace of its own unmask /proc) and "privileged" before. */}}
{{- define "sandbox-platform.podSecurity" -}}
{{- if .Values.sandboxes.podSecurity -}}
{{- .Values.sandboxes.podSecurity -}}
{{- else if not .Values.sandboxes.secondLayer -}}
restricted
{{- else if semverCompare ">=1.35-0" .Capabilities.KubeVersion.Version -}}
baseline
{{- else -}}
privileged
{{- end -}}
{{- end -}}

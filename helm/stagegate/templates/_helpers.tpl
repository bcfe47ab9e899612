{{/* The chart's name. */}}
{{- define "stagegate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: <release>-stagegate, or the release name when it has "stagegate". */}}
{{- define "stagegate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "stagegate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "stagegate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: stagegate
{{- end }}

{{- define "stagegate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "stagegate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "stagegate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "stagegate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Namespaces that get namespaced objects (Roles, trainer ServiceAccounts). */}}
{{- define "stagegate.scopeNamespaces" -}}
{{- if .Values.operator.watchNamespaces }}
{{- toJson .Values.operator.watchNamespaces }}
{{- else }}
{{- toJson (list .Release.Namespace) }}
{{- end }}
{{- end }}

{{/*
  The operator's namespaced permissions, least privilege, derived from its code: each rule
  says which call needs it. Used by the ClusterRole (all namespaces) or each Role.
*/}}
{{- define "stagegate.workloadRules" -}}
# The operator lists and watches TrainingJobs (trainingjobwatch.py); the reconciler GETs one its
# cache has not seen, or any while that watch is down (reconcile.py), and the resync loop lists
# them (scheduler.resync). kopf watches nothing (settings.scanning.disabled in handlers.py), so
# no cluster-wide read of CRDs or namespaces is granted.
- apiGroups: [stagegate.io]
  resources: [trainingjobs]
  verbs: [get, list, watch]
# The reconciler writes status with a merge patch on the status subresource
# (kubeapi.patch_status). It never writes spec or metadata.
- apiGroups: [stagegate.io]
  resources: [trainingjobs/status]
  verbs: [patch]
# Child Jobs and the spec ConfigMap carry ownerReferences with blockOwnerDeletion: true; the
# OwnerReferencesPermissionEnforcement admission plugin then requires update on the owner's
# finalizers subresource (no finalizer is ever written).
- apiGroups: [stagegate.io]
  resources: [trainingjobs/finalizers]
  verbs: [update]
# The operator lists and watches Jobs labelled stagegate.io/trainingjob (jobwatch.py; the
# reconciler reads them from that watch's cache); the reconciler creates the step Jobs and deletes them (retries, suspend,
# stop: act.py). No get/update/patch.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [list, watch, create, delete]
# The operator watches the step pods that have ended (label stagegate.io/trainingjob, field
# selector on the phase) to read their termination messages (results and failure reasons), and
# lists a TrainingJob's pods when that watch is behind and to find pods no node can take. No
# get/delete.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# The spec snapshot "<trainingjob>-spec": created once, read back when the spec changes mid-run.
# Deleted by owner-reference garbage collection, not by the operator.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create]
# Events on TrainingJobs (events.py). kopf's own event posting is disabled
# (settings.posting.enabled = False), so no patch/update.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}

{{/*
Helpers. The objects must stay identical to kubectl_etcdbackup.k8s.manifests (tests/test_chart.py):
no helm.sh/chart or managed-by labels, same names, same field presence.
*/}}

{{/* Base name of every object (<= 52 characters: the CronJob limit). */}}
{{- define "etcd-backup.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels; call with (dict "ctx" $ "component" "backup"), component may be "". */}}
{{- define "etcd-backup.labels" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: kubectl-etcdbackup
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{- define "etcd-backup.selectorLabels" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "etcd-backup.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "etcd-backup.storeURL" -}}
{{- if eq .Values.store.type "s3" -}}
s3://{{ .Values.store.s3.bucket }}{{ with trimAll "/" .Values.store.s3.prefix }}/{{ . }}{{ end }}
{{- else -}}
file://{{ trimSuffix "/" .Values.store.pvc.mountPath }}
{{- end -}}
{{- end -}}

{{- define "etcd-backup.pvcName" -}}
{{- .Values.store.pvc.name | default (printf "%s-data" (include "etcd-backup.fullname" .)) -}}
{{- end -}}

{{/* Seconds of a duration in whole units (90s, 1h30m, 7d, 2w); the schema guarantees the form. */}}
{{- define "etcd-backup.seconds" -}}
{{- $units := dict "s" 1 "m" 60 "h" 3600 "d" 86400 "w" 604800 -}}
{{- $total := 0 -}}
{{- range (regexFindAll "[0-9]+[smhdw]" . -1) -}}
{{- $total = add $total (mul (trimSuffix (regexFind "[smhdw]$" .) . | int) (get $units (regexFind "[smhdw]$" .))) -}}
{{- end -}}
{{- $total -}}
{{- end -}}

{{/* The exporter's settings (ETCDBACKUP_* variables, via envFrom). */}}
{{- define "etcd-backup.monitorData" -}}
ETCDBACKUP_STORE: {{ include "etcd-backup.storeURL" . | quote }}
ETCDBACKUP_MAX_AGE: {{ .Values.monitor.maxAge | quote }}
ETCDBACKUP_LISTEN: {{ printf "0.0.0.0:%d" (int .Values.exporter.port) | quote }}
{{- if eq .Values.store.type "s3" }}
{{- with .Values.store.s3.endpointUrl }}
ETCDBACKUP_S3_ENDPOINT_URL: {{ . | quote }}
{{- end }}
{{- with .Values.store.s3.region }}
ETCDBACKUP_S3_REGION: {{ . | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* S3 credentials from the existing Secret (a list of env entries, or nothing). */}}
{{- define "etcd-backup.awsEnv" -}}
{{- if and (eq .Values.store.type "s3") .Values.store.s3.existingSecret -}}
{{- range list "AWS_ACCESS_KEY_ID" "AWS_SECRET_ACCESS_KEY" "AWS_SESSION_TOKEN" }}
- name: {{ . }}
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.store.s3.existingSecret | quote }}
      key: {{ . }}
      {{- if eq . "AWS_SESSION_TOKEN" }}
      optional: true
      {{- end }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* Store flags shared by the backup and the verify test (S3 endpoint and region). */}}
{{- define "etcd-backup.s3Args" -}}
{{- if eq .Values.store.type "s3" -}}
{{- with .Values.store.s3.endpointUrl }}
- --s3-endpoint-url
- {{ . | quote }}
{{- end }}
{{- with .Values.store.s3.region }}
- --s3-region
- {{ . | quote }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* imagePullSecrets, priorityClassName, nodeSelector, tolerations (pod spec fields). */}}
{{- define "etcd-backup.scheduling" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . | quote }}
{{- end }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . | quote }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "etcd-backup.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
{{- end -}}

{{/* The exporter and the test pod run as the image's non-root user. */}}
{{- define "etcd-backup.nonRootPodSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
{{- if .fsGroup }}
fsGroup: 65532
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The /tmp scratch emptyDir, always size-limited. */}}
{{- define "etcd-backup.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.backup.workDirSizeLimit | quote }}
{{- end -}}

{{/*
The key Secret as /etc/etcdbackup/key/key; call with (dict "ctx" $ "fsGroup" bool). The agent refuses a key
file others can read: 0400 for a root pod; 0440 (owner root, group = the pod's fsGroup) for a non-root pod.
*/}}
{{- define "etcd-backup.keyVolume" -}}
- name: encryption-key
  secret:
    secretName: {{ .ctx.Values.encryption.existingSecret | quote }}
    defaultMode: {{ if .fsGroup }}0440{{ else }}0400{{ end }}
    items:
      - key: {{ .ctx.Values.encryption.key | quote }}
        path: key
{{- end -}}

{{- define "etcd-backup.keyMount" -}}
- name: encryption-key
  mountPath: /etc/etcdbackup/key
  readOnly: true
{{- end -}}

{{/* The agent's --keep-* flags for the retention rules that are set (null or empty: off). */}}
{{- define "etcd-backup.retentionArgs" -}}
{{- range $name := list "keepLast" "keepWithin" "keepHourly" "keepDaily" "keepWeekly" "keepMonthly" }}
{{- with index $.Values.retention $name }}
- --{{ kebabcase $name }}
- {{ if kindIs "string" . }}{{ . | quote }}{{ else }}{{ int . | quote }}{{ end }}
{{- end }}
{{- end }}
{{- end -}}

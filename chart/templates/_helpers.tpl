{{/*
Helpers. The objects must stay identical to kubectl_etcdbackup.k8s.manifests (tests/test_chart.py): same
names, same field presence; only helm.sh/chart and the managed-by value (Helm) are the chart's own.
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
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* A pod template's metadata; call with (dict "ctx" $ "component" "backup" "pod" <values with podLabels and
podAnnotations> "annotations" <extra map or nil>). */}}
{{- define "etcd-backup.podMetadata" -}}
labels:
  {{- include "etcd-backup.labels" . | nindent 2 }}
  {{- with .pod.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- $ann := merge (dict) (.annotations | default dict) (.pod.podAnnotations | default dict) }}
{{- with $ann }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
etcd as the pods see it, from `distribution` with explicit values on top (a YAML map; fromYaml it):
endpoints, hostIP (an endpoint uses $(HOST_IP)), hostNetwork, pkiDir and files, cacert/cert/key paths,
nodeSelector and tolerations of every pod. kubectl_etcdbackup.defaults.DISTRIBUTIONS has the same presets.
*/}}
{{- define "etcd-backup.etcd" -}}
{{- $cp := "node-role.kubernetes.io/control-plane" }}
{{- $cpToleration := dict "key" $cp "operator" "Exists" "effect" "NoSchedule" }}
{{- $addons := dict "key" "CriticalAddonsOnly" "operator" "Exists" }}
{{- $presets := dict
  "kubeadm" (dict "pkiDir" "/etc/kubernetes/pki/etcd" "caFile" "ca.crt" "certFile" "healthcheck-client.crt"
                  "keyFile" "healthcheck-client.key" "label" "" "tolerations" (list $cpToleration))
  "k3s" (dict "pkiDir" "/var/lib/rancher/k3s/server/tls/etcd" "caFile" "server-ca.crt" "certFile" "client.crt"
              "keyFile" "client.key" "label" "true" "tolerations" (list $cpToleration $addons))
  "rke2" (dict "pkiDir" "/var/lib/rancher/rke2/server/tls/etcd" "caFile" "server-ca.crt" "certFile" "client.crt"
               "keyFile" "client.key" "label" "true" "tolerations" (list $cpToleration $addons)) }}
{{- $p := get $presets .Values.distribution }}
{{- $e := .Values.etcd }}
{{- $secret := $e.clientCertSecret | default "" }}
{{- $endpoints := $e.endpoints | default list }}
{{- if not $endpoints }}
{{- $endpoints = list (ternary "https://$(HOST_IP):2379" "https://127.0.0.1:2379" (ne $secret "")) }}
{{- end }}
{{- $pki := $e.pki | default dict }}
{{- $dir := trimSuffix "/" ($pki.hostPath | default $p.pkiDir) }}
{{- $files := dict "caFile" ($pki.caFile | default $p.caFile) "certFile" ($pki.certFile | default $p.certFile)
                   "keyFile" ($pki.keyFile | default $p.keyFile) }}
{{- $nodeSelector := .Values.nodeSelector }}
{{- if kindIs "invalid" $nodeSelector }}{{ $nodeSelector = dict $cp $p.label }}{{ end }}
{{- $tolerations := .Values.tolerations }}
{{- if kindIs "invalid" $tolerations }}{{ $tolerations = $p.tolerations }}{{ end }}
endpoints: {{ toJson $endpoints }}
hostIP: {{ contains "$(HOST_IP)" (join "," $endpoints) }}
hostNetwork: {{ eq $secret "" }}
secret: {{ $secret | quote }}
pkiDir: {{ $dir | quote }}
caFile: {{ $files.caFile | quote }}
certFile: {{ $files.certFile | quote }}
keyFile: {{ $files.keyFile | quote }}
{{- if $secret }}
cacert: /etc/etcdbackup/etcd/ca.crt
cert: /etc/etcdbackup/etcd/tls.crt
key: /etc/etcdbackup/etcd/tls.key
{{- else }}
cacert: {{ printf "%s/%s" $dir $files.caFile | quote }}
cert: {{ printf "%s/%s" $dir $files.certFile | quote }}
key: {{ printf "%s/%s" $dir $files.keyFile | quote }}
{{- end }}
nodeSelector: {{ toJson $nodeSelector }}
tolerations: {{ toJson $tolerations }}
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
{{- if .Values.drill.enabled }}
ETCDBACKUP_DRILL_MAX_AGE: {{ .Values.drill.maxAge | quote }}
{{- end }}
{{- if eq .Values.store.type "s3" }}
{{- with .Values.store.s3.endpointUrl }}
ETCDBACKUP_S3_ENDPOINT_URL: {{ . | quote }}
{{- end }}
{{- with .Values.store.s3.region }}
ETCDBACKUP_S3_REGION: {{ . | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* S3 credentials from the existing Secret (a list of env entries, or nothing); call with
(dict "ctx" $ "secret" <another Secret, or "">). */}}
{{- define "etcd-backup.awsEnv" -}}
{{- $secret := .secret | default .ctx.Values.store.s3.existingSecret }}
{{- if and (eq .ctx.Values.store.type "s3") $secret -}}
{{- range list "AWS_ACCESS_KEY_ID" "AWS_SECRET_ACCESS_KEY" "AWS_SESSION_TOKEN" }}
- name: {{ . }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret | quote }}
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

{{/* imagePullSecrets, priorityClassName, nodeSelector, tolerations, affinity (pod spec fields); call with
(dict "ctx" $ "pod" <the pod kind's values>): its nodeSelector/tolerations, when not null, replace every pod's. */}}
{{- define "etcd-backup.scheduling" -}}
{{- $e := include "etcd-backup.etcd" .ctx | fromYaml }}
{{- $nodeSelector := .pod.nodeSelector }}
{{- if kindIs "invalid" $nodeSelector }}{{ $nodeSelector = $e.nodeSelector }}{{ end }}
{{- $tolerations := .pod.tolerations }}
{{- if kindIs "invalid" $tolerations }}{{ $tolerations = $e.tolerations }}{{ end }}
{{- with .ctx.Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . | quote }}
{{- end }}
{{- end }}
{{- with .ctx.Values.priorityClassName }}
priorityClassName: {{ . | quote }}
{{- end }}
{{- with $nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .pod.affinity }}
affinity:
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

{{/* The /tmp scratch emptyDir, always size-limited; call with the size limit. */}}
{{- define "etcd-backup.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ . | quote }}
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

{{/*
The pod spec of the backup and the stream (etcd's client certificate, the key, /tmp, the store read-write,
the backup's placement, extra env/volumes); call with (dict "ctx" $ "container" <name, image, command, args,
resources as YAML> "tmp" <size limit> "restartNever" bool).
*/}}
{{- define "etcd-backup.agentPodSpec" -}}
{{- $ := .ctx }}
{{- $e := include "etcd-backup.etcd" $ | fromYaml }}
{{- $bs := $.Values.backup.securityContext }}
{{- $mode := ternary "0440" "0400" (eq $bs.runAsNonRoot true) }}
{{- /* Each node file is mounted alone: never the PKI dir (ca.key, server and peer keys). */}}
{{- $pkiFiles := list (list "etcd-ca" $e.caFile) (list "etcd-cert" $e.certFile) (list "etcd-key" $e.keyFile) }}
serviceAccountName: {{ include "etcd-backup.fullname" $ }}
automountServiceAccountToken: false
{{- if .restartNever }}
restartPolicy: Never
{{- end }}
{{- if $e.hostNetwork }}
# etcd listens on the node's 127.0.0.1
hostNetwork: true
dnsPolicy: ClusterFirstWithHostNet
{{- end }}
{{- with include "etcd-backup.scheduling" (dict "ctx" $ "pod" $.Values.backup) | trim }}
{{ . }}
{{- end }}
securityContext:
  runAsNonRoot: {{ $bs.runAsNonRoot }}
  runAsUser: {{ int $bs.runAsUser }}
  runAsGroup: {{ int $bs.runAsGroup }}
  {{- if $bs.runAsNonRoot }}
  fsGroup: {{ int $bs.runAsGroup }}
  fsGroupChangePolicy: OnRootMismatch
  {{- end }}
  seccompProfile:
    type: RuntimeDefault
containers:
  - {{ .container | indent 4 | trim }}
    {{- $env := list }}
    {{- if $e.hostIP }}
    {{- $env = append $env (dict "name" "HOST_IP" "valueFrom" (dict "fieldRef" (dict "fieldPath" "status.hostIP"))) }}
    {{- end }}
    {{- $env = concat $env (include "etcd-backup.awsEnv" (dict "ctx" $ "secret" "") | fromYamlArray) ($.Values.backup.extraEnv | default list) }}
    {{- with $env }}
    env:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    securityContext:
      {{- include "etcd-backup.containerSecurityContext" $ | nindent 6 }}
    volumeMounts:
      {{- if $e.secret }}
      - name: etcd-client
        mountPath: /etc/etcdbackup/etcd
        readOnly: true
      {{- else }}
      {{- range $pkiFiles }}
      - name: {{ index . 0 }}
        mountPath: {{ printf "%s/%s" $e.pkiDir (index . 1) | quote }}
        readOnly: true
      {{- end }}
      {{- end }}
      {{- include "etcd-backup.keyMount" $ | nindent 6 }}
      - name: tmp
        mountPath: /tmp
      {{- if eq $.Values.store.type "file" }}
      - name: backups
        mountPath: {{ trimSuffix "/" $.Values.store.pvc.mountPath | quote }}
      {{- end }}
      {{- with $.Values.backup.extraVolumeMounts }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
volumes:
  {{- if $e.secret }}
  - name: etcd-client
    secret:
      secretName: {{ $e.secret | quote }}
      defaultMode: {{ $mode }}
      items:
        {{- range list "ca.crt" "tls.crt" "tls.key" }}
        - key: {{ . }}
          path: {{ . }}
        {{- end }}
  {{- else }}
  {{- range $pkiFiles }}
  - name: {{ index . 0 }}
    hostPath:
      path: {{ printf "%s/%s" $e.pkiDir (index . 1) | quote }}
      type: File
  {{- end }}
  {{- end }}
  {{- include "etcd-backup.keyVolume" (dict "ctx" $ "fsGroup" $bs.runAsNonRoot) | nindent 2 }}
  {{- include "etcd-backup.tmpVolume" .tmp | nindent 2 }}
  {{- if eq $.Values.store.type "file" }}
  - name: backups
    persistentVolumeClaim:
      claimName: {{ include "etcd-backup.pvcName" $ }}
  {{- end }}
  {{- with $.Values.backup.extraVolumes }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}

{{/* --endpoints, --cacert, --cert, --key of the backup and the stream. */}}
{{- define "etcd-backup.etcdArgs" -}}
{{- $e := include "etcd-backup.etcd" . | fromYaml -}}
- --store
- {{ include "etcd-backup.storeURL" . | quote }}
- --endpoints
- {{ join "," $e.endpoints | quote }}
- --cacert
- {{ $e.cacert | quote }}
- --cert
- {{ $e.cert | quote }}
- --key
- {{ $e.key | quote }}
{{- end -}}

{{/* --s3-sse and --s3-sse-kms-key-id (the writers: backup and stream). */}}
{{- define "etcd-backup.s3WriteArgs" -}}
{{- if eq .Values.store.type "s3" -}}
{{- with .Values.store.s3.sse }}
- --s3-sse
- {{ . | quote }}
{{- end }}
{{- with .Values.store.s3.sseKmsKeyId }}
- --s3-sse-kms-key-id
- {{ . | quote }}
{{- end }}
{{- end -}}
{{- end -}}

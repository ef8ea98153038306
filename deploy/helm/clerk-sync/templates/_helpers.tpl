{{/*
The templates follow deploy/kubernetes/, whose comments say why each setting is there.
*/}}

{{/* An object's labels; the argument is its app.kubernetes.io/name. */}}
{{- define "clerk-sync.labels" -}}
app.kubernetes.io/name: {{ . }}
app.kubernetes.io/part-of: clerk-sync
{{- end }}

{{/* A pod's metadata; the argument: (dict "root" $ "name" "clerk-sync" "port" 8788). */}}
{{- define "clerk-sync.podMetadata" -}}
{{- $values := .root.Values -}}
labels:
  {{- include "clerk-sync.strings" (merge (include "clerk-sync.labels" .name | fromYaml) $values.podLabels) | trim | nindent 2 }}
annotations:
  {{- $scrape := dict "prometheus.io/scrape" "true" "prometheus.io/port" (toString .port) "prometheus.io/path" "/metrics" }}
  {{- /* The programs read their variables at start: a changed ConfigMap rolls the pods. */}}
  {{- $config := dict "checksum/config" (include (print .root.Template.BasePath "/configmap.yaml") .root | sha256sum) }}
  {{- include "clerk-sync.strings" (merge (deepCopy $values.podAnnotations) $config $scrape) | trim | nindent 2 }}
{{- end }}

{{/* A map with every value as a string, as labels and annotations must be: a value
written `true` or `8080` in values.yaml would otherwise render unquoted, and the API
server refuses it. */}}
{{- define "clerk-sync.strings" -}}
{{- range $key, $value := . }}
{{ $key | quote }}: {{ toString $value | quote }}
{{- end }}
{{- end }}

{{/* A PodDisruptionBudget's number or percentage: "1" (quoted in values.yaml) is the
number 1, which Kubernetes takes; as a string it takes only percentages. */}}
{{- define "clerk-sync.intOrPercent" -}}
{{- if regexMatch "^[0-9]+$" (toString .) -}}
{{ toString . | atoi }}
{{- else -}}
{{ toString . | quote }}
{{- end -}}
{{- end }}

{{- define "clerk-sync.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{ .Values.serviceAccount.name | default "clerk-sync" }}
{{- else -}}
{{ .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* What both pods share besides their containers; the argument is the root context. */}}
{{- define "clerk-sync.podCommon" -}}
automountServiceAccountToken: false
{{- with include "clerk-sync.serviceAccountName" . }}
serviceAccountName: {{ . }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  seccompProfile:
    type: RuntimeDefault
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
What both containers share after their name, command and ports; the argument:
(dict "root" $ "service" .Values.clerkSync).
*/}}
{{- define "clerk-sync.containerCommon" -}}
{{- $values := .root.Values -}}
image: {{ printf "%s:%s" $values.image.repository ($values.image.tag | default .root.Chart.AppVersion) | quote }}
imagePullPolicy: {{ $values.image.pullPolicy }}
envFrom:
  - configMapRef:
      name: clerk-sync-config
  {{- with $values.existingSecret }}
  - secretRef:
      name: {{ . }}
  {{- end }}
  {{- with concat $values.envFrom .service.envFrom }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
livenessProbe:
  httpGet:
    path: /health
    port: http
  initialDelaySeconds: 5
  periodSeconds: 10
  timeoutSeconds: 2
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /ready
    port: http
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
resources:
  {{- toYaml .service.resources | nindent 2 }}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: ["ALL"]
{{- end }}

{{/*
A PodDisruptionBudget; the argument: (dict "name" "clerk-sync" "budget" .Values.clerkSync.podDisruptionBudget).
An empty string leaves minAvailable or maxUnavailable out (not null: helm lint keeps a
default that null overrides).
*/}}
{{- define "clerk-sync.pdb" -}}
{{- $min := index .budget "minAvailable" -}}
{{- $max := index .budget "maxUnavailable" -}}
{{- $hasMin := not (or (kindIs "invalid" $min) (eq (toString $min) "")) -}}
{{- $hasMax := not (or (kindIs "invalid" $max) (eq (toString $max) "")) -}}
{{- if eq $hasMin $hasMax }}
{{- fail (printf "%s's podDisruptionBudget: set one of minAvailable and maxUnavailable, the other to \"\"" .name) }}
{{- end }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ .name }}
  labels:
    {{- include "clerk-sync.labels" .name | nindent 4 }}
spec:
  {{- if $hasMin }}
  minAvailable: {{ include "clerk-sync.intOrPercent" $min }}
  {{- else }}
  maxUnavailable: {{ include "clerk-sync.intOrPercent" $max }}
  {{- end }}
  selector:
    matchLabels:
      app.kubernetes.io/name: {{ .name }}
{{- end }}

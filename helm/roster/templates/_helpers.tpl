{{/*
Chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "roster.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full resource name: "<release>-<chart>", or the release name alone when it already contains
the chart name.
*/}}
{{- define "roster.fullname" -}}
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

{{/*
"<chart>-<version>" for the helm.sh/chart label.
*/}}
{{- define "roster.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every resource.
*/}}
{{- define "roster.labels" -}}
helm.sh/chart: {{ include "roster.chart" . }}
{{ include "roster.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: roster
{{- end }}

{{/*
Labels shared by everything of one release; stable across upgrades.
*/}}
{{- define "roster.selectorLabels" -}}
app.kubernetes.io/name: {{ include "roster.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels that select the API pods only (not the migration Job's pod).
*/}}
{{- define "roster.apiSelectorLabels" -}}
{{ include "roster.selectorLabels" . }}
app.kubernetes.io/component: api
{{- end }}

{{/*
ServiceAccount of the API pods.
*/}}
{{- define "roster.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "roster.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Name of the migration Job (and of its ServiceAccount when the chart creates one).
*/}}
{{- define "roster.migrationsName" -}}
{{- printf "%s-migrate" (include "roster.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
ServiceAccount of the migration Job. On a first install the hook runs before the release's
own ServiceAccount exists, so a chart-created account gets a hook-ordered twin.
*/}}
{{- define "roster.migrationsServiceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- include "roster.migrationsName" . }}
{{- else }}
{{- include "roster.serviceAccountName" . }}
{{- end }}
{{- end }}

{{/*
Container image reference; a digest wins over the tag, the tag defaults to appVersion.
*/}}
{{- define "roster.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The plain settings as a YAML map of ROSTER_* name to string value. Null and empty values are
left out so the binary's defaults apply. Both the ConfigMap and the migration Job (which runs
before the ConfigMap exists on a first install) render from this one definition.
*/}}
{{- define "roster.configEnv" -}}
{{- $c := .Values.config }}
{{- $pairs := list
  (list "ROSTER_LISTEN" (printf "0.0.0.0:%d" (int .Values.containerPort)))
  (list "ROSTER_PUBLIC_URL" $c.publicUrl)
  (list "ROSTER_LOG_FORMAT" $c.logFormat)
  (list "ROSTER_LOG" $c.log)
  (list "ROSTER_DB_MAX_CONNECTIONS" $c.dbMaxConnections)
  (list "ROSTER_DB_ACQUIRE_TIMEOUT_MS" $c.dbAcquireTimeoutMs)
  (list "ROSTER_BODY_LIMIT_BYTES" $c.bodyLimitBytes)
  (list "ROSTER_SHUTDOWN_GRACE_SECS" $c.shutdownGraceSecs)
  (list "ROSTER_DEFAULT_RATE_LIMIT" $c.defaultRateLimit)
  (list "ROSTER_JWT_ISSUER" $c.jwt.issuer)
  (list "ROSTER_JWT_AUDIENCE" $c.jwt.audience)
  (list "ROSTER_JWT_JWKS_URL" $c.jwt.jwksUrl)
  (list "ROSTER_FUSIONAUTH_TIMEOUT_MS" $c.fusionauthTimeoutMs)
  (list "ROSTER_FUSIONAUTH_ALLOW_PRIVATE_URLS" $c.fusionauthAllowPrivateUrls)
  (list "ROSTER_TRUST_FORWARDED_FOR" $c.trustForwardedFor)
  (list "ROSTER_MIGRATE_CONCURRENCY" $c.migrateConcurrency)
}}
{{- $env := dict }}
{{- range $pairs }}
{{- $value := index . 1 }}
{{- if kindIs "float64" $value }}
{{- $value = printf "%d" (int64 $value) }}
{{- end }}
{{- if and (not (kindIs "invalid" $value)) (ne (toString $value) "") }}
{{- $_ := set $env (index . 0) (toString $value) }}
{{- end }}
{{- end }}
{{- toYaml $env }}
{{- end }}

{{/*
Env entries for the secrets, each read from an existing Secret by name and key. Optional
secrets whose name is empty are left out.
*/}}
{{- define "roster.secretEnv" -}}
{{- $refs := list
  (list "ROSTER_DATABASE_URL" .Values.secrets.databaseUrl)
  (list "ROSTER_REDIS_URL" .Values.secrets.redisUrl)
  (list "ROSTER_KEY_ENCRYPTION_KEY" .Values.secrets.keyEncryptionKey)
  (list "ROSTER_JWT_HS256_SECRET" .Values.secrets.jwtHs256Secret)
  (list "ROSTER_JWT_PUBLIC_KEYS" .Values.secrets.jwtPublicKeys)
}}
{{- range $refs }}
{{- $ref := index . 1 }}
{{- if $ref.name }}
- name: {{ index . 0 }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.name }}
      key: {{ $ref.key }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Container securityContext shared by the API and the migration containers.
*/}}
{{- define "roster.containerSecurityContext" -}}
{{- toYaml .Values.securityContext }}
{{- end }}

{{/*
Volumes and mounts for the writable /tmp on a read-only root filesystem.
*/}}
{{- define "roster.tmpVolume" -}}
- name: tmp
  emptyDir:
    medium: Memory
    sizeLimit: {{ .Values.tmpVolume.sizeLimit }}
{{- end }}

{{- define "roster.tmpVolumeMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/*
Rendering-time checks that the schema cannot express.
*/}}
{{- define "roster.validate" -}}
{{- $budget := add .Values.preStopSleepSeconds .Values.config.shutdownGraceSecs }}
{{- if lt (int .Values.terminationGracePeriodSeconds) (int $budget) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be at least preStopSleepSeconds + config.shutdownGraceSecs (%d)" (int .Values.terminationGracePeriodSeconds) (int $budget)) }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- end }}

{{/* The chart name, or nameOverride. */}}
{{- define "envship.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name of every object: fullnameOverride, or release-name[-chart-name]. */}}
{{- define "envship.fullname" -}}
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

{{- define "envship.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "envship.selectorLabels" -}}
app.kubernetes.io/name: {{ include "envship.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "envship.labels" -}}
helm.sh/chart: {{ include "envship.chart" . }}
{{ include "envship.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "envship.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "envship.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "envship.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* "true" when leader election is on: asked for, or more than one replica. */}}
{{- define "envship.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicas) 1) }}true{{ end }}
{{- end }}

{{/* The name of the docker-in-docker sidecar (also the workload identity skip list). */}}
{{- define "envship.dindName" -}}dind{{- end }}

{{/* The engine the controller builds with (config.builds.engine), as its model defaults it. */}}
{{- define "envship.buildsEngine" -}}
{{- dig "builds" "engine" "local" .Values.config }}
{{- end }}

{{/*
engine.mode and config.builds.engine must agree: acr (ACR Tasks runs, no engine in the pod) goes
with builds.engine acr, dind and remote (a Docker engine) with local. Nothing is set for the
user: a mismatch fails with what to change. acr also needs the registry's resource and the pod's
Entra identity, which schedules the runs.
*/}}
{{- define "envship.checkEngine" -}}
{{- $builds := include "envship.buildsEngine" . }}
{{- if eq .Values.engine.mode "acr" }}
{{- if ne $builds "acr" }}
{{- fail (printf "engine.mode acr renders no Docker engine: set config.builds.engine to acr (it is %s), with config.builds.acr {subscription, resourceGroup}, so the controller builds with ACR Tasks" $builds) }}
{{- end }}
{{- $acr := (.Values.config.builds | default dict).acr }}
{{- if not $acr }}
{{- fail "engine.mode acr needs config.builds.acr: {subscription, resourceGroup} (and registry unless config.registry.url is NAME.azurecr.io): where ACR Tasks runs are scheduled" }}
{{- end }}
{{- if not .Values.azureWorkloadIdentity.enabled }}
{{- fail "engine.mode acr schedules ACR Tasks runs with the pod's Microsoft Entra identity: set azureWorkloadIdentity.enabled to true and azureWorkloadIdentity.clientId (docs/deploy.md)" }}
{{- end }}
{{- else if eq $builds "acr" }}
{{- fail (printf "config.builds.engine acr builds with ACR Tasks: set engine.mode to acr (it is %s), which renders no Docker engine" .Values.engine.mode) }}
{{- end }}
{{- end }}

{{- define "envship.configPath" -}}/etc/envship/config.yaml{{- end }}
{{- define "envship.dockerSocketDir" -}}/run/docker{{- end }}
{{- define "envship.dockerTlsDir" -}}/var/run/secrets/envship/docker-tls{{- end }}

{{- define "envship.cacheDir" -}}
{{- dig "git" "cacheDir" "/var/cache/envship/git" .Values.config }}
{{- end }}

{{- define "envship.httpPort" -}}
{{- dig "http" "port" 8080 .Values.config | int }}
{{- end }}

{{- define "envship.gitCacheClaim" -}}
{{- default (printf "%s-git-cache" (include "envship.fullname" .)) .Values.gitCache.persistence.existingClaim }}
{{- end }}

{{/* The controller's configuration file: config from values, plus the chart's leader election. */}}
{{- define "envship.config" -}}
{{- $config := deepCopy .Values.config }}
{{- if include "envship.leaderElection" . }}
{{- $le := .Values.leaderElection }}
{{- if ge (int $le.renewDeadlineSeconds) (int $le.leaseDurationSeconds) }}
{{- fail "leaderElection.renewDeadlineSeconds must be less than leaseDurationSeconds" }}
{{- end }}
{{- if ge (int $le.retryPeriodSeconds) (int $le.renewDeadlineSeconds) }}
{{- fail "leaderElection.retryPeriodSeconds must be less than renewDeadlineSeconds" }}
{{- end }}
{{- $_ := set $config "leaderElection" (dict
  "enabled" true
  "leaseName" (include "envship.fullname" .)
  "namespace" .Release.Namespace
  "leaseDurationSeconds" (int $le.leaseDurationSeconds)
  "renewDeadlineSeconds" (int $le.renewDeadlineSeconds)
  "retryPeriodSeconds" (int $le.retryPeriodSeconds)) }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/* Seconds the pod gets on SIGTERM: explicit, or intervals.grace + 30. */}}
{{- define "envship.terminationGrace" -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add (int (ceil (dig "intervals" "grace" 300 .Values.config))) 30 }}
{{- else }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

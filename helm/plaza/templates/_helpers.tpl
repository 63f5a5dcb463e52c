{{/* Names and labels. */}}
{{- define "plaza.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "plaza.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "plaza.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "plaza.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "edge"). */}}
{{- define "plaza.selectorLabels" -}}
app.kubernetes.io/name: {{ include "plaza.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "plaza.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "plaza.edgeName" -}}{{ include "plaza.fullname" . }}-edge{{- end -}}
{{- define "plaza.brokerName" -}}{{ include "plaza.fullname" . }}-broker{{- end -}}
{{- define "plaza.authSecret" -}}{{ .Values.auth.existingSecret | default (printf "%s-auth" (include "plaza.fullname" .)) }}{{- end -}}
{{- define "plaza.brokerTlsSecret" -}}{{ .Values.broker.tls.existingSecret | default (printf "%s-broker-tls" (include "plaza.fullname" .)) }}{{- end -}}
{{- define "plaza.edgeTlsSecret" -}}{{ .Values.broker.tls.existingEdgeSecret | default (printf "%s-edge-tls" (include "plaza.fullname" .)) }}{{- end -}}
{{- define "plaza.adminSecret" -}}{{ .Values.broker.adminToken.existingSecret | default (printf "%s-broker-admin" (include "plaza.fullname" .)) }}{{- end -}}
{{- define "plaza.adminEnabled" -}}{{ if or .Values.broker.adminToken.existingSecret .Values.broker.adminToken.generate }}true{{ end }}{{- end -}}

{{/* The brokers' headless Service DNS name (resolves to every broker pod). */}}
{{- define "plaza.brokerDomain" -}}
{{ include "plaza.brokerName" . }}.{{ .Release.Namespace }}.svc.cluster.local
{{- end -}}

{{/*
TOML rendering. Helm's own toToml writes every number from values files as a float
(`50.0`), which the binaries reject for integer keys, so values are rendered here: whole
numbers as integers, strings JSON-quoted (valid TOML basic strings), lists inline, maps in a
list as inline tables, nested maps as [sections]. A null value leaves the key unset.
*/}}
{{- define "plaza.tomlKey" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . -}}{{ . }}{{- else -}}{{ toJson . }}{{- end -}}
{{- end -}}

{{- define "plaza.tomlValue" -}}
{{- $k := kindOf . -}}
{{- if eq $k "string" -}}{{ toJson . }}
{{- else if eq $k "bool" -}}{{ . }}
{{- else if or (eq $k "float64") (eq $k "float32") -}}
{{- if eq (float64 (int64 .)) (float64 .) -}}{{ int64 . }}{{- else -}}{{ . }}{{- end -}}
{{- else if has $k (list "int" "int8" "int16" "int32" "int64" "uint" "uint8" "uint16" "uint32" "uint64") -}}{{ . }}
{{- else if eq $k "slice" -}}[{{ range $i, $e := . }}{{ if $i }}, {{ end }}{{ include "plaza.tomlValue" $e }}{{ end }}]
{{- else if eq $k "map" -}}{{ "{ " }}{{- $first := true -}}{{ range $key, $v := . }}{{ if not (kindIs "invalid" $v) }}{{ if not $first }}, {{ end }}{{ $first = false }}{{ include "plaza.tomlKey" $key }} = {{ include "plaza.tomlValue" $v }}{{ end }}{{ end }} }
{{- else -}}{{ fail (printf "cannot render %v (%s) as TOML" . $k) }}
{{- end -}}
{{- end -}}

{{/* (dict "prefix" "a.b" "table" $map): keys first, then each sub-table as a [section]. */}}
{{- define "plaza.tomlTable" -}}
{{- $prefix := .prefix -}}
{{- range $key, $v := .table -}}
{{- if and (not (kindIs "invalid" $v)) (not (kindIs "map" $v)) }}
{{ include "plaza.tomlKey" $key }} = {{ include "plaza.tomlValue" $v }}
{{- end -}}
{{- end -}}
{{- range $key, $v := .table -}}
{{- if kindIs "map" $v -}}
{{- $name := include "plaza.tomlKey" $key -}}
{{- if $prefix }}{{ $name = printf "%s.%s" $prefix $name }}{{ end }}

[{{ $name }}]
{{- include "plaza.tomlTable" (dict "prefix" $name "table" $v) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Seconds of a duration written as "20s" or "2m" (0 when written otherwise). */}}
{{- define "plaza.seconds" -}}
{{- $d := toString . -}}
{{- if regexMatch "^[0-9]+s$" $d -}}{{ trimSuffix "s" $d }}
{{- else if regexMatch "^[0-9]+m$" $d -}}{{ mul (trimSuffix "m" $d | int) 60 }}
{{- else -}}0{{- end -}}
{{- end -}}

{{/* Pod anti-affinity on the node for one component: (dict "root" $ "component" "edge" "mode" "soft"). */}}
{{- define "plaza.antiAffinity" -}}
{{- $term := dict "topologyKey" "kubernetes.io/hostname" "labelSelector" (dict "matchLabels" (include "plaza.selectorLabels" . | fromYaml)) -}}
podAntiAffinity:
{{- if eq .mode "hard" }}
  requiredDuringSchedulingIgnoredDuringExecution:
    - {{- toYaml $term | nindent 6 }}
{{- else }}
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        {{- toYaml $term | nindent 8 }}
{{- end }}
{{- end -}}

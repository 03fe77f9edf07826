{{/* The chart name, or nameOverride: the first word of every `app.kubernetes.io/name`. */}}
{{- define "rota.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* Object name prefix: fullnameOverride, else the release name if it holds the chart name,
     else `<release>-<chart>`. `rota` for release `rota`, so objects are rota-extender, … */}}
{{- define "rota.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "rota.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "rota.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "rota.commonLabels" -}}
helm.sh/chart: {{ include "rota.chart" . }}
app.kubernetes.io/part-of: rota
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* Selector labels of one component; immutable once installed (Deployment and DaemonSet
     selectors), so they hold only the name and, for the agents, the flavour.
     Call with (dict "ctx" $ "component" "extender"). */}}
{{- define "rota.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rota.name" .ctx }}-{{ .component }}
{{- if .flavour }}
app.kubernetes.io/component: {{ .flavour }}
{{- end }}
{{- end -}}

{{/* Full labels of one component's objects and pods. */}}
{{- define "rota.labels" -}}
{{ include "rota.selectorLabels" . }}
{{- if not .flavour }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{ include "rota.commonLabels" .ctx }}
{{- end -}}

{{- define "rota.extenderName" -}}{{ include "rota.fullname" . }}-extender{{- end -}}
{{- define "rota.agentName" -}}{{ include "rota.fullname" . }}-agent{{- end -}}
{{- define "rota.schedulerName" -}}{{ include "rota.fullname" . }}-scheduler{{- end -}}
{{- define "rota.configName" -}}{{ include "rota.fullname" . }}-config{{- end -}}

{{/* The rota image reference: digest wins over tag; the tag defaults to appVersion. Call with
     (dict "ctx" $ "override" .Values.extender.image): non-empty override fields win. */}}
{{- define "rota.image" -}}
{{- $image := deepCopy .ctx.Values.image -}}
{{- $override := .override | default dict -}}
{{- if $override.repository }}{{ $_ := set $image "digest" "" }}{{ end -}}
{{- range $key, $value := $override }}{{ if $value }}{{ $_ := set $image $key $value }}{{ end }}{{ end -}}
{{- $repo := required "image.repository is required" $image.repository -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $repo $image.digest -}}
{{- else -}}
{{- $tag := $image.tag | default .ctx.Chart.AppVersion | toString -}}
{{- if eq $tag "latest" -}}
{{- fail "image.tag: pin a version or a digest, not latest" -}}
{{- end -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end -}}

{{/* The RotaConfig as mounted: files/rota-config.yaml with the `config` value merged over it,
     and the telemetry discovery keys filled in from the chart's own agent labels and port (and
     dcgm-exporter), so they cannot disagree. */}}
{{- define "rota.config" -}}
{{- $config := mergeOverwrite (.Files.Get "files/rota-config.yaml" | fromYaml) (deepCopy (.Values.config | default dict)) -}}
{{- $telemetry := deepCopy (get $config "telemetry" | default dict) -}}
{{- $_ := set $telemetry "agentSelector" (printf "app.kubernetes.io/name=%s-agent" (include "rota.name" .)) -}}
{{- $_ := set $telemetry "agentPort" (int .Values.agent.port) -}}
{{- if .Values.telemetry.dcgmExporter.enabled -}}
{{- $_ := set $telemetry "dcgmExporterSelector" .Values.telemetry.dcgmExporter.selector -}}
{{- $_ := set $telemetry "dcgmExporterPort" (int .Values.telemetry.dcgmExporter.port) -}}
{{- end -}}
{{- $_ := set $config "telemetry" $telemetry -}}
{{- toYaml $config -}}
{{- end -}}

{{/* Hardening of every rota-shipped container: the `restricted` Pod Security Standard plus a
     read-only root file system. */}}
{{- define "rota.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "rota.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* One replica per node (required), spread over zones where there are zones (soft).
     Call with (dict "ctx" $ "component" "extender"). */}}
{{- define "rota.placement" -}}
affinity:
  podAntiAffinity:
    # Two replicas on one node would both go with it: never.
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "rota.selectorLabels" . | nindent 12 }}
topologySpreadConstraints:
  # Across zones when nodes carry zone labels; nodes without one still qualify.
  - maxSkew: 1
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "rota.selectorLabels" . | nindent 8 }}
{{- end -}}

{{/* KubeSchedulerConfiguration of the second scheduler. The extender block is the one
     deploy/default-scheduler/ adds to the default scheduler (tests/deploy.rs keeps them equal);
     field reference: docs/extender-protocol.md §2.1. */}}
{{- define "rota.schedulerConfig" -}}
{{- $gpuResources := required "config.gpuResources must list the GPU resources rota manages" (include "rota.config" . | fromYaml).gpuResources -}}
# KubeSchedulerConfiguration of {{ .Values.scheduler.name }}. Pods opt in with
# `spec.schedulerName: {{ .Values.scheduler.name }}` (a VM with `spec.template.spec.schedulerName`);
# all other pods stay with the default scheduler.
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
# In-cluster credentials of the ServiceAccount (no kubeconfig).
clientConnection:
  kubeconfig: ""
  # The client's 50/100 defaults cap binding at about 50 pods/s (deploy/README.md).
  qps: {{ .Values.scheduler.clientConnection.qps }}
  burst: {{ .Values.scheduler.clientConnection.burst }}
leaderElection:
  leaderElect: true
  # A Lease of its own: it must not fight the default scheduler for kube-system/kube-scheduler.
  resourceLock: leases
  resourceNamespace: {{ .Release.Namespace }}
  resourceName: {{ include "rota.schedulerName" . }}
profiles:
  - schedulerName: {{ .Values.scheduler.name }}
    {{- with .Values.scheduler.percentageOfNodesToScore }}
    # Nodes searched per pod (deploy/README.md, "Scheduler throughput").
    percentageOfNodesToScore: {{ . }}
    {{- end }}
    {{- if not .Values.scheduler.extender.prioritize }}
    # Without rota's prioritize verb, GPUs are packed in-tree: the fullest node that fits.
    pluginConfig:
      - name: NodeResourcesFit
        args:
          scoringStrategy:
            type: MostAllocated
            resources:
              {{- range $gpuResources }}
              - name: {{ . }}
                weight: 1
              {{- end }}
    {{- end }}
extenders:
  - urlPrefix: http://{{ include "rota.extenderName" . }}.{{ .Release.Namespace }}.svc:{{ .Values.extender.port }}
    filterVerb: filter
    {{- if .Values.scheduler.extender.prioritize }}
    prioritizeVerb: prioritize
    {{- end }}
    preemptVerb: preempt
    # rota's scores are 0..10 and kube-scheduler adds score × weight × 10 to a node: weight 5
    # is up to 500 points against the in-tree plugins' 1,200 at v1.33 (default score weights
    # 3+2+2+2+1+1+1, each plugin 0..100) or 1,400 from v1.34 (DynamicResources, weight 2).
    weight: {{ .Values.scheduler.extender.weight }}
    # Send node names, not whole Node objects: much smaller, and it avoids the upstream bug with
    # nodeCacheCapable=false (§2.10). rota keeps its own node and pod caches.
    nodeCacheCapable: true
    # rota answers from in-memory caches; a filter timeout puts the pod in backoff
    # (SchedulerError), it does not lose it.
    httpTimeout: {{ .Values.scheduler.extender.httpTimeout }}
    # Not ignorable (default): an ignorable extender that is down lets every GPU pod through
    # filter, bypassing the fair-share gate and the health filter. Only pods that request a
    # managed resource call the extender, and they wait in backoff until a replica answers.
    ignorable: {{ .Values.scheduler.extender.ignorable }}
    # Exactly RotaConfig's gpuResources. ignoredByScheduler stays false so NodeResourcesFit
    # keeps counting the real device-plugin resources and in-tree preemption proposes
    # GPU-holding victims that rota's preempt verb then narrows.
    managedResources:
      {{- range $gpuResources }}
      - name: {{ . }}
        ignoredByScheduler: false
      {{- end }}
{{- end -}}

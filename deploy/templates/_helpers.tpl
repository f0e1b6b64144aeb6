{{/*
The namespaces the agent is scoped to, as a JSON list ([] = every
namespace). `watchNamespace` (one name, the chart's old key) is read as a
list of one; both set is an error rather than a guess.
*/}}
{{- define "autopilot.watchNamespaces" -}}
{{- $list := .Values.watchNamespaces | default list -}}
{{- if not (kindIs "slice" $list) -}}
{{- fail (printf "watchNamespaces must be a list of namespace names, e.g. watchNamespaces: [payments, ledger] or --set 'watchNamespaces={payments,ledger}' (got %v)" $list) -}}
{{- end -}}
{{- with .Values.watchNamespace -}}
{{- if $list -}}
{{- fail "watchNamespace (one name) was replaced by watchNamespaces (a list): set only watchNamespaces" -}}
{{- end -}}
{{- $list = list . -}}
{{- end -}}
{{- range $list -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" (toString .)) -}}
{{- fail (printf "watchNamespaces: %q is not a namespace name" (toString .)) -}}
{{- end -}}
{{- end -}}
{{- toJson (uniq $list) -}}
{{- end -}}

{{/* The leader Lease, in the release namespace: the one Lease the agent may write. */}}
{{- define "autopilot.leaseName" -}}autopilot-leader{{- end -}}

{{/* The leader Leases, as a JSON list: the one Lease, or one per shard
  (`<leaseName>-shard-<N>`, the name `--shard N/M` gives it). */}}
{{- define "autopilot.leaseNames" -}}
{{- $names := list (include "autopilot.leaseName" .) -}}
{{- if gt (int .Values.shards) 1 -}}
{{- $names = list -}}
{{- range $i := until (int .Values.shards) -}}
{{- $names = append $names (printf "%s-shard-%d" (include "autopilot.leaseName" $) $i) -}}
{{- end -}}
{{- end -}}
{{- toJson $names -}}
{{- end -}}

{{/* The agent's user name as the API server sees its token. */}}
{{- define "autopilot.serviceAccountUser" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ .Release.Name }}
{{- end -}}

{{/* SQLite on a PersistentVolumeClaim: the default, unless PostgreSQL is set. */}}
{{- define "autopilot.journalClaim" -}}
{{- if and .Values.persistence.enabled (not .Values.database.urlSecret.name) -}}
{{- .Values.persistence.existingClaim | default (printf "%s-journal" .Release.Name) -}}
{{- end -}}
{{- end -}}

{{/*
What the agent needs in every namespace it watches: a ClusterRole's rules
when it watches all of them, a Role's in each listed one. Derived from
kinds::controller_rbac() and act::action::rbac_for (tests/registry.rs checks
the chart grants both, tests/rbac.rs proves it on the real authorizer).
*/}}
{{- define "autopilot.watchedRules" -}}
# Our kinds: read and watch them; patch for runbook actions (scale,
# resources, rollback, restart) and approval annotations.
- apiGroups: ["payments.io"]
  resources: ["paymentgateways", "clearingadapters", "batchprocessors", "sagaorchestrators"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["payments.io"]
  resources: ["paymentgateways/status", "clearingadapters/status", "batchprocessors/status", "sagaorchestrators/status"]
  verbs: ["get", "patch"]
# Owned objects carry blockOwnerDeletion; clusters with the
# OwnerReferencesPermissionEnforcement admission plugin ask for this.
- apiGroups: ["payments.io"]
  resources: ["paymentgateways/finalizers", "clearingadapters/finalizers", "batchprocessors/finalizers", "sagaorchestrators/finalizers"]
  verbs: ["update"]
# What the controllers own through a payments.io resource (its controller
# ownerReference): created and server-side applied, never updated by PUT.
# The admission policy (admission.yaml) refuses any such write on an object
# no payments.io resource controls.
- apiGroups: [""]
  resources: ["configmaps", "services"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Jobs: a BatchProcessor's "run now"; never deleted (the CronJob's history
# limits and the owner reference collect them).
- apiGroups: ["batch"]
  resources: ["cronjobs", "jobs"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Deleted when the spec turns them off (autoscaling, monitoring).
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# Recommend mode: a Recommendation per recommended change, next to its
# target, never changed after (its spec is immutable); the Approvals people
# create, read only (the admission policy RELEASE-approvals refuses any the
# agent would write); what became of both, in their status.
- apiGroups: ["payments.io"]
  resources: ["recommendations"]
  verbs: ["create", "get", "list", "watch"]
- apiGroups: ["payments.io"]
  resources: ["approvals"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["payments.io"]
  resources: ["recommendations/status", "approvals/status"]
  verbs: ["get", "patch", "update"]
# The observe loop watches (list + watch) every kind a model spec scores
# (models/*.yaml), so a component without series shows up as unobserved,
# and every kind a runbook triggers on, for its ctx.resource.
- apiGroups: ["kafka.strimzi.io"]
  resources: ["kafkas"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["jaegertracing.io"]
  resources: ["jaegers"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["monitoring.coreos.com"]
  resources: ["prometheusrules"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["servicebus.azure.com"]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
# Runbook actions: each is a patch (or, for a backup, a create) on the
# operator's own resource; see `autopilot actions show ID` for the rule an
# action used, and ../OPERATORS.md for the field each operator reads.
- apiGroups: ["postgresql.cnpg.io"]
  resources: ["clusters"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["postgresql.cnpg.io"]
  resources: ["clusters/status"]
  verbs: ["get", "patch"]
- apiGroups: ["postgresql.cnpg.io"]
  resources: ["backups"]
  verbs: ["get", "list", "create"]
- apiGroups: ["kafka.strimzi.io"]
  resources: ["kafkanodepools"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["cert-manager.io"]
  resources: ["certificates"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["cert-manager.io"]
  resources: ["certificates/status"]
  verbs: ["get", "patch"]
- apiGroups: ["external-secrets.io"]
  resources: ["externalsecrets"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["networking.istio.io"]
  resources: ["virtualservices"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["argoproj.io"]
  resources: ["applications"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["app.redislabs.com"]
  resources: ["redisenterpriseclusters", "redisenterprisedatabases"]
  verbs: ["get", "list", "watch", "patch"]
{{- end -}}

{{/*
The `approvers` value as a JSON object: each namespace to the RBAC subjects
that may approve there. An entry that is not {namespace, kind, name} with
kind Group, User or ServiceAccount, or that names the agent itself, is an
error rather than a guess.
*/}}
{{- define "autopilot.approvers" -}}
{{- $list := .Values.approvers | default list -}}
{{- if not (kindIs "slice" $list) -}}
{{- fail (printf "approvers must be a list of {namespace, kind, name}, e.g. approvers: [{namespace: payments, kind: Group, name: payments-oncall}] (got %v)" $list) -}}
{{- end -}}
{{- $byNamespace := dict -}}
{{- range $list -}}
{{- if not (kindIs "map" .) -}}
{{- fail (printf "approvers: %v is not {namespace, kind, name}" .) -}}
{{- end -}}
{{- $ns := toString (.namespace | default "") -}}
{{- $kind := toString (.kind | default "") -}}
{{- $name := toString (.name | default "") -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" $ns) -}}
{{- fail (printf "approvers: %v needs namespace: the namespace where it may approve" .) -}}
{{- end -}}
{{- if not (has $kind (list "Group" "User" "ServiceAccount")) -}}
{{- fail (printf "approvers: %v needs kind: Group, User or ServiceAccount" .) -}}
{{- end -}}
{{- if not $name -}}
{{- fail (printf "approvers: %v needs name: the user, group or service account as the API server knows it" .) -}}
{{- end -}}
{{- $subject := dict "kind" $kind "name" $name -}}
{{- if eq $kind "ServiceAccount" -}}
{{- $saNamespace := toString (.serviceAccountNamespace | default $ns) -}}
{{- if and (eq $saNamespace $.Release.Namespace) (eq $name $.Release.Name) -}}
{{- fail "approvers: the agent's own service account may not approve (no self-approval)" -}}
{{- end -}}
{{- $_ := set $subject "namespace" $saNamespace -}}
{{- else -}}
{{- $_ := set $subject "apiGroup" "rbac.authorization.k8s.io" -}}
{{- if and (eq $kind "User") (eq $name (include "autopilot.serviceAccountUser" $)) -}}
{{- fail "approvers: the agent's own service account may not approve (no self-approval)" -}}
{{- end -}}
{{- end -}}
{{- $_ := set $byNamespace $ns (append (get $byNamespace $ns | default list) $subject) -}}
{{- end -}}
{{- toJson $byNamespace -}}
{{- end -}}

{{/* Name of every object; also the Service's DNS name that sidecars dial. */}}
{{- define "meshca.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "meshca.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "meshca.fullname" .) -}}
{{- end -}}

{{/* Selector labels: never change after install (a Deployment's selector is immutable). */}}
{{- define "meshca.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "meshca.labels" -}}
{{ include "meshca.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "meshca.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* Combinations that render fine but cannot work, refused with a message that says why. */}}
{{- define "meshca.validate" -}}
{{- $replicas := int .Values.replicaCount -}}
{{- if and (gt $replicas 1) (not .Values.database.existingSecret) -}}
{{- fail (printf "meshca: replicaCount %d needs a shared PostgreSQL database: set database.existingSecret to a Secret holding its URL. The embedded SQLite database lives in one pod's data dir and only works with replicaCount 1." $replicas) -}}
{{- end -}}
{{- if and (gt $replicas 1) .Values.persistence.enabled -}}
{{- fail (printf "meshca: replicaCount %d cannot share one PersistentVolumeClaim: set persistence.enabled=false (the data dir becomes an emptyDir; state lives in PostgreSQL)." $replicas) -}}
{{- end -}}
{{- $vault := or (hasPrefix "vault-" .Values.keystore.type) (eq .Values.keystore.upstream "vault-pki") -}}
{{- if and $vault (not .Values.keystore.vault.addr) -}}
{{- fail (printf "meshca: keystore.type %s / keystore.upstream %s needs keystore.vault.addr." .Values.keystore.type .Values.keystore.upstream) -}}
{{- end -}}
{{- if and (ne .Values.keystore.upstream "none") .Values.caSecret -}}
{{- fail "meshca: keystore.upstream and caSecret both say who signs meshca's intermediate: set one." -}}
{{- end -}}
{{- if and (eq .Values.rootRotation "cross-sign") (or (ne .Values.keystore.upstream "none") .Values.caSecret) -}}
{{- fail "meshca: rootRotation cross-sign concerns roots meshca makes: not with keystore.upstream or caSecret." -}}
{{- end -}}
{{- if and $vault (eq .Values.keystore.vault.auth "token") (not .Values.keystore.vault.tokenSecret) -}}
{{- fail "meshca: keystore.vault.auth token needs keystore.vault.tokenSecret (a Secret with key \"token\")." -}}
{{- end -}}
{{- if and $vault (eq .Values.keystore.vault.auth "kubernetes") (not .Values.keystore.vault.role) -}}
{{- fail "meshca: keystore.vault.auth kubernetes needs keystore.vault.role." -}}
{{- end -}}
{{- if and $vault (eq .Values.keystore.vault.auth "approle") (not (and .Values.keystore.vault.approle.roleId .Values.keystore.vault.approle.secretIdSecret)) -}}
{{- fail "meshca: keystore.vault.auth approle needs keystore.vault.approle.roleId and keystore.vault.approle.secretIdSecret (a Secret with key \"secret-id\")." -}}
{{- end -}}
{{- if and (gt $replicas 1) (eq .Values.keystore.type "file") (not .Values.caSecret) -}}
{{- fail (printf "meshca: replicaCount %d with keystore.type file would give each pod CA keys of its own in its own data dir: use keystore.type vault-transit or vault-kv, or a plugged-in CA (caSecret)." $replicas) -}}
{{- end -}}
{{- if and .Values.tokens.jwks (not .Values.tokens.issuer) -}}
{{- fail "meshca: tokens.jwks needs tokens.issuer (the iss those keys sign for)." -}}
{{- end -}}
{{- if and .Values.extAuthz.enabled .Values.networkPolicy.enabled (not .Values.extAuthz.callers) -}}
{{- fail "meshca: extAuthz.enabled with networkPolicy.enabled needs extAuthz.callers: the NetworkPolicy peers (pods or namespaces) whose Envoy calls ext_authz. There is no \"anyone\" default." -}}
{{- end -}}
{{- if .Values.agent.enabled -}}
{{- include "meshca.agent.validate" . -}}
{{- end -}}
{{- if .Values.federation.enabled -}}
{{- include "meshca.federation.validate" . -}}
{{- end -}}
{{- if and .Release.IsUpgrade (not .Values.keystore.kekSecret) .Values.keystore.createKekSecret (not (lookup "v1" "Secret" .Release.Namespace (include "meshca.kekSecretName" .))) -}}
{{- fail (printf "meshca: Secret %s (the key-encryption key) is missing on this upgrade. A release from an older chart keeps its key on the data volume (/var/lib/meshca/data.kek), and a new key could not open the keys sealed with it. Move it into a Secret: kubectl -n %s exec deploy/%s -- cat /var/lib/meshca/data.kek | kubectl -n %s create secret generic %s --from-file=kek=/dev/stdin, and set keystore.kekSecret=%s (or keystore.createKekSecret=false to leave it on the volume)." (include "meshca.kekSecretName" .) .Release.Namespace (include "meshca.fullname" .) .Release.Namespace (include "meshca.kekSecretName" .) (include "meshca.kekSecretName" .)) -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the key-encryption key: the user's, or the one the chart creates. */}}
{{- define "meshca.kekSecretName" -}}
{{- .Values.keystore.kekSecret | default (printf "%s-kek" (include "meshca.fullname" .)) -}}
{{- end -}}

{{/* Is the key-encryption key mounted from a Secret (else it is on the data volume)? */}}
{{- define "meshca.kekFromSecret" -}}
{{- if or .Values.keystore.kekSecret .Values.keystore.createKekSecret -}}true{{- end -}}
{{- end -}}

{{/* Does meshca call the API server's OIDC discovery (tokens checked locally, issuer not given)? */}}
{{- define "meshca.discoversIssuer" -}}
{{- if and (ne .Values.tokens.validation "tokenreview") (not .Values.tokens.issuer) -}}true{{- end -}}
{{- end -}}

{{/* The `meshca serve` arguments (the image's entrypoint is `meshca serve`). */}}
{{- define "meshca.args" -}}
{{- $fullname := include "meshca.fullname" . -}}
- --data-dir=/var/lib/meshca/data
- --grpc-addr=0.0.0.0:15012
- --admin-addr=0.0.0.0:8443
- --metrics-addr=0.0.0.0:15014
- --server-dns-name={{ $fullname }}.{{ .Release.Namespace }}.svc
- --server-dns-name={{ $fullname }}.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }}
{{- /* `meshca admin` run inside the pod dials the wildcard bind address as localhost. */}}
- --server-dns-name=localhost
{{- range .Values.extraDnsNames }}
- {{ printf "--server-dns-name=%v" . | quote }}
{{- end }}
- {{ printf "--trust-domain=%v" .Values.trustDomain | quote }}
- {{ printf "--ca-key-type=%v" .Values.caKeyType | quote }}
- {{ printf "--default-ttl=%v" .Values.ttl.default | quote }}
- {{ printf "--max-ttl=%v" .Values.ttl.max | quote }}
- {{ printf "--log-level=%v" .Values.logLevel | quote }}
- {{ printf "--workers=%v" .Values.workers | quote }}
- {{ printf "--token-validation=%v" .Values.tokens.validation | quote }}
{{- with .Values.tokens.issuer }}
- {{ printf "--token-issuer=%v" . | quote }}
{{- end }}
{{- with .Values.tokens.jwks }}
- {{ printf "--token-jwks=%v" . | quote }}
{{- end }}
{{- range .Values.tokens.audiences }}
- {{ printf "--token-audience=%v" . | quote }}
{{- end }}
{{- if .Values.tokens.verifyPodBinding }}
- --verify-pod-binding
{{- end }}
{{- range .Values.tokens.trustedNodeAccounts }}
- {{ printf "--trusted-node-account=%v" . | quote }}
{{- end }}
{{- /* The chart's own node agent, unless it is listed already. */}}
{{- if and .Values.agent.enabled (not (has (include "meshca.agent.account" .) .Values.tokens.trustedNodeAccounts)) }}
- {{ printf "--trusted-node-account=%s" (include "meshca.agent.account" .) | quote }}
{{- end }}
{{- range .Values.admin.serviceAccounts }}
- {{ printf "--admin-service-account=%v" . | quote }}
{{- end }}
{{- range .Values.admin.spiffeIds }}
- {{ printf "--admin-spiffe-id=%v" . | quote }}
{{- end }}
{{- /* Every keystore seals some keys in files (serving keys at least) under the KEK. */}}
{{- if include "meshca.kekFromSecret" . }}
- --kek-file=/etc/meshca/kek/kek
{{- else }}
- --kek-file=/var/lib/meshca/data.kek
{{- end }}
{{- /* "file" is meshca's default keystore: no flag needed. */}}
{{- if ne .Values.keystore.type "file" }}
- {{ printf "--keystore=%v" .Values.keystore.type | quote }}
{{- end }}
{{- if or (ne .Values.keystore.type "file") (eq .Values.keystore.upstream "vault-pki") }}
{{- with .Values.keystore.vault }}
- {{ printf "--vault-addr=%v" .addr | quote }}
{{- if .namespace }}
- {{ printf "--vault-namespace=%v" .namespace | quote }}
{{- end }}
{{- if .caCertSecret }}
- --vault-ca-cert=/etc/meshca/vault-ca/ca.crt
{{- end }}
- {{ printf "--vault-auth=%v" .auth | quote }}
{{- if eq .auth "kubernetes" }}
- {{ printf "--vault-role=%v" .role | quote }}
{{- else if eq .auth "approle" }}
- {{ printf "--vault-role-id=%v" .approle.roleId | quote }}
- --vault-secret-id-file=/etc/meshca/vault-approle/secret-id
{{- else }}
- --vault-token-file=/etc/meshca/vault-token/token
{{- end }}
{{- if eq $.Values.keystore.type "vault-transit" }}
- {{ printf "--vault-transit-mount=%v" .transitMount | quote }}
{{- else if eq $.Values.keystore.type "vault-kv" }}
- {{ printf "--vault-kv-mount=%v" .kvMount | quote }}
{{- end }}
{{- if eq $.Values.keystore.upstream "vault-pki" }}
- --upstream=vault-pki
- {{ printf "--vault-pki-mount=%v" .pkiMount | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- if eq .Values.rootRotation "cross-sign" }}
- --root-rotation=cross-sign
{{- end }}
{{- if .Values.caSecret }}
- --ca-dir=/etc/meshca/cacerts
{{- end }}
{{- if .Values.publishConfigMaps.enabled }}
- {{ printf "--publish-configmaps=%v" .Values.publishConfigMaps.selector | quote }}
{{- end }}
{{- if .Values.extAuthz.enabled }}
{{- /* The pod network: its callers are Envoys in other pods (the NetworkPolicy narrows them). */}}
- --ext-authz-addr=0.0.0.0:9191
- {{ printf "--authz-root-namespace=%v" .Values.extAuthz.rootNamespace | quote }}
{{- if .Values.extAuthz.watchKubePolicies }}
- --watch-kube-policies
{{- end }}
{{- if .Values.extAuthz.tls }}
- --ext-authz-tls
{{- end }}
{{- end }}
{{- if .Values.federation.enabled }}
{{- include "meshca.federation.args" . }}
{{- end }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end -}}

{{/* ---- SPIFFE federation (federation.enabled) ---- */}}

{{/* The endpoint's own Service, holding only the bundle endpoint (federation.service). */}}
{{- define "meshca.federation.serviceName" -}}
{{- printf "%s-federation" (include "meshca.fullname" . | trunc 52 | trimSuffix "-") -}}
{{- end -}}

{{/* Where a federateWith entry's ConfigMap is mounted (called with the entry). */}}
{{- define "meshca.federateWith.dir" -}}
{{- printf "/etc/meshca/federate-with/%s" .trustDomain -}}
{{- end -}}

{{/* A federateWith entry's ConfigMap (called with the entry): https_spiffe's bundleConfigMap,
https_web's caConfigMap; empty when it has none (https_web under the system's CAs).
meshca.federation.validate makes sure an entry names only the one its profile reads. */}}
{{- define "meshca.federateWith.configMap" -}}
{{- get . (ternary "bundleConfigMap" "caConfigMap" (eq .profile "https_spiffe")) -}}
{{- end -}}

{{/* The key meshca reads from that ConfigMap, which is also the file's name in its mount. */}}
{{- define "meshca.federateWith.key" -}}
{{- ternary "bundle" "ca.crt" (eq .profile "https_spiffe") -}}
{{- end -}}

{{/* One `--federate-with` value: TD=URL,profile=…, the endpoint's ID (https_spiffe) and the
file of the entry's ConfigMap at the path its volume is mounted on (called with the entry). */}}
{{- define "meshca.federateWith.value" -}}
{{- $value := printf "%s=%s,profile=%s" .trustDomain .url .profile -}}
{{- if eq .profile "https_spiffe" -}}
{{- $id := get . "endpointSpiffeId" | default (printf "spiffe://%s/meshca/federation" .trustDomain) -}}
{{- $value = printf "%s,endpoint-spiffe-id=%s" $value $id -}}
{{- end -}}
{{- if include "meshca.federateWith.configMap" . -}}
{{- $option := ternary "bundle" "ca" (eq .profile "https_spiffe") -}}
{{- $value = printf "%s,%s=%s/%s" $value $option (include "meshca.federateWith.dir" .) (include "meshca.federateWith.key" .) -}}
{{- end -}}
{{- $value -}}
{{- end -}}

{{/* The federation arguments of `meshca serve`. */}}
{{- define "meshca.federation.args" -}}
{{- $f := .Values.federation }}
{{- /* The pod network: the servers of other trust domains fetch from it (through the
Services; the NetworkPolicy admits networkPolicy.federationFrom). */}}
- {{ printf "--federation-addr=0.0.0.0:%d" (int $f.port) | quote }}
- {{ printf "--federation-profile=%v" $f.profile | quote }}
{{- if eq $f.profile "https_web" }}
- --federation-cert=/etc/meshca/federation-tls/tls.crt
- --federation-key=/etc/meshca/federation-tls/tls.key
{{- end }}
{{- with $f.refreshMin }}
- {{ printf "--federation-refresh-min=%v" . | quote }}
{{- end }}
{{- with $f.refreshMax }}
- {{ printf "--federation-refresh-max=%v" . | quote }}
{{- end }}
{{- with $f.fetchTimeout }}
- {{ printf "--federation-fetch-timeout=%v" . | quote }}
{{- end }}
{{- if $f.istioIncludeFederated }}
- --istio-include-federated
{{- end }}
{{- range $f.federateWith }}
- {{ printf "--federate-with=%s" (include "meshca.federateWith.value" .) | quote }}
{{- end }}
{{- end -}}

{{/* Federation values that render but cannot work. */}}
{{- define "meshca.federation.validate" -}}
{{- $f := .Values.federation -}}
{{- $port := int $f.port -}}
{{- $taken := dict "15012" "gRPC" "8443" "admin" "15014" "metrics" -}}
{{- if .Values.extAuthz.enabled -}}
{{- $_ := set $taken "9191" "ext_authz" -}}
{{- end -}}
{{- if hasKey $taken (toString $port) -}}
{{- fail (printf "meshca: federation.port %d is meshca's %s port: pick another." $port (get $taken (toString $port))) -}}
{{- end -}}
{{- if and (eq $f.profile "https_web") (not $f.webCertSecret) -}}
{{- fail "meshca: federation.profile https_web needs federation.webCertSecret: an existing kubernetes.io/tls Secret (tls.crt, tls.key) holding a Web-PKI certificate for the host name other trust domains fetch the bundle from." -}}
{{- end -}}
{{- if and (ne $f.profile "https_web") $f.webCertSecret -}}
{{- fail "meshca: federation.webCertSecret is only read with federation.profile https_web; with https_spiffe the endpoint presents meshca's own SVID. Set federation.profile=https_web, or drop the Secret." -}}
{{- end -}}
{{- $seen := dict -}}
{{- range $f.federateWith -}}
{{- $td := .trustDomain -}}
{{- if hasKey $seen $td -}}
{{- fail (printf "meshca: federation.federateWith names trust domain %s twice." $td) -}}
{{- end -}}
{{- $_ := set $seen $td true -}}
{{- if eq $td $.Values.trustDomain -}}
{{- fail (printf "meshca: federation.federateWith names %s, this release's own trustDomain: federation is with other trust domains." $td) -}}
{{- end -}}
{{- if eq .profile "https_spiffe" -}}
{{- if not (get . "bundleConfigMap") -}}
{{- fail (printf "meshca: federation.federateWith %s (profile https_spiffe) needs bundleConfigMap: a ConfigMap of this namespace whose key \"bundle\" holds %s's roots (PEM or a SPIFFE bundle), which verify its endpoint on the first fetch." $td $td) -}}
{{- end -}}
{{- if get . "caConfigMap" -}}
{{- fail (printf "meshca: federation.federateWith %s: caConfigMap is only read with profile https_web; https_spiffe verifies the endpoint with the roots in bundleConfigMap." $td) -}}
{{- end -}}
{{- else if or (get . "bundleConfigMap") (get . "endpointSpiffeId") -}}
{{- fail (printf "meshca: federation.federateWith %s: bundleConfigMap and endpointSpiffeId are only read with profile https_spiffe; https_web verifies the endpoint's host name under the system's CAs (or caConfigMap's)." $td) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* ---- the node agent (agent.enabled) ---- */}}

{{- define "meshca.agent.fullname" -}}
{{- printf "%s-agent" (include "meshca.fullname" . | trunc 57 | trimSuffix "-") -}}
{{- end -}}

{{- define "meshca.agent.serviceAccountName" -}}
{{- .Values.agent.serviceAccount.name | default (include "meshca.agent.fullname" .) -}}
{{- end -}}

{{/* NS/SA the server trusts to ask for the certificates of workloads on the agent's node. */}}
{{- define "meshca.agent.account" -}}
{{- printf "%s/%s" .Release.Namespace (include "meshca.agent.serviceAccountName" .) -}}
{{- end -}}

{{/* Disjoint from the server's selector labels: the server's Service, NetworkPolicy and
Deployment must never pick an agent pod. */}}
{{- define "meshca.agent.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}-agent
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "meshca.agent.labels" -}}
{{ include "meshca.agent.selectorLabels" . }}
app.kubernetes.io/component: node-agent
app.kubernetes.io/part-of: {{ .Chart.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "meshca.agent.image" -}}
{{- $repository := .Values.agent.image.repository | default .Values.image.repository -}}
{{- $tag := .Values.agent.image.tag | default .Values.image.tag | default .Chart.AppVersion -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}

{{/* The audience of the agent's token for the server: one the server accepts. */}}
{{- define "meshca.agent.tokenAudience" -}}
{{- first .Values.tokens.audiences -}}
{{- end -}}

{{/* The ConfigMap holding root-cert.pem, the roots that verify the server. */}}
{{- define "meshca.agent.serverCaConfigMap" -}}
{{- .Values.agent.serverCaConfigMap | default "istio-ca-root-cert" -}}
{{- end -}}

{{/* The `meshca agent` arguments. */}}
{{- define "meshca.agent.args" -}}
{{- $dir := .Values.agent.socketDir -}}
- {{ printf "--server=%s.%s.svc:15012" (include "meshca.fullname" .) .Release.Namespace | quote }}
- --server-ca=/var/run/secrets/meshca/root-cert.pem
- --token-file=/var/run/secrets/tokens/meshca-agent
- {{ printf "--trust-domain=%v" .Values.trustDomain | quote }}
- {{ printf "--attestor=%v" .Values.agent.attestor | quote }}
{{- /* $(HOST_IP) is expanded by the kubelet from the container's environment. */}}
- {{ printf "--kubelet-url=%v" (.Values.agent.kubelet.url | default "https://$(HOST_IP):10250/pods") | quote }}
{{- if eq .Values.agent.kubelet.verify "ca" }}
- --kubelet-ca=/etc/meshca/kubelet-ca/ca.crt
{{- else }}
- --kubelet-insecure
{{- end }}
- {{ printf "--socket=%s/agent.sock" $dir | quote }}
- {{ printf "--sds-socket=%s/sds.sock" $dir | quote }}
- {{ printf "--health-addr=0.0.0.0:%d" (int .Values.agent.healthPort) | quote }}
{{- with .Values.agent.svidTtl }}
- {{ printf "--svid-ttl=%v" . | quote }}
{{- end }}
- {{ printf "--log-level=%v" .Values.agent.logLevel | quote }}
{{- range .Values.agent.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Agent values that render but cannot work. */}}
{{- define "meshca.agent.validate" -}}
{{- $kubelet := .Values.agent.kubelet -}}
{{- if and (eq $kubelet.verify "ca") (not (or $kubelet.caFile $kubelet.caConfigMap)) -}}
{{- fail "meshca: agent.kubelet.verify ca needs agent.kubelet.caFile (the PEM CA of the kubelets' serving certificates, a file on every node) or agent.kubelet.caConfigMap (a ConfigMap with key ca.crt, e.g. kube-root-ca.crt)." -}}
{{- end -}}
{{- if and $kubelet.caFile $kubelet.caConfigMap -}}
{{- fail "meshca: give agent.kubelet.caFile or agent.kubelet.caConfigMap, not both." -}}
{{- end -}}
{{- if and (eq $kubelet.verify "insecure") (or $kubelet.caFile $kubelet.caConfigMap) -}}
{{- fail "meshca: agent.kubelet.caFile and agent.kubelet.caConfigMap are only read with agent.kubelet.verify ca; with verify insecure the kubelet's certificate is not checked. Set agent.kubelet.verify=ca, or drop the CA." -}}
{{- end -}}
{{- if and (not .Values.publishConfigMaps.enabled) (not .Values.agent.serverCaConfigMap) -}}
{{- fail "meshca: the agent verifies the server with the trust bundle in ConfigMap istio-ca-root-cert, which meshca only publishes with publishConfigMaps.enabled. Turn it on, or name a ConfigMap of this namespace holding root-cert.pem in agent.serverCaConfigMap." -}}
{{- end -}}
{{- end -}}

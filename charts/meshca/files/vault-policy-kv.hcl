# meshca --keystore vault-kv (docs/vault.md). Mount: secret (KV v2), prefix meshca/ca-keys.
# Keys are written once with cas=0. "update" is granted only so that a second writer's cas=0
# reaches the check-and-set test (HTTP 400, reported as a lost race) instead of a 403.
# No delete, destroy or list.
path "secret/data/meshca/ca-keys/*" {
  capabilities = ["create", "update", "read"]
}
path "secret/metadata/meshca/ca-keys/*" {
  capabilities = ["read"]
}

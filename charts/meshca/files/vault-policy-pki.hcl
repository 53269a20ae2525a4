# meshca --upstream vault-pki (docs/vault.md). Mount: pki. Vault's root signs meshca's
# intermediate CSR; nothing else. Vault's CA chain (pki/cert/ca_chain, pki/issuer/default/json)
# is public and needs no grant.
path "pki/root/sign-intermediate" {
  capabilities = ["update"]
}

# meshca --upstream vault-pki (docs/vault.md). Mount: pki. Vault's issuers sign meshca's
# intermediate CSRs, each by the issuer meshca's journal has active (`+` = the issuer's id);
# nothing else: no issuing of leaves, no roles, no reading of keys. The default issuer
# (pki/issuer/default/json), which meshca reads to notice a rotation, is public in Vault.
path "pki/issuer/+/sign-intermediate" {
  capabilities = ["update"]
}

# meshca --keystore vault-transit (docs/vault.md). Mount: transit (change the prefix if not).
# Create CA keys (meshca never reuses a name) and read their public halves. Transit has no
# existence check on keys/<name>, so creating a key is an "update" (OpenBao refuses it with
# "create" alone). `+` is one path segment: keys/<name>/config, /rotate, /export, /backup
# stay out of reach, so meshca can neither make a key exportable nor delete or trim it.
path "transit/keys/+" {
  capabilities = ["create", "update", "read"]
}
# Sign prehashed to-be-signed bytes (certificates, CRLs, JWT-SVIDs).
path "transit/sign/+" {
  capabilities = ["update"]
}

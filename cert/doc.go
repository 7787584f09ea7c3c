// Package cert is pias's admission by signed statement: an Ed25519 CA, the
// node certificates it signs, and its revocation lists.
//
// A CA certificate names the CA, its Ed25519 public key, its validity and
// optional constraints: the overlay networks its certificates' addresses
// must lie in and the group rights they may hold. It is self-signed.
//
// A node certificate binds a node's name, role (proxy, target or client),
// WireGuard public key, overlay addresses, cluster (proxies only), the
// anycast groups it may join and its rights over them (targets only), its
// validity, and the fingerprint of the CA that signed it.
//
// A revocation list is a CA-signed, numbered list of the fingerprints of
// certificates the CA has revoked; a higher serial replaces a lower one.
//
// # Encoding
//
// Each object has one canonical binary form, at most MaxSize bytes
// (MaxRevocationListSize for a list): a version byte, a kind byte, the
// fields in a fixed order, and the 64-byte Ed25519 signature over
// everything before it. Lists are sorted and free of duplicates, addresses
// are plain IPv4 or IPv6, prefixes are masked. The parsers accept exactly
// the canonical forms, so every accepted input re-encodes to the same
// bytes, and a certificate's fingerprint (SHA-256 of those bytes) names
// one meaning. Files hold the bytes in a PEM armor ("-----BEGIN PIAS
// CERTIFICATE-----", base64, "-----END PIAS CERTIFICATE-----").
//
// Parsing checks structure only; Pool.Verify is the one place that decides
// whether a certificate is good, in Nebula's order: revocation, issuer,
// validity, signature, CA constraints.
package cert

// Package admit is the certificate handshake by which a proxy admits a node
// (an edge, or another proxy) in CA mode, outside the WireGuard tunnels.
//
// A node knows a proxy only by its UDP endpoint, so it first asks for the
// proxy's certificate, then proves that it holds the WireGuard private key
// its own certificate names:
//
//	node → proxy   request  nonce, zero padding to RequestLen bytes
//	proxy → node   offer    nonce, the proxy's certificate
//	node → proxy   hello    nonce, the proxy's key, the node's certificate, extra, MAC
//	proxy → node   welcome  nonce, ok, reason, MAC
//
// The MAC key is a hash of the X25519 secret of the two WireGuard keys
// (static-static, as in WireGuard's own handshake) and both public keys.
// Only the holders of the two private keys can compute it, so a valid hello
// proves the node's key, and a valid welcome the proxy's. A certificate
// alone, copied from anywhere, gives nothing.
//
// Replays. Every message carries its sender's wall-clock time; a proxy
// takes a hello only while it is fresh (Skew) and only once (Seen), and a
// node takes an offer or a welcome only if it echoes the nonce of a request
// or hello it sent lately. A hello names the proxy it is for (its key is in
// the MAC key too), so no other proxy takes it.
//
// Amplification. A proxy answers an unauthenticated request only with an
// offer no longer than the request, and keeps no state for it: the padding
// pays for the answer. A hello is answered only once its MAC checks.
//
// Wire format (integers big-endian):
//
//	header   "PIAS" version:u8 (3) kind:u8 time:u64 (Unix milliseconds)
//	request  nonce:u64 zero padding
//	offer    nonce:u64 cert:bytes16
//	hello    nonce:u64 to:32 cert:bytes16 extra:bytes16 mac:32
//	welcome  nonce:u64 ok:u8 reason:u8-length string mac:32
//
// bytes16 is a u16 length then that many bytes. The mesh-key hellos of
// package overlay share the magic and the header, with version 2.
package admit

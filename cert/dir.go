package cert

import (
	"net/netip"

	"github.com/pias-net/pias/router"
)

// The files of a CA directory: what pias ca init writes (and pias lab gen
// --ca, into the lab's directory), and pias cert sign|verify|revoke read.
const (
	DirCAFile  = "ca.pem"      // the CA certificate
	DirKeyFile = "ca.key"      // the CA's private key (mode 0600)
	DirRevoked = "revoked.pem" // the revocation list, once there is one
)

// GroupRightOf is the right to join exactly g.
func GroupRightOf(g router.Group) GroupRight {
	return GroupRight{Prefix: netip.PrefixFrom(g.Addr, g.Addr.BitLen()), Port: g.Port, Proto: g.Proto}
}

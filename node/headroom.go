package node

import (
	"github.com/pias-net/pias/router"
	"github.com/pias-net/pias/tunnel"
)

// The tunnel leaves tunnel.Headroom bytes before each packet it hands the
// router, which prepends up to router.Headroom there (the IAP→JAP
// encapsulation). Neither package imports the other, so the check lives here:
// the conversion of a negative constant to uint does not compile.
const _ = uint(tunnel.Headroom - router.Headroom)

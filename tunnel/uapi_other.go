//go:build !(linux || darwin || freebsd || openbsd)

package tunnel

import (
	"errors"
	"io"
)

// ListenUAPI would serve the device's WireGuard UAPI; it works on Unix only.
func (d *Device) ListenUAPI(name string) (io.Closer, error) {
	return nil, errors.New("uapi: not supported on this OS")
}

//go:build !linux

package rawbind

import "golang.zx2c4.com/wireguard/conn"

// New returns wireguard-go's StdNetBind: the raw system calls are Linux's.
func New() conn.Bind { return conn.NewStdNetBind() }

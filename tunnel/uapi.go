package tunnel

import "path/filepath"

// UAPIDir holds the WireGuard UAPI sockets that wireguard-tools (`wg`) reads
// (wireguard-go's ipc package uses the same directory).
const UAPIDir = "/var/run/wireguard"

// UAPISocketPath is the socket ListenUAPI(name) serves on.
func UAPISocketPath(name string) string { return filepath.Join(UAPIDir, name+".sock") }

package lab

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/router"
)

// LabFile is the name of the lab description Generate writes.
const LabFile = "lab.json"

// Lab describes a generated lab: what lab.json holds.
type Lab struct {
	// Dir is the lab's directory (where lab.json is); file names in Nodes
	// are relative to it. Not stored in lab.json.
	Dir string `json:"-"`

	// Underlay is Options.Underlay; none ("") for a lab made from a hosts
	// file, whose nodes' endpoints say where each one is.
	Underlay      netip.Prefix   `json:"underlay"`
	AnycastPrefix []netip.Prefix `json:"anycast_prefix"`
	OverlayPrefix []netip.Prefix `json:"overlay_prefix"`
	ControlPort   uint16         `json:"control_port"`
	// CA is a CA lab's CA certificate, relative to Dir (CAFile; its key is
	// CAKeyFile); empty in a static lab.
	CA string `json:"ca,omitempty"`
	// Revoked is a CA lab's revocation list (RevokedFile), which every
	// proxy file names as revocation_file: pias cert revoke --ca DIR
	// replaces it with the next serial.
	Revoked string   `json:"revoked,omitempty"`
	Groups  []string `json:"groups"` // every group of the lab, "100.65.0.1:80/tcp"
	Nodes   []Node   `json:"nodes"`  // proxies, then targets, then clients
}

// Node is one node of a lab.
type Node struct {
	Name      string         `json:"name"`
	Role      string         `json:"role"`           // config.RoleProxy, RoleTarget or RoleClient
	Config    string         `json:"config"`         // its TOML file, relative to Lab.Dir
	KeyFile   string         `json:"key_file"`       // its private key file, relative to Lab.Dir
	Cert      string         `json:"cert,omitempty"` // a CA lab's: its certificate, relative to Lab.Dir
	PublicKey config.Key     `json:"public_key"`
	Address   []netip.Addr   `json:"address"`
	Endpoint  netip.AddrPort `json:"endpoint"`           // its WireGuard UDP address on the underlay
	Cluster   string         `json:"cluster,omitempty"`  // proxies
	Home      string         `json:"home,omitempty"`     // edges: the proxy they prefer
	Groups    []Service      `json:"groups,omitempty"`   // targets: the groups they join
	WGQuick   string         `json:"wg_quick,omitempty"` // clients: a wg-quick file, relative to Lab.Dir
}

// Service is a group a target joins and the local port it serves it on.
type Service struct {
	Group string `json:"group"` // "100.65.0.1:80/tcp" (router.ParseGroup reads it)
	Port  uint16 `json:"port"`
}

// ReadLab reads a lab.json; path is the file or the lab directory.
func ReadLab(path string) (*Lab, error) {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		path = filepath.Join(path, LabFile)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	l := &Lab{}
	if err := json.Unmarshal(data, l); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	l.Dir = filepath.Dir(path)
	for _, g := range l.Groups {
		if _, err := router.ParseGroup(g); err != nil {
			return nil, fmt.Errorf("%s: groups: %v", path, err)
		}
	}
	seen := map[string]bool{}
	for _, n := range l.Nodes {
		for _, s := range n.Groups {
			if _, err := router.ParseGroup(s.Group); err != nil {
				return nil, fmt.Errorf("%s: node %q: %v", path, n.Name, err)
			}
		}
		switch {
		case n.Name == "":
			return nil, fmt.Errorf("%s: a node has no name", path)
		case seen[n.Name]:
			return nil, fmt.Errorf("%s: node %q appears twice", path, n.Name)
		case n.Role != config.RoleProxy && n.Role != config.RoleTarget && n.Role != config.RoleClient:
			return nil, fmt.Errorf("%s: node %q: role %q is not proxy, target or client", path, n.Name, n.Role)
		case n.Config == "":
			return nil, fmt.Errorf("%s: node %q has no config", path, n.Name)
		}
		seen[n.Name] = true
	}
	return l, nil
}

// Write stores l as DIR/lab.json.
func (l *Lab) Write() error {
	data, err := l.encode()
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(l.Dir, LabFile), data, 0o644)
}

// encode is the text of lab.json.
func (l *Lab) encode() ([]byte, error) {
	data, err := json.MarshalIndent(l, "", "  ")
	return append(data, '\n'), err
}

// Node returns the node called name, or nil.
func (l *Lab) Node(name string) *Node {
	for i := range l.Nodes {
		if l.Nodes[i].Name == name {
			return &l.Nodes[i]
		}
	}
	return nil
}

// Role returns the nodes of a role, in lab.json order.
func (l *Lab) Role(role string) []*Node {
	var out []*Node
	for i := range l.Nodes {
		if l.Nodes[i].Role == role {
			out = append(out, &l.Nodes[i])
		}
	}
	return out
}

// Path resolves a file name of lab.json against the lab directory.
func (l *Lab) Path(name string) string {
	if name == "" || filepath.IsAbs(name) {
		return name
	}
	return filepath.Join(l.Dir, name)
}

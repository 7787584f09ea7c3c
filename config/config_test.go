package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pias-net/pias/check"
	"github.com/pias-net/pias/router"
)

// Minimal valid files. Placeholders P1PUB… are replaced by real public keys.
const proxyBase = `name = "p1"
private_key_file = "p1.key"
listen = "127.0.0.1:51820"
address = ["100.64.0.1", "fd64::1"]
cluster = "c1"
[[proxy]]
name = "p2"
public_key = "P2PUB"
endpoint = "127.0.0.1:51821"
address = ["100.64.0.2"]
cluster = "c2"
[[edge]]
name = "t1"
public_key = "T1PUB"
address = ["100.64.1.1"]
groups = ["100.65.0.1:80/tcp"]
`

const targetBase = `name = "t1"
private_key_file = "t1.key"
address = ["100.64.1.1", "fd64::1:1"]
[[proxy]]
name = "p1"
public_key = "P1PUB"
endpoint = "127.0.0.1:51820"
address = ["100.64.0.1"]
[[group]]
group = "100.65.0.1:80/tcp"
port = 8080
`

const clientBase = `name = "cl1"
private_key_file = "cl1.key"
address = ["100.64.2.1"]
[[proxy]]
name = "p1"
public_key = "P1PUB"
endpoint = "127.0.0.1:51820"
address = ["100.64.0.1"]
`

// set replaces line n (1-based) of s.
func set(s string, n int, line string) string {
	ls := strings.Split(s, "\n")
	ls[n-1] = line
	return strings.Join(ls, "\n")
}

// ins inserts lines after line n (0: at the top).
func ins(s string, n int, lines ...string) string {
	ls := strings.Split(s, "\n")
	out := append([]string{}, ls[:n]...)
	out = append(out, lines...)
	out = append(out, ls[n:]...)
	return strings.Join(out, "\n")
}

// head keeps the first n lines of s.
func head(s string, n int) string {
	return strings.Join(strings.Split(s, "\n")[:n], "\n") + "\n"
}

type testKeys struct {
	dir  string
	pubs map[string]Key // p1, p2, t1, cl1
}

// setup writes p1.key, t1.key, cl1.key (and a malformed bad.key) to a temp dir.
func setup(t *testing.T) *testKeys {
	t.Helper()
	tk := &testKeys{dir: t.TempDir(), pubs: map[string]Key{}}
	for _, n := range []string{"p1", "p2", "t1", "cl1"} {
		k, err := GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		tk.pubs[n] = k.PublicKey()
		if err := os.WriteFile(filepath.Join(tk.dir, n+".key"), []byte(k.String()+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(tk.dir, "bad.key"), []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return tk
}

func (tk *testKeys) write(t *testing.T, name, text string) string {
	t.Helper()
	for n, k := range tk.pubs {
		text = strings.ReplaceAll(text, strings.ToUpper(n)+"PUB", k.String())
	}
	p := filepath.Join(tk.dir, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func load(role, path string) (any, error) {
	switch role {
	case RoleProxy:
		return LoadProxy(path)
	case RoleTarget:
		return LoadTarget(path)
	default:
		return LoadClient(path)
	}
}

func TestBadFiles(t *testing.T) {
	short := base64.StdEncoding.EncodeToString(make([]byte, 31))
	tests := []struct {
		name string
		role string
		text string
		line int
		key  string
		msg  string // a substring of the message
	}{
		{"unknown key", RoleProxy, ins(proxyBase, 5, `colour = "blue"`), 6, "colour", "unknown key"},
		{"unknown key in proxy", RoleProxy, ins(proxyBase, 9, `port = 1`), 10, "proxy.port", "unknown key"},
		{"unknown key in edge", RoleProxy, ins(proxyBase, 16, `Groups = []`), 17, "edge.Groups", `did you mean "groups"`},
		{"unknown table", RoleProxy, proxyBase + "[extra]\nx = 1\n", 17, "extra", "unknown key"},
		{"proxy-only key in target", RoleTarget, ins(targetBase, 3, `rap_replicas = 2`), 4, "rap_replicas", "unknown key"},
		{"wrong type string for int", RoleProxy, ins(proxyBase, 5, `mtu = "1420"`), 6, "mtu", "want an integer, got a string"},
		{"wrong type string for array", RoleProxy, set(proxyBase, 4, `address = "100.64.0.1"`), 4, "address", "want an array of strings"},
		{"wrong type in array", RoleProxy, set(proxyBase, 4, `address = ["100.64.0.1", 7]`), 4, "address", "element 2 is an integer"},
		{"wrong type duration", RoleTarget, ins(targetBase, 3, `keepalive = 5`), 4, "keepalive", "want a string"},
		{"wrong type groups", RoleProxy, set(proxyBase, 16, `groups = "100.65.0.1:80/tcp"`), 16, "edge.groups", "want an array of strings"},
		{"proxy is a table", RoleTarget, head(targetBase, 3) + "[proxy]\nname = \"p1\"\n[[group]]\ngroup = \"100.65.0.1:80/tcp\"\nport = 8080\n", 4, "proxy", "want an array of tables"},
		{"malformed key", RoleProxy, set(proxyBase, 8, `public_key = "abc!"`), 8, "proxy.public_key", "not valid base64"},
		{"short key", RoleProxy, set(proxyBase, 14, `public_key = "`+short+`"`), 14, "edge.public_key", "31 bytes, want 32"},
		{"missing key file", RoleProxy, set(proxyBase, 2, `private_key_file = "nope.key"`), 2, "private_key_file", "no such file"},
		{"malformed key file", RoleProxy, set(proxyBase, 2, `private_key_file = "bad.key"`), 2, "private_key_file", "not a WireGuard private key"},
		{"malformed address", RoleProxy, set(proxyBase, 10, `address = ["100.64.0.300"]`), 10, "proxy.address", "not an IP address"},
		{"malformed address multi-line", RoleProxy, set(proxyBase, 4, "address = [\n  \"100.64.0.1\",\n  \"bogus\",  # here\n]"), 6, "address", `"bogus" is not an IP address`},
		{"malformed prefix", RoleProxy, ins(proxyBase, 5, `overlay_prefix = ["100.64.0.0/33"]`), 6, "overlay_prefix", "not a prefix"},
		{"prefix host bits", RoleProxy, ins(proxyBase, 5, `anycast_prefix = ["100.65.0.1/16"]`), 6, "anycast_prefix", "did you mean 100.65.0.0/16"},
		{"empty prefix list", RoleProxy, ins(proxyBase, 5, `anycast_prefix = []`), 6, "anycast_prefix", "at least one prefix"},
		{"malformed endpoint", RoleProxy, set(proxyBase, 9, `endpoint = "127.0.0.1"`), 9, "proxy.endpoint", "not IP:PORT"},
		{"unspecified endpoint", RoleTarget, set(targetBase, 7, `endpoint = "0.0.0.0:51820"`), 7, "proxy.endpoint", "real address"},
		{"malformed listen", RoleProxy, set(proxyBase, 3, `listen = "localhost:51820"`), 3, "listen", "not IP:PORT"},
		{"proxy listen port 0", RoleProxy, set(proxyBase, 3, `listen = "127.0.0.1:0"`), 3, "listen", "port 0"},
		{"malformed group", RoleProxy, set(proxyBase, 16, `groups = ["100.65.0.1:80/sctp"]`), 16, "edge.groups", "not tcp or udp"},
		{"malformed target group", RoleTarget, set(targetBase, 10, `group = "100.65.0.1/tcp"`), 10, "group.group", "100.65.0.1/tcp"},
		{"bad select", RoleTarget, ins(targetBase, 11, `select = "nearest"`), 12, "group.select", `"nearest" is not one of proximity, load, random, affinity`},
		{"bad scope", RoleTarget, ins(targetBase, 11, `scope = "region"`), 12, "group.scope", `"region" is not one of any, same-cluster`},
		{"replicate tcp", RoleTarget, ins(targetBase, 11, `replicate = 3`), 12, "group.replicate", "only UDP groups replicate"},
		{"replicate too many", RoleTarget, ins(set(targetBase, 10, `group = "100.65.0.1:53/udp"`), 11, `replicate = 17`), 12, "group.replicate", "17"},
		{"weight zero", RoleTarget, ins(targetBase, 11, `weight = 0`), 12, "group.weight", "0"},
		{"weight string", RoleTarget, ins(targetBase, 11, `weight = "3"`), 12, "group.weight", "want an integer"},
		{"malformed mesh key file", RoleProxy, ins(proxyBase, 5, `mesh_key_file = "bad.key"`), 6, "mesh_key_file", "not a mesh key"},
		{"missing mesh key file", RoleProxy, ins(proxyBase, 5, `mesh_key_file = "nope.key"`), 6, "mesh_key_file", "no such file"},
		{"learn_proxies not a boolean", RoleClient, ins(clientBase, 3, `learn_proxies = "yes"`), 4, "learn_proxies", "want true or false, got a string"},
		{"keepalive too short", RoleTarget, ins(targetBase, 3, `keepalive = "50ms"`), 4, "keepalive", "want 100ms to 1h0m0s"},
		{"keepalive too long", RoleTarget, ins(targetBase, 3, `keepalive = "2h"`), 4, "keepalive", "want 100ms to 1h0m0s"},
		{"drain_timeout too short", RoleTarget, ins(targetBase, 3, `drain_timeout = "500ms"`), 4, "drain_timeout", "want 1s to 1h0m0s"},
		{"drain_timeout too long", RoleTarget, ins(targetBase, 3, `drain_timeout = "2h"`), 4, "drain_timeout", "want 1s to 1h0m0s"},
		{"malformed duration", RoleTarget, ins(targetBase, 3, `keepalive = "5 seconds"`), 4, "keepalive", "not a duration"},
		{"negative duration", RoleClient, ins(clientBase, 3, `keepalive = "-1s"`), 4, "keepalive", "positive"},
		{"own address outside overlay", RoleProxy, set(proxyBase, 4, `address = ["10.0.0.1"]`), 4, "address", "outside overlay_prefix"},
		{"peer address outside overlay", RoleProxy, set(proxyBase, 10, `address = ["100.66.0.2"]`), 10, "proxy.address", "outside overlay_prefix"},
		{"edge address outside overlay", RoleProxy, set(proxyBase, 15, `address = ["100.65.0.9"]`), 15, "edge.address", "outside overlay_prefix"},
		{"ipv6 address outside custom overlay", RoleTarget, ins(targetBase, 3, `overlay_prefix = ["100.64.0.0/16"]`), 3, "address", "fd64::1:1 is outside"},
		{"duplicate address edge/proxy", RoleProxy, set(proxyBase, 15, `address = ["100.64.0.2"]`), 15, "edge.address", "duplicate overlay address 100.64.0.2 (also at line 10)"},
		{"duplicate own address", RoleTarget, set(targetBase, 8, `address = ["100.64.0.1", "fd64::1:1"]`), 8, "proxy.address", "duplicate overlay address fd64::1:1 (also at line 3)"},
		{"duplicate name", RoleProxy, set(proxyBase, 13, `name = "p2"`), 13, "edge.name", `duplicate name "p2" (also at line 7)`},
		{"duplicate own name", RoleProxy, set(proxyBase, 7, `name = "p1"`), 7, "proxy.name", `duplicate name "p1" (also at line 1)`},
		{"duplicate public key", RoleProxy, set(proxyBase, 14, `public_key = "P2PUB"`), 14, "edge.public_key", "duplicate public key"},
		{"own public key as peer", RoleProxy, set(proxyBase, 8, `public_key = "P1PUB"`), 8, "proxy.public_key", "own public key"},
		{"own public key as edge", RoleTarget, set(targetBase, 6, `public_key = "T1PUB"`), 6, "proxy.public_key", "own public key"},
		{"duplicate endpoint", RoleProxy, set(proxyBase, 9, `endpoint = "127.0.0.1:51820"`), 9, "proxy.endpoint", "duplicate endpoint 127.0.0.1:51820 (also at line 3)"},
		{"group outside anycast", RoleTarget, set(targetBase, 10, `group = "100.64.9.1:80/tcp"`), 10, "group.group", "outside anycast_prefix"},
		{"group on control port", RoleTarget, set(targetBase, 10, `group = "100.65.0.1:51821/udp"`), 10, "group.group", "control port 51821/udp"},
		{"edge group on custom control port", RoleProxy, set(ins(proxyBase, 5, `control_port = 53`), 17, `groups = ["100.65.0.1:53/udp"]`), 17, "edge.groups", "control port 53/udp"},
		{"edge group not in anycast", RoleProxy, set(proxyBase, 16, `groups = ["100.64.0.1:80/tcp", "100.65.0.1:80/tcp"]`), 16, "edge.groups", "outside anycast_prefix"},
		{"edge max_weight 0", RoleProxy, ins(proxyBase, 16, "max_weight = 0"), 17, "edge.max_weight", "0 is out of range 1..1000"},
		{"edge max_weight 1001", RoleProxy, ins(proxyBase, 16, "max_weight = 1001"), 17, "edge.max_weight", "out of range 1..1000"},
		{"edge policy not bool", RoleProxy, ins(proxyBase, 16, `policy = "yes"`), 17, "edge.policy", "want true or false"},
		{"client policy", RoleProxy, set(proxyBase, 16, "policy = true"), 16, "edge.policy", "a right of targets, and this edge has no groups"},
		{"client max_weight", RoleProxy, set(proxyBase, 16, "max_weight = 5"), 16, "edge.max_weight", "a right of targets"},
		{"edge duplicate group", RoleProxy, set(proxyBase, 16, "groups = [\n\"100.65.0.1:80/tcp\",\n\"100.65.0.1:80/tcp\"]"), 18, "edge.groups", "duplicate group"},
		{"target duplicate group", RoleTarget, targetBase + "[[group]]\ngroup = \"100.65.0.1:80/tcp\"\nport = 8081\n", 13, "group.group", "duplicate group 100.65.0.1:80/tcp (also at line 10)"},
		{"overlapping prefixes", RoleProxy, ins(proxyBase, 5, `anycast_prefix = ["100.64.0.0/15"]`), 6, "anycast_prefix", "overlaps overlay prefix 100.64.0.0/16"},
		{"overlapping prefixes in a list", RoleProxy, ins(proxyBase, 5, `overlay_prefix = ["100.64.0.0/16", "100.64.3.0/24"]`), 6, "overlay_prefix", "overlaps"},
		{"proxy without ipv4", RoleProxy, set(proxyBase, 4, `address = ["fd64::1"]`), 4, "address", "exactly one IPv4"},
		{"peer proxy without ipv4", RoleTarget, set(targetBase, 8, `address = ["fd64::9"]`), 8, "proxy.address", "exactly one IPv4"},
		{"proxy two ipv4", RoleProxy, set(proxyBase, 4, `address = ["100.64.0.1", "100.64.0.9"]`), 4, "address", "exactly one IPv4 address, got 2"},
		{"edge two ipv6", RoleTarget, set(targetBase, 3, `address = ["fd64::1:1", "fd64::1:2"]`), 3, "address", "at most one IPv6"},
		{"edge no address", RoleClient, set(clientBase, 3, `address = []`), 3, "address", "at least one address"},
		{"missing cluster", RoleProxy, set(proxyBase, 5, `# no cluster`), 1, "cluster", "required key is missing"},
		{"missing listen", RoleProxy, set(proxyBase, 3, `# no listen`), 1, "listen", "required key is missing"},
		{"missing name", RoleTarget, set(targetBase, 1, `# no name`), 1, "name", "required key is missing"},
		{"missing key file key", RoleClient, set(clientBase, 2, `# none`), 1, "private_key_file", "required key is missing"},
		{"missing peer name", RoleProxy, set(proxyBase, 7, `# no name`), 6, "proxy.name", "required key is missing"},
		{"missing peer cluster", RoleProxy, set(proxyBase, 11, `# no cluster`), 6, "proxy.cluster", "required key is missing"},
		{"missing edge key", RoleProxy, set(proxyBase, 14, `# no key`), 12, "edge.public_key", "required key is missing"},
		{"missing group port", RoleTarget, set(targetBase, 11, ``), 9, "group.port", "required key is missing"},
		{"port out of range", RoleTarget, set(targetBase, 11, `port = 70000`), 11, "group.port", "out of range 1..65535"},
		{"mtu out of range", RoleProxy, ins(proxyBase, 5, `mtu = 1000`), 6, "mtu", "out of range 1280..9000"},
		{"rap_replicas out of range", RoleProxy, ins(proxyBase, 5, `rap_replicas = 0`), 6, "rap_replicas", "out of range 1..16"},
		{"probe_interval too short", RoleProxy, ins(proxyBase, 5, `probe_interval = "1ms"`), 6, "probe_interval", "want 10ms to 10s"},
		{"probe_interval not a duration", RoleProxy, ins(proxyBase, 5, `probe_interval = "fast"`), 6, "probe_interval", "is not a duration"},
		{"probe_misses out of range", RoleProxy, ins(proxyBase, 5, `probe_misses = 0`), 6, "probe_misses", "out of range 1..100"},
		{"target_timeout too short", RoleProxy, ins(proxyBase, 5, `target_timeout = "10ms"`), 6, "target_timeout", "want 1s to 1h0m0s"},
		{"inaccuracy out of range", RoleProxy, ins(proxyBase, 5, `inaccuracy = 101`), 6, "inaccuracy", "out of range 0..100"},
		{"max_flows too small", RoleProxy, ins(proxyBase, 5, `max_flows = 100`), 6, "max_flows", "out of range 1024..4194304"},
		{"max_flows too large", RoleProxy, ins(proxyBase, 5, `max_flows = 100000000`), 6, "max_flows", "out of range 1024..4194304"},
		{"max_flows not a number", RoleProxy, ins(proxyBase, 5, `max_flows = "many"`), 6, "max_flows", "want an integer, got a string"},
		{"max_flows in target", RoleTarget, ins(targetBase, 3, `max_flows = 5000`), 4, "max_flows", "unknown key"},
		{"timer key in target", RoleTarget, ins(targetBase, 3, `cache_ttl = "5s"`), 4, "cache_ttl", "unknown key"},
		{"control_port out of range", RoleClient, ins(clientBase, 3, `control_port = 0`), 4, "control_port", "out of range"},
		{"bad interface", RoleTarget, ins(targetBase, 3, `interface = "wintun"`), 4, "interface", `"wintun"`},
		{"interface_name with slash", RoleProxy, ins(proxyBase, 5, `interface_name = "pias/p1"`), 6, "interface_name", `"pias/p1": want 1..15 characters of a-z, A-Z, 0-9`},
		{"interface_name too long", RoleTarget, ins(targetBase, 3, `interface_name = "abcdefghijklmnop"`), 4, "interface_name", "want 1..15"},
		{"interface_name empty", RoleClient, ins(clientBase, 3, `interface_name = ""`), 4, "interface_name", `"": want 1..15`},
		{"interface_name dotdot", RoleClient, ins(clientBase, 3, `interface_name = ".."`), 4, "interface_name", `not "." or ".."`},
		{"interface_name space", RoleTarget, ins(targetBase, 3, `interface_name = "wg 0"`), 4, "interface_name", "want 1..15"},
		{"interface_name non-ascii", RoleTarget, ins(targetBase, 3, `interface_name = "wgé"`), 4, "interface_name", "want 1..15"},
		{"interface_name wrong type", RoleProxy, ins(proxyBase, 5, `interface_name = 7`), 6, "interface_name", "want a string, got an integer"},
		{"interface_name in peer", RoleProxy, ins(proxyBase, 9, `interface_name = "wg1"`), 10, "proxy.interface_name", "unknown key"},
		{"bad name", RoleProxy, set(proxyBase, 1, `name = "P1"`), 1, "name", "a-z"},
		{"long name", RoleProxy, set(proxyBase, 1, `name = "abcdefghijklmnop"`), 1, "name", "1..15"},
		{"bad cluster", RoleTarget, ins(targetBase, 8, `cluster = "EU west"`), 9, "proxy.cluster", "a-z"},
		{"client with groups", RoleClient, clientBase + "[[group]]\ngroup = \"100.65.0.1:80/tcp\"\nport = 8080\n", 9, "group", "client joins no groups"},
		{"target without groups", RoleTarget, head(targetBase, 8), 1, "group", "at least one group"},
		{"target empty groups", RoleTarget, ins(head(targetBase, 8), 3, "group = []"), 4, "group", "at least one group"},
		{"edge without proxies", RoleClient, head(clientBase, 3), 1, "proxy", "at least one [[proxy]]"},
		{"second proxy element", RoleTarget, ins(targetBase, 8, "[[proxy]]", `name = "p2"`, `public_key = "P2PUB"`, `endpoint = "127.0.0.1:99999"`, `address = ["100.64.0.2"]`), 12, "proxy.endpoint", "not IP:PORT"},
		{"second proxy element missing key", RoleTarget, ins(targetBase, 8, "", "[[proxy]]  # second", `name = "p2"`, `endpoint = "127.0.0.1:51821"`, `address = ["100.64.0.2"]`), 10, "proxy.public_key", "required key is missing"},
		{"inline array of tables", RoleProxy, head(proxyBase, 5) + "proxy = [\n  {name = \"p2\", public_key = \"P2PUB\", endpoint = \"127.0.0.1:51821\", address = [\"100.64.0.2\"], cluster = \"c2\"},\n  {name = \"p3\", public_key = \"T1PUB\",\n   endpoint = \"127.0.0.1:51822\", address = [\"100.64.0.3\"], cluster = \"c3\", colour = 1},\n]\n", 9, "proxy.colour", "unknown key"},
		{"syntax error", RoleProxy, set(proxyBase, 3, `listen = "127.0.0.1:51820`), 3, "", ""},
		{"toml duplicate key", RoleProxy, ins(proxyBase, 1, `name = "p9"`), 2, "", "name"},
		{"check kind unknown", RoleTarget, ins(targetBase, 11, `check = "ping"`), 12, "group.check", `"ping": want a kind ("none", "tcp", "http", "dns", "udp", "exec") or a table`},
		{"check wrong type", RoleTarget, ins(targetBase, 11, `check = 5`), 12, "group.check", "want a kind"},
		{"check dns without a name", RoleTarget, ins(targetBase, 11, `check = "dns"`), 12, "group.check", `kind "dns" needs name`},
		{"check exec without a command", RoleTarget, ins(targetBase, 11, `check = "exec"`), 12, "group.check", `kind "exec" needs command`},
		{"check unknown key", RoleTarget, ins(targetBase, 11, `check = { kind = "tcp", colour = 1 }`), 12, "group.check.colour", "unknown key"},
		{"check kind in table unknown", RoleTarget, ins(targetBase, 11, `check = { kind = "icmp" }`), 12, "group.check.kind", `"icmp": want "none"`},
		{"check key of another kind", RoleTarget, ins(targetBase, 11, `check = { kind = "tcp", path = "/" }`), 12, "group.check.path", "a key of http checks, and this check is tcp"},
		{"check key of http in default tcp", RoleTarget, ins(targetBase, 11, `check = { status = 200 }`), 12, "group.check.status", "a key of http checks, and this check is tcp"},
		{"check none with keys", RoleTarget, ins(targetBase, 11, `check = { kind = "none", interval = "1s" }`), 12, "group.check.interval", `kind "none" takes no other keys`},
		{"check interval too short", RoleTarget, ins(targetBase, 11, `check = { interval = "10ms" }`), 12, "group.check.interval", "want 100ms to 1h0m0s"},
		{"check interval not a duration", RoleTarget, ins(targetBase, 11, `check = { interval = "2 s" }`), 12, "group.check.interval", "not a duration"},
		{"check interval not a string", RoleTarget, ins(targetBase, 11, `check = { interval = 2 }`), 12, "group.check.interval", "want a string"},
		{"check timeout past interval", RoleTarget, ins(targetBase, 11, `check = { interval = "1s", timeout = "2s" }`), 12, "group.check.timeout", "2s is longer than the interval 1s"},
		{"check timeout too short", RoleTarget, ins(targetBase, 11, `check = { timeout = "1ms" }`), 12, "group.check.timeout", "want 10ms to 1h0m0s"},
		{"check rise zero", RoleTarget, ins(targetBase, 11, `check = { rise = 0 }`), 12, "group.check.rise", "0 is out of range 1..100"},
		{"check fall too many", RoleTarget, ins(targetBase, 11, `check = { fall = 101 }`), 12, "group.check.fall", "101 is out of range 1..100"},
		{"check port zero", RoleTarget, ins(targetBase, 11, `check = { port = 0 }`), 12, "group.check.port", "out of range 1..65535"},
		{"check http relative path", RoleTarget, ins(targetBase, 11, `check = { kind = "http", path = "health" }`), 12, "group.check.path", `path "health": want an absolute path`},
		{"check http path with a space", RoleTarget, ins(targetBase, 11, `check = { kind = "http", path = "/a b" }`), 12, "group.check.path", "no spaces"},
		{"check http status reversed", RoleTarget, ins(targetBase, 11, `check = { kind = "http", status = "399..200" }`), 12, "group.check.status", "399..200: want statuses within 100..599"},
		{"check http status 600", RoleTarget, ins(targetBase, 11, `check = { kind = "http", status = 600 }`), 12, "group.check.status", "600..600"},
		{"check http status pattern", RoleTarget, ins(targetBase, 11, `check = { kind = "http", status = "2xx" }`), 12, "group.check.status", `"2xx": want a status like 200`},
		{"check http status float", RoleTarget, ins(targetBase, 11, `check = { kind = "http", status = 200.5 }`), 12, "group.check.status", "got a float"},
		{"check dns name missing", RoleTarget, ins(targetBase, 11, `check = { kind = "dns", type = "A" }`), 12, "group.check.name", "required key is missing"},
		{"check dns bad name", RoleTarget, ins(targetBase, 11, `check = { kind = "dns", name = "a..example" }`), 12, "group.check.name", "empty label"},
		{"check dns bad type", RoleTarget, ins(targetBase, 11, `check = { kind = "dns", name = "a.example", type = "AAA" }`), 12, "group.check.type", `"AAA" is not a DNS type`},
		{"check dns bad proto", RoleTarget, ins(targetBase, 11, `check = { kind = "dns", name = "a.example", proto = "quic" }`), 12, "group.check.proto", `"quic": want "udp" or "tcp"`},
		{"check udp group needs a kind", RoleTarget, ins(set(targetBase, 10, `group = "100.65.0.1:53/udp"`), 11, `check = { interval = "1s" }`), 12, "group.check.kind", "required key is missing"},
		{"check udp payload too long", RoleTarget, ins(targetBase, 11, `check = { kind = "udp", payload = "`+strings.Repeat("x", 1201)+`" }`), 12, "group.check.payload", "1201 bytes, want at most 1200"},
		{"check exec command missing", RoleTarget, ins(targetBase, 11, `check = { kind = "exec" }`), 12, "group.check.command", "required key is missing"},
		{"check exec command empty", RoleTarget, ins(targetBase, 11, `check = { kind = "exec", command = [] }`), 12, "group.check.command", "want the program and its arguments"},
		{"check exec command a string", RoleTarget, ins(targetBase, 11, `check = { kind = "exec", command = "true" }`), 12, "group.check.command", "want an array of strings"},
		{"check exec shell two strings", RoleTarget, ins(targetBase, 11, `check = { kind = "exec", shell = true, command = ["a", "b"] }`), 12, "group.check.command", "with shell = true, want one string"},
		{"check exec shell not bool", RoleTarget, ins(targetBase, 11, `check = { kind = "exec", shell = 1, command = ["true"] }`), 12, "group.check.shell", "want true or false"},
		{"check table header", RoleTarget, targetBase + "[group.check]\nkind = \"http\"\npath = \"x\"\n", 14, "group.check.path", `path "x"`},
		{"check in the second group", RoleTarget, targetBase + "[[group]]\ngroup = \"100.65.0.2:53/udp\"\nport = 53\n[group.check]\nkind = \"dns\"\nname = \"a..b\"\n", 17, "group.check.name", "empty label"},
	}
	tk := setup(t)
	seen := map[string]bool{}
	for i, tc := range tests {
		if seen[tc.name] {
			t.Fatalf("duplicate test name %q", tc.name)
		}
		seen[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			path := tk.write(t, fmt.Sprintf("bad%02d.toml", i), tc.text)
			v, err := load(tc.role, path)
			if err == nil {
				t.Fatalf("loaded: %+v", v)
			}
			if !isNilPtr(v) {
				t.Errorf("returned a config along with the error")
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T is not *Error: %v", err, err)
			}
			msg := err.Error()
			t.Log(msg)
			if strings.ContainsAny(msg, "\r\n") {
				t.Errorf("error is not one line: %q", msg)
			}
			if e.File != path || e.Line != tc.line || (tc.key != "" && e.Key != tc.key) || !strings.Contains(e.Msg, tc.msg) {
				t.Errorf("got  %s\nwant %s:%d: %s: …%s…", msg, path, tc.line, tc.key, tc.msg)
			}
			want := fmt.Sprintf("%s:%d: ", path, tc.line)
			if tc.key != "" {
				want += tc.key + ": "
			}
			if !strings.HasPrefix(msg, want) {
				t.Errorf("error %q does not start with %q", msg, want)
			}
		})
	}
	if len(tests) < 20 {
		t.Fatalf("only %d bad files", len(tests))
	}
}

func isNilPtr(v any) bool {
	switch v := v.(type) {
	case *Proxy:
		return v == nil
	case *Edge:
		return v == nil
	}
	return v == nil
}

func TestMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "none.toml")
	_, err := LoadProxy(path)
	var e *Error
	if !errors.As(err, &e) || e.File != path || e.Line != 0 || err.Error() != path+": no such file or directory" {
		t.Fatalf("err = %v", err)
	}
}

func TestProxyTimers(t *testing.T) {
	tk := setup(t)
	p, err := LoadProxy(tk.write(t, "p1.toml", ins(proxyBase, 5, "probe_interval = \"250ms\"\nprobe_misses = 5\ntarget_timeout = \"4s\"\ncache_ttl = \"2s\"\ninaccuracy = 0\nmax_flows = 200000")))
	if err != nil {
		t.Fatal(err)
	}
	if p.ProbeInterval != 250*time.Millisecond || p.ProbeMisses != 5 || p.TargetTimeout != 4*time.Second ||
		p.CacheTTL != 2*time.Second || p.Inaccuracy != 0 || p.MaxFlows != 200000 {
		t.Errorf("timers: %v %d %v %v %d %d", p.ProbeInterval, p.ProbeMisses, p.TargetTimeout, p.CacheTTL, p.Inaccuracy, p.MaxFlows)
	}
}

func TestGoodFiles(t *testing.T) {
	tk := setup(t)

	p, err := LoadProxy(tk.write(t, "p1.toml", proxyBase))
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "p1" || p.Cluster != "c1" || p.RAPReplicas != DefaultRAPReplicas || p.MTU != DefaultMTU ||
		p.ControlPort != DefaultControlPort || p.Listen != netip.MustParseAddrPort("127.0.0.1:51820") ||
		fmt.Sprint(p.OverlayPrefix) != fmt.Sprint(DefaultOverlayPrefix()) || fmt.Sprint(p.AnycastPrefix) != fmt.Sprint(DefaultAnycastPrefix()) ||
		p.Addr4() != netip.MustParseAddr("100.64.0.1") || p.Addr6() != netip.MustParseAddr("fd64::1") ||
		p.PrivateKey.PublicKey() != p.PublicKey || p.PublicKey != tk.pubs["p1"] || p.Path == "" ||
		p.PrivateKeyFile != filepath.Join(tk.dir, "p1.key") || p.InterfaceName != "pias-p1" ||
		p.ProbeInterval != 0 || p.TargetTimeout != 0 || p.CacheTTL != 0 || p.Inaccuracy != DefaultInaccuracy ||
		p.MaxFlows != DefaultMaxFlows {
		t.Errorf("proxy: %+v", p)
	}
	if len(p.Proxies) != 1 || p.Proxies[0].Name != "p2" || p.Proxies[0].PublicKey != tk.pubs["p2"] ||
		p.Proxies[0].Endpoint.String() != "127.0.0.1:51821" || p.Proxies[0].Cluster != "c2" || p.Proxies[0].Addr6().IsValid() {
		t.Errorf("proxy peers: %+v", p.Proxies)
	}
	g := router.Group{Addr: netip.MustParseAddr("100.65.0.1"), Port: 80, Proto: router.ProtoTCP}
	if len(p.Edges) != 1 || p.Edges[0].Name != "t1" || len(p.Edges[0].Groups) != 1 || p.Edges[0].Groups[0] != g ||
		p.Edges[0].SetsPolicy || p.Edges[0].MaxWeight != 1 {
		t.Errorf("edges: %+v", p.Edges)
	}
	p, err = LoadProxy(tk.write(t, "p1.toml", ins(proxyBase, 16, "policy = true", "max_weight = 1000")))
	if err != nil {
		t.Fatal(err)
	}
	if e := p.Edges[0]; !e.SetsPolicy || e.MaxWeight != 1000 {
		t.Errorf("edge rights: %+v", e)
	}

	tg, err := LoadTarget(tk.write(t, "t1.toml", targetBase))
	if err != nil {
		t.Fatal(err)
	}
	if tg.Role != RoleTarget || tg.Interface != InterfaceNetstack || tg.Keepalive != DefaultKeepalive ||
		tg.Listen != netip.MustParseAddrPort("0.0.0.0:0") || len(tg.Groups) != 1 || tg.Groups[0] != (Service{Group: g, Port: 8080, Weight: 1}) ||
		len(tg.Proxies) != 1 || tg.Proxies[0].Cluster != "" || tg.InterfaceName != "pias-t1" || !tg.LearnProxies {
		t.Errorf("target: %+v", tg)
	}

	// Everything set, IPv6 everywhere, custom prefixes.
	full := `name = "t1"
private_key_file = "t1.key"
address = ["fd00:1::5"]
listen = "[::1]:5000"
interface = "tun"
interface_name = "utun7"
keepalive = "1m30s"
learn_proxies = false
overlay_prefix = ["10.0.0.0/8", "fd00:1::/48"]
anycast_prefix = ["192.0.2.0/24", "fd00:2::/48"]
mtu = 9000
control_port = 4000
[[proxy]]
name = "p1"
public_key = "P1PUB"
endpoint = "[::1]:4001"
address = ["10.0.0.1", "fd00:1::1"]
cluster = "west"
[[group]]
group = "[fd00:2::1]:4000/tcp"
port = 1
[[group]]
group = "192.0.2.1:53/udp"
port = 65535
`
	tg, err = LoadTarget(tk.write(t, "full.toml", full))
	if err != nil {
		t.Fatal(err)
	}
	if tg.Interface != InterfaceTUN || tg.Keepalive != 90*time.Second || tg.MTU != 9000 || tg.ControlPort != 4000 ||
		tg.Listen.String() != "[::1]:5000" || len(tg.Groups) != 2 || tg.Groups[0].Group.String() != "[fd00:2::1]:4000/tcp" ||
		tg.Groups[1].Port != 65535 || tg.Addr4().IsValid() || tg.Proxies[0].Cluster != "west" || tg.InterfaceName != "utun7" || tg.LearnProxies {
		t.Errorf("full target: %+v", tg)
	}

	cl, err := LoadClient(tk.write(t, "cl1.toml", clientBase))
	if err != nil {
		t.Fatal(err)
	}
	if cl.Role != RoleClient || len(cl.Groups) != 0 || cl.PublicKey != tk.pubs["cl1"] || cl.InterfaceName != "pias-cl1" {
		t.Errorf("client: %+v", cl)
	}

	// interface_name: the default is cut to 15 bytes; any valid name is kept.
	for _, tc := range []struct{ name, line, want string }{
		{"abcdefghijklmno", "", "pias-abcdefghij"},
		{"abcdefghij", "", "pias-abcdefghij"},
		{"a", "", "pias-a"},
		{"cl1", `interface_name = "wg0"`, "wg0"},
		{"cl1", `interface_name = "My_If.2-x"`, "My_If.2-x"},
		{"cl1", `interface_name = "abcdefghijklmno"`, "abcdefghijklmno"},
		{"cl1", `interface_name = "utun"`, "utun"},
		{"cl1", `interface_name = "."`, ""}, // rejected
	} {
		text := set(clientBase, 1, fmt.Sprintf("name = %q", tc.name))
		if tc.line != "" {
			text = ins(text, 3, tc.line)
		}
		cl, err := LoadClient(tk.write(t, "ifname.toml", text))
		if tc.want == "" {
			if err == nil {
				t.Errorf("%s: loaded, want an error", tc.line)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s %s: %v", tc.name, tc.line, err)
			continue
		}
		if cl.InterfaceName != tc.want {
			t.Errorf("%s %s: interface name %q, want %q", tc.name, tc.line, cl.InterfaceName, tc.want)
		}
	}
	if got := DefaultInterfaceName("abcdefghijklmno"); got != "pias-abcdefghij" || len(got) != MaxInterfaceNameLen {
		t.Errorf("DefaultInterfaceName = %q", got)
	}

	// A proxy alone (no peers, no edges), absolute key path.
	alone := fmt.Sprintf("name = \"p1\"\nprivate_key_file = %q\nlisten = \"0.0.0.0:51820\"\naddress = [\"100.64.0.1\"]\ncluster = \"c1\"\nrap_replicas = 16\n",
		filepath.Join(tk.dir, "p1.key"))
	sub := filepath.Join(tk.dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(sub, "alone.toml")
	if err := os.WriteFile(path, []byte(alone), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err = LoadProxy(path)
	if err != nil {
		t.Fatal(err)
	}
	if p.RAPReplicas != 16 || len(p.Proxies) != 0 || len(p.Edges) != 0 {
		t.Errorf("alone: %+v", p)
	}
}

// The commented examples load, and agree with each other and their keys.
func TestExamples(t *testing.T) {
	p, err := LoadProxy("examples/proxy.toml")
	if err != nil {
		t.Fatal(err)
	}
	tg, err := LoadTarget("examples/target.toml")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := LoadClient("examples/client.toml")
	if err != nil {
		t.Fatal(err)
	}
	pubs := map[string]Key{p.Name: p.PublicKey, tg.Name: tg.PublicKey, cl.Name: cl.PublicKey}
	p2, err := os.ReadFile("examples/keys/p2.key")
	if err != nil {
		t.Fatal(err)
	}
	k2, err := ParseKey(strings.TrimSpace(string(p2)))
	if err != nil {
		t.Fatal(err)
	}
	pubs["p2"] = k2.PublicKey()
	check := func(where, name string, k Key) {
		if want, ok := pubs[name]; !ok || want != k {
			t.Errorf("%s: public key of %s is %s, want %s", where, name, k, want)
		}
	}
	for _, pp := range p.Proxies {
		check("proxy.toml", pp.Name, pp.PublicKey)
	}
	for _, e := range p.Edges {
		check("proxy.toml", e.Name, e.PublicKey)
	}
	for _, pp := range append(tg.Proxies, cl.Proxies...) {
		check("edge files", pp.Name, pp.PublicKey)
	}
	if p.InterfaceName != "pias-p1" || tg.InterfaceName != "pias-t1" || cl.InterfaceName != "wg-cl1" {
		t.Errorf("example interface names: %q %q %q", p.InterfaceName, tg.InterfaceName, cl.InterfaceName)
	}
	if len(tg.Groups) != 1 || len(cl.Groups) != 0 || len(p.Edges) != 2 {
		t.Errorf("unexpected example contents")
	}
	if c := tg.Checks[tg.Groups[0].Group]; c.Kind != "http" || c.Path != "/health" || c.StatusMin != 200 || c.StatusMax != 399 ||
		c.Interval != 2*time.Second || c.Timeout != time.Second || c.Rise != 2 || c.Fall != 3 {
		t.Errorf("example check: %+v", c)
	}
	if e := p.Edges[0]; e.Name != "t1" || !e.SetsPolicy || e.MaxWeight != 10 || p.Edges[1].SetsPolicy || p.Edges[1].MaxWeight != 1 {
		t.Errorf("example edge rights: %+v", p.Edges)
	}
	// The role is checked: a target file is not a client file.
	if _, err := LoadClient("examples/target.toml"); err == nil || !strings.Contains(err.Error(), "client joins no groups") {
		t.Errorf("LoadClient(target.toml): %v", err)
	}
	if _, err := LoadProxy("examples/client.toml"); err == nil {
		t.Errorf("LoadProxy(client.toml) succeeded")
	}
}

// TestGroupPolicy reads a [[group]]'s policy keys and weight.
func TestGroupPolicy(t *testing.T) {
	tk := setup(t)
	text := set(targetBase, 10, `group = "100.65.0.1:53/udp"`) + "port = 5353\n"
	text = strings.Replace(text, "port = 8080\n", "port = 8080\nselect = \"affinity\"\nscope = \"same-cluster\"\nreplicate = 3\nweight = 7\n", 1)
	tg, err := LoadTarget(tk.write(t, "t1.toml", strings.Replace(text, "port = 5353\n", "", 1)))
	if err != nil {
		t.Fatal(err)
	}
	want := Service{Group: router.Group{Addr: netip.MustParseAddr("100.65.0.1"), Port: 53, Proto: router.ProtoUDP}, Port: 8080,
		Policy: router.Policy{Select: router.SelectAffinity, Scope: router.ScopeSameCluster, Replicate: 3}, Weight: 7}
	if len(tg.Groups) != 1 || tg.Groups[0] != want {
		t.Errorf("groups %+v, want %+v", tg.Groups, want)
	}
}

// TestGroupChecks reads each kind of check, and the defaults.
func TestGroupChecks(t *testing.T) {
	tk := setup(t)
	g := router.Group{Addr: netip.MustParseAddr("100.65.0.1"), Port: 80, Proto: router.ProtoTCP}
	g53 := router.Group{Addr: netip.MustParseAddr("100.65.0.1"), Port: 53, Proto: router.ProtoUDP}
	with := func(kind string, f func(*check.Spec)) check.Spec {
		s := check.Defaults(kind)
		f(&s)
		return s
	}
	udp := func(s string) string { return set(s, 10, `group = "100.65.0.1:53/udp"`) }
	tests := []struct {
		name string
		text string
		g    router.Group
		want check.Spec
	}{
		{"tcp group: tcp by default", targetBase, g, check.Defaults(check.KindTCP)},
		{"udp group: none by default", udp(targetBase), g53, check.Defaults(check.KindNone)},
		{"none", ins(targetBase, 11, `check = "none"`), g, check.Defaults(check.KindNone)},
		{"none in a table", ins(targetBase, 11, `check = { kind = "none" }`), g, check.Defaults(check.KindNone)},
		{"http by name", ins(targetBase, 11, `check = "http"`), g, with(check.KindHTTP, func(s *check.Spec) {})},
		{"udp by name", ins(udp(targetBase), 11, `check = "udp"`), g53, check.Defaults(check.KindUDP)},
		{"tcp table without kind", ins(targetBase, 11, `check = { interval = "5s", rise = 1, fall = 10, port = 8081 }`), g,
			with(check.KindTCP, func(s *check.Spec) { s.Interval, s.Rise, s.Fall, s.Port = 5*time.Second, 1, 10, 8081 })},
		{"http, a short interval cuts the timeout", ins(targetBase, 11, `check = { kind = "http", interval = "500ms", path = "/health?full=1", status = 204 }`), g,
			with(check.KindHTTP, func(s *check.Spec) {
				s.Interval, s.Timeout, s.Path, s.StatusMin, s.StatusMax = 500*time.Millisecond, 500*time.Millisecond, "/health?full=1", 204, 204
			})},
		{"http status range", targetBase + "[group.check]\nkind = \"http\"\nstatus = \"200..299\"\ntimeout = \"250ms\"\n", g,
			with(check.KindHTTP, func(s *check.Spec) { s.StatusMin, s.StatusMax, s.Timeout = 200, 299, 250*time.Millisecond })},
		{"dns", ins(udp(targetBase), 11, `check = { kind = "dns", name = "ns.example.", type = "aaaa", proto = "tcp", port = 5353 }`), g53,
			with(check.KindDNS, func(s *check.Spec) { s.Name, s.Type, s.Proto, s.Port = "ns.example.", check.TypeAAAA, "tcp", 5353 })},
		{"dns defaults", ins(udp(targetBase), 11, `check = { kind = "dns", name = "example.org" }`), g53,
			with(check.KindDNS, func(s *check.Spec) { s.Name, s.Type, s.Proto = "example.org", check.TypeA, "udp" })},
		{"udp payload", ins(udp(targetBase), 11, `check = { kind = "udp", payload = "ping\n" }`), g53,
			with(check.KindUDP, func(s *check.Spec) { s.Payload = []byte("ping\n") })},
		{"exec argv", ins(targetBase, 11, `check = { kind = "exec", command = ["/usr/bin/curl", "-fs", "http://127.0.0.1:8080/"], timeout = "2s" }`), g,
			with(check.KindExec, func(s *check.Spec) {
				s.Command, s.Timeout = []string{"/usr/bin/curl", "-fs", "http://127.0.0.1:8080/"}, 2*time.Second
			})},
		{"exec shell", ins(targetBase, 11, `check = { kind = "exec", shell = true, command = ["pgrep nginx >/dev/null"] }`), g,
			with(check.KindExec, func(s *check.Spec) { s.Command, s.Shell = []string{"pgrep nginx >/dev/null"}, true })},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := LoadTarget(tk.write(t, "t1.toml", tc.text))
			if err != nil {
				t.Fatal(err)
			}
			if got, ok := e.Checks[tc.g]; !ok || !reflect.DeepEqual(got, tc.want) || len(e.Checks) != len(e.Groups) {
				t.Errorf("check %+v, want %+v", got, tc.want)
			}
		})
	}
	cl, err := LoadClient(tk.write(t, "cl1.toml", clientBase))
	if err != nil || cl.Checks != nil {
		t.Errorf("client checks %v, %v", cl.Checks, err)
	}
}

// A FileReader's loaders read the config and its key files through it, and
// nothing from the disk: the files of a lab can be checked before they exist.
func TestFileReader(t *testing.T) {
	files := map[string][]byte{}
	for _, name := range []string{"proxy.toml", "keys/p1.key", "keys/mesh.key", "target.toml", "keys/t1.key"} {
		data, err := os.ReadFile(filepath.Join("examples", name))
		if err != nil {
			t.Fatal(err)
		}
		files[filepath.Join("mem", name)] = data
	}
	var asked []string
	r := FileReader(func(path string) ([]byte, error) {
		asked = append(asked, path)
		if data, ok := files[path]; ok {
			return data, nil
		}
		return nil, &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist}
	})
	p, err := r.LoadProxy(filepath.Join("mem", "proxy.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "p1" || p.MeshKey == nil || p.PrivateKeyFile != filepath.Join("mem", "keys", "p1.key") {
		t.Errorf("proxy from memory: name %q, mesh key %v, key file %q", p.Name, p.MeshKey != nil, p.PrivateKeyFile)
	}
	want := []string{filepath.Join("mem", "proxy.toml"), filepath.Join("mem", "keys", "p1.key"), filepath.Join("mem", "keys", "mesh.key")}
	if !slices.Equal(asked, want) {
		t.Errorf("read %q, want %q", asked, want)
	}
	if _, err := r.LoadTarget(filepath.Join("mem", "target.toml")); err != nil {
		t.Error(err)
	}
	// A key file the reader lacks is an error of the key that names it.
	delete(files, filepath.Join("mem", "keys", "t1.key"))
	_, err = r.LoadTarget(filepath.Join("mem", "target.toml"))
	if err == nil || !strings.Contains(err.Error(), "private_key_file") || !strings.Contains(err.Error(), "file does not exist") {
		t.Errorf("target without its key file: %v", err)
	}
	if _, err := r.LoadClient(filepath.Join("mem", "client.toml")); err == nil || !strings.Contains(err.Error(), "file does not exist") {
		t.Errorf("missing client file: %v", err)
	}
}

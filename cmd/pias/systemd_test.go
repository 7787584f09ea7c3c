package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pias-net/pias/lab"
	"github.com/pias-net/pias/node"
	"github.com/pias-net/pias/sdnotify"
)

var roles = []string{"proxy", "target", "client"}

const unitDir = "../../scripts/systemd"

// unitExec is the unit's command lines: key ExecStartPre, ExecStart, ….
func unitExec(t *testing.T, role string) map[string][]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(unitDir, "pias-"+role+"@.service"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && strings.HasPrefix(k, "Exec") {
			out[k] = strings.Fields(v)
		}
	}
	return out
}

// TestSystemdUnits runs systemd-analyze verify on every unit, as
// pias-ROLE@x.service with ExecStart's binary made to exist: verify wants
// it, and the units name /usr/local/bin/pias. Any word from verify (it
// only warns about unknown keys) fails the test.
func TestSystemdUnits(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (CI installs systemd)")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "pias")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, role := range roles {
		data, err := os.ReadFile(filepath.Join(unitDir, "pias-"+role+"@.service"))
		if err != nil {
			t.Fatal(err)
		}
		text := string(data)
		for _, want := range []string{"Type=notify", "ExecStartPre=/usr/local/bin/pias check --role " + role + " -c /etc/pias/%i.toml",
			"ExecStart=/usr/local/bin/pias " + role + " -c /etc/pias/%i.toml", "ExecReload=/bin/kill -HUP $MAINPID",
			"User=pias", "ProtectSystem=strict", "PrivateTmp=yes", "NoNewPrivileges=yes", "RestrictAddressFamilies=", "RuntimeDirectory=pias wireguard"} {
			if !strings.Contains(text, "\n"+want) {
				t.Errorf("pias-%s@.service lacks %q", role, want)
			}
		}
		caps := regexp.MustCompile(`(?m)^CapabilityBoundingSet=(.*)$`).FindStringSubmatch(text)
		switch {
		case caps == nil:
			t.Errorf("pias-%s@.service: no CapabilityBoundingSet", role)
		case role == "proxy" && caps[1] != "":
			t.Errorf("a proxy needs no capability, its unit grants %q", caps[1])
		case role != "proxy" && caps[1] != "CAP_NET_ADMIN":
			t.Errorf("an edge needs CAP_NET_ADMIN only, its unit grants %q", caps[1])
		}
		text = strings.ReplaceAll(text, "/usr/local/bin/pias", bin)
		unit := filepath.Join(dir, "pias-"+role+"@.service")
		if err := os.WriteFile(unit, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(sa, "verify", "pias-"+role+"@x.service")
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil || len(out) > 0 {
			t.Errorf("systemd-analyze verify pias-%s@.service: %v\n%s", role, err, out)
		}
	}
}

// asUnit is how the units run pias: user pias (here: nobody when the test
// runs as root, else this user), the environment systemd gives a
// Type=notify service, a private /tmp, and files the user may read.
type asUnit struct {
	t    *testing.T
	dir  string // private tmp, notify sockets
	bin  string // pias
	cred *syscall.Credential
}

func newAsUnit(t *testing.T) *asUnit {
	dir := t.TempDir()
	u := &asUnit{t: t, dir: dir, bin: filepath.Join(dir, "bin", "pias")}
	// The test binary is pias when called so (see TestMain).
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Dir(u.bin), 0o755)
	if err := os.WriteFile(u.bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "tmp"), 0o700)
	if os.Geteuid() == 0 {
		u.cred = &syscall.Credential{Uid: 65534, Gid: 65534}
		for _, d := range []string{dir, filepath.Dir(dir)} {
			os.Chmod(d, 0o755)
		}
		os.Chown(filepath.Join(dir, "tmp"), 65534, 65534)
	}
	return u
}

// own gives the unit's user the files under path (the README has them
// readable by group pias).
func (u *asUnit) own(path string) {
	if u.cred == nil {
		return
	}
	filepath.Walk(path, func(p string, _ os.FileInfo, err error) error {
		if err == nil {
			err = os.Chown(p, int(u.cred.Uid), int(u.cred.Gid))
		}
		return err
	})
}

// command is argv (its first word /usr/local/bin/pias) as the unit runs
// it, with $NOTIFY_SOCKET notify ("" for none).
func (u *asUnit) command(argv []string, notify string) *exec.Cmd {
	if argv[0] != "/usr/local/bin/pias" {
		u.t.Fatalf("unit runs %q, want /usr/local/bin/pias", argv[0])
	}
	cmd := exec.Command(u.bin, argv[1:]...)
	cmd.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"LANG=C.UTF-8",
		"TMPDIR=" + filepath.Join(u.dir, "tmp"), // PrivateTmp=yes
		"INVOCATION_ID=" + fmt.Sprintf("%016x%016x", rand.Uint64(), rand.Uint64()),
		"JOURNAL_STREAM=8:12345",
		"GORACE=atexit_sleep_ms=0",
	}
	if notify != "" {
		cmd.Env = append(cmd.Env, "NOTIFY_SOCKET="+notify)
	}
	if u.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: u.cred}
	}
	return cmd
}

// notifySocket listens where systemd would, for one node.
func (u *asUnit) notifySocket(name string) (*net.UnixConn, string) {
	path := filepath.Join(u.dir, name+".notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		u.t.Fatal(err)
	}
	u.t.Cleanup(func() { c.Close() })
	os.Chmod(path, 0o666) // systemd's is writable by the service's user
	return c, path
}

// adminSocket is where the node with interface iface, run by command,
// serves pias status.
func (u *asUnit) adminSocket(iface string) string {
	uid := os.Geteuid()
	if u.cred != nil {
		uid = int(u.cred.Uid)
	}
	return filepath.Join(u.dir, "tmp", "pias-"+strconv.Itoa(uid), iface+".sock")
}

// status is pias status --json iface, asked as the unit's user.
func (u *asUnit) status(iface string) (node.Status, error) {
	var st node.Status
	cmd := u.command([]string{"/usr/local/bin/pias", "status", "--json", iface}, "")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return st, fmt.Errorf("%v: %s", err, stderr.Bytes())
	}
	return st, json.Unmarshal(out, &st)
}

// readNotify waits for the next datagram on c.
func readNotify(c *net.UnixConn, timeout time.Duration) (string, error) {
	c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	return string(buf[:n]), err
}

// TestUnitReadiness starts a proxy, a target and a client as their units
// would: ExecStartPre (pias check), then ExecStart with $NOTIFY_SOCKET.
// Each node must say READY=1 only when it is up: at that moment pias
// status already answers for it (and a proxy's WireGuard port is bound).
// On SIGTERM it says STOPPING=1 and exits 0; its logs, under systemd,
// carry no timestamps of their own.
func TestUnitReadiness(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nodes")
	}
	u := newAsUnit(t)
	base, err := freeUDPRange(3)
	if err != nil {
		t.Fatal(err)
	}
	ifPrefix := fmt.Sprintf("pu%04x", rand.IntN(1<<16))
	labDir := filepath.Join(u.dir, "etc")
	l, err := lab.Generate(lab.Options{Out: labDir, Proxies: 1, Clusters: 1, Targets: 1, Clients: 1, Groups: 1,
		BasePort: uint16(base), InterfacePrefix: ifPrefix})
	if err != nil {
		t.Fatal(err)
	}
	// No service listens behind t1's group: let it join without a check.
	f, err := os.OpenFile(l.Path("t1.toml"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(f, "check = \"none\"\n")
	f.Close()
	u.own(labDir)

	type running struct {
		name, iface    string
		cmd            *exec.Cmd
		notify         *net.UnixConn
		stdout, stderr bytes.Buffer
	}
	var nodes []*running
	defer func() {
		for _, n := range nodes {
			if n.cmd.ProcessState == nil {
				n.cmd.Process.Kill()
				n.cmd.Wait()
			}
		}
	}()
	for i, role := range roles {
		name := l.Nodes[i].Name
		n := &running{name: name, iface: ifPrefix + name}
		ex := unitExec(t, role)
		subst := func(argv []string) []string {
			out := make([]string, len(argv))
			for j, a := range argv {
				out[j] = strings.ReplaceAll(a, "/etc/pias/%i.toml", l.Path(name+".toml"))
			}
			return out
		}
		pre := u.command(subst(ex["ExecStartPre"]), "")
		if out, err := pre.CombinedOutput(); err != nil || !strings.Contains(string(out), ": ok: "+role+" "+name) {
			t.Fatalf("%s: ExecStartPre: %v\n%s", name, err, out)
		}
		var path string
		n.notify, path = u.notifySocket(name)
		n.cmd = u.command(subst(ex["ExecStart"]), path)
		n.cmd.Stdout, n.cmd.Stderr = &n.stdout, &n.stderr
		if err := n.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)

		msg, err := readNotify(n.notify, 30*time.Second)
		if err != nil {
			t.Fatalf("%s: no READY=1: %v\nstderr:\n%s", name, err, n.stderr.Bytes())
		}
		// Up means: its admin socket accepts at once, and pias status
		// answers.
		c, aerr := net.Dial("unix", u.adminSocket(n.iface))
		if aerr == nil {
			c.Close()
		}
		if msg != sdnotify.Ready {
			t.Fatalf("%s: first notification %q, want %q", name, msg, sdnotify.Ready)
		}
		if aerr != nil {
			t.Fatalf("%s said READY=1, but its admin socket: %v", name, aerr)
		}
		st, serr := u.status(n.iface)
		if serr != nil || st.Name != name || st.Role != role {
			t.Fatalf("%s said READY=1, but pias status: %+v, %v", name, st, serr)
		}
		if role == "proxy" && !udpBound()[base] {
			t.Fatalf("%s said READY=1 before binding UDP %d", name, base)
		}
	}

	// t1 joins at p1, which logs it: a line to look at for timestamps.
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := u.status(ifPrefix + "t1")
		if err == nil && st.Edge != nil && st.Edge.Joined {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("t1 did not join in 30s: %+v, %v", st, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	stamp := regexp.MustCompile(`(?m)^(\S+: )?\d{4}/\d\d/\d\d \d\d:\d\d`)
	for i := len(nodes) - 1; i >= 0; i-- {
		n := nodes[i]
		n.cmd.Process.Signal(syscall.SIGTERM)
		msg, err := readNotify(n.notify, 30*time.Second)
		if err != nil || msg != sdnotify.Stopping {
			t.Errorf("%s on SIGTERM: %q, %v; want %q", n.name, msg, err, sdnotify.Stopping)
		}
		if err := n.cmd.Wait(); err != nil {
			t.Errorf("%s: %v\nstderr:\n%s", n.name, err, n.stderr.Bytes())
		}
		logs := n.stdout.String() + n.stderr.String()
		if m := stamp.FindString(logs); m != "" {
			t.Errorf("%s logs with its own timestamps under systemd: %q\n%s", n.name, m, logs)
		}
	}
	if p1 := nodes[0].stdout.String(); !strings.Contains(p1, " t1") {
		t.Errorf("p1 logged nothing about t1:\n%s", p1)
	}
}

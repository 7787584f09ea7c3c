package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pias-net/pias/cert"
	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/router"
)

func init() {
	register("ca", "ca init: make a certificate authority (Ed25519 key and CA certificate)", runCA)
	register("cert", "cert sign|show|verify|revoke: node certificates and revocation", runCert)
}

// The files of a CA directory.
const (
	caCertFile  = cert.DirCAFile
	caKeyFile   = cert.DirKeyFile
	revokedFile = cert.DirRevoked
)

// skew backdates every new CA and certificate, so that a node whose clock
// is a little behind the signer's accepts it at once.
const skew = time.Minute

// Exit statuses of the ca and cert commands: 1 when a check says no (a
// certificate or list that is not valid) or a file cannot be written, 2
// for bad input (flags, unreadable or malformed files).
const (
	exitInvalid = 1
	exitUsage   = 2
)

// cmdError is an error with its exit status.
type cmdError struct {
	code int
	err  error
}

func (e *cmdError) Error() string { return e.err.Error() }

func badInput(format string, args ...any) error {
	return &cmdError{exitUsage, fmt.Errorf(format, args...)}
}

func invalid(format string, args ...any) error {
	return &cmdError{exitInvalid, fmt.Errorf(format, args...)}
}

// report prints err as the command's one line and returns its status.
func report(stderr io.Writer, name string, err error) int {
	if err == nil {
		return 0
	}
	code := exitInvalid
	var ce *cmdError
	if errors.As(err, &ce) {
		code = ce.code
	}
	fmt.Fprintf(stderr, "pias %s: %s\n", name, oneLine(err.Error()))
	return code
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

type subcommand struct {
	synopsis string
	run      func(args []string, stdout, stderr io.Writer) int
}

// dispatch runs the subcommand args[0] of the command name.
func dispatch(name string, subs map[string]subcommand, order []string, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		w, rc := stdout, 0
		if len(args) == 0 {
			w, rc = stderr, exitUsage
		}
		for i, s := range order {
			prefix := "Usage:"
			if i > 0 {
				prefix = "      "
			}
			fmt.Fprintf(w, "%s pias %s %s\n", prefix, name, subs[s].synopsis)
		}
		fmt.Fprintf(w, "  (pias %s SUBCOMMAND --help for the flags)\n", name)
		return rc
	}
	s, ok := subs[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "pias %s: unknown subcommand %q (want %s)\n", name, args[0], strings.Join(order, ", "))
		return exitUsage
	}
	return s.run(args[1:], stdout, stderr)
}

func runCA(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	return dispatch("ca", map[string]subcommand{
		"init": {caInitSynopsis, caInit},
	}, []string{"init"}, args, stdout, stderr)
}

func runCert(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	return dispatch("cert", map[string]subcommand{
		"sign":   {certSignSynopsis, certSign},
		"show":   {certShowSynopsis, certShow},
		"verify": {certVerifySynopsis, certVerify},
		"revoke": {certRevokeSynopsis, certRevoke},
	}, []string{"sign", "show", "verify", "revoke"}, args, stdout, stderr)
}

// flagsAndArgs is flags for a command that also takes arguments, before,
// after or between its flags: parse returns the arguments, or an exit
// status (≥ 0) to stop with.
func flagsAndArgs(name, synopsis string, stdout, stderr io.Writer) (*flag.FlagSet, func([]string) ([]string, int)) {
	fs, parse := flags(name, synopsis, stdout, stderr)
	return fs, func(args []string) ([]string, int) {
		var flagArgs, pos []string
		for i := 0; i < len(args); i++ {
			a := args[i]
			if a == "--" {
				pos = append(pos, args[i+1:]...)
				break
			}
			if !strings.HasPrefix(a, "-") || a == "-" {
				pos = append(pos, a)
				continue
			}
			flagArgs = append(flagArgs, a)
			n := strings.TrimLeft(a, "-")
			if strings.Contains(n, "=") {
				continue
			}
			f := fs.Lookup(n)
			if f == nil {
				continue // parse reports it
			}
			if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
				continue
			}
			if i+1 < len(args) {
				i++
				flagArgs = append(flagArgs, args[i])
			}
		}
		return pos, parse(flagArgs)
	}
}

// ca init

const caInitSynopsis = "init --name NAME --out DIR [--duration 8760h] [--groups G,...] [--networks P,...]"

func caInit(args []string, stdout, stderr io.Writer) int {
	fs, parse := flags("ca init", "ca "+caInitSynopsis, stdout, stderr)
	name := fs.String("name", "", "the CA's name: 1..64 printable ASCII characters (required)")
	out := fs.String("out", "", "directory to write ca.pem and ca.key (mode 0600) into; made if missing (required)")
	duration := fs.Duration("duration", 8760*time.Hour, "how long the CA, and so every certificate it signs, is valid")
	groups := fs.String("groups", "", "if set, the only group rights its certificates may hold: GROUP or PREFIX:*/PROTO, comma-separated")
	networks := fs.String("networks", "", "if set, the only overlay networks its certificates' addresses may lie in: prefixes, comma-separated")
	if rc := parse(args); rc >= 0 {
		return rc
	}
	return report(stderr, "ca init", func() error {
		switch {
		case *name == "":
			return badInput("--name NAME is required")
		case *out == "":
			return badInput("--out DIR is required")
		case *duration <= 0:
			return badInput("--duration %v: want a positive duration", *duration)
		}
		rights, err := cert.ParseGroupRights(*groups)
		if err != nil {
			return badInput("--groups: %v", err)
		}
		nets, err := parsePrefixes(*networks)
		if err != nil {
			return badInput("--networks: %v", err)
		}
		now := time.Now()
		ca, key, err := cert.NewCA(*name, now.Add(-skew), now.Add(*duration), nets, rights, nil)
		if err != nil {
			return badInput("%v", err)
		}
		caPEM, err := ca.MarshalPEM()
		if err != nil {
			return badInput("%v", err)
		}
		if err := os.MkdirAll(*out, 0o700); err != nil {
			return badInput("--out %s: %v", *out, pathErr(err))
		}
		keyPath, certPath := filepath.Join(*out, caKeyFile), filepath.Join(*out, caCertFile)
		for _, p := range []string{keyPath, certPath} {
			if _, err := os.Lstat(p); err == nil {
				return badInput("%s exists: %s already holds a CA; refusing to overwrite it", p, *out)
			}
		}
		if err := writeFileAtomic(keyPath, cert.MarshalKeyPEM(key), 0o600, false); err != nil {
			return invalid("%v", err)
		}
		if err := writeFileAtomic(certPath, caPEM, 0o644, false); err != nil {
			os.Remove(keyPath)
			return invalid("%v", err)
		}
		fmt.Fprintf(stdout, "wrote CA %q to %s (%s, and %s: keep it secret)\nfingerprint %s, valid until %s\n",
			ca.Name, *out, caCertFile, caKeyFile, ca.Fingerprint(), ca.NotAfter.Format(time.RFC3339))
		return nil
	}())
}

func parsePrefixes(s string) ([]netip.Prefix, error) {
	var ps []netip.Prefix
	if s == "" {
		return nil, nil
	}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		p, err := netip.ParsePrefix(f)
		switch {
		case err != nil:
			return nil, fmt.Errorf("%q is not a prefix like 100.64.0.0/16", f)
		case p.Addr().Is4In6():
			return nil, fmt.Errorf("%q: IPv4-mapped IPv6 prefixes are not allowed", f)
		case p.Masked() != p:
			return nil, fmt.Errorf("%q has host bits set (did you mean %s?)", f, p.Masked())
		}
		ps = append(ps, p)
	}
	if len(ps) > cert.MaxNetworks {
		return nil, fmt.Errorf("%d networks, at most %d", len(ps), cert.MaxNetworks)
	}
	return ps, nil
}

// cert sign

const certSignSynopsis = "sign --ca DIR --name N --role proxy|target|client --pubkey WG_PUBLIC_KEY --address A[,A] [--cluster C] [--groups G,...] [--policy] [--max-weight N] [--duration D] --out FILE"

func certSign(args []string, stdout, stderr io.Writer) int {
	fs, parse := flags("cert sign", "cert "+certSignSynopsis, stdout, stderr)
	caDir := fs.String("ca", "", "the CA's directory, from pias ca init (required)")
	name := fs.String("name", "", "the node's name: 1..15 characters of a-z, 0-9 and '-' (required)")
	roleName := fs.String("role", "", "proxy, target or client (required)")
	pub := fs.String("pubkey", "", "the node's WireGuard public key, base64 as pias pubkey prints it (required)")
	addrs := fs.String("address", "", "the node's overlay addresses: one IPv4 and at most one IPv6, comma-separated (required)")
	cluster := fs.String("cluster", "", "a proxy's cluster (required for proxies, only for proxies)")
	groups := fs.String("groups", "", "a target's group rights: GROUP (100.65.0.1:53/udp) or PREFIX:*/PROTO (100.65.1.0/24:*/udp), comma-separated")
	policy := fs.Bool("policy", false, "the target may set the policy of its groups")
	maxWeight := fs.Int("max-weight", 1, "the most weight the target may ask for, 1..1000")
	duration := fs.Duration("duration", 0, "how long the certificate is valid (default: until the CA expires)")
	out := fs.String("out", "", "the certificate file to write; must not exist (required)")
	if rc := parse(args); rc >= 0 {
		return rc
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return report(stderr, "cert sign", func() error {
		for _, req := range []struct{ flag, val string }{
			{"ca", *caDir}, {"name", *name}, {"role", *roleName}, {"pubkey", *pub}, {"address", *addrs}, {"out", *out},
		} {
			if req.val == "" {
				return badInput("--%s is required", req.flag)
			}
		}
		if _, err := os.Lstat(*out); err == nil {
			return badInput("%s exists; refusing to overwrite it", *out)
		}
		role, err := cert.ParseRole(*roleName)
		if err != nil {
			return badInput("--role: %v", err)
		}
		if role != cert.RoleTarget {
			for _, f := range []string{"groups", "policy", "max-weight"} {
				if set[f] {
					return badInput("--%s is a target's right; a %v has none", f, role)
				}
			}
		}
		if role != cert.RoleProxy && set["cluster"] {
			return badInput("--cluster is for proxies only")
		}
		k, err := config.ParseKey(strings.TrimSpace(*pub))
		if err != nil {
			return badInput("--pubkey: %v", err)
		}
		as, err := parseAddrs(*addrs)
		if err != nil {
			return badInput("--address: %v", err)
		}
		c := &cert.Certificate{Name: *name, Role: role, PublicKey: k, Addresses: cert.SortAddresses(as), Cluster: *cluster}
		if role == cert.RoleTarget {
			if c.Groups, err = cert.ParseGroupRights(*groups); err != nil {
				return badInput("--groups: %v", err)
			}
			if *maxWeight < 1 || *maxWeight > router.MaxWeight {
				return badInput("--max-weight %d: want 1..%d", *maxWeight, router.MaxWeight)
			}
			c.SetsPolicy, c.MaxWeight = *policy, *maxWeight
		}
		ca, key, err := loadCA(*caDir, true)
		if err != nil {
			return err
		}
		now := time.Now()
		c.NotBefore = now.Add(-skew)
		if c.NotBefore.Before(ca.NotBefore) {
			c.NotBefore = ca.NotBefore
		}
		c.NotAfter = ca.NotAfter
		if set["duration"] {
			if *duration <= 0 {
				return badInput("--duration %v: want a positive duration", *duration)
			}
			c.NotAfter = now.Add(*duration)
			if c.NotAfter.After(ca.NotAfter) {
				return badInput("--duration %v: the certificate would outlive its CA, which expires %s", *duration, ca.NotAfter.Format(time.RFC3339))
			}
		}
		if !now.Before(ca.NotAfter) {
			return invalid("CA %q expired at %s", ca.Name, ca.NotAfter.Format(time.RFC3339))
		}
		if err := ca.Sign(c, key); err != nil {
			return badInput("%v", err)
		}
		text, err := c.MarshalPEM()
		if err != nil {
			return badInput("%v", err)
		}
		if err := writeFileAtomic(*out, text, 0o644, false); err != nil {
			if errors.Is(err, os.ErrExist) {
				return badInput("%s exists; refusing to overwrite it", *out)
			}
			return invalid("%v", err)
		}
		fmt.Fprintf(stdout, "wrote %s: %v %q, fingerprint %s, valid until %s\n", *out, c.Role, c.Name, c.Fingerprint(), c.NotAfter.Format(time.RFC3339))
		return nil
	}())
}

func parseAddrs(s string) ([]netip.Addr, error) {
	var as []netip.Addr
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		a, err := netip.ParseAddr(f)
		if err != nil || a.Zone() != "" || a.Is4In6() {
			return nil, fmt.Errorf("%q is not a plain IPv4 or IPv6 address", f)
		}
		as = append(as, a)
	}
	if len(as) > 2 {
		return nil, fmt.Errorf("%d addresses, at most 2 (one IPv4, one IPv6)", len(as))
	}
	return as, nil
}

// cert show

const certShowSynopsis = "show FILE [--json]"

func certShow(args []string, stdout, stderr io.Writer) int {
	fs, parse := flagsAndArgs("cert show", "cert "+certShowSynopsis+"\n  (FILE: a certificate, a CA certificate or a revocation list)", stdout, stderr)
	asJSON := fs.Bool("json", false, "print JSON instead of text")
	files, rc := parse(args)
	if rc >= 0 {
		return rc
	}
	return report(stderr, "cert show", func() error {
		if len(files) != 1 {
			return badInput("want one FILE, got %d", len(files))
		}
		obj, err := readObject(files[0])
		if err != nil {
			return err
		}
		v := describe(obj)
		if *asJSON {
			b, err := json.MarshalIndent(v, "", "  ")
			if err != nil {
				return invalid("%v", err)
			}
			fmt.Fprintf(stdout, "%s\n", b)
			return nil
		}
		printText(stdout, v)
		return nil
	}())
}

// shown is what show prints: one struct for the three kinds, fields that
// do not apply left out.
type shown struct {
	Kind        string   `json:"kind"`
	Version     int      `json:"version"`
	Name        string   `json:"name,omitempty"`
	Role        string   `json:"role,omitempty"`
	PublicKey   string   `json:"public_key,omitempty"`
	Addresses   []string `json:"addresses,omitempty"`
	Cluster     string   `json:"cluster,omitempty"`
	Networks    []string `json:"networks,omitempty"`
	Groups      []string `json:"groups,omitempty"`
	Policy      *bool    `json:"policy,omitempty"`
	MaxWeight   int      `json:"max_weight,omitempty"`
	Serial      *uint64  `json:"serial,omitempty"`
	IssuedAt    string   `json:"issued_at,omitempty"`
	Revoked     []string `json:"revoked,omitempty"`
	NotBefore   string   `json:"not_before,omitempty"`
	NotAfter    string   `json:"not_after,omitempty"`
	Issuer      string   `json:"issuer,omitempty"`
	Fingerprint string   `json:"fingerprint,omitempty"`
	Signature   string   `json:"signature"`
}

func describe(obj any) shown {
	ts := func(t time.Time) string { return t.UTC().Format(time.RFC3339) }
	strs := func(n int, f func(int) string) []string {
		var ss []string
		for i := range n {
			ss = append(ss, f(i))
		}
		return ss
	}
	sig := func(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
	switch o := obj.(type) {
	case *cert.Certificate:
		s := shown{Kind: "certificate", Version: cert.Version, Name: o.Name, Role: o.Role.String(),
			PublicKey: config.Key(o.PublicKey).String(), Cluster: o.Cluster,
			Addresses: strs(len(o.Addresses), func(i int) string { return o.Addresses[i].String() }),
			Groups:    strs(len(o.Groups), func(i int) string { return o.Groups[i].String() }),
			NotBefore: ts(o.NotBefore), NotAfter: ts(o.NotAfter), Issuer: o.Issuer.String(),
			Fingerprint: o.Fingerprint().String(), Signature: sig(o.Signature)}
		if o.Role == cert.RoleTarget {
			s.Policy, s.MaxWeight = &o.SetsPolicy, o.MaxWeight
		}
		return s
	case *cert.CA:
		return shown{Kind: "ca", Version: cert.Version, Name: o.Name, PublicKey: base64.StdEncoding.EncodeToString(o.PublicKey),
			Networks:  strs(len(o.Networks), func(i int) string { return o.Networks[i].String() }),
			Groups:    strs(len(o.Groups), func(i int) string { return o.Groups[i].String() }),
			NotBefore: ts(o.NotBefore), NotAfter: ts(o.NotAfter), Fingerprint: o.Fingerprint().String(), Signature: sig(o.Signature)}
	case *cert.RevocationList:
		return shown{Kind: "revocation list", Version: cert.Version, Serial: &o.Serial, IssuedAt: ts(o.IssuedAt), Issuer: o.Issuer.String(),
			Revoked: strs(len(o.Revoked), func(i int) string { return o.Revoked[i].String() }), Signature: sig(o.Signature)}
	}
	panic(fmt.Sprintf("describe %T", obj))
}

func printText(w io.Writer, s shown) {
	line := func(k, v string) { fmt.Fprintf(w, "%-12s %s\n", k+":", v) }
	list := func(k string, vs []string) {
		if len(vs) == 0 {
			line(k, "none")
			return
		}
		line(k, strings.Join(vs, ", "))
	}
	line("kind", s.Kind)
	line("version", fmt.Sprint(s.Version))
	switch s.Kind {
	case "certificate":
		line("name", s.Name)
		line("role", s.Role)
		line("public key", s.PublicKey)
		list("addresses", s.Addresses)
		if s.Role == "proxy" {
			line("cluster", s.Cluster)
		}
		if s.Role == "target" {
			list("groups", s.Groups)
			line("policy", fmt.Sprint(*s.Policy))
			line("max weight", fmt.Sprint(s.MaxWeight))
		}
	case "ca":
		line("name", s.Name)
		line("public key", s.PublicKey)
		list("networks", s.Networks)
		list("groups", s.Groups)
	case "revocation list":
		line("serial", fmt.Sprint(*s.Serial))
		line("issued at", s.IssuedAt)
		line("issuer", s.Issuer)
		line("revoked", fmt.Sprint(len(s.Revoked)))
		for _, f := range s.Revoked {
			fmt.Fprintf(w, "  %s\n", f)
		}
		line("signature", s.Signature)
		return
	}
	line("not before", s.NotBefore)
	line("not after", s.NotAfter)
	if s.Issuer != "" {
		line("issuer", s.Issuer)
	}
	line("fingerprint", s.Fingerprint)
	line("signature", s.Signature)
}

// cert verify

const certVerifySynopsis = "verify --ca DIR FILE"

func certVerify(args []string, stdout, stderr io.Writer) int {
	fs, parse := flagsAndArgs("cert verify", "cert "+certVerifySynopsis+
		"\n  FILE, a certificate, is checked as proxies check it, against DIR's CA and revocation list;"+
		"\n  FILE, a revocation list, must be the CA's and no older than DIR's."+
		"\n  Exit status 0: valid; 1: not valid; 2: bad input.", stdout, stderr)
	caDir := fs.String("ca", "", "the CA's directory: its ca.pem, and revoked.pem if there is one (required)")
	files, rc := parse(args)
	if rc >= 0 {
		return rc
	}
	return report(stderr, "cert verify", func() error {
		if *caDir == "" {
			return badInput("--ca DIR is required")
		}
		if len(files) != 1 {
			return badInput("want one FILE, got %d", len(files))
		}
		ca, _, pool, held, err := loadCAPool(*caDir, false)
		if err != nil {
			return err
		}
		obj, err := readObject(files[0])
		if err != nil {
			return err
		}
		switch o := obj.(type) {
		case *cert.Certificate:
			if _, err := pool.Verify(o, time.Now(), held); err != nil {
				return invalid("%s: %v", files[0], err)
			}
			fmt.Fprintf(stdout, "%s: valid: %v %q, signed by CA %q, until %s\n", files[0], o.Role, o.Name, ca.Name, o.NotAfter.Format(time.RFC3339))
		case *cert.RevocationList:
			if held != nil && sameList(held, o) {
				fmt.Fprintf(stdout, "%s: valid: revocation list %d of CA %q (the one held)\n", files[0], o.Serial, ca.Name)
				return nil
			}
			if _, err := pool.Update(held, o); err != nil {
				return invalid("%s: %v", files[0], err)
			}
			fmt.Fprintf(stdout, "%s: valid: revocation list %d of CA %q, %d revoked\n", files[0], o.Serial, ca.Name, len(o.Revoked))
		default:
			return badInput("%s: a CA certificate; want a certificate or a revocation list", files[0])
		}
		return nil
	}())
}

func sameList(a, b *cert.RevocationList) bool {
	x, _ := a.Marshal()
	y, _ := b.Marshal()
	return bytes.Equal(x, y)
}

// cert revoke

const certRevokeSynopsis = "revoke --ca DIR FILE|FINGERPRINT..."

func certRevoke(args []string, stdout, stderr io.Writer) int {
	fs, parse := flagsAndArgs("cert revoke", "cert "+certRevokeSynopsis+
		"\n  writes DIR/revoked.pem: the CA's list of revoked certificates, with the next serial,"+
		"\n  keeping every entry of the list before it", stdout, stderr)
	caDir := fs.String("ca", "", "the CA's directory, from pias ca init (required)")
	targets, rc := parse(args)
	if rc >= 0 {
		return rc
	}
	return report(stderr, "cert revoke", func() error {
		if *caDir == "" {
			return badInput("--ca DIR is required")
		}
		if len(targets) == 0 {
			return badInput("name at least one certificate FILE or FINGERPRINT")
		}
		ca, key, _, held, err := loadCAPool(*caDir, true)
		if err != nil {
			return err
		}
		caFP := ca.Fingerprint()
		var add []cert.Fingerprint
		for _, t := range targets {
			if f, err := cert.ParseFingerprint(t); err == nil {
				add = append(add, f)
				continue
			}
			obj, err := readObject(t)
			if err != nil {
				return err
			}
			c, ok := obj.(*cert.Certificate)
			if !ok {
				return badInput("%s: not a node certificate", t)
			}
			if c.Issuer != caFP {
				return badInput("%s: %q was signed by another CA (%s)", t, c.Name, c.Issuer)
			}
			add = append(add, c.Fingerprint())
		}
		serial := uint64(1)
		if held != nil {
			serial = held.Serial + 1
		}
		rl, err := cert.NewRevocationList(ca, key, serial, time.Now(), held, add)
		if err != nil {
			return badInput("%v", err)
		}
		text, err := rl.MarshalPEM()
		if err != nil {
			return badInput("%v", err)
		}
		path := filepath.Join(*caDir, revokedFile)
		if err := writeFileAtomic(path, text, 0o644, true); err != nil {
			return invalid("%v", err)
		}
		fmt.Fprintf(stdout, "wrote %s: serial %d, %d revoked (%d new)\n", path, rl.Serial, len(rl.Revoked), len(rl.Revoked)-lenOf(held))
		return nil
	}())
}

func lenOf(rl *cert.RevocationList) int {
	if rl == nil {
		return 0
	}
	return len(rl.Revoked)
}

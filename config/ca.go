package config

import (
	"errors"
	"io/fs"
	"net/netip"
	"path/filepath"
	"slices"

	"github.com/pias-net/pias/cert"
)

// CA mode: a file that names ca_file is admitted by its certificate. It
// names cert_file (and optionally revocation_file), no peer's key, no mesh
// key and no [[edge]]; its address, and a proxy's cluster, may be left to
// the certificate.

// caFiles reads ca_file, revocation_file and cert_file, and checks the
// certificate against the CA, the clock, the file's role, name and private
// key. It runs after name and private_key_file are read. x.caLine is set
// whenever the file names ca_file, valid or not, so that the rest of the
// file is read in CA mode.
func (d *decoder) caFiles(t *table, role string, n *Node, x *cross) {
	if !t.has("ca_file") {
		for _, k := range []string{"cert_file", "revocation_file"} {
			if _, ok := t.str(k, false); ok {
				d.errf(k, "needs ca_file: a certificate is checked against its CA")
			}
		}
		return
	}
	x.caLine = d.lineOf("ca_file")
	caName, ok := t.str("ca_file", false)
	if !ok { // not a string, and reported
		t.seen["cert_file"], t.seen["revocation_file"] = true, true
		return
	}

	var pool *cert.Pool
	if text, file, ok := d.readFile("ca_file", caName); ok {
		n.CAFile = file
		if ca, err := cert.ParseCAPEM(text); err != nil {
			d.errf("ca_file", "%s: %v", file, err)
		} else if pool, err = cert.NewPool(ca); err != nil {
			d.errf("ca_file", "%s: %v", file, err)
		} else {
			n.CA = ca
		}
	}

	if s, ok := t.str("revocation_file", false); ok {
		if text, file, ok := d.readFile("revocation_file", s); ok {
			n.RevocationFile = file
			rl, err := cert.ParseRevocationListPEM(text)
			switch {
			case err != nil:
				d.errf("revocation_file", "%s: %v", file, err)
			case pool == nil: // the CA is bad, and reported
			default:
				if _, err := pool.VerifyRevocationList(rl); err != nil {
					d.errf("revocation_file", "%s: %v", file, err)
				} else {
					n.Revocation = rl
				}
			}
		}
	}

	s, ok := t.str("cert_file", true)
	if !ok {
		return
	}
	text, file, ok := d.readFile("cert_file", s)
	if !ok {
		return
	}
	n.CertFile = file
	c, err := cert.ParsePEM(text)
	if err != nil {
		d.errf("cert_file", "%s: %v", file, err)
		return
	}
	if pool == nil {
		return
	}
	if _, err := pool.Verify(c, d.now, n.Revocation); err != nil {
		d.errf("cert_file", "%s: %v", file, err)
		return
	}
	switch {
	case c.Role.String() != role:
		d.errf("cert_file", "%s is a %v's certificate; this file is a %s's", file, c.Role, role)
	case n.Name != "" && c.Name != n.Name:
		d.errf("cert_file", "%s is the certificate of %q; this file's name is %q", file, c.Name, n.Name)
	case !n.PublicKey.IsZero() && Key(c.PublicKey) != n.PublicKey:
		d.errf("cert_file", "%s certifies the public key %s, not the one of private_key_file (%s)", file, Key(c.PublicKey), n.PublicKey)
	default:
		n.Cert = c
		n.CertExpiresSoon = c.NotAfter.Sub(d.now) < CertExpiryWarning
	}
}

// caAddresses sets n's addresses in CA mode: the certificate's, which the
// file's address key, if any, must repeat.
func (d *decoder) caAddresses(t *table, role string, n *Node, x *cross) {
	if t.has("address") {
		n.Address = d.addresses(t, "address", role == RoleProxy, n, x)
		if n.Cert != nil && len(n.Address) > 0 && !sameAddrs(n.Address, n.Cert.Addresses) {
			d.errf("address", "%v differs from the certificate's addresses %v (cert_file at line %d): leave address out to take the certificate's", n.Address, n.Cert.Addresses, d.lineOf("cert_file"))
		}
		return
	}
	t.seen["address"] = true
	if n.Cert == nil {
		return // the certificate is missing or bad, and reported
	}
	for _, a := range n.Cert.Addresses {
		if x.overlayOK && !n.InOverlay(a) {
			d.errf("cert_file", "the certificate's address %s is outside overlay_prefix %v", a, n.OverlayPrefix)
			continue
		}
		x.add(&x.addrs, a.String(), "cert_file", d)
	}
	n.Address = slices.Clone(n.Cert.Addresses)
}

func sameAddrs(a, b []netip.Addr) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// staticKey reports what, a key of static mode at path, in a CA-mode file.
func (d *decoder) staticKey(path, what string, x *cross) {
	d.errf(path, "%s is static mode; this file is in CA mode (ca_file at line %d): use one or the other", what, x.caLine)
}

// caProxyPeer reads a [[proxy]] of a CA-mode file: an endpoint and,
// optionally, a name; the proxy's certificate tells the rest.
func (d *decoder) caProxyPeer(t *table, x *cross) ProxyPeer {
	var p ProxyPeer
	if s, ok := t.str("name", false); ok && d.name(t.sub("name"), s) {
		p.Name = s
		x.add(&x.names, s, t.sub("name"), d)
	}
	p.Endpoint = d.endpoint(t, x)
	for _, k := range []string{"public_key", "address", "cluster"} {
		if t.has(k) {
			t.seen[k] = true
			d.errf(t.sub(k), "the proxy's certificate tells it; this file is in CA mode (ca_file at line %d): give endpoint and, optionally, name", x.caLine)
		}
	}
	t.done()
	return p
}

// readFile reads a file the config names, resolved against the config's
// directory; what is the key naming it.
func (d *decoder) readFile(key, name string) ([]byte, string, bool) {
	file := d.resolve(name)
	data, err := d.read(file)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		d.errf(key, "%s: %v", file, err)
		return nil, file, false
	}
	return data, file, true
}

// resolve resolves a file name against the config file's directory.
func (d *decoder) resolve(name string) string {
	if filepath.IsAbs(name) {
		return name
	}
	return filepath.Join(d.dir, name)
}

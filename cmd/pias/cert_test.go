package main

import (
	"crypto/ed25519"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/pias-net/pias/cert"
)

func init() {
	scriptCmds["certforge"] = certForge
}

// certforge makes the bad certificate files the CLI cannot (by design):
//
//	certforge flip IN OUT                 IN with one bit of its signature flipped
//	certforge resign CADIR IN OUT EDIT... IN changed and signed again with
//	                                      CADIR's key, constraints unchecked;
//	                                      EDIT: notbefore=DUR, notafter=DUR
//	                                      (from now), group=G (added),
//	                                      address=A (replaces the IPv4 one)
//	certforge oversize OUT                an armored certificate of MaxSize+1 bytes
//	certforge huge OUT                    a file larger than any armored object
func certForge(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: certforge flip|resign|oversize|huge ...")
	}
	read := func(path string) *cert.Certificate {
		c, err := cert.ParsePEM([]byte(ts.ReadFile(path)))
		ts.Check(err)
		return c
	}
	write := func(path string, b []byte) { ts.Check(os.WriteFile(ts.MkAbs(path), b, 0o644)) }
	switch mode := args[0]; {
	case mode == "flip" && len(args) == 3:
		c := read(args[1])
		c.Signature[0] ^= 1
		text, err := c.MarshalPEM()
		ts.Check(err)
		write(args[2], text)
	case mode == "resign" && len(args) >= 4:
		dir := ts.MkAbs(args[1])
		keyText, err := os.ReadFile(filepath.Join(dir, caKeyFile))
		ts.Check(err)
		key, err := cert.ParseKeyPEM(keyText)
		ts.Check(err)
		c := read(args[2])
		now := time.Now()
		for _, e := range args[4:] {
			k, v, _ := strings.Cut(e, "=")
			switch k {
			case "notbefore", "notafter":
				d, err := time.ParseDuration(v)
				ts.Check(err)
				t := time.Unix(now.Add(d).Unix(), 0).UTC()
				if k == "notbefore" {
					c.NotBefore = t
				} else {
					c.NotAfter = t
				}
			case "group":
				r, err := cert.ParseGroupRight(v)
				ts.Check(err)
				c.Groups = cert.SortGroupRights(append(c.Groups, r))
			case "address":
				c.Addresses[0] = netip.MustParseAddr(v)
			default:
				ts.Fatalf("unknown edit %q", e)
			}
		}
		tbs, err := c.SignedBytes()
		ts.Check(err)
		c.Signature = ed25519.Sign(key, tbs)
		text, err := c.MarshalPEM()
		ts.Check(err)
		write(args[3], text)
	case mode == "oversize" && len(args) == 2:
		write(args[1], cert.Armor(cert.TypeCertificate, make([]byte, cert.MaxSize+1)))
	case mode == "huge" && len(args) == 2:
		write(args[1], []byte(strings.Repeat("A", cert.MaxArmoredSize+1)))
	default:
		ts.Fatalf("certforge: bad arguments %q", args)
	}
}

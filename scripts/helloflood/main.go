// Command helloflood is the namespace lab's attacker: it sends a proxy
// forged certificate hellos as fast as one core can, for the flood figure
// of issue 12 (scripts/flood.sh). Each hello carries a certificate the
// lab's own CA signed (the worst case: it passes every cheap check), for a
// key the sender made up, with a MAC under another: the proxy finds out
// only after an X25519, while its hello budget lasts.
//
// With -junk it sends datagrams of the same sizes that are no pias or
// WireGuard message at all (WireGuard drops them at once): the baseline of
// what any UDP flood of that rate costs.
//
//	helloflood -lab DIR -to NAME [-for 10s] [-certs 256] [-junk]
package main

import (
	"crypto/rand"
	"encoding/binary"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/pias-net/pias/admit"
	"github.com/pias-net/pias/cert"
	"github.com/pias-net/pias/lab"
)

func main() {
	dir := flag.String("lab", "", "the lab directory (lab.json, ca.pem, ca.key)")
	to := flag.String("to", "", "the proxy to flood, by name")
	dur := flag.Duration("for", 10*time.Second, "how long")
	n := flag.Int("certs", 256, "distinct forged hellos (the proxy meets each key once per cache)")
	junk := flag.Bool("junk", false, "send datagrams of the same sizes that are nobody's message")
	flag.Parse()
	if err := flood(*dir, *to, *dur, *n, *junk); err != nil {
		fmt.Fprintln(os.Stderr, "helloflood:", err)
		os.Exit(1)
	}
}

func flood(dir, to string, dur time.Duration, n int, junk bool) error {
	l, err := lab.ReadLab(filepath.Join(dir, "lab.json"))
	if err != nil {
		return err
	}
	target := l.Node(to)
	if target == nil {
		return fmt.Errorf("no node %q in the lab", to)
	}
	caText, err := os.ReadFile(filepath.Join(dir, cert.DirCAFile))
	if err != nil {
		return err
	}
	ca, err := cert.ParseCAPEM(caText)
	if err != nil {
		return err
	}
	keyText, err := os.ReadFile(filepath.Join(dir, cert.DirKeyFile))
	if err != nil {
		return err
	}
	caKey, err := cert.ParseKeyPEM(keyText)
	if err != nil {
		return err
	}
	var pkts [][]byte
	now := time.Now()
	for i := range n {
		var claimed, used [32]byte
		rand.Read(claimed[:])
		rand.Read(used[:])
		ck, err := admit.NewKeys(claimed)
		if err != nil {
			return err
		}
		uk, err := admit.NewKeys(used)
		if err != nil {
			return err
		}
		a := netip.AddrFrom4([4]byte{100, 64, 200 + byte(i>>8), byte(i)})
		c := &cert.Certificate{Name: fmt.Sprintf("x%d", i), Role: cert.RoleClient, PublicKey: ck.Public,
			Addresses: []netip.Addr{a}, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour)}
		if err := ca.Sign(c, caKey); err != nil {
			return err
		}
		raw, err := c.Marshal()
		if err != nil {
			return err
		}
		// Dated a little ahead so that they stay fresh for the run.
		var nonce [8]byte
		rand.Read(nonce[:])
		p, err := admit.AppendHello(uk, now.Add(admit.Ahead/2), binary.BigEndian.Uint64(nonce[:]), target.PublicKey, raw, nil)
		if err != nil {
			return err
		}
		if junk {
			p[0] = 0xff // no message type of WireGuard's, no magic of pias's
		}
		pkts = append(pkts, p)
	}
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(target.Endpoint))
	if err != nil {
		return err
	}
	defer conn.Close()
	var sent int
	start := time.Now()
	for time.Since(start) < dur {
		for _, p := range pkts {
			if _, err := conn.Write(p); err == nil {
				sent++
			}
		}
	}
	el := time.Since(start)
	what := "forged hellos"
	if junk {
		what = "junk datagrams"
	}
	fmt.Printf("%d %s in %v: %.0f/s\n", sent, what, el.Round(time.Millisecond), float64(sent)/el.Seconds())
	return nil
}

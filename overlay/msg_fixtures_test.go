package overlay

import (
	"encoding/hex"
	"flag"
	"fmt"
	"math"
	"net/netip"
	"strings"

	"github.com/pias-net/pias/router"
)

// Fixtures of the message tests.

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpora in testdata/fuzz that tests keep in step")

var (
	g4     = router.Group{Addr: netip.MustParseAddr("100.65.0.1"), Port: 80, Proto: router.ProtoTCP}
	g6     = router.Group{Addr: netip.MustParseAddr("fd65::1"), Port: 53, Proto: router.ProtoUDP}
	echo4  = router.EchoGroup(netip.MustParseAddr("100.65.0.2"))
	echo6  = router.EchoGroup(netip.MustParseAddr("fd65::2"))
	maxStr = strings.Repeat("é", 127) + "x" // 255 bytes of UTF-8
)

func manyJAPs(n int) []router.JAP {
	js := make([]router.JAP, n)
	for i := range js {
		if i%2 == 0 {
			js[i] = router.JAP{Addr: netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)}), Targets: i, Weight: i * 7}
		} else {
			js[i] = router.JAP{Addr: netip.AddrFrom16([16]byte{0: 0xfd, 1: 0x64, 14: byte(i >> 8), 15: byte(i)}), Targets: math.MaxUint32 - i, Weight: math.MaxUint32 - 2*i}
		}
	}
	return js
}

// manyMoved returns n targets of a Moved, every other one IPv6.
func manyMoved(n int) []MovedTarget {
	ts := make([]MovedTarget, n)
	for i := range ts {
		ts[i] = MovedTarget{Group: g4, Name: fmt.Sprintf("t%d", i), Target: netip.AddrFrom4([4]byte{100, 64, 1, byte(i)}), Epoch: uint32(i) << 20}
		if i%2 == 1 {
			ts[i].Group, ts[i].Target = g6, netip.AddrFrom16([16]byte{0: 0xfd, 1: 0x64, 14: 1, 15: byte(i)})
		}
	}
	return ts
}

// manyNews returns n items of a News, every other one a death.
func manyNews(n int) []NewsItem {
	its := make([]NewsItem, n)
	for i := range its {
		its[i] = NewsItem{Name: fmt.Sprintf("p%d", i), Incarnation: 1764000000 + uint32(i), Dead: i%2 == 0}
	}
	return its
}

func manyKeys(n int) [][32]byte {
	ks := make([][32]byte, n)
	for i := range ks {
		ks[i] = [32]byte{0: byte(i), 1: 0xed, 31: byte(255 - i)}
	}
	return ks
}

// manyPeers returns n peers for a Proxies, every other one with IPv6
// addresses; long ones have the longest name and cluster.
func manyPeers(n int, long bool) []Member {
	ps := make([]Member, n)
	for i := range ps {
		p := Member{Name: fmt.Sprintf("proxy-%d", i), Cluster: fmt.Sprintf("c%d", i%3),
			Addr: netip.AddrFrom4([4]byte{100, 64, 1, byte(i)}), PublicKey: [32]byte{0: 0x50, 1: byte(i), 31: 0x05},
			Endpoint: netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 1, byte(i)}), 51820+uint16(i))}
		if i%2 == 1 {
			p.Addr6 = netip.AddrFrom16([16]byte{0: 0xfd, 1: 0x64, 14: 1, 15: byte(i)})
			p.Endpoint = netip.AddrPortFrom(netip.AddrFrom16([16]byte{0: 0x20, 1: 0x01, 2: 0x0d, 3: 0xb8, 14: 1, 15: byte(i)}), 65535-uint16(i))
		}
		if long {
			p.Name = maxStr[:MaxString-1] + string(rune('a'+i)) // maxStr ends in a one-byte "x"
			p.Cluster = maxStr
		}
		ps[i] = p
	}
	return ps
}

var (
	peer4 = Member{Name: "p6", Addr: netip.MustParseAddr("100.64.0.6"), Cluster: "c1", PublicKey: [32]byte{0: 6, 31: 6},
		Endpoint: netip.MustParseAddrPort("198.18.0.6:51820")}
	peer6 = Member{Name: "p7", Addr: netip.MustParseAddr("100.64.0.7"), Addr6: netip.MustParseAddr("fd64::7"), PublicKey: [32]byte{0: 7, 31: 7},
		Endpoint: netip.MustParseAddrPort("[2001:db8::7]:51821")}
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func corpusFile(b []byte) string {
	return fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
}

package overlay

import (
	"bytes"
	"encoding/hex"
	"flag"
	"fmt"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pias-net/pias/router"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpus in testdata/fuzz/FuzzMessage")

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

type roundTrip struct {
	name string
	m    Message
}

// roundTripMessage returns the message of the round trip test called name.
func roundTripMessage(name string) Message {
	i := slices.IndexFunc(roundTrips, func(tc roundTrip) bool { return tc.name == name })
	return roundTrips[i].m
}

// roundTrips are valid messages, each with only the fields its type carries.
var roundTrips = []roundTrip{
	{"join", Message{Type: TypeJoin, Seq: 1, Group: g4, Port: 8080, Name: "web-1", Incarnation: 1764000000,
		Policy: router.Policy{Select: router.SelectLoad, Replicate: 3, Scope: router.ScopeSameCluster}, Weight: 10, Keepalive: 10 * time.Second}},
	{"join-v6-echo", Message{Type: TypeJoin, Seq: math.MaxUint32, Group: echo6, Port: 0, Name: "", Weight: MaxWeight,
		Policy: router.Policy{Select: router.SelectAffinity, Replicate: router.MaxReplicate, Scope: router.ScopeSameCluster}, Keepalive: math.MaxUint32 * time.Millisecond}},
	{"join-long-name", Message{Type: TypeJoin, Seq: 2, Group: g6, Port: 53, Name: maxStr, Weight: 1}},
	{"join-ack", Message{Type: TypeJoinAck, Seq: 1, Group: g4, Status: StatusOK}},
	{"join-ack-refused", Message{Type: TypeJoinAck, Seq: 3, Group: g6, Status: StatusRefused, Reason: "group not allowed by certificate"}},
	{"leave", Message{Type: TypeLeave, Seq: 4, Group: g6, Port: 5353}},
	{"keepalive", Message{Type: TypeKeepalive, Seq: 5, Group: echo4, Port: 1}},
	{"keepalive-ack", Message{Type: TypeKeepaliveAck, Seq: 5, Group: g4, Status: StatusOK}},
	{"keepalive-ack-unknown", Message{Type: TypeKeepaliveAck, Seq: 6, Group: g4, Status: StatusUnknown}},
	{"keepalive-ack-refused", Message{Type: TypeKeepaliveAck, Seq: 6, Group: g6, Status: StatusRefused, Reason: maxStr}},
	{"register", Message{Type: TypeRegister, Seq: 7, Group: g4, Name: "proxy-a", Targets: 12, TTL: 90 * time.Second,
		Policy: router.Policy{Select: router.SelectRandom, Replicate: 2}, Weight: 35}},
	{"register-withdraw", Message{Type: TypeRegister, Seq: 8, Group: g6, Name: "proxy-b", Targets: 0, TTL: 0}},
	{"register-max", Message{Type: TypeRegister, Seq: 9, Group: echo6, Name: maxStr, Targets: math.MaxUint32, TTL: math.MaxUint32 * time.Millisecond,
		Policy: router.Policy{Select: router.SelectAffinity, Replicate: router.MaxReplicate, Scope: router.ScopeSameCluster}, Weight: math.MaxUint32}},
	{"resolve", Message{Type: TypeResolve, Seq: 10, Group: g4}},
	{"resolve-v6", Message{Type: TypeResolve, Seq: 0, Group: echo6}},
	{"resolve-reply", Message{Type: TypeResolveReply, Seq: 10, Group: g4, Status: StatusOK, TTL: 30 * time.Second,
		JAPs:   []router.JAP{{Addr: netip.MustParseAddr("100.64.0.2"), Targets: 3, Weight: 250}, {Addr: netip.MustParseAddr("100.64.0.9"), Targets: 0}},
		Policy: router.Policy{Select: router.SelectLoad, Scope: router.ScopeSameCluster}}},
	{"resolve-reply-none", Message{Type: TypeResolveReply, Seq: 11, Group: g6, Status: StatusUnknown, TTL: 5 * time.Second}},
	{"resolve-reply-max", Message{Type: TypeResolveReply, Seq: 12, Group: g6, Status: StatusRefused, Reason: maxStr, TTL: time.Millisecond, JAPs: manyJAPs(MaxJAPs),
		Policy: router.Policy{Select: router.SelectAffinity, Replicate: router.MaxReplicate, Scope: router.ScopeSameCluster}}},
	{"probe", Message{Type: TypeProbe, Seq: 13, Name: "p1", Incarnation: 1764000000}},
	{"probe-ack", Message{Type: TypeProbeAck, Seq: 13, Name: "p2", Incarnation: math.MaxUint32}},
	{"probe-req", Message{Type: TypeProbeReq, Seq: 14, Name: maxStr}},
	{"fail", Message{Type: TypeFail, Seq: 0, Name: "p3", Incarnation: 7}},
	{"alive", Message{Type: TypeAlive, Seq: 1, Name: "p3", Incarnation: 8}},
	{"moved", Message{Type: TypeMoved, Seq: 2, Group: g4, Name: "t1", Target: netip.MustParseAddr("100.64.1.1")}},
	{"no-target", Message{Type: TypeNoTarget, Seq: 4, Group: g4}},
	{"moved6", Message{Type: TypeMoved, Seq: 3, Group: g4, Name: "t1", Target: netip.MustParseAddr("fd64::1:1")}},
	{"digest", Message{Type: TypeDigest, Seq: 1, Name: "p2", Incarnation: 0xdeadbeef}},
	{"policy", Message{Type: TypePolicy, Seq: 7, Group: g6, Policy: router.Policy{Select: router.SelectAffinity, Replicate: 2, Scope: router.ScopeSameCluster}}},
	{"member", Message{Type: TypeMember, Seq: 5, Name: "p4", Incarnation: 1764000001, Peer: Member{
		Name: "p4", Addr: netip.MustParseAddr("100.64.0.4"), Cluster: "c2", PublicKey: [32]byte{1, 2, 3, 31: 9},
		Endpoint: netip.MustParseAddrPort("198.18.0.4:51820")}}},
	{"member6-sync-dead", Message{Type: TypeMember, Seq: 6, Name: maxStr, Incarnation: math.MaxUint32, Flags: MemberHas6 | MemberSync | MemberDead, Peer: Member{
		Name: maxStr, Addr: netip.MustParseAddr("100.64.0.5"), Addr6: netip.MustParseAddr("fd64::5"), Cluster: maxStr, PublicKey: [32]byte{0: 0xff, 31: 0xff},
		Endpoint: netip.MustParseAddrPort("[2001:db8::5]:65535")}}},
	{"admits-req", Message{Type: TypeAdmitsReq, Seq: 7, Name: "p5", Incarnation: 1764000002}},
	{"admits-none", Message{Type: TypeAdmits, Seq: 8, Name: "p5", Incarnation: 1764000002, Parts: 1}},
	{"admits-one", Message{Type: TypeAdmits, Seq: 9, Name: "p5", Incarnation: 1764000002, Part: 1, Parts: 3, Keys: manyKeys(1)}},
	{"admits-max", Message{Type: TypeAdmits, Seq: math.MaxUint32, Name: maxStr, Incarnation: math.MaxUint32, Part: 254, Parts: 255, Keys: manyKeys(MaxKeys)}},
	{"proxies-req", Message{Type: TypeProxiesReq, Seq: 10}},
	{"proxies-req-digest", Message{Type: TypeProxiesReq, Seq: 11, Incarnation: 0xfeedface}},
	{"proxies-none", Message{Type: TypeProxies, Seq: 11, Incarnation: 0xfeedface}},
	{"proxies-one", Message{Type: TypeProxies, Seq: 12, Incarnation: 1, Peers: []Member{peer4}}},
	{"proxies-one6", Message{Type: TypeProxies, Seq: 13, Incarnation: 2, Peers: []Member{peer6}}},
	{"proxies-two", Message{Type: TypeProxies, Seq: 14, Incarnation: 3, Peers: []Member{peer4, peer6}}},
	{"proxies-max", Message{Type: TypeProxies, Seq: 15, Incarnation: math.MaxUint32, Peers: manyPeers(MaxPeers, false)}},
	{"proxies-max-long", Message{Type: TypeProxies, Seq: 16, Incarnation: 4, Peers: manyPeers(MaxPeers, true)}},
}

func messagesEqual(a, b *Message) bool {
	return a.Type == b.Type && a.Seq == b.Seq && a.Group == b.Group && a.Port == b.Port &&
		a.Name == b.Name && a.Status == b.Status && a.Reason == b.Reason &&
		a.Targets == b.Targets && a.TTL == b.TTL && slices.Equal(a.JAPs, b.JAPs) &&
		a.Incarnation == b.Incarnation && a.Target == b.Target && a.Peer == b.Peer && a.Flags == b.Flags &&
		a.Policy == b.Policy && a.Weight == b.Weight && a.Keepalive == b.Keepalive &&
		a.Part == b.Part && a.Parts == b.Parts && slices.Equal(a.Keys, b.Keys) && slices.Equal(a.Peers, b.Peers)
}

func TestRoundTrip(t *testing.T) {
	seen := map[Type]bool{}
	for _, tc := range roundTrips {
		t.Run(tc.name, func(t *testing.T) {
			seen[tc.m.Type] = true
			prefix := []byte("prefix")
			b, err := tc.m.AppendBinary(prefix)
			if err != nil {
				t.Fatalf("AppendBinary: %v", err)
			}
			if !bytes.HasPrefix(b, []byte("prefix")) {
				t.Fatalf("AppendBinary clobbered the prefix: %q", b)
			}
			b = b[len(prefix):]
			if len(b) > MaxLen {
				t.Errorf("encoding is %d bytes, MaxLen is %d", len(b), MaxLen)
			}
			var got Message
			if err := got.UnmarshalBinary(b); err != nil {
				t.Fatalf("UnmarshalBinary(%x): %v", b, err)
			}
			if !messagesEqual(&got, &tc.m) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, tc.m)
			}
			b2, err := got.MarshalBinary()
			if err != nil || !bytes.Equal(b, b2) {
				t.Fatalf("re-encoding differs: %x, %v\nwant %x", b2, err, b)
			}
		})
	}
	for ty := TypeJoin; ty < typeEnd; ty++ {
		if !seen[ty] {
			t.Errorf("no round trip test of %v", ty)
		}
	}
}

// TestMaxLen checks MaxLen is the size of the largest message, and the
// sizes of the largest messages of the other variable-length types.
func TestMaxLen(t *testing.T) {
	js := manyJAPs(MaxJAPs)
	for i := range js {
		js[i].Addr = netip.AddrFrom16([16]byte{0: 0xfd, 15: byte(i)})
		js[i].Weight = math.MaxUint32
	}
	ps := manyPeers(MaxPeers, true)
	for i := range ps {
		ps[i].Addr6 = netip.AddrFrom16([16]byte{0: 0xfd, 1: 0x64, 15: byte(i)})
		ps[i].Endpoint = netip.AddrPortFrom(netip.AddrFrom16([16]byte{0: 0x20, 1: 0x01, 15: byte(i)}), 51820)
	}
	for _, tc := range []struct {
		m    Message
		want int
	}{
		{Message{Type: TypeProxies, Incarnation: 1, Peers: ps}, MaxLen},
		{Message{Type: TypeResolveReply, Group: g6, Status: StatusRefused, Reason: maxStr, TTL: time.Hour, JAPs: js,
			Policy: router.Policy{Select: router.SelectAffinity, Replicate: router.MaxReplicate, Scope: router.ScopeSameCluster}}, maxResolveReplyLen},
		{Message{Type: TypeAdmits, Name: maxStr, Parts: 1, Keys: manyKeys(MaxKeys)}, maxAdmitsLen},
		// The longest hello's body (see MaxUnderlayLen).
		{Message{Type: TypeMember, Name: ps[0].Name, Incarnation: 1, Peer: ps[0], Flags: MemberSync | MemberDead}, MaxUnderlayLen - underlayHeader - underlayMAC},
	} {
		b, err := tc.m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != tc.want {
			t.Errorf("largest %v is %d bytes, want %d", tc.m.Type, len(b), tc.want)
		}
		if len(b) > MaxLen {
			t.Errorf("largest %v is %d bytes, MaxLen is %d", tc.m.Type, len(b), MaxLen)
		}
	}
	if MaxLen != 9389 {
		t.Errorf("MaxLen = %d, want 9389", MaxLen)
	}
}

// TestOnlyMeaningfulFields checks that fields a type does not carry are
// neither encoded nor decoded.
func TestOnlyMeaningfulFields(t *testing.T) {
	for _, tc := range roundTrips {
		full := tc.m
		full.Port = 9
		full.Name = "n"
		full.Status = StatusRefused
		full.Reason = "r"
		full.Targets = 9
		full.TTL = 9 * time.Second
		full.JAPs = []router.JAP{{Addr: netip.MustParseAddr("100.64.0.9"), Targets: 9, Weight: 99}}
		full.Policy = router.Policy{Select: router.SelectRandom, Replicate: 9, Scope: router.ScopeSameCluster}
		full.Weight = 9 // valid for a join too
		full.Keepalive = 9 * time.Second
		if typeFields[full.Type]&fPolicy == 0 {
			// Not even checked where not carried.
			full.Policy = router.Policy{Select: 200, Replicate: -1, Scope: 200}
			full.Weight = 0
		}
		if typeFields[full.Type]&fKeepalive == 0 {
			full.Keepalive = -time.Second
		}
		if typeFields[full.Type]&fIncarnation == 0 {
			full.Incarnation = 9
		}
		if typeFields[full.Type]&fTarget == 0 {
			full.Target = netip.MustParseAddr("100.64.9.9")
		}
		if typeFields[full.Type]&fMember == 0 {
			full.Peer = roundTripMessage("member").Peer
			full.Flags = 0xff // not even checked (TypeProxies: its peers' flags come from their Addr6)
		}
		if typeFields[full.Type]&fKeys == 0 {
			// Not even checked where not carried.
			full.Part, full.Parts = 9, 0
			full.Keys = manyKeys(MaxKeys + 1)
		}
		if typeFields[full.Type]&fPeers == 0 {
			full.Peers = []Member{{Name: "invalid"}} // not even checked
		}
		b, err := full.MarshalBinary()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var got Message
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		want := Message{Type: full.Type, Seq: full.Seq, Group: full.Group}
		f := typeFields[full.Type]
		if f&fPort != 0 {
			want.Port = full.Port
		}
		if f&fName != 0 {
			want.Name = full.Name
		}
		if f&fStatus != 0 {
			want.Status, want.Reason = full.Status, full.Reason
		}
		if f&fRegister != 0 {
			want.Targets = full.Targets
		}
		if f&(fRegister|fResolveReply) != 0 {
			want.TTL = full.TTL
		}
		if f&fResolveReply != 0 {
			want.JAPs = full.JAPs
		}
		if f&fIncarnation != 0 {
			want.Incarnation = full.Incarnation
		}
		if f&fTarget != 0 {
			want.Target = full.Target
		}
		if f&fMember != 0 {
			want.Peer, want.Flags = full.Peer, full.Flags
			want.Peer.Name = full.Name
		}
		if f&fPolicy != 0 {
			want.Policy = full.Policy
			if full.Type == TypeJoin || full.Type == TypeRegister { // only these carry a weight of their own
				want.Weight = full.Weight
			}
		}
		if f&fKeepalive != 0 {
			want.Keepalive = full.Keepalive
		}
		if f&fKeys != 0 {
			want.Part, want.Parts, want.Keys = full.Part, full.Parts, full.Keys
		}
		if f&fPeers != 0 {
			want.Peers = full.Peers
		}
		if !messagesEqual(&got, &want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.name, got, want)
		}
	}
}

// TestWireFormat pins the bytes of a few messages.
func TestWireFormat(t *testing.T) {
	for _, tc := range []struct {
		m   Message
		hex string
	}{
		{
			Message{Type: TypeJoin, Seq: 0x01020304, Group: g4, Port: 8080, Name: "web1", Incarnation: 0x0a0b0c0d,
				Policy: router.Policy{Select: router.SelectAffinity, Replicate: 2, Scope: router.ScopeSameCluster}, Weight: 1000, Keepalive: 15 * time.Second},
			"5049" + "01" + "01" + "01020304" + "04" + "64410001" + "0050" + "06" + "1f90" + "04" + hex.EncodeToString([]byte("web1")) + "0a0b0c0d" +
				"03" + "02" + "01" + "000003e8" + "00003a98",
		},
		{
			Message{Type: TypeKeepaliveAck, Seq: 9, Group: echo4, Status: StatusUnknown},
			"5049" + "01" + "05" + "00000009" + "04" + "64410002" + "0000" + "01" + "01" + "00",
		},
		{
			Message{Type: TypeRegister, Seq: 1, Group: g4, Name: "p", Targets: 258, TTL: 90 * time.Second,
				Policy: router.Policy{Select: router.SelectLoad}, Weight: 0x01020304},
			"5049" + "01" + "06" + "00000001" + "04" + "64410001" + "0050" + "06" + "01" + "70" + "00000102" + "00015f90" +
				"01" + "00" + "00" + "01020304",
		},
		{
			Message{Type: TypeResolveReply, Seq: 7, Group: g6, Status: StatusOK, TTL: 1500 * time.Millisecond,
				JAPs:   []router.JAP{{Addr: netip.MustParseAddr("100.64.0.2"), Targets: 3, Weight: 300}},
				Policy: router.Policy{Select: router.SelectRandom, Replicate: 16}},
			"5049" + "01" + "08" + "00000007" + "06" + "fd650000000000000000000000000001" + "0035" + "11" +
				"00" + "00" + "000005dc" + "01" + "04" + "64400002" + "00000003" + "0000012c" + "02" + "10" + "00",
		},
		{
			Message{Type: TypeMember, Seq: 2, Name: "p", Incarnation: 5, Flags: MemberSync, Peer: Member{
				Name: "p", Addr: netip.MustParseAddr("100.64.0.4"), Addr6: netip.MustParseAddr("fd64::4"), Cluster: "c",
				PublicKey: [32]byte{0: 0xaa, 31: 0xbb}, Endpoint: netip.MustParseAddrPort("198.18.0.4:51820")}},
			"5049" + "01" + "10" + "00000002" + "01" + "70" + "00000005" + "05" + "01" + "63" + "04" + "64400004" +
				"06" + "fd640000000000000000000000000004" + "aa" + strings.Repeat("00", 30) + "bb" + "04" + "c6120004" + "ca6c",
		},
		{
			Message{Type: TypeAdmitsReq, Seq: 3, Name: "p", Incarnation: 6},
			"5049" + "01" + "13" + "00000003" + "01" + "70" + "00000006",
		},
		{
			Message{Type: TypeAdmits, Seq: 4, Name: "p", Incarnation: 7, Part: 1, Parts: 2, Keys: [][32]byte{{0: 0xaa, 31: 0xbb}, {0: 0xcc, 31: 0xdd}}},
			"5049" + "01" + "14" + "00000004" + "01" + "70" + "00000007" + "01" + "02" + "02" +
				"aa" + strings.Repeat("00", 30) + "bb" + "cc" + strings.Repeat("00", 30) + "dd",
		},
		{
			Message{Type: TypeAdmits, Seq: 5, Name: "p", Incarnation: 7, Parts: 1},
			"5049" + "01" + "14" + "00000005" + "01" + "70" + "00000007" + "00" + "01" + "00",
		},
		{
			Message{Type: TypeProxiesReq, Seq: 6, Incarnation: 0x0a0b0c0d},
			"5049" + "01" + "15" + "00000006" + "0a0b0c0d",
		},
		{
			Message{Type: TypeProxies, Seq: 6, Incarnation: 0x0a0b0c0d},
			"5049" + "01" + "16" + "00000006" + "0a0b0c0d" + "00",
		},
		{
			Message{Type: TypeProxies, Seq: 7, Incarnation: 0x01020304, Peers: []Member{peer4, peer6}},
			"5049" + "01" + "16" + "00000007" + "01020304" + "02" +
				"02" + "7036" + "00" + "02" + "6331" + "04" + "64400006" + "06" + strings.Repeat("00", 30) + "06" + "04" + "c6120006" + "ca6c" +
				"02" + "7037" + "01" + "00" + "04" + "64400007" + "06" + "fd640000000000000000000000000007" +
				"07" + strings.Repeat("00", 30) + "07" + "06" + "20010db8000000000000000000000007" + "ca6d",
		},
	} {
		b, err := tc.m.MarshalBinary()
		if err != nil {
			t.Fatalf("%v: %v", tc.m.Type, err)
		}
		if got := hex.EncodeToString(b); got != tc.hex {
			t.Errorf("%v:\n got %s\nwant %s", tc.m.Type, got, tc.hex)
		}
		want := tc.m
		if want.Peer.Addr6.IsValid() {
			want.Flags |= MemberHas6 // set by the codec
		}
		var got Message
		if err := got.UnmarshalBinary(mustHex(tc.hex)); err != nil || !messagesEqual(&got, &want) {
			t.Errorf("%v: UnmarshalBinary(%s) = %+v, %v; want %+v", tc.m.Type, tc.hex, got, err, want)
		}
	}
}

func TestTTLTruncatedToMillis(t *testing.T) {
	m := Message{Type: TypeRegister, Group: g4, TTL: 1500*time.Microsecond + 999*time.Nanosecond}
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var got Message
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if got.TTL != time.Millisecond {
		t.Errorf("TTL %v came back as %v, want 1ms", m.TTL, got.TTL)
	}
	m = Message{Type: TypeJoin, Group: g4, Weight: 1, Keepalive: 2500*time.Microsecond + 999*time.Nanosecond}
	if b, err = m.MarshalBinary(); err != nil {
		t.Fatal(err)
	}
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if got.Keepalive != 2*time.Millisecond {
		t.Errorf("Keepalive %v came back as %v, want 2ms", m.Keepalive, got.Keepalive)
	}
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func TestUnmarshalMalformed(t *testing.T) {
	const (
		hdrJoin   = "5049" + "01" + "01" + "00000001"
		hdrAck    = "5049" + "01" + "02" + "00000001"
		hdrReg    = "5049" + "01" + "06" + "00000001"
		hdrRes    = "5049" + "01" + "07" + "00000001"
		hdrReply  = "5049" + "01" + "08" + "00000001"
		hdrMember = "5049" + "01" + "10" + "00000001"
		grp4      = "04" + "64410001" + "0050" + "06"
		jap4      = "04" + "64400002" + "00000003" + "00000005"
		replyHead = hdrReply + grp4 + "00" + "00" + "00001000"
		policy    = "01" + "02" + "01"                                    // load, replicate 2, same cluster
		joinHead  = hdrJoin + grp4 + "1f90" + "00" + "00000001"           // up to the policy
		regHead   = hdrReg + grp4 + "01" + "70" + "00000001" + "00000001" // up to the policy
		// memberHead is a member message up to its flags; memberRest
		// follows flags without MemberHas6.
		memberHead = hdrMember + "02" + "7034" + "00000001"
		memberKey  = "01" + "00000000000000000000000000000000000000000000000000000000000000"
		memberRest = "02" + "6331" + "04" + "64400004" + memberKey + "04" + "c6120004" + "ca6c"

		hdrAdmitsReq  = "5049" + "01" + "13" + "00000001"
		hdrAdmits     = "5049" + "01" + "14" + "00000001"
		hdrProxiesReq = "5049" + "01" + "15" + "00000001"
		hdrProxies    = "5049" + "01" + "16" + "00000001"
		admitsHead    = hdrAdmits + "02" + "7035" + "00000001" // up to part
		key           = "abababababababababababababababababababababababababababababababab"
		proxiesHead   = hdrProxies + "00000001" // up to the peer count
		// peerRest follows a peer's name and flags without MemberHas6;
		// peerRest6 with it.
		peerRest  = "02" + "6331" + "04" + "64400006" + memberKey + "04" + "c6120006" + "ca6c"
		peerRest6 = "00" + "04" + "64400007" + "06" + "fd640000000000000000000000000007" + memberKey + "06" + "20010db8000000000000000000000007" + "ca6d"
		peer      = "02" + "7036" + "00" + peerRest
	)
	// The pieces the cases break make valid messages, so that each case
	// fails for the reason its name gives.
	for _, h := range []string{
		joinHead + policy + "000003e8" + "00002710",
		regHead + policy + "00000000",
		replyHead + "00" + policy,
		replyHead + "01" + jap4 + policy,
		memberHead + "00" + memberRest,
		memberHead + "07" + "02" + "6331" + "04" + "64400004" + "06" + "fd640000000000000000000000000005" + memberKey + "04" + "c6120004" + "ca6c",
		hdrAdmitsReq + "02" + "7035" + "00000001",
		admitsHead + "00" + "01" + "00",
		admitsHead + "fe" + "ff" + "02" + key + key,
		admitsHead + "00" + "01" + "20" + strings.Repeat(key, 32),
		hdrProxiesReq + "00000000",
		proxiesHead + "00",
		proxiesHead + "02" + peer + "02" + "7037" + "01" + peerRest6,
		proxiesHead + "10" + strings.Repeat(peer, 16),
	} {
		var m Message
		if err := m.UnmarshalBinary(mustHex(h)); err != nil {
			t.Errorf("UnmarshalBinary(%s): %v", h, err)
		}
	}
	for _, tc := range []struct {
		name, hex, want string
	}{
		{"empty", "", "truncated header"},
		{"one byte", "50", "truncated header"},
		{"short bad magic", "5850", "bad magic"},
		{"bad magic", "5049"[:2] + "58" + "01" + "07" + "00000001" + grp4, "bad magic"},
		{"version 0", "5049" + "00" + "07" + "00000001" + grp4, "unknown version 0"},
		{"version 2", "5049" + "02" + "07" + "00000001" + grp4, "unknown version 2"},
		{"type 0", "5049" + "01" + "00" + "00000001" + grp4, "unknown type(0)"},
		{"type 23", "5049" + "01" + "17" + "00000001" + grp4, "unknown type(23)"},
		{"policy trailing", "5049" + "01" + "11" + "00000001" + grp4 + "010000" + "00", "1 trailing bytes"},
		{"policy select 4", "5049" + "01" + "11" + "00000001" + grp4 + "040000", "unknown select(4)"},
		{"type 255", "5049" + "01" + "ff" + "00000001" + grp4, "unknown type(255)"},
		{"truncated seq", "5049" + "01" + "07" + "000000", "truncated header"},
		{"no group", hdrRes, "truncated group address family"},
		{"family 0", hdrRes + "00" + "64410001" + "0050" + "06", "invalid address family 0"},
		{"family 5", hdrRes + "05" + "64410001" + "0050" + "06", "invalid address family 5"},
		{"truncated v4 address", hdrRes + "04" + "644100", "truncated group address"},
		{"truncated v6 address", hdrRes + "06" + "fd65000000000000", "truncated group address"},
		{"mapped v6 address", hdrRes + "06" + "00000000000000000000ffff64410001" + "0050" + "06", "IPv4-mapped"},
		{"truncated port", hdrRes + "04" + "64410001" + "00", "truncated group port"},
		{"truncated proto", hdrRes + "04" + "64410001" + "0050", "truncated group protocol"},
		{"proto ipip", hdrRes + "04" + "64410001" + "0050" + "04", "protocol 4"},
		{"proto 0", hdrRes + "04" + "64410001" + "0050" + "00", "protocol 0"},
		{"tcp port 0", hdrRes + "04" + "64410001" + "0000" + "06", "port 0"},
		{"udp port 0", hdrRes + "04" + "64410001" + "0000" + "11", "port 0"},
		{"icmp with port", hdrRes + "04" + "64410001" + "0001" + "01", "echo group"},
		{"icmp with v6", hdrRes + "06" + "fd650000000000000000000000000001" + "0000" + "01", "echo group"},
		{"icmpv6 with v4", hdrRes + "04" + "64410001" + "0000" + "3a", "echo group"},
		{"resolve truncated hops", hdrRes + grp4 + "00", "truncated port"},
		{"resolve trailing", hdrRes + grp4 + "0001" + "00", "1 trailing bytes"},
		{"join no port", hdrJoin + grp4, "truncated port"},
		{"join no name", hdrJoin + grp4 + "1f90", "truncated name length"},
		{"join short name", hdrJoin + grp4 + "1f90" + "05" + "77656231", "truncated name"},
		{"join name not utf-8", hdrJoin + grp4 + "1f90" + "02" + "c328", "name is not UTF-8"},
		{"join no incarnation", hdrJoin + grp4 + "1f90" + "00" + "000000", "truncated incarnation"},
		{"join no policy", joinHead, "truncated select"},
		{"join no replicate", joinHead + "01", "truncated replicate"},
		{"join no scope", joinHead + "0102", "truncated scope"},
		{"join select 4", joinHead + "04" + "00" + "00" + "00000001" + "00002710", "unknown select(4)"},
		{"join select 255", joinHead + "ff" + "00" + "00" + "00000001" + "00002710", "unknown select(255)"},
		{"join scope 2", joinHead + "00" + "00" + "02" + "00000001" + "00002710", "unknown scope(2)"},
		{"join replicate 17", joinHead + "00" + "11" + "00" + "00000001" + "00002710", "replicate 17: want 0..16"},
		{"join no weight", joinHead + policy + "000001", "truncated weight"},
		{"join weight 0", joinHead + policy + "00000000" + "00002710", "weight 0: want 1..1000"},
		{"join weight 1001", joinHead + policy + "000003e9" + "00002710", "weight 1001: want 1..1000"},
		{"join weight max", joinHead + policy + "ffffffff" + "00002710", "weight 4294967295: want 1..1000"},
		{"join no keepalive", joinHead + policy + "000003e8" + "000027", "truncated keepalive"},
		{"join trailing", joinHead + policy + "000003e8" + "00002710" + "00", "1 trailing bytes"},
		{"ack no status", hdrAck + grp4, "truncated status"},
		{"ack status 3", hdrAck + grp4 + "03" + "00", "unknown status(3)"},
		{"ack no reason", hdrAck + grp4 + "02", "truncated reason length"},
		{"ack short reason", hdrAck + grp4 + "02" + "03" + "6e6f", "truncated reason"},
		{"ack reason not utf-8", hdrAck + grp4 + "02" + "01" + "ff", "reason is not UTF-8"},
		{"register no targets", hdrReg + grp4 + "01" + "70" + "000001", "truncated target count"},
		{"register no ttl", hdrReg + grp4 + "01" + "70" + "00000001" + "0000", "truncated ttl"},
		{"register no policy", regHead, "truncated select"},
		{"register select 4", regHead + "04" + "00" + "00" + "00000001", "unknown select(4)"},
		{"register scope 2", regHead + "00" + "00" + "02" + "00000001", "unknown scope(2)"},
		{"register replicate 17", regHead + "00" + "11" + "00" + "00000001", "replicate 17"},
		{"register no weight", regHead + policy + "0000", "truncated weight"},
		{"register trailing", regHead + policy + "00000000" + "ff", "1 trailing bytes"},
		{"reply no ttl", hdrReply + grp4 + "00" + "00" + "0000", "truncated ttl"},
		{"reply no count", replyHead, "truncated JAP count"},
		{"reply 65 JAPs", replyHead + "41" + strings.Repeat(jap4, 65), "65 JAPs"},
		{"reply 255 JAPs", replyHead + "ff", "255 JAPs"},
		{"reply missing JAP", replyHead + "02" + jap4, "truncated JAP address family"},
		{"reply JAP family 7", replyHead + "01" + "07" + "64400002" + "00000003" + "00000005" + policy, "invalid address family 7"},
		{"reply JAP mapped", replyHead + "01" + "06" + "00000000000000000000ffff64400002" + "00000003" + "00000005" + policy, "IPv4-mapped"},
		{"reply JAP no targets", replyHead + "01" + "04" + "64400002" + "0000", "truncated JAP target count"},
		{"reply JAP no weight", replyHead + "01" + "04" + "64400002" + "00000003" + "000005", "truncated JAP weight"},
		{"reply no policy", replyHead + "01" + jap4, "truncated select"},
		{"reply select 4", replyHead + "00" + "04" + "00" + "00", "unknown select(4)"},
		{"reply scope 2", replyHead + "00" + "00" + "00" + "02", "unknown scope(2)"},
		{"reply replicate 17", replyHead + "01" + jap4 + "00" + "11" + "00", "replicate 17"},
		{"reply weight after policy", replyHead + "01" + jap4 + policy + "00000001", "4 trailing bytes"},
		{"reply trailing", replyHead + "01" + jap4 + policy + "00", "1 trailing bytes"},
		{"member no incarnation", hdrMember + "02" + "7034" + "0000", "truncated incarnation"},
		{"member no flags", memberHead, "truncated member flags"},
		{"member unknown flags", memberHead + "08" + memberRest, "unknown member flags 0x8"},
		{"member flags 0xff", memberHead + "ff" + memberRest, "unknown member flags 0xf8"},
		{"member no cluster", memberHead + "00", "truncated cluster length"},
		{"member cluster not utf-8", memberHead + "00" + "01" + "ff" + "04" + "64400004" + memberKey + "04" + "c6120004" + "ca6c", "cluster is not UTF-8"},
		{"member IPv6 member address", memberHead + "00" + "02" + "6331" + "06" + "fd640000000000000000000000000004" + memberKey + "04" + "c6120004" + "ca6c",
			"member address fd64::4 is not IPv4"},
		{"member mapped member address", memberHead + "00" + "02" + "6331" + "06" + "00000000000000000000ffff64400004" + memberKey + "04" + "c6120004" + "ca6c",
			"IPv4-mapped"},
		{"member has6 without IPv6", memberHead + "01" + memberRest, "member IPv6 address: invalid address family"},
		{"member IPv4 as IPv6 address", memberHead + "01" + "02" + "6331" + "04" + "64400004" + "04" + "64400005" + memberKey + "04" + "c6120004" + "ca6c",
			"member IPv6 address 100.64.0.5 is not IPv6"},
		{"member short key", memberHead + "00" + "02" + "6331" + "04" + "64400004" + strings.Repeat("00", 31), "truncated public key"},
		{"member no endpoint", memberHead + "00" + "02" + "6331" + "04" + "64400004" + memberKey, "truncated endpoint family"},
		{"member endpoint family 0", memberHead + "00" + "02" + "6331" + "04" + "64400004" + memberKey + "00" + "c6120004" + "ca6c", "invalid address family 0"},
		{"member endpoint no port", memberHead + "00" + "02" + "6331" + "04" + "64400004" + memberKey + "04" + "c6120004" + "ca", "truncated endpoint port"},
		{"member endpoint port 0", memberHead + "00" + "02" + "6331" + "04" + "64400004" + memberKey + "04" + "c6120004" + "0000", "endpoint port 0"},
		{"member trailing", memberHead + "00" + memberRest + "00", "1 trailing bytes"},
		{"admits-req no name", hdrAdmitsReq, "truncated name length"},
		{"admits-req no incarnation", hdrAdmitsReq + "02" + "7035" + "000000", "truncated incarnation"},
		{"admits-req trailing", hdrAdmitsReq + "02" + "7035" + "00000001" + "00", "1 trailing bytes"},
		{"admits name not utf-8", hdrAdmits + "01" + "ff" + "00000001" + "00" + "01" + "00", "name is not UTF-8"},
		{"admits no incarnation", hdrAdmits + "02" + "7035" + "0000", "truncated incarnation"},
		{"admits no part", admitsHead, "truncated part"},
		{"admits no parts", admitsHead + "00", "truncated parts"},
		{"admits parts 0", admitsHead + "00" + "00" + "00", "0 parts, want at least 1"},
		{"admits part 1 of 1", admitsHead + "01" + "01" + "00", "part 1 of 1 parts"},
		{"admits part 255 of 255", admitsHead + "ff" + "ff" + "00", "part 255 of 255 parts"},
		{"admits part 3 of 2", admitsHead + "03" + "02" + "01" + key, "part 3 of 2 parts"},
		{"admits no key count", admitsHead + "00" + "01", "truncated key count"},
		{"admits 33 keys", admitsHead + "00" + "01" + "21" + strings.Repeat(key, 33), "33 keys, at most 32 allowed"},
		{"admits 255 keys", admitsHead + "00" + "01" + "ff", "255 keys"},
		{"admits short key", admitsHead + "00" + "01" + "01" + key[:62], "truncated keys"},
		{"admits missing key", admitsHead + "00" + "01" + "02" + key, "truncated keys"},
		{"admits trailing", admitsHead + "00" + "01" + "01" + key + "00", "1 trailing bytes"},
		{"admits none trailing", admitsHead + "00" + "01" + "00" + "00", "1 trailing bytes"},
		{"proxies-req no incarnation", hdrProxiesReq + "000000", "truncated incarnation"},
		{"proxies-req trailing", hdrProxiesReq + "00000000" + "00", "1 trailing bytes"},
		{"proxies no incarnation", hdrProxies + "0000", "truncated incarnation"},
		{"proxies no count", proxiesHead, "truncated peer count"},
		{"proxies 17 peers", proxiesHead + "11" + strings.Repeat(peer, 17), "17 peers, at most 16 allowed"},
		{"proxies 255 peers", proxiesHead + "ff", "255 peers"},
		{"proxies missing peer", proxiesHead + "02" + peer, "peer 1: truncated peer name length"},
		{"proxies no peer name", proxiesHead + "01" + "02" + "70", "peer 0: truncated peer name"},
		{"proxies empty peer name", proxiesHead + "01" + "00" + "00" + peerRest, "peer 0: empty name"},
		{"proxies peer name not utf-8", proxiesHead + "01" + "01" + "ff" + "00" + peerRest, "peer 0: peer name is not UTF-8"},
		{"proxies peer no flags", proxiesHead + "01" + "02" + "7036", "peer 0: truncated member flags"},
		{"proxies peer dead", proxiesHead + "01" + "02" + "7036" + "02" + peerRest, "peer 0: unknown member flags 0x2"},
		{"proxies peer sync", proxiesHead + "01" + "02" + "7036" + "04" + peerRest, "peer 0: unknown member flags 0x4"},
		{"proxies peer flags 0x8", proxiesHead + "01" + "02" + "7036" + "08" + peerRest, "peer 0: unknown member flags 0x8"},
		{"proxies peer flags 0xff", proxiesHead + "01" + "02" + "7036" + "ff" + peerRest6, "peer 0: unknown member flags 0xfe"},
		{"proxies second peer flags", proxiesHead + "02" + peer + "02" + "7037" + "03" + peerRest6, "peer 1: unknown member flags 0x2"},
		{"proxies peer has6 without IPv6", proxiesHead + "01" + "02" + "7036" + "01" + peerRest, "peer 0: member IPv6 address: invalid address family 1"},
		{"proxies peer IPv6 without has6", proxiesHead + "01" + "02" + "7037" + "00" + peerRest6, "peer 0: endpoint: invalid address family 0"},
		{"proxies peer cluster not utf-8", proxiesHead + "01" + "02" + "7036" + "00" + "01" + "ff" + "04" + "64400006" + memberKey + "04" + "c6120006" + "ca6c",
			"peer 0: cluster is not UTF-8"},
		{"proxies peer IPv6 member address", proxiesHead + "01" + "02" + "7036" + "00" + "00" + "06" + "fd640000000000000000000000000006" + memberKey + "04" + "c6120006" + "ca6c",
			"peer 0: member address fd64::6 is not IPv4"},
		{"proxies peer IPv4 as IPv6 address", proxiesHead + "01" + "02" + "7036" + "01" + "00" + "04" + "64400006" + "04" + "64400007" + memberKey + "04" + "c6120006" + "ca6c",
			"peer 0: member IPv6 address 100.64.0.7 is not IPv6"},
		{"proxies peer short key", proxiesHead + "01" + "02" + "7036" + "00" + "00" + "04" + "64400006" + strings.Repeat("00", 31), "peer 0: truncated public key"},
		{"proxies peer mapped endpoint", proxiesHead + "01" + "02" + "7036" + "00" + "00" + "04" + "64400006" + memberKey + "06" + "00000000000000000000ffffc6120006" + "ca6c",
			"peer 0: endpoint ::ffff:198.18.0.6: IPv4-mapped"},
		{"proxies peer endpoint port 0", proxiesHead + "01" + "02" + "7036" + "00" + "00" + "04" + "64400006" + memberKey + "04" + "c6120006" + "0000", "peer 0: endpoint port 0"},
		{"proxies peer no endpoint port", proxiesHead + "01" + "02" + "7036" + "00" + "00" + "04" + "64400006" + memberKey + "04" + "c6120006", "peer 0: truncated endpoint port"},
		{"proxies trailing", proxiesHead + "01" + peer + "00", "1 trailing bytes"},
		{"proxies none trailing", proxiesHead + "00" + "00", "1 trailing bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := mustHex(tc.hex)
			m := Message{Type: TypeResolve, Seq: 42, Group: g6}
			before := m
			err := m.UnmarshalBinary(b)
			if err == nil {
				t.Fatalf("UnmarshalBinary(%s) = nil, want error containing %q", tc.hex, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "pias message: ") || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q is not one line starting with %q", err, "pias message: ")
			}
			if !messagesEqual(&m, &before) {
				t.Errorf("failed UnmarshalBinary changed the message to %+v", m)
			}
		})
	}
}

func TestAppendBinaryErrors(t *testing.T) {
	long := strings.Repeat("x", MaxString+1)
	zoned := router.Group{Addr: netip.MustParseAddr("fe80::1%eth0"), Port: 80, Proto: router.ProtoTCP}
	mapped := router.Group{Addr: netip.MustParseAddr("::ffff:100.65.0.1"), Port: 80, Proto: router.ProtoTCP}
	jap := func(a string, n int) []router.JAP {
		var addr netip.Addr
		if a != "" {
			addr = netip.MustParseAddr(a)
		}
		return []router.JAP{{Addr: addr, Targets: n}}
	}
	japWeight := func(w int) []router.JAP {
		return []router.JAP{{Addr: netip.MustParseAddr("100.64.0.1"), Targets: 1, Weight: w}}
	}
	member := func(f func(m *Message)) Message {
		m := roundTripMessage("member")
		f(&m)
		return m
	}
	admits := func(f func(m *Message)) Message {
		m := roundTripMessage("admits-one")
		m.Keys = slices.Clone(m.Keys)
		f(&m)
		return m
	}
	// proxies calls f with a copy of the round trip "proxies-two", whose
	// Peers are peer4 and peer6.
	proxies := func(f func(m *Message)) Message {
		m := roundTripMessage("proxies-two")
		m.Peers = slices.Clone(m.Peers)
		f(&m)
		return m
	}
	for _, tc := range []struct {
		name string
		m    Message
		want string
	}{
		{"type 0", Message{Group: g4}, "unknown type(0)"},
		{"type 23", Message{Type: typeEnd, Group: g4}, "unknown type(23)"},
		{"zero group", Message{Type: TypeResolve}, "invalid address"},
		{"zoned group", Message{Type: TypeResolve, Group: zoned}, "zone"},
		{"mapped group", Message{Type: TypeResolve, Group: mapped}, "IPv4-mapped"},
		{"tcp port 0", Message{Type: TypeResolve, Group: router.Group{Addr: g4.Addr, Proto: router.ProtoTCP}}, "port 0"},
		{"proto ipip", Message{Type: TypeResolve, Group: router.Group{Addr: g4.Addr, Port: 80, Proto: router.ProtoIPIP}}, "protocol 4"},
		{"echo with port", Message{Type: TypeResolve, Group: router.Group{Addr: g4.Addr, Port: 7, Proto: router.ProtoICMP}}, "echo group"},
		{"icmpv6 with v4", Message{Type: TypeResolve, Group: router.Group{Addr: g4.Addr, Proto: router.ProtoICMPv6}}, "echo group"},
		{"long name", Message{Type: TypeJoin, Group: g4, Name: long, Weight: 1}, "name: 256 bytes"},
		{"name not utf-8", Message{Type: TypeRegister, Group: g4, Name: "\xff"}, "name: not UTF-8"},
		{"long reason", Message{Type: TypeJoinAck, Group: g4, Status: StatusRefused, Reason: long}, "reason: 256 bytes"},
		{"status 3", Message{Type: TypeKeepaliveAck, Group: g4, Status: statusEnd}, "unknown status(3)"},
		{"negative ttl", Message{Type: TypeRegister, Group: g4, TTL: -time.Nanosecond}, "out of range"},
		{"ttl too long", Message{Type: TypeResolveReply, Group: g4, TTL: (math.MaxUint32 + 1) * time.Millisecond}, "out of range"},
		{"65 JAPs", Message{Type: TypeResolveReply, Group: g4, JAPs: manyJAPs(MaxJAPs + 1)}, "65 JAPs"},
		{"JAP zero address", Message{Type: TypeResolveReply, Group: g4, JAPs: jap("", 1)}, "JAP 0: invalid address"},
		{"JAP mapped", Message{Type: TypeResolveReply, Group: g4, JAPs: jap("::ffff:100.64.0.1", 1)}, "IPv4-mapped"},
		{"JAP negative", Message{Type: TypeResolveReply, Group: g4, JAPs: jap("100.64.0.1", -1)}, "out of range"},
		{"JAP too many targets", Message{Type: TypeResolveReply, Group: g4, JAPs: jap("100.64.0.1", math.MaxUint32+1)}, "out of range"},
		{"JAP negative weight", Message{Type: TypeResolveReply, Group: g4, JAPs: japWeight(-1)}, "weight -1 out of range"},
		{"JAP weight too large", Message{Type: TypeResolveReply, Group: g4, JAPs: japWeight(math.MaxUint32 + 1)}, "weight 4294967296 out of range"},
		{"join select 4", Message{Type: TypeJoin, Group: g4, Weight: 1, Policy: router.Policy{Select: 4}}, "unknown select(4)"},
		{"register select 4", Message{Type: TypeRegister, Group: g4, Policy: router.Policy{Select: 4}}, "unknown select(4)"},
		{"reply select 255", Message{Type: TypeResolveReply, Group: g4, Policy: router.Policy{Select: 255}}, "unknown select(255)"},
		{"join scope 2", Message{Type: TypeJoin, Group: g4, Weight: 1, Policy: router.Policy{Scope: 2}}, "unknown scope(2)"},
		{"reply scope 2", Message{Type: TypeResolveReply, Group: g4, Policy: router.Policy{Scope: 2}}, "unknown scope(2)"},
		{"join replicate 17", Message{Type: TypeJoin, Group: g4, Weight: 1, Policy: router.Policy{Replicate: router.MaxReplicate + 1}}, "replicate 17: want 0..16"},
		{"register replicate 17", Message{Type: TypeRegister, Group: g4, Policy: router.Policy{Replicate: 17}}, "replicate 17"},
		{"reply replicate -1", Message{Type: TypeResolveReply, Group: g4, Policy: router.Policy{Replicate: -1}}, "replicate -1"},
		{"join weight 0", Message{Type: TypeJoin, Group: g4}, "weight 0: want 1..1000"},
		{"join weight 1001", Message{Type: TypeJoin, Group: g4, Weight: MaxWeight + 1}, "weight 1001: want 1..1000"},
		{"join negative keepalive", Message{Type: TypeJoin, Group: g4, Weight: 1, Keepalive: -time.Millisecond}, "keepalive: ttl -1ms out of range"},
		{"join keepalive too long", Message{Type: TypeJoin, Group: g4, Weight: 1, Keepalive: (math.MaxUint32 + 1) * time.Millisecond}, "keepalive: ttl"},
		{"member with group", member(func(m *Message) { m.Group = g4 }), "carries no group"},
		{"member unknown flags", member(func(m *Message) { m.Flags = 0x08 }), "unknown flags 0x8"},
		{"member long cluster", member(func(m *Message) { m.Peer.Cluster = long }), "cluster: 256 bytes"},
		{"member zero address", member(func(m *Message) { m.Peer.Addr = netip.Addr{} }), "member address invalid IP is not IPv4"},
		{"member IPv6 address", member(func(m *Message) { m.Peer.Addr = netip.MustParseAddr("fd64::4") }), "member address fd64::4 is not IPv4"},
		{"member mapped address", member(func(m *Message) { m.Peer.Addr = netip.MustParseAddr("::ffff:100.64.0.4") }), "is not IPv4"},
		{"member IPv4 as IPv6 address", member(func(m *Message) { m.Peer.Addr6 = netip.MustParseAddr("100.64.0.5") }), "not plain IPv6"},
		{"member mapped IPv6 address", member(func(m *Message) { m.Peer.Addr6 = netip.MustParseAddr("::ffff:100.64.0.5") }), "not plain IPv6"},
		{"member zoned IPv6 address", member(func(m *Message) { m.Peer.Addr6 = netip.MustParseAddr("fe80::5%eth0") }), "not plain IPv6"},
		{"member zero endpoint", member(func(m *Message) { m.Peer.Endpoint = netip.AddrPort{} }), "is not IP:PORT"},
		{"member endpoint port 0", member(func(m *Message) { m.Peer.Endpoint = netip.MustParseAddrPort("198.18.0.4:0") }), "endpoint 198.18.0.4:0 is not IP:PORT"},
		{"member mapped endpoint", member(func(m *Message) { m.Peer.Endpoint = netip.MustParseAddrPort("[::ffff:198.18.0.4]:51820") }), "is not IP:PORT"},
		{"admits-req with group", Message{Type: TypeAdmitsReq, Group: g4, Name: "p"}, "carries no group"},
		{"admits-req long name", Message{Type: TypeAdmitsReq, Name: long}, "name: 256 bytes"},
		{"admits with group", admits(func(m *Message) { m.Group = g6 }), "carries no group"},
		{"admits name not utf-8", admits(func(m *Message) { m.Name = "\xff" }), "name: not UTF-8"},
		{"admits parts 0", admits(func(m *Message) { m.Part, m.Parts = 0, 0 }), "0 parts, want at least 1"},
		{"admits part 1 of 1", admits(func(m *Message) { m.Part, m.Parts = 1, 1 }), "part 1 of 1 parts"},
		{"admits part 255 of 255", admits(func(m *Message) { m.Part, m.Parts = 255, 255 }), "part 255 of 255 parts"},
		{"admits part 5 of 2", admits(func(m *Message) { m.Part, m.Parts = 5, 2 }), "part 5 of 2 parts"},
		{"admits no keys, parts 0", admits(func(m *Message) { m.Keys, m.Part, m.Parts = nil, 0, 0 }), "0 parts"},
		{"admits 33 keys", admits(func(m *Message) { m.Keys = manyKeys(MaxKeys + 1) }), "33 keys, at most 32 fit"},
		{"admits 256 keys", admits(func(m *Message) { m.Keys = manyKeys(256) }), "256 keys, at most 32 fit"},
		{"proxies-req with group", Message{Type: TypeProxiesReq, Group: g4}, "carries no group"},
		{"proxies with group", proxies(func(m *Message) { m.Group = g4 }), "carries no group"},
		{"proxies 17 peers", proxies(func(m *Message) { m.Peers = manyPeers(MaxPeers+1, false) }), "17 peers, at most 16 fit"},
		{"proxies 256 peers", proxies(func(m *Message) { m.Peers = slices.Repeat([]Member{peer4}, 256) }), "256 peers, at most 16 fit"},
		{"proxies peer empty name", proxies(func(m *Message) { m.Peers[0].Name = "" }), "peer 0: empty name"},
		{"proxies peer long name", proxies(func(m *Message) { m.Peers[1].Name = long }), "peer 1: name: 256 bytes"},
		{"proxies peer name not utf-8", proxies(func(m *Message) { m.Peers[0].Name = "p\xff" }), "peer 0: name: not UTF-8"},
		{"proxies peer long cluster", proxies(func(m *Message) { m.Peers[0].Cluster = long }), "peer 0 (p6): cluster: 256 bytes"},
		{"proxies peer cluster not utf-8", proxies(func(m *Message) { m.Peers[1].Cluster = "\xff" }), "peer 1 (p7): cluster: not UTF-8"},
		{"proxies peer zero address", proxies(func(m *Message) { m.Peers[0].Addr = netip.Addr{} }), "peer 0 (p6): member address invalid IP is not IPv4"},
		{"proxies peer IPv6 address", proxies(func(m *Message) { m.Peers[1].Addr = netip.MustParseAddr("fd64::7") }), "peer 1 (p7): member address fd64::7 is not IPv4"},
		{"proxies peer mapped address", proxies(func(m *Message) { m.Peers[0].Addr = netip.MustParseAddr("::ffff:100.64.0.6") }), "is not IPv4"},
		{"proxies peer IPv4 as IPv6 address", proxies(func(m *Message) { m.Peers[0].Addr6 = netip.MustParseAddr("100.64.0.8") }), "peer 0 (p6): member IPv6 address 100.64.0.8 is not plain IPv6"},
		{"proxies peer mapped IPv6 address", proxies(func(m *Message) { m.Peers[1].Addr6 = netip.MustParseAddr("::ffff:100.64.0.7") }), "not plain IPv6"},
		{"proxies peer zoned IPv6 address", proxies(func(m *Message) { m.Peers[1].Addr6 = netip.MustParseAddr("fe80::7%eth0") }), "not plain IPv6"},
		{"proxies peer zero endpoint", proxies(func(m *Message) { m.Peers[0].Endpoint = netip.AddrPort{} }), "peer 0 (p6): endpoint invalid AddrPort is not IP:PORT"},
		{"proxies peer endpoint port 0", proxies(func(m *Message) { m.Peers[0].Endpoint = netip.MustParseAddrPort("198.18.0.6:0") }), "peer 0 (p6): endpoint 198.18.0.6:0 is not IP:PORT"},
		{"proxies peer IPv6 endpoint port 0", proxies(func(m *Message) { m.Peers[1].Endpoint = netip.MustParseAddrPort("[2001:db8::7]:0") }), "peer 1 (p7): endpoint [2001:db8::7]:0 is not IP:PORT"},
		{"proxies peer mapped endpoint", proxies(func(m *Message) { m.Peers[1].Endpoint = netip.MustParseAddrPort("[::ffff:198.18.0.7]:51820") }), "is not IP:PORT"},
		{"proxies peer zoned endpoint", proxies(func(m *Message) { m.Peers[1].Endpoint = netip.MustParseAddrPort("[fe80::7%eth0]:51820") }), "is not IP:PORT"},
		// A peer of a Proxies has no flags of its own to be unknown: they
		// come from its Addr6 (and Message.Flags is not carried), see
		// TestOnlyMeaningfulFields; the decoder's side is in
		// TestUnmarshalMalformed.
	} {
		t.Run(tc.name, func(t *testing.T) {
			buf := []byte("keep")
			b, err := tc.m.AppendBinary(buf)
			if err == nil {
				t.Fatalf("AppendBinary(%+v) succeeded: %x", tc.m, b)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q is not one line", err)
			}
			if string(b) != "keep" {
				t.Errorf("failed AppendBinary returned %q, want the buffer unchanged", b)
			}
		})
	}
}

func TestStrings(t *testing.T) {
	for ty, want := range map[Type]string{
		TypeJoin: "join", TypeJoinAck: "join-ack", TypeLeave: "leave", TypeKeepalive: "keepalive",
		TypeKeepaliveAck: "keepalive-ack", TypeRegister: "register", TypeResolve: "resolve",
		TypeResolveReply: "resolve-reply", TypeMoved: "moved", TypeNoTarget: "no-target", TypeMember: "member",
		TypePolicy: "policy", TypeDigest: "digest", TypeAdmitsReq: "admits-req", TypeAdmits: "admits",
		TypeProxiesReq: "proxies-req", TypeProxies: "proxies", typeEnd: "type(23)", 0: "type(0)", 200: "type(200)",
	} {
		if got := ty.String(); got != want {
			t.Errorf("Type(%d).String() = %q, want %q", uint8(ty), got, want)
		}
	}
	for s, want := range map[Status]string{StatusOK: "ok", StatusUnknown: "unknown", StatusRefused: "refused", 7: "status(7)"} {
		if got := s.String(); got != want {
			t.Errorf("Status(%d).String() = %q, want %q", uint8(s), got, want)
		}
	}
}

func TestAllocs(t *testing.T) {
	buf := make([]byte, 0, MaxLen)
	for _, tc := range roundTrips {
		if n := testing.AllocsPerRun(100, func() {
			if _, err := tc.m.AppendBinary(buf); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("%s: AppendBinary into a large enough buffer: %v allocations, want 0", tc.name, n)
		}
	}
}

// corpusSeeds are the committed seeds of FuzzMessage: one valid encoding of
// each type and a few truncated ones.
func corpusSeeds(t testing.TB) map[string][]byte {
	seeds := map[string][]byte{}
	for _, name := range []string{"join", "join-ack-refused", "leave", "keepalive", "keepalive-ack-unknown",
		"register", "resolve", "resolve-reply", "resolve-reply-none",
		"probe", "probe-ack", "probe-req", "fail", "alive", "moved", "no-target", "member", "member6-sync-dead",
		"policy", "digest", "admits-req", "admits-none", "admits-one", "proxies-req-digest", "proxies-none", "proxies-two"} {
		m := roundTripMessage(name)
		b, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		seeds["valid-"+name] = b
	}
	seeds["truncated-header"] = seeds["valid-resolve"][:5]
	seeds["truncated-group"] = seeds["valid-resolve"][:HeaderLen+3]
	// valid-join: header, IPv4 group (8), port (2), name "web-1" (1+5),
	// incarnation (4), policy (3), weight (4), keepalive (4).
	seeds["truncated-join-name"] = seeds["valid-join"][:HeaderLen+8+2+1+3]
	seeds["truncated-join-keepalive"] = seeds["valid-join"][:len(seeds["valid-join"])-1]
	// valid-resolve-reply ends with a JAP's targets and weight (4+4) and
	// the policy (3).
	seeds["truncated-resolve-reply-jap"] = seeds["valid-resolve-reply"][:len(seeds["valid-resolve-reply"])-3-6]
	seeds["truncated-resolve-reply-policy"] = seeds["valid-resolve-reply"][:len(seeds["valid-resolve-reply"])-1]
	seeds["truncated-probe-incarnation"] = seeds["valid-probe"][:len(seeds["valid-probe"])-1]
	// valid-member ends with the public key (32) and endpoint (1+4+2).
	seeds["truncated-member-key"] = seeds["valid-member"][:len(seeds["valid-member"])-7-1]
	// valid-admits-one ends with its one key.
	seeds["truncated-admits-key"] = seeds["valid-admits-one"][:len(seeds["valid-admits-one"])-1]
	// valid-proxies-two ends with an IPv6 peer's key (32) and endpoint
	// (1+16+2).
	seeds["truncated-proxies-peer"] = seeds["valid-proxies-two"][:len(seeds["valid-proxies-two"])-19-1]
	return seeds
}

func corpusFile(b []byte) string {
	return fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
}

// TestFuzzCorpus checks the committed seed corpus is what corpusSeeds
// makes; go test -run TestFuzzCorpus -update-corpus rewrites it.
func TestFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzMessage")
	seeds := corpusSeeds(t)
	if *updateCorpus {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, b := range seeds {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(corpusFile(b)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	types := map[Type]bool{}
	for name, b := range seeds {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%v (run go test -run TestFuzzCorpus -update-corpus)", err)
			continue
		}
		if string(got) != corpusFile(b) {
			t.Errorf("%s is stale (run go test -run TestFuzzCorpus -update-corpus)", name)
		}
		var m Message
		err = m.UnmarshalBinary(b)
		if valid := strings.HasPrefix(name, "valid-"); valid != (err == nil) {
			t.Errorf("%s: UnmarshalBinary: %v", name, err)
		} else if valid {
			types[m.Type] = true
		}
	}
	for ty := TypeJoin; ty < typeEnd; ty++ {
		if !types[ty] {
			t.Errorf("no valid seed of %v", ty)
		}
	}
}

func FuzzMessage(f *testing.F) {
	for _, tc := range roundTrips {
		b, err := tc.m.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m Message
		if err := m.UnmarshalBinary(b); err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
			return
		}
		out, err := m.AppendBinary(nil)
		if err != nil {
			t.Fatalf("decoded %+v but cannot encode it: %v", m, err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("not canonical: decoded %+v from\n%x\nre-encoded as\n%x", m, b, out)
		}
		var m2 Message
		if err := m2.UnmarshalBinary(out); err != nil {
			t.Fatalf("cannot decode re-encoding %x: %v", out, err)
		}
		if !messagesEqual(&m, &m2) {
			t.Fatalf("re-decoding differs:\n%+v\n%+v", m, m2)
		}
	})
}

func BenchmarkAppendBinary(b *testing.B) {
	m := roundTripMessage("member6-sync-dead")
	buf := make([]byte, 0, MaxLen)
	for b.Loop() {
		if _, err := m.AppendBinary(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnmarshalBinary(b *testing.B) {
	for _, name := range []string{"keepalive", "resolve-reply-max"} {
		m := roundTripMessage(name)
		enc, err := m.MarshalBinary()
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			var m Message
			for b.Loop() {
				if err := m.UnmarshalBinary(enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

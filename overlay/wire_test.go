package overlay

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pias-net/pias/router"
)

// The fixtures g4, g6, echo4, echo6, maxStr, manyJAPs, manyKeys, manyPeers,
// peer4 and peer6 are in msg_test.go.

type msgCase struct {
	name string
	seq  uint32
	m    Msg
}

var (
	maxPolicy = router.Policy{Select: router.SelectAffinity, Replicate: router.MaxReplicate, Scope: router.ScopeSameCluster}
	member4   = Member{Name: "p4", Addr: netip.MustParseAddr("100.64.0.4"), Cluster: "c2", PublicKey: [32]byte{1, 2, 3, 31: 9},
		Endpoint: netip.MustParseAddrPort("198.18.0.4:51820")}
	memberMax = Member{Name: maxStr, Addr: netip.MustParseAddr("100.64.0.5"), Addr6: netip.MustParseAddr("fd64::5"), Cluster: maxStr,
		PublicKey: [32]byte{0: 0xff, 31: 0xff}, Endpoint: netip.MustParseAddrPort("[2001:db8::5]:65535")}
)

// msgCases are valid messages, at least one of every type, with their
// extremes.
var msgCases = []msgCase{
	{"join", 1, &Join{Group: g4, Port: 8080, Name: "web-1", Epoch: 1764000000,
		Policy: router.Policy{Select: router.SelectLoad, Replicate: 3, Scope: router.ScopeSameCluster}, Weight: 10, Keepalive: 10 * time.Second}},
	{"join-v6-echo", math.MaxUint32, &Join{Group: echo6, Weight: MaxWeight, Policy: maxPolicy, Keepalive: math.MaxUint32 * time.Millisecond, Epoch: math.MaxUint32}},
	{"join-long-name", 2, &Join{Group: g6, Port: 53, Name: maxStr, Weight: 1}},
	{"join-ack", 1, &JoinAck{Group: g4, Status: StatusOK}},
	{"join-ack-refused", 3, &JoinAck{Group: g6, Status: StatusRefused, Reason: "group not allowed by certificate"}},
	{"leave", 4, &Leave{Group: g6, Port: 5353}},
	{"keepalive", 5, &Keepalive{Group: echo4, Port: 1}},
	{"keepalive-ack", 5, &KeepaliveAck{Group: g4, Status: StatusOK}},
	{"keepalive-ack-unknown", 6, &KeepaliveAck{Group: g4, Status: StatusUnknown}},
	{"keepalive-ack-refused", 6, &KeepaliveAck{Group: g6, Status: StatusRefused, Reason: maxStr}},
	{"drain", 7, &Drain{Group: g4, Port: 8080, Timeout: 30 * time.Second}},
	{"drain-v6-max", math.MaxUint32, &Drain{Group: g6, Port: math.MaxUint16, Timeout: math.MaxUint32 * time.Millisecond}},
	{"drain-ack", 7, &DrainAck{Group: g4, Status: StatusOK, Flows: 3}},
	{"drain-ack-unknown", 8, &DrainAck{Group: echo6, Status: StatusUnknown, Flows: math.MaxUint32}},
	{"drain-ack-refused", 9, &DrainAck{Group: g6, Status: StatusRefused, Reason: maxStr}},
	{"register", 7, &Register{Group: g4, JAP: "proxy-a", Targets: 12, TTL: 90 * time.Second,
		Policy: router.Policy{Select: router.SelectRandom, Replicate: 2}, Weight: 35, Version: 1_796_559_932_000_000_000}},
	{"register-withdraw", 8, &Register{Group: g6, JAP: "proxy-b"}},
	{"register-max", 9, &Register{Group: echo6, JAP: maxStr, Targets: math.MaxUint32, TTL: math.MaxUint32 * time.Millisecond, Policy: maxPolicy, Weight: math.MaxUint32, Stated: true, Version: math.MaxUint64}},
	{"resolve", 10, &Resolve{Group: g4}},
	{"resolve-relayed-v6", 0, &Resolve{Group: echo6, Relayed: true}},
	{"resolve-reply", 10, &ResolveReply{Group: g4, Status: StatusOK, TTL: 30 * time.Second,
		JAPs:   []router.JAP{{Addr: netip.MustParseAddr("100.64.0.2"), Targets: 3, Weight: 250}, {Addr: netip.MustParseAddr("100.64.0.9"), Targets: 0}},
		Policy: router.Policy{Select: router.SelectLoad, Scope: router.ScopeSameCluster}}},
	{"resolve-reply-none", 11, &ResolveReply{Group: g6, Status: StatusUnknown, TTL: 5 * time.Second}},
	{"resolve-reply-max", 12, &ResolveReply{Group: g6, Status: StatusRefused, Reason: maxStr, TTL: time.Millisecond, JAPs: manyJAPs(MaxJAPs), Policy: maxPolicy}},
	{"probe", 13, &Probe{From: "p1", Incarnation: 1764000000}},
	{"probe-ack", 13, &ProbeAck{From: "p2", Incarnation: math.MaxUint32}},
	{"probe-req", 14, &ProbeReq{Suspect: maxStr, Incarnation: 3}},
	{"fail", 0, &Fail{Name: "p3", Incarnation: 7}},
	{"alive", 1, &Alive{Name: "p3", Incarnation: 8}},
	{"restarted", 0, &Restarted{Name: "p3", Incarnation: 9}},
	{"news", 0, &News{Items: []NewsItem{{Name: "p3", Incarnation: 7, Dead: true}, {Name: "p4", Incarnation: 8}}}},
	{"news-max", 0, &News{Items: manyNews(MaxNews)}},
	{"moved", 2, &Moved{Targets: []MovedTarget{{Group: g4, Name: "t1", Target: netip.MustParseAddr("100.64.1.1"), Epoch: 5}}}},
	{"moved6", 3, &Moved{Targets: []MovedTarget{{Group: g4, Name: maxStr, Target: netip.MustParseAddr("fd64::1:1"), Epoch: math.MaxUint32}}}},
	{"moved-max", 3, &Moved{Targets: manyMoved(MaxMoved)}},
	{"no-target", 4, &NoTarget{Group: g4}},
	{"member", 5, &MemberRecord{Member: member4, Incarnation: 1764000001}},
	{"member6-sync-dead", 6, &MemberRecord{Member: memberMax, Incarnation: math.MaxUint32, Dead: true, Sync: true}},
	{"member-sync", 6, &MemberRecord{Member: member4, Incarnation: 2, Sync: true}},
	{"member-cert", 6, &MemberRecord{Member: member4, Incarnation: 2, Sync: true, Cert: []byte("a certificate's bytes")}},
	{"policy", 7, &GroupPolicy{Group: g6, Policy: router.Policy{Select: router.SelectAffinity, Replicate: 2, Scope: router.ScopeSameCluster}}},
	{"digest", 0, &Digest{From: "p2", Hash: 0xdeadbeef}},
	{"digest-answer", 1, &Digest{From: maxStr, Hash: 0, Answer: true}},
	{"admits-req", 7, &AdmitsReq{From: "p5", Incarnation: 1764000002}},
	{"admits-none", 8, &Admits{From: "p5", Incarnation: 1764000002, Parts: 1}},
	{"admits-one", 9, &Admits{From: "p5", Incarnation: 1764000002, Part: 1, Parts: 3, Keys: manyKeys(1)}},
	{"admits-max", math.MaxUint32, &Admits{From: maxStr, Incarnation: math.MaxUint32, Part: 254, Parts: 255, Keys: manyKeys(MaxKeys)}},
	{"proxies-req", 10, &ProxiesReq{}},
	{"proxies-req-digest", 11, &ProxiesReq{Digest: 0xfeedface}},
	{"proxies-none", 11, &Proxies{Digest: 0xfeedface}},
	{"proxies-one", 12, &Proxies{Digest: 1, Peers: []Member{peer4}}},
	{"proxies-one6", 13, &Proxies{Digest: 2, Peers: []Member{peer6}}},
	{"proxies-two", 14, &Proxies{Digest: 3, Peers: []Member{peer4, peer6}}},
	{"proxies-max", 15, &Proxies{Digest: math.MaxUint32, Peers: manyPeers(MaxPeers, false)}},
	{"proxies-max-long", 16, &Proxies{Digest: 4, Peers: manyPeers(MaxPeers, true)}},
	{"edge-claim", 0, &EdgeClaim{From: "p1", Key: [32]byte{7}, Name: "t1", Since: 1764000000000, Addrs: []netip.Addr{netip.MustParseAddr("100.64.1.1")}}},
	{"edge-claim-release6", 0, &EdgeClaim{From: maxStr, Release: true, Key: [32]byte{8}, Name: maxStr, Since: math.MaxInt64, Addrs: []netip.Addr{netip.MustParseAddr("100.64.1.1"), netip.MustParseAddr("fd64::1:1")}}},
	{"revocation-one", 0, &RevocationPart{Serial: 7, Parts: 1, Data: []byte("a list")}},
	{"revocation-max", 0, &RevocationPart{Serial: math.MaxUint64, Part: 254, Parts: 255, Data: bytes.Repeat([]byte{0xa5}, revocationChunk)}},
}

func msgCaseNamed(name string) msgCase {
	return msgCases[slices.IndexFunc(msgCases, func(c msgCase) bool { return c.name == name })]
}

func TestMsgRoundTrip(t *testing.T) {
	seen := map[Type]bool{}
	for _, tc := range msgCases {
		t.Run(tc.name, func(t *testing.T) {
			seen[tc.m.Type()] = true
			prefix := []byte("prefix")
			b, err := AppendMsg(prefix, tc.seq, tc.m)
			if err != nil {
				t.Fatalf("AppendMsg: %v", err)
			}
			if !bytes.HasPrefix(b, []byte("prefix")) {
				t.Fatalf("AppendMsg clobbered the prefix: %q", b)
			}
			b = b[len(prefix):]
			if len(b) > MaxLen {
				t.Errorf("encoding is %d bytes, MaxLen is %d", len(b), MaxLen)
			}
			if b[2] != Version || Type(b[3]) != tc.m.Type() {
				t.Errorf("header %x: want version %d, type %d", b[:HeaderLen], Version, tc.m.Type())
			}
			seq, got, err := ParseMsg(b)
			if err != nil {
				t.Fatalf("ParseMsg(%x): %v", b, err)
			}
			if seq != tc.seq || !reflect.DeepEqual(got, tc.m) {
				t.Fatalf("round trip:\n got %d %+v\nwant %d %+v", seq, got, tc.seq, tc.m)
			}
			b2, err := AppendMsg(nil, seq, got)
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

// TestMsgGroup checks GroupOf: the messages of one group carry it, those
// about proxies none.
func TestMsgGroup(t *testing.T) {
	for _, tc := range msgCases {
		g, ok := GroupOf(tc.m)
		want := reflect.ValueOf(tc.m).Elem().FieldByName("Group")
		if ok != want.IsValid() {
			t.Errorf("%s: GroupOf says %v, but its type has a Group field: %v", tc.name, ok, want.IsValid())
		} else if ok && g != want.Interface().(router.Group) {
			t.Errorf("%s: GroupOf = %v, want %v", tc.name, g, want)
		}
	}
}

// TestMsgDurationsTruncated: durations travel in whole milliseconds.
func TestMsgDurationsTruncated(t *testing.T) {
	for _, tc := range []struct {
		m    Msg
		get  func(Msg) time.Duration
		want time.Duration
	}{
		{&Register{Group: g4, TTL: 1500*time.Microsecond + 999*time.Nanosecond}, func(m Msg) time.Duration { return m.(*Register).TTL }, time.Millisecond},
		{&ResolveReply{Group: g4, TTL: 999 * time.Microsecond}, func(m Msg) time.Duration { return m.(*ResolveReply).TTL }, 0},
		{&Join{Group: g4, Weight: 1, Keepalive: 2500*time.Microsecond + 999*time.Nanosecond}, func(m Msg) time.Duration { return m.(*Join).Keepalive }, 2 * time.Millisecond},
	} {
		b, err := AppendMsg(nil, 0, tc.m)
		if err != nil {
			t.Fatal(err)
		}
		_, got, err := ParseMsg(b)
		if err != nil {
			t.Fatal(err)
		}
		if d := tc.get(got); d != tc.want {
			t.Errorf("%v: %v came back as %v, want %v", tc.m.Type(), tc.get(tc.m), d, tc.want)
		}
	}
}

// TestMsgMaxLen checks MaxLen is the size of the longest message, and the
// sizes of the longest messages of the other variable-length types.
func TestMsgMaxLen(t *testing.T) {
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
	longest := map[Type]int{}
	for _, tc := range []struct {
		m    Msg
		want int
	}{
		{&Proxies{Digest: 1, Peers: ps}, MaxLen},
		{&ResolveReply{Group: g6, Status: StatusRefused, Reason: maxStr, TTL: time.Hour, JAPs: js, Policy: maxPolicy}, maxResolveReplyLen},
		{&Admits{From: maxStr, Parts: 1, Keys: manyKeys(MaxKeys)}, maxAdmitsLen},
		// The longest hello's body (see MaxUnderlayLen).
		{&MemberRecord{Member: ps[0], Incarnation: 1, Sync: true, Dead: true, Cert: make([]byte, maxMemberCert)}, MaxUnderlayLen - underlayHeader - maxHelloPrefix - underlayMAC},
		{&Join{Group: g6, Name: maxStr, Weight: 1, Policy: maxPolicy}, maxJoinLen},
		{&Register{Group: g6, JAP: maxStr, Policy: maxPolicy}, maxRegisterLen},
		{&Moved{Targets: slices.Repeat([]MovedTarget{{Group: g6, Name: maxStr, Target: netip.MustParseAddr("fd64::1")}}, MaxMoved)}, maxMovedLen},
		{&JoinAck{Group: g6, Status: StatusRefused, Reason: maxStr}, maxAckLen},
		{&KeepaliveAck{Group: g6, Status: StatusRefused, Reason: maxStr}, maxAckLen},
		{&DrainAck{Group: g6, Status: StatusRefused, Reason: maxStr}, maxDrainAckLen},
		{&Digest{From: maxStr, Answer: true}, maxDigestLen},
		{&RevocationPart{Parts: 1, Data: make([]byte, revocationChunk)}, HeaderLen + 8 + 1 + 1 + 2 + revocationChunk},
		{&EdgeClaim{From: maxStr, Name: maxStr, Addrs: []netip.Addr{netip.MustParseAddr("fd64::1"), netip.MustParseAddr("fd64::2")}}, maxClaimLen},
		{&News{Items: slices.Repeat([]NewsItem{{Name: maxStr, Incarnation: math.MaxUint32, Dead: true}}, MaxNews)}, maxNewsLen},
	} {
		b, err := AppendMsg(nil, 1, tc.m)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != tc.want {
			t.Errorf("longest %v is %d bytes, want %d", tc.m.Type(), len(b), tc.want)
		}
		longest[tc.m.Type()] = len(b)
	}
	// The others have a fixed length, or one string at most.
	for _, tc := range msgCases {
		if _, ok := longest[tc.m.Type()]; ok {
			continue
		}
		b, err := AppendMsg(nil, 1, tc.m)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > HeaderLen+maxGroupLen+1+1+MaxString+4 {
			t.Errorf("%s is %d bytes: is it in this test's list of the longest?", tc.name, len(b))
		}
	}
	if MaxLen != 9389 {
		t.Errorf("MaxLen = %d, want 9389", MaxLen)
	}
}

// TestMsgWireFormat pins the bytes of a few messages.
func TestMsgWireFormat(t *testing.T) {
	for _, tc := range []struct {
		seq uint32
		m   Msg
		hex string
	}{
		{
			0x01020304, &Join{Group: g4, Port: 8080, Name: "web1", Epoch: 0x0a0b0c0d,
				Policy: router.Policy{Select: router.SelectAffinity, Replicate: 2, Scope: router.ScopeSameCluster}, Weight: 1000, Keepalive: 15 * time.Second},
			"5049" + "02" + "01" + "01020304" + "04" + "64410001" + "0050" + "06" + "1f90" + "04" + hex.EncodeToString([]byte("web1")) + "0a0b0c0d" +
				"03" + "02" + "01" + "000003e8" + "00003a98",
		},
		{
			9, &KeepaliveAck{Group: echo4, Status: StatusUnknown},
			"5049" + "02" + "05" + "00000009" + "04" + "64410002" + "0000" + "01" + "01" + "00",
		},
		{
			1, &Register{Group: g4, JAP: "p", Targets: 258, TTL: 90 * time.Second, Policy: router.Policy{Select: router.SelectLoad}, Weight: 0x01020304, Version: 0x0102030405060708},
			"5049" + "02" + "06" + "00000001" + "04" + "64410001" + "0050" + "06" + "01" + "70" + "00000102" + "00015f90" +
				"01" + "00" + "00" + "01020304" + "00" + "0102030405060708",
		},
		{
			2, &Resolve{Group: g4},
			"5049" + "02" + "07" + "00000002" + "04" + "64410001" + "0050" + "06" + "00",
		},
		{
			3, &Resolve{Group: g6, Relayed: true},
			"5049" + "02" + "07" + "00000003" + "06" + "fd650000000000000000000000000001" + "0035" + "11" + "01",
		},
		{
			7, &ResolveReply{Group: g6, Status: StatusOK, TTL: 1500 * time.Millisecond,
				JAPs:   []router.JAP{{Addr: netip.MustParseAddr("100.64.0.2"), Targets: 3, Weight: 300}},
				Policy: router.Policy{Select: router.SelectRandom, Replicate: 16}},
			"5049" + "02" + "08" + "00000007" + "06" + "fd650000000000000000000000000001" + "0035" + "11" +
				"00" + "00" + "000005dc" + "01" + "04" + "64400002" + "00000003" + "0000012c" + "02" + "10" + "00",
		},
		{
			0xdeadbeef, &Probe{From: "p1", Incarnation: 5},
			"5049" + "02" + "09" + "deadbeef" + "02" + "7031" + "00000005",
		},
		{
			8, &Moved{Targets: []MovedTarget{{Group: g4, Name: "t", Target: netip.MustParseAddr("100.64.1.1"), Epoch: 0x0a0b0c0d}}},
			"5049" + "02" + "0e" + "00000008" + "01" + "04" + "64410001" + "0050" + "06" + "01" + "74" + "0a0b0c0d" + "04" + "64400101",
		},
		{
			2, &MemberRecord{Member: Member{Name: "p", Addr: netip.MustParseAddr("100.64.0.4"), Addr6: netip.MustParseAddr("fd64::4"), Cluster: "c",
				PublicKey: [32]byte{0: 0xaa, 31: 0xbb}, Endpoint: netip.MustParseAddrPort("198.18.0.4:51820")}, Incarnation: 5, Sync: true},
			"5049" + "02" + "10" + "00000002" + "01" + "70" + "00000005" + "05" + "01" + "63" + "04" + "64400004" +
				"06" + "fd640000000000000000000000000004" + "aa" + strings.Repeat("00", 30) + "bb" + "04" + "c6120004" + "ca6c",
		},
		{
			0, &Digest{From: "p", Hash: 0x01020304},
			"5049" + "02" + "12" + "00000000" + "01" + "70" + "01020304" + "00",
		},
		{
			0, &Digest{From: "p", Hash: 0x01020304, Answer: true},
			"5049" + "02" + "12" + "00000000" + "01" + "70" + "01020304" + "01",
		},
		{
			4, &Admits{From: "p", Incarnation: 7, Part: 1, Parts: 2, Keys: [][32]byte{{0: 0xaa, 31: 0xbb}, {0: 0xcc, 31: 0xdd}}},
			"5049" + "02" + "14" + "00000004" + "01" + "70" + "00000007" + "01" + "02" + "02" +
				"aa" + strings.Repeat("00", 30) + "bb" + "cc" + strings.Repeat("00", 30) + "dd",
		},
		{
			6, &ProxiesReq{Digest: 0x0a0b0c0d},
			"5049" + "02" + "15" + "00000006" + "0a0b0c0d",
		},
		{
			7, &Proxies{Digest: 0x01020304, Peers: []Member{peer4, peer6}},
			"5049" + "02" + "16" + "00000007" + "01020304" + "02" +
				"02" + "7036" + "00" + "02" + "6331" + "04" + "64400006" + "06" + strings.Repeat("00", 30) + "06" + "04" + "c6120006" + "ca6c" +
				"02" + "7037" + "01" + "00" + "04" + "64400007" + "06" + "fd640000000000000000000000000007" +
				"07" + strings.Repeat("00", 30) + "07" + "06" + "20010db8000000000000000000000007" + "ca6d",
		},
	} {
		b, err := AppendMsg(nil, tc.seq, tc.m)
		if err != nil {
			t.Fatalf("%v: %v", tc.m.Type(), err)
		}
		if got := hex.EncodeToString(b); got != tc.hex {
			t.Errorf("%v:\n got %s\nwant %s", tc.m.Type(), got, tc.hex)
		}
		seq, got, err := ParseMsg(mustHex(tc.hex))
		if err != nil || seq != tc.seq || !reflect.DeepEqual(got, tc.m) {
			t.Errorf("%v: ParseMsg(%s) = %d, %+v, %v; want %d, %+v", tc.m.Type(), tc.hex, seq, got, err, tc.seq, tc.m)
		}
	}
}

func TestParseMsgMalformed(t *testing.T) {
	const (
		hdrJoin     = "5049" + "02" + "01" + "00000001"
		hdrAck      = "5049" + "02" + "02" + "00000001"
		hdrKa       = "5049" + "02" + "04" + "00000001"
		hdrReg      = "5049" + "02" + "06" + "00000001"
		hdrRes      = "5049" + "02" + "07" + "00000001"
		hdrReply    = "5049" + "02" + "08" + "00000001"
		hdrProbeReq = "5049" + "02" + "0b" + "00000001"
		hdrMoved    = "5049" + "02" + "0e" + "00000001"
		hdrNoTarget = "5049" + "02" + "0f" + "00000001"
		hdrMember   = "5049" + "02" + "10" + "00000001"
		hdrPolicy   = "5049" + "02" + "11" + "00000001"
		hdrDigest   = "5049" + "02" + "12" + "00000001"
		hdrNews     = "5049" + "02" + "1c" + "00000001"
		grp4        = "04" + "64410001" + "0050" + "06"
		jap4        = "04" + "64400002" + "00000003" + "00000005"
		replyHead   = hdrReply + grp4 + "00" + "00" + "00001000"
		policy      = "01" + "02" + "01"                                    // load, replicate 2, same cluster
		joinHead    = hdrJoin + grp4 + "1f90" + "00" + "00000001"           // up to the policy
		regHead     = hdrReg + grp4 + "01" + "70" + "00000001" + "00000001" // up to the policy
		movedHead   = hdrMoved + "01" + grp4 + "01" + "74" + "00000001"     // up to the target
		digestHead  = hdrDigest + "02" + "7032" + "00000001"                // up to the flags
		// memberHead is a member record up to its flags; memberRest
		// follows flags without MemberHas6.
		memberHead = hdrMember + "02" + "7034" + "00000001"
		memberKey  = "01" + "00000000000000000000000000000000000000000000000000000000000000"
		memberRest = "02" + "6331" + "04" + "64400004" + memberKey + "04" + "c6120004" + "ca6c"

		hdrAdmits     = "5049" + "02" + "14" + "00000001"
		hdrProxiesReq = "5049" + "02" + "15" + "00000001"
		hdrProxies    = "5049" + "02" + "16" + "00000001"
		admitsHead    = hdrAdmits + "02" + "7035" + "00000001" // up to part
		key           = "abababababababababababababababababababababababababababababababab"
		proxiesHead   = hdrProxies + "00000001" // up to the peer count
		peerRest      = "02" + "6331" + "04" + "64400006" + memberKey + "04" + "c6120006" + "ca6c"
		peer          = "02" + "7036" + "00" + peerRest
	)
	// The pieces the cases break make valid messages, so that each case
	// fails for the reason its name gives.
	for _, h := range []string{
		joinHead + policy + "000003e8" + "00002710",
		hdrAck + grp4 + "02" + "01" + "6e",
		hdrKa + grp4 + "0050",
		regHead + policy + "00000000" + "01" + "0000000000000002",
		hdrRes + grp4 + "00",
		hdrRes + grp4 + "01",
		replyHead + "00" + policy,
		replyHead + "01" + jap4 + policy,
		hdrProbeReq + "01" + "73" + "00000001",
		movedHead + "04" + "64400101",
		hdrNoTarget + grp4,
		memberHead + "00" + memberRest,
		hdrPolicy + grp4 + policy,
		digestHead + "00",
		digestHead + "01",
		admitsHead + "00" + "01" + "00",
		admitsHead + "fe" + "ff" + "02" + key + key,
		hdrProxiesReq + "00000000",
		proxiesHead + "00",
		proxiesHead + "10" + strings.Repeat(peer, 16),
	} {
		if _, _, err := ParseMsg(mustHex(h)); err != nil {
			t.Errorf("ParseMsg(%s): %v", h, err)
		}
	}
	for _, tc := range []struct {
		name, hex, want string
	}{
		{"empty", "", "truncated header (0 bytes)"},
		{"one byte", "50", "truncated header (1 bytes)"},
		{"short bad magic", "5850", "bad magic"},
		{"bad magic", "5058" + "02" + "07" + "00000001" + grp4 + "00", "bad magic"},
		{"truncated seq", "5049" + "02" + "07" + "000000", "truncated header (7 bytes)"},
		{"version 0", "5049" + "00" + "07" + "00000001" + grp4 + "00", "unknown version 0 (want 2)"},
		{"version 1", "5049" + "01" + "07" + "00000001" + grp4 + "0000", "unknown version 1 (want 2)"},
		{"type 0", "5049" + "02" + "00" + "00000001" + grp4, "unknown type(0)"},
		{"type 29", "5049" + "02" + "1d" + "00000001" + grp4, "unknown type(29)"},
		{"type 255", "5049" + "02" + "ff" + "00000001" + grp4, "unknown type(255)"},

		{"no group", hdrRes, "resolve: truncated group address family"},
		{"family 0", hdrRes + "00" + "64410001" + "0050" + "06" + "00", "resolve: group address: invalid address family 0"},
		{"truncated v4 address", hdrRes + "04" + "644100", "resolve: truncated group address"},
		{"truncated v6 address", hdrRes + "06" + "fd65000000000000", "resolve: truncated group address"},
		{"mapped v6 address", hdrRes + "06" + "00000000000000000000ffff64410001" + "0050" + "06" + "00",
			"resolve: group address ::ffff:100.65.0.1: IPv4-mapped IPv6 (send it as family 4)"},
		{"truncated port", hdrRes + "04" + "64410001" + "00", "resolve: truncated group port"},
		{"truncated proto", hdrRes + "04" + "64410001" + "0050", "resolve: truncated group protocol"},
		{"proto ipip", hdrRes + "04" + "64410001" + "0050" + "04" + "00", "resolve: group 100.65.0.1:80/4: protocol 4 is not tcp, udp, or echo"},
		{"tcp port 0", hdrRes + "04" + "64410001" + "0000" + "06" + "00", "resolve: group 100.65.0.1:0/tcp: port 0 is not a service port"},
		{"icmp with port", hdrRes + "04" + "64410001" + "0001" + "01" + "00",
			"resolve: group 100.65.0.1:1/icmp: an echo group needs port 0 and icmp with IPv4, icmpv6 with IPv6"},
		{"resolve no relayed", hdrRes + grp4, "resolve: truncated relayed"},
		{"resolve relayed 2", hdrRes + grp4 + "02", "resolve: relayed 2: want 0 or 1"},
		{"resolve old hops", hdrRes + grp4 + "0001", "resolve: 1 trailing bytes"},

		{"join no port", hdrJoin + grp4, "join: truncated port"},
		{"join no name", hdrJoin + grp4 + "1f90", "join: truncated name length"},
		{"join short name", hdrJoin + grp4 + "1f90" + "05" + "77656231", "join: truncated name"},
		{"join name not utf-8", hdrJoin + grp4 + "1f90" + "02" + "c328", "join: name is not UTF-8"},
		{"join no epoch", hdrJoin + grp4 + "1f90" + "00" + "000000", "join: truncated epoch"},
		{"join no policy", joinHead, "join: truncated select"},
		{"join select 4", joinHead + "04" + "00" + "00" + "00000001" + "00002710", "join: unknown select(4)"},
		{"join scope 2", joinHead + "00" + "00" + "02" + "00000001" + "00002710", "join: unknown scope(2)"},
		{"join replicate 17", joinHead + "00" + "11" + "00" + "00000001" + "00002710", "join: replicate 17: want 0..16"},
		{"join weight 0", joinHead + policy + "00000000" + "00002710", "join: weight 0: want 1..1000"},
		{"join weight 1001", joinHead + policy + "000003e9" + "00002710", "join: weight 1001: want 1..1000"},
		{"join no keepalive", joinHead + policy + "000003e8" + "000027", "join: truncated keepalive"},
		{"join trailing", joinHead + policy + "000003e8" + "00002710" + "00", "join: 1 trailing bytes"},

		{"ack no status", hdrAck + grp4, "join-ack: truncated status"},
		{"ack status 3", hdrAck + grp4 + "03" + "00", "join-ack: unknown status(3)"},
		{"ack short reason", hdrAck + grp4 + "02" + "03" + "6e6f", "join-ack: truncated reason"},
		{"ack reason not utf-8", hdrAck + grp4 + "02" + "01" + "ff", "join-ack: reason is not UTF-8"},
		{"keepalive trailing", hdrKa + grp4 + "0050" + "00", "keepalive: 1 trailing bytes"},

		{"register no JAP", hdrReg + grp4, "register: truncated JAP name length"},
		{"register no targets", hdrReg + grp4 + "01" + "70" + "000001", "register: truncated target count"},
		{"register no ttl", hdrReg + grp4 + "01" + "70" + "00000001" + "0000", "register: truncated ttl"},
		{"register replicate 17", regHead + "00" + "11" + "00" + "00000001", "register: replicate 17: want 0..16"},
		{"register no weight", regHead + policy + "0000", "register: truncated weight"},
		{"register no stated", regHead + policy + "00000000", "register: truncated stated"},
		{"register stated 2", regHead + policy + "00000000" + "02", "register: stated 2: want 0 or 1"},
		{"register no version", regHead + policy + "00000000" + "00" + "00000000", "register: truncated version"},
		{"register trailing", regHead + policy + "00000000" + "00" + "0000000000000001" + "ff", "register: 1 trailing bytes"},

		{"reply no ttl", hdrReply + grp4 + "00" + "00" + "0000", "resolve-reply: truncated ttl"},
		{"reply no count", replyHead, "resolve-reply: truncated JAP count"},
		{"reply 65 JAPs", replyHead + "41" + strings.Repeat(jap4, 65) + policy, "resolve-reply: 65 JAPs, at most 64 allowed"},
		{"reply missing JAP", replyHead + "02" + jap4, "resolve-reply: truncated JAP address family"},
		{"reply JAP family 7", replyHead + "01" + "07" + "64400002" + "00000003" + "00000005" + policy, "resolve-reply: JAP address: invalid address family 7"},
		{"reply JAP no weight", replyHead + "01" + "04" + "64400002" + "00000003" + "000005", "resolve-reply: truncated JAP weight"},
		{"reply select 4", replyHead + "00" + "04" + "00" + "00", "resolve-reply: unknown select(4)"},
		{"reply trailing", replyHead + "01" + jap4 + policy + "00", "resolve-reply: 1 trailing bytes"},

		{"probe-req no incarnation", hdrProbeReq + "01" + "73" + "000000", "probe-req: truncated incarnation"},
		{"probe-req suspect not utf-8", hdrProbeReq + "01" + "80" + "00000001", "probe-req: suspect is not UTF-8"},

		{"news none", hdrNews + "00", "news: 0 items: want 1..32"},
		{"news too many", hdrNews + "21", "news: 33 items: want 1..32"},
		{"news flag 2", hdrNews + "01" + "02" + "02" + "7033" + "00000001", "news: item 0: flags 0x2: unknown"},
		{"news one missing", hdrNews + "02" + "01" + "02" + "7033" + "00000001", "news: item 1: truncated flags"},
		{"news no incarnation", hdrNews + "01" + "00" + "02" + "7033" + "000001", "news: item 0: truncated incarnation"},
		{"news trailing", hdrNews + "01" + "00" + "02" + "7033" + "00000001" + "00", "news: 1 trailing bytes"},
		{"moved none", hdrMoved + "00", "moved: 0 targets: want 1..16"},
		{"moved too many", hdrMoved + "11", "moved: 17 targets: want 1..16"},
		{"moved no target", movedHead, "moved: target 0: truncated target address family"},
		{"moved one missing", hdrMoved + "02" + movedHead[len(hdrMoved)+2:] + "04" + "64400101", "moved: target 1: truncated group address family"},
		{"moved mapped target", movedHead + "06" + "00000000000000000000ffff64400101",
			"moved: target 0: target address ::ffff:100.64.1.1: IPv4-mapped IPv6 (send it as family 4)"},
		{"moved trailing", movedHead + "04" + "64400101" + "00", "moved: 1 trailing bytes"},
		{"no-target trailing", hdrNoTarget + grp4 + "00", "no-target: 1 trailing bytes"},
		{"policy trailing", hdrPolicy + grp4 + policy + "00", "policy: 1 trailing bytes"},
		{"policy scope 2", hdrPolicy + grp4 + "000002", "policy: unknown scope(2)"},

		{"member no flags", memberHead, "member: truncated member flags"},
		{"member unknown flags", memberHead + "10" + memberRest, "member: unknown member flags 0x10"},
		{"member IPv6 member address", memberHead + "00" + "02" + "6331" + "06" + "fd640000000000000000000000000004" + memberKey + "04" + "c6120004" + "ca6c",
			"member: member address fd64::4 is not IPv4"},
		{"member has6 without IPv6", memberHead + "01" + memberRest, "member: member IPv6 address: invalid address family 1"},
		{"member IPv4 as IPv6 address", memberHead + "01" + "02" + "6331" + "04" + "64400004" + "04" + "64400005" + memberKey + "04" + "c6120004" + "ca6c",
			"member: member IPv6 address 100.64.0.5 is not IPv6"},
		{"member short key", memberHead + "00" + "02" + "6331" + "04" + "64400004" + strings.Repeat("00", 31), "member: truncated public key"},
		{"member endpoint port 0", memberHead + "00" + "02" + "6331" + "04" + "64400004" + memberKey + "04" + "c6120004" + "0000", "member: endpoint port 0"},
		{"member trailing", memberHead + "00" + memberRest + "00", "member: 1 trailing bytes"},

		{"digest no flags", digestHead, "digest: truncated flags"},
		{"digest flags 2", digestHead + "02", "digest: unknown digest flags 0x2"},
		{"digest flags 0xff", digestHead + "ff", "digest: unknown digest flags 0xfe"},
		{"digest trailing", digestHead + "01" + "00", "digest: 1 trailing bytes"},

		{"admits parts 0", admitsHead + "00" + "00" + "00", "admits: 0 parts, want at least 1"},
		{"admits part 1 of 1", admitsHead + "01" + "01" + "00", "admits: part 1 of 1 parts (parts count from 0)"},
		{"admits 33 keys", admitsHead + "00" + "01" + "21" + strings.Repeat(key, 33), "admits: 33 keys, at most 32 allowed"},
		{"admits short key", admitsHead + "00" + "01" + "02" + key + key[2:], "admits: truncated keys"},
		{"admits trailing", admitsHead + "00" + "01" + "01" + key + "00", "admits: 1 trailing bytes"},

		{"proxies-req short", hdrProxiesReq + "000000", "proxies-req: truncated digest"},
		{"proxies-req trailing", hdrProxiesReq + "00000000" + "00", "proxies-req: 1 trailing bytes"},
		{"proxies no count", proxiesHead, "proxies: truncated peer count"},
		{"proxies 17 peers", proxiesHead + "11" + strings.Repeat(peer, 17), "proxies: 17 peers, at most 16 allowed"},
		{"proxies missing peer", proxiesHead + "02" + peer, "proxies: peer 1: truncated peer name length"},
		{"proxies peer empty name", proxiesHead + "01" + "00" + "00" + peerRest, "proxies: peer 0: empty name"},
		{"proxies peer dead", proxiesHead + "01" + "02" + "7036" + "02" + peerRest, "proxies: peer 0: unknown member flags 0x2"},
		{"proxies peer short key", proxiesHead + "01" + "02" + "7036" + "00" + "02" + "6331" + "04" + "64400006" + "01", "proxies: peer 0: truncated public key"},
		{"proxies trailing", proxiesHead + "01" + peer + "00", "proxies: 1 trailing bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seq, m, err := ParseMsg(mustHex(tc.hex))
			if err == nil {
				t.Fatalf("ParseMsg(%s) = %+v", tc.hex, m)
			}
			if want := "pias message: " + tc.want; err.Error() != want {
				t.Errorf("error %q, want %q", err, want)
			}
			if seq != 0 || m != nil {
				t.Errorf("failed ParseMsg returned %d, %+v", seq, m)
			}
		})
	}
}

func TestAppendMsgErrors(t *testing.T) {
	long := strings.Repeat("x", MaxString+1)
	badPeer := func(f func(*Member)) Msg {
		p := []Member{peer4, peer6}
		f(&p[1])
		return &Proxies{Peers: p}
	}
	badMember := func(f func(*Member)) Msg {
		m := member4
		f(&m)
		return &MemberRecord{Member: m}
	}
	jap := func(a string, targets, weight int) Msg {
		var addr netip.Addr
		if a != "" {
			addr = netip.MustParseAddr(a)
		}
		return &ResolveReply{Group: g4, JAPs: []router.JAP{{Addr: addr, Targets: targets, Weight: weight}}}
	}
	for _, tc := range []struct {
		name string
		m    Msg
		want string
	}{
		{"nil", nil, "pias message: cannot encode a nil message"},
		{"zero group", &Resolve{}, "pias message: cannot encode resolve: group: invalid address"},
		{"zoned group", &Leave{Group: router.Group{Addr: netip.MustParseAddr("fe80::1%eth0"), Port: 1, Proto: router.ProtoUDP}}, "has a zone"},
		{"mapped group", &NoTarget{Group: router.Group{Addr: netip.MustParseAddr("::ffff:100.65.0.1"), Port: 80, Proto: router.ProtoTCP}}, "IPv4-mapped"},
		{"group port 0", &Keepalive{Group: router.Group{Addr: g4.Addr, Proto: router.ProtoTCP}}, "port 0 is not a service port"},
		{"group proto 4", &JoinAck{Group: router.Group{Addr: g4.Addr, Port: 1, Proto: 4}}, "protocol 4"},
		{"join long name", &Join{Group: g4, Name: long, Weight: 1}, "pias message: cannot encode join for 100.65.0.1:80/tcp: name: 256 bytes long, at most 255 fit"},
		{"join name not utf-8", &Join{Group: g4, Name: "\xff", Weight: 1}, "join for 100.65.0.1:80/tcp: name: not UTF-8"},
		{"join weight 0", &Join{Group: g4}, "join for 100.65.0.1:80/tcp: weight 0: want 1..1000"},
		{"join weight 1001", &Join{Group: g4, Weight: MaxWeight + 1}, "weight 1001: want 1..1000"},
		{"join select 4", &Join{Group: g4, Weight: 1, Policy: router.Policy{Select: 4}}, "unknown select(4)"},
		{"join replicate 17", &Join{Group: g4, Weight: 1, Policy: router.Policy{Replicate: 17}}, "replicate 17: want 0..16"},
		{"join negative keepalive", &Join{Group: g4, Weight: 1, Keepalive: -time.Millisecond}, "join for 100.65.0.1:80/tcp: keepalive -1ms out of range [0, 1193h2m47.295s]"},
		{"join keepalive too long", &Join{Group: g4, Weight: 1, Keepalive: (math.MaxUint32 + 1) * time.Millisecond}, "keepalive 1193h2m47.296s out of range"},
		{"ack status 3", &JoinAck{Group: g4, Status: statusEnd}, "join-ack for 100.65.0.1:80/tcp: unknown status(3)"},
		{"ack long reason", &KeepaliveAck{Group: g4, Status: StatusRefused, Reason: long}, "reason: 256 bytes"},
		{"register long JAP", &Register{Group: g4, JAP: long}, "register for 100.65.0.1:80/tcp: JAP name: 256 bytes"},
		{"register negative ttl", &Register{Group: g4, TTL: -time.Nanosecond}, "ttl -1ns out of range"},
		{"register scope 2", &Register{Group: g4, Policy: router.Policy{Scope: 2}}, "unknown scope(2)"},
		{"reply ttl too long", &ResolveReply{Group: g4, TTL: (math.MaxUint32 + 1) * time.Millisecond}, "ttl 1193h2m47.296s out of range"},
		{"reply 65 JAPs", &ResolveReply{Group: g4, JAPs: manyJAPs(MaxJAPs + 1)}, "65 JAPs, at most 64 fit"},
		{"reply JAP zero address", jap("", 1, 1), "JAP 0: invalid address"},
		{"reply JAP mapped", jap("::ffff:100.64.0.1", 1, 1), "JAP 0: address ::ffff:100.64.0.1 is IPv4-mapped IPv6"},
		{"reply JAP negative", jap("100.64.0.1", -1, 1), "JAP 100.64.0.1: target count -1 out of range"},
		{"reply JAP too many targets", jap("100.64.0.1", math.MaxUint32+1, 1), "target count 4294967296 out of range"},
		{"reply JAP negative weight", jap("100.64.0.1", 1, -1), "weight -1 out of range"},
		{"reply select 255", &ResolveReply{Group: g4, Policy: router.Policy{Select: 255}}, "unknown select(255)"},
		{"moved none", &Moved{}, "moved: 0 targets: want 1..16"},
		{"news none", &News{}, "news: 0 items: want 1..32"},
		{"news too many", &News{Items: manyNews(MaxNews + 1)}, "news: 33 items: want 1..32"},
		{"news long name", &News{Items: []NewsItem{{Name: "p1"}, {Name: long}}}, "news: item 1: name: 256 bytes"},
		{"moved too many", &Moved{Targets: manyMoved(MaxMoved + 1)}, "moved: 17 targets: want 1..16"},
		{"moved zero target", &Moved{Targets: []MovedTarget{{Group: g4}}}, "moved: target 0: target: invalid address"},
		{"moved mapped target", &Moved{Targets: []MovedTarget{{Group: g4, Target: netip.MustParseAddr("::ffff:100.64.1.1")}}}, "target: address ::ffff:100.64.1.1 is IPv4-mapped IPv6"},
		{"moved long name", &Moved{Targets: []MovedTarget{{Group: g4, Name: long, Target: g4.Addr}}}, "name: 256 bytes"},
		{"policy replicate -1", &GroupPolicy{Group: g4, Policy: router.Policy{Replicate: -1}}, "replicate -1"},
		{"probe long from", &Probe{From: long}, "pias message: cannot encode probe: from: 256 bytes long, at most 255 fit"},
		{"probe-ack from not utf-8", &ProbeAck{From: "\xc3"}, "cannot encode probe-ack: from: not UTF-8"},
		{"probe-req long suspect", &ProbeReq{Suspect: long}, "cannot encode probe-req: suspect: 256 bytes"},
		{"fail long name", &Fail{Name: long}, "cannot encode fail: name: 256 bytes"},
		{"alive long name", &Alive{Name: long}, "cannot encode alive: name: 256 bytes"},
		{"digest long from", &Digest{From: long}, "cannot encode digest: from: 256 bytes"},
		{"admits-req long from", &AdmitsReq{From: long}, "cannot encode admits-req: from: 256 bytes"},
		{"member long name", badMember(func(m *Member) { m.Name = long }), "cannot encode member: name: 256 bytes"},
		{"member long cluster", badMember(func(m *Member) { m.Cluster = long }), "cannot encode member: cluster: 256 bytes"},
		{"member zero address", badMember(func(m *Member) { m.Addr = netip.Addr{} }), "member address invalid IP is not IPv4"},
		{"member IPv6 address", badMember(func(m *Member) { m.Addr = netip.MustParseAddr("fd64::4") }), "member address fd64::4 is not IPv4"},
		{"member IPv4 as IPv6 address", badMember(func(m *Member) { m.Addr6 = netip.MustParseAddr("100.64.0.5") }), "member IPv6 address 100.64.0.5 is not plain IPv6"},
		{"member zoned IPv6 address", badMember(func(m *Member) { m.Addr6 = netip.MustParseAddr("fe80::5%eth0") }), "not plain IPv6"},
		{"member endpoint port 0", badMember(func(m *Member) { m.Endpoint = netip.MustParseAddrPort("198.18.0.4:0") }), "endpoint 198.18.0.4:0 is not IP:PORT"},
		{"member mapped endpoint", badMember(func(m *Member) { m.Endpoint = netip.MustParseAddrPort("[::ffff:198.18.0.4]:1") }), "is not IP:PORT"},
		{"admits parts 0", &Admits{From: "p"}, "cannot encode admits: 0 parts, want at least 1"},
		{"admits part 255 of 255", &Admits{Part: 255, Parts: 255}, "part 255 of 255 parts"},
		{"admits 33 keys", &Admits{Parts: 1, Keys: manyKeys(MaxKeys + 1)}, "33 keys, at most 32 fit"},
		{"admits 256 keys", &Admits{Parts: 1, Keys: manyKeys(256)}, "256 keys, at most 32 fit"},
		{"proxies 17 peers", &Proxies{Peers: manyPeers(MaxPeers+1, false)}, "cannot encode proxies: 17 peers, at most 16 fit"},
		{"proxies peer empty name", badPeer(func(m *Member) { m.Name = "" }), "cannot encode proxies: peer 1: empty name"},
		{"proxies peer long name", badPeer(func(m *Member) { m.Name = long }), "peer 1: name: 256 bytes"},
		{"proxies peer long cluster", badPeer(func(m *Member) { m.Cluster = long }), `peer 1 ("p7"): cluster: 256 bytes`},
		{"proxies peer zero endpoint", badPeer(func(m *Member) { m.Endpoint = netip.AddrPort{} }), `peer 1 ("p7"): endpoint invalid AddrPort is not IP:PORT`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			buf := []byte("keep")
			b, err := AppendMsg(buf, 1, tc.m)
			if err == nil {
				t.Fatalf("AppendMsg(%+v) succeeded: %x", tc.m, b)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "pias message: cannot encode ") || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q is not one line that starts with the prefix", err)
			}
			if string(b) != "keep" || cap(b) != cap(buf) {
				t.Errorf("failed AppendMsg returned %q, want the buffer unchanged", b)
			}
		})
	}
}

func TestMsgTypes(t *testing.T) {
	for ty := TypeJoin; ty < typeEnd; ty++ {
		if decoders[ty] == nil {
			t.Errorf("%v has no decoder", ty)
			continue
		}
		if m, err := decoders[ty](nil); m != nil || err == nil {
			t.Errorf("the decoder of %v accepts an empty body: %T, %v", ty, m, err)
		}
	}
	for _, tc := range msgCases {
		if !strings.HasPrefix(tc.name, tc.m.Type().String()) {
			t.Errorf("%T.Type() is %v, but its case is called %q", tc.m, tc.m.Type(), tc.name)
		}
	}
}

func TestMsgAllocs(t *testing.T) {
	buf := make([]byte, 0, MaxLen)
	for _, tc := range msgCases {
		if n := testing.AllocsPerRun(100, func() {
			if _, err := AppendMsg(buf, tc.seq, tc.m); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("%s: AppendMsg into a large enough buffer: %v allocations, want 0", tc.name, n)
		}
	}
	// ParseMsg allocates the message, and what it holds: strings, slices.
	for _, tc := range []struct {
		name string
		want float64
	}{
		{"keepalive", 1},
		{"resolve-reply-none", 1},
		{"resolve-reply", 2},
		{"join", 2},
		{"proxies-two", 1 + 1 + 2 + 1}, // names, and one cluster not empty
		{"admits-one", 3},
	} {
		c := msgCaseNamed(tc.name)
		b, err := AppendMsg(nil, c.seq, c.m)
		if err != nil {
			t.Fatal(err)
		}
		if n := testing.AllocsPerRun(100, func() {
			if _, _, err := ParseMsg(b); err != nil {
				t.Fatal(err)
			}
		}); n != tc.want {
			t.Errorf("ParseMsg(%s): %v allocations, want %v", tc.name, n, tc.want)
		}
	}
}

// corpusValue reads one value of a "go test fuzz v1" file.
func corpusValue(t *testing.T, line string) any {
	t.Helper()
	kind, arg, ok := strings.Cut(line, "(")
	arg, ok2 := strings.CutSuffix(arg, ")")
	if !ok || !ok2 {
		t.Fatalf("corpus line %q", line)
	}
	switch kind {
	case "[]byte":
		s, err := strconv.Unquote(arg)
		if err != nil {
			t.Fatalf("corpus line %q: %v", line, err)
		}
		return []byte(s)
	case "byte":
		r, _, tail, err := strconv.UnquoteChar(strings.Trim(arg, "'"), '\'')
		if err != nil || tail != "" || r > 255 {
			t.Fatalf("corpus line %q: %v", line, err)
		}
		return byte(r)
	case "uint32":
		v, err := strconv.ParseUint(arg, 0, 32)
		if err != nil {
			t.Fatalf("corpus line %q: %v", line, err)
		}
		return uint32(v)
	}
	t.Fatalf("corpus line %q: unknown type", line)
	return nil
}

// readCorpus returns the inputs of the seed corpus of a fuzz test, by file.
func readCorpus(t *testing.T, fuzz string) map[string][]any {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", fuzz)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]any{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if lines[0] != "go test fuzz v1" {
			t.Fatalf("%s: not a corpus file", e.Name())
		}
		for _, l := range lines[1:] {
			out[e.Name()] = append(out[e.Name()], corpusValue(t, l))
		}
	}
	return out
}

// TestMsgFuzzCorpus checks the committed seeds: those called valid-* (the
// seeds of v1, converted) and msg-* (one of each round trip case) parse,
// the others (truncated, …) do not, and every type has a valid seed.
// With -update-corpus it first writes the msg-* seeds of both corpora.
func TestMsgFuzzCorpus(t *testing.T) {
	if *updateCorpus {
		for _, tc := range msgCases {
			b, err := AppendMsg(nil, tc.seq, tc.m)
			if err != nil {
				t.Fatal(err)
			}
			body := fmt.Sprintf("go test fuzz v1\nbyte(%q)\nuint32(%d)\n[]byte(%q)\n", b[3], tc.seq, b[HeaderLen:])
			for dir, text := range map[string]string{"FuzzParseMsg": corpusFile(b), "FuzzMsgBody": body} {
				if err := os.WriteFile(filepath.Join("testdata", "fuzz", dir, "msg-"+tc.name), []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	check := func(name string, b []byte, types map[Type]bool) {
		t.Helper()
		_, m, err := ParseMsg(b)
		valid := strings.HasPrefix(name, "valid-") || strings.HasPrefix(name, "msg-")
		if valid != (err == nil) {
			t.Errorf("%s: ParseMsg(%x): %v", name, b, err)
		} else if valid {
			types[m.Type()] = true
		}
	}
	for fuzz, n := range map[string]int{"FuzzParseMsg": 1, "FuzzMsgBody": 3} {
		types := map[Type]bool{}
		seeds := readCorpus(t, fuzz)
		for name, vs := range seeds {
			if len(vs) != n {
				t.Errorf("%s/%s: %d values, want %d", fuzz, name, len(vs), n)
				continue
			}
			if n == 1 {
				check(name, vs[0].([]byte), types)
				continue
			}
			typ, seq, body := vs[0].(byte), vs[1].(uint32), vs[2].([]byte)
			check(name, append(msgHeader(typ, seq), body...), types)
		}
		for ty := TypeJoin; ty < typeEnd; ty++ {
			if !types[ty] {
				t.Errorf("%s: no valid seed of %v", fuzz, ty)
			}
		}
		if len(seeds) < len(msgCases) {
			t.Errorf("%s: %d seeds, fewer than the %d round trip cases", fuzz, len(seeds), len(msgCases))
		}
	}
	for _, tc := range msgCases {
		b, err := AppendMsg(nil, tc.seq, tc.m)
		if err != nil {
			t.Fatal(err)
		}
		if got := readCorpus(t, "FuzzParseMsg")["msg-"+tc.name]; len(got) != 1 || !bytes.Equal(got[0].([]byte), b) {
			t.Errorf("FuzzParseMsg/msg-%s is not the encoding of its round trip case", tc.name)
		}
	}
}

// fuzzParsed checks that b, which ParseMsg accepted as seq and m, is
// canonical.
func fuzzParsed(t *testing.T, b []byte, seq uint32, m Msg) {
	out, err := AppendMsg(nil, seq, m)
	if err != nil {
		t.Fatalf("decoded %T %+v but cannot encode it: %v", m, m, err)
	}
	if !bytes.Equal(out, b) {
		t.Fatalf("not canonical: decoded %T %+v from\n%x\nre-encoded as\n%x", m, m, b, out)
	}
	seq2, m2, err := ParseMsg(out)
	if err != nil || seq2 != seq || !reflect.DeepEqual(m, m2) {
		t.Fatalf("re-decoding differs: %d %+v, %v\nwant %d %+v", seq2, m2, err, seq, m)
	}
}

func FuzzParseMsg(f *testing.F) {
	for _, tc := range msgCases {
		b, err := AppendMsg(nil, tc.seq, tc.m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		seq, m, err := ParseMsg(b)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
			return
		}
		fuzzParsed(t, b, seq, m)
	})
}

// msgHeader is a valid header: a typ that is no type is made one.
func msgHeader(typ byte, seq uint32) []byte {
	t := Type(typ)
	if !t.valid() {
		t = TypeJoin + Type(typ)%(typeEnd-TypeJoin)
	}
	return binary.BigEndian.AppendUint32([]byte{magic0, magic1, Version, byte(t)}, seq)
}

// FuzzMsgBody fuzzes the body decoder of every type.
func FuzzMsgBody(f *testing.F) {
	for _, tc := range msgCases {
		b, err := AppendMsg(nil, tc.seq, tc.m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(byte(tc.m.Type()), tc.seq, b[HeaderLen:])
	}
	f.Fuzz(func(t *testing.T, typ byte, seq uint32, body []byte) {
		b := append(msgHeader(typ, seq), body...)
		gotSeq, m, err := ParseMsg(b)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
			if strings.HasPrefix(err.Error(), "pias message: unknown") || strings.Contains(err.Error(), "header") {
				t.Fatalf("a valid header refused: %v", err)
			}
			return
		}
		if gotSeq != seq {
			t.Fatalf("seq %d came back as %d", seq, gotSeq)
		}
		fuzzParsed(t, b, seq, m)
	})
}

func BenchmarkAppendMsg(b *testing.B) {
	tc := msgCaseNamed("member6-sync-dead")
	buf := make([]byte, 0, MaxLen)
	for b.Loop() {
		if _, err := AppendMsg(buf, tc.seq, tc.m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseMsg(b *testing.B) {
	for _, name := range []string{"keepalive", "resolve-reply-max"} {
		tc := msgCaseNamed(name)
		enc, err := AppendMsg(nil, tc.seq, tc.m)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if _, _, err := ParseMsg(enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestPackNews: news for one member goes in as few News as hold it, each
// within MaxNews items and a tunnel packet, in order.
func TestPackNews(t *testing.T) {
	long := strings.Repeat("p", MaxString)
	for _, tc := range []struct {
		items []NewsItem
		want  []int // items per News
	}{
		{manyNews(1), []int{1}},
		{manyNews(100), []int{32, 32, 32, 4}},
		{slices.Repeat([]NewsItem{{Name: long, Dead: true}}, 10), []int{4, 4, 2}},
	} {
		var got []int
		var back []NewsItem
		for _, m := range packNews(tc.items) {
			b, err := AppendMsg(nil, 0, m)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > maxPackedPayload {
				t.Errorf("a News of %d items is %d bytes, more than %d", len(m.Items), len(b), maxPackedPayload)
			}
			got = append(got, len(m.Items))
			back = append(back, m.Items...)
		}
		if !slices.Equal(got, tc.want) || !slices.Equal(back, tc.items) {
			t.Errorf("%d items packed as %v, want %v, in order", len(tc.items), got, tc.want)
		}
	}
}

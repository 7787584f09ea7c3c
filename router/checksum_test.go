package router

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"
)

func TestSumMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		b := make([]byte, rng.IntN(100))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if got, want := checksum(0, b), refChecksum(b); got != want && len(b) > 0 {
			t.Fatalf("checksum of % x: %04x, want %04x", b, got, want)
		}
	}
}

// TestIncrementalUpdateRandom changes random aligned words of random data
// and checks the RFC 1624 update against a full recomputation.
func TestIncrementalUpdateRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 20000 {
		b := make([]byte, 2*(2+rng.IntN(40)))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if rng.IntN(8) == 0 { // plenty of zeros and ones: the edge cases of ones' complement
			for i := range b {
				b[i] = []byte{0, 0xff}[rng.IntN(2)]
			}
		}
		binary.BigEndian.PutUint16(b, 0)
		binary.BigEndian.PutUint16(b, refChecksum(b))
		n := []int{2, 4, 16}[rng.IntN(3)]
		off := 2 + 2*rng.IntN((len(b)-2)/2)
		if off+n > len(b) {
			n = len(b) - off
		}
		old := append([]byte(nil), b[off:off+n]...)
		for i := off; i < off+n; i++ {
			b[i] = byte(rng.Uint32())
		}
		adjustAt(b, 0, delta(old, b[off:off+n]))
		got := binary.BigEndian.Uint16(b)
		binary.BigEndian.PutUint16(b, 0)
		want := refChecksum(b)
		if got != want && !(allZero(b)) {
			t.Fatalf("incremental %04x, full %04x (% x)", got, want, b)
		}
	}
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

func randAddr(rng *rand.Rand, v6 bool) netip.Addr {
	if v6 {
		var a [16]byte
		for i := range a {
			a[i] = byte(rng.Uint32())
		}
		a[0] = 0xfd // never v4-mapped
		return netip.AddrFrom16(a)
	}
	return netip.AddrFrom4([4]byte{byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())})
}

func randPort(rng *rand.Rand) uint16 {
	if rng.IntN(10) == 0 {
		return []uint16{0, 1, 0xffff, 0xfffe}[rng.IntN(4)]
	}
	return uint16(rng.Uint32())
}

// TestNATChecksumsRandom NATs random packets forth and back and checks each
// checksum field against a full recomputation, byte for byte.
func TestNATChecksumsRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range 20000 {
		v6 := rng.IntN(2) == 1
		proto := []uint8{ProtoTCP, ProtoUDP}[rng.IntN(2)]
		payload := make([]byte, rng.IntN(64))
		for j := range payload {
			payload[j] = byte(rng.Uint32())
		}
		c := netip.AddrPortFrom(randAddr(rng, v6), randPort(rng))
		a := netip.AddrPortFrom(randAddr(rng, v6), randPort(rng))
		tg := netip.AddrPortFrom(randAddr(rng, v6), randPort(rng))
		cpOut := c.Port()
		if rng.IntN(2) == 0 {
			cpOut = randPort(rng)
		}
		orig := pkt{src: c, dst: a, proto: proto, flags: tcpACK, payload: payload, udpZero: !v6 && proto == ProtoUDP && rng.IntN(4) == 0}.build()
		b := append([]byte(nil), orig...)
		var p parsed
		if r := p.parse(b, 0, len(b)); r != DropNone {
			t.Fatalf("parse: %v", r)
		}
		f := &flow{key: p.flowKey}
		f.rkey = flowKey{src: key16(tg.Addr()), dst: f.key.src, sport: tg.Port(), dport: cpOut, proto: proto, fam: p.fam}
		f.setDeltas()

		natForward(b, &p, f)
		want := pkt{src: netip.AddrPortFrom(c.Addr(), cpOut), dst: tg, proto: proto, flags: tcpACK, payload: payload,
			udpZero: orig[len(orig)-len(payload)-2] == 0 && orig[len(orig)-len(payload)-1] == 0 && !v6 && proto == ProtoUDP}.build()
		if string(b) != string(want) {
			t.Fatalf("case %d: forward NAT\n got % x\nwant % x", i, b, want)
		}
		// The reply: T:tp → C:cpOut becomes A:ap → C:cp.
		zero := !v6 && proto == ProtoUDP && rng.IntN(4) == 0
		b = pkt{src: tg, dst: netip.AddrPortFrom(c.Addr(), cpOut), proto: proto, flags: tcpACK, payload: payload, udpZero: zero}.build()
		if r := p.parse(b, 0, len(b)); r != DropNone {
			t.Fatalf("parse: %v", r)
		}
		natReverse(b, &p, f)
		want = pkt{src: a, dst: c, proto: proto, flags: tcpACK, payload: payload, udpZero: zero}.build()
		if string(b) != string(want) {
			t.Fatalf("case %d: reverse NAT\n got % x\nwant % x", i, b, want)
		}
	}
}

// TestMSSClampRandom clamps random SYNs and checks the checksum.
func TestMSSClampRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for range 5000 {
		v6 := rng.IntN(2) == 1
		mss := uint16(rng.Uint32())
		b := pkt{src: netip.AddrPortFrom(randAddr(rng, v6), 1), dst: netip.AddrPortFrom(randAddr(rng, v6), 2),
			proto: ProtoTCP, flags: tcpSYN, mss: mss, nopMSS: rng.IntN(2) == 0, payload: make([]byte, rng.IntN(5))}.build()
		var p parsed
		if r := p.parse(b, 0, len(b)); r != DropNone {
			t.Fatal(r)
		}
		max := uint16(500 + rng.IntN(1000))
		clampMSS(b, &p, max)
		d := decode(t, b)
		if want := min(mss, max); d.mss != want {
			t.Fatalf("MSS %d, want %d", d.mss, want)
		}
	}
}

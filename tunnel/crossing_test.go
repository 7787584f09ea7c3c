package tunnel

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
)

// TestCrossedHandshakesBreaksTheTie: two devices with 400 ms of delay each
// way add each other at the same moment, so their first initiations cross,
// and so do wireguard-go's retries 5 s later (each side adds at most a
// third of a second of jitter, too little to get out of step): without a
// tie-break there is no session for at least 10 s. With CrossedHandshakes
// on the side with the greater key, the session is up within a few
// seconds, and a ping crosses it.
func TestCrossedHandshakesBreaksTheTie(t *testing.T) {
	ka, kb := newKeypair(t), newKeypair(t)
	if bytes.Compare(ka.pub[:], kb.pub[:]) < 0 {
		ka, kb = kb, ka // a breaks the tie
	}
	a, b := netstackHost(t, "100.64.3.1"), netstackHost(t, "100.64.3.2")
	ba, bb := NewLossyBind(conn.NewStdNetBind()), NewLossyBind(conn.NewStdNetBind())
	da, db := startBare(t, a, ba, ka), startBare(t, b, bb, kb)
	epA, epB := loopback(t, da), loopback(t, db)
	ba.SetRule(epB, Rule{Delay: 400 * time.Millisecond})
	bb.SetRule(epA, Rule{Delay: 400 * time.Millisecond})

	crossed := NewCrossedHandshakes(da, ka.pub)
	other := NewCrossedHandshakes(db, kb.pub) // the lesser key: breaks no tie
	pa := Peer{PublicKey: kb.pub, Endpoint: epB, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.3.2/32")}, Keepalive: 25 * time.Second}
	pb := Peer{PublicKey: ka.pub, Endpoint: epA, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.3.1/32")}, Keepalive: 25 * time.Second}
	// A keepalive set on a peer of a running device is sent at once: both
	// initiate within a millisecond, well inside the delay.
	now := time.Now()
	if err := da.AddPeer(pa); err != nil {
		t.Fatal(err)
	}
	if err := db.AddPeer(pb); err != nil {
		t.Fatal(err)
	}
	crossed.Added(pa, now)
	other.Added(pb, now)
	if other.Watched() != 1 || crossed.Watched() != 1 {
		t.Fatalf("watched: greater key %d, lesser key %d; want 1 each", crossed.Watched(), other.Watched())
	}

	resets := 0
	deadline := time.Now().Add(9 * time.Second)
	for {
		n, err := crossed.Check(time.Now())
		if err != nil {
			t.Fatal(err)
		}
		resets += n
		if n, err := other.Check(time.Now()); err != nil || n != 0 {
			t.Fatalf("the lesser key reset %d times (%v): it must leave the tie to the other", n, err)
		}
		at, err := da.LastHandshake(kb.pub)
		if err != nil {
			t.Fatal(err)
		}
		bt, err := db.LastHandshake(ka.pub)
		if err != nil {
			t.Fatal(err)
		}
		if !at.IsZero() && !bt.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no session 9 s after crossed initiations (%d resets)", resets)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if resets == 0 {
		t.Fatal("the handshakes did not cross: the test proves nothing")
	}
	if _, err := ping(a, "100.64.3.1", "100.64.3.2", 1, 5*time.Second); err != nil {
		t.Fatalf("ping over the session: %v", err)
	}
	if n, err := crossed.Check(time.Now()); err != nil || n != 0 {
		t.Fatalf("a peer with a working session was reset (%d, %v)", n, err)
	}
}

// poisonBind drops, once poisoned, every transport data packet it sends
// with the receiver index of the first one after: a session whose key pair
// the other side has replaced, as crossed handshakes can leave one.
type poisonBind struct {
	conn.Bind
	armed  atomic.Bool
	index  atomic.Uint32 // 0: none yet
	bitten atomic.Uint64
}

func (b *poisonBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	keep := bufs[:0:0]
	for _, p := range bufs {
		if b.armed.Load() && len(p) >= 16 && p[0] == 4 {
			idx := binary.LittleEndian.Uint32(p[4:8])
			b.index.CompareAndSwap(0, idx)
			if idx == b.index.Load() {
				b.bitten.Add(1)
				continue
			}
		}
		keep = append(keep, p)
	}
	if len(keep) == 0 {
		return nil
	}
	return b.Bind.Send(keep, ep)
}

// TestDeafSessionIsMended: A keeps sending on a session B cannot read. B
// hears nothing from A while it sends: it resets A, the keepalive starts a
// new handshake at once, and A's answers arrive again within seconds, not
// after WireGuard's own 15 s.
func TestDeafSessionIsMended(t *testing.T) {
	ka, kb := newKeypair(t), newKeypair(t)
	a, b := netstackHost(t, "100.64.3.1"), netstackHost(t, "100.64.3.2")
	pa := &poisonBind{Bind: conn.NewStdNetBind()}
	da, db := startBare(t, a, pa, ka), startBare(t, b, conn.NewStdNetBind(), kb)
	epA, epB := loopback(t, da), loopback(t, db)
	toB := Peer{PublicKey: kb.pub, Endpoint: epB, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.3.2/32")}}
	toA := Peer{PublicKey: ka.pub, Endpoint: epA, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.3.1/32")}}
	if err := da.AddPeer(toB); err != nil {
		t.Fatal(err)
	}
	if err := db.AddPeer(toA); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	wa, wb := NewCrossedHandshakes(da, ka.pub), NewCrossedHandshakes(db, kb.pub)
	wa.Added(toB, now)
	wb.Added(toA, now)
	if _, err := ping(b, "100.64.3.2", "100.64.3.1", 1, 5*time.Second); err != nil {
		t.Fatalf("no session to start with: %v", err)
	}
	pa.armed.Store(true)
	resets := [2]int{}
	start := time.Now()
	for seq := 2; ; seq++ {
		for i, w := range []*CrossedHandshakes{wa, wb} {
			n, err := w.Check(time.Now())
			if err != nil {
				t.Fatal(err)
			}
			resets[i] += n
		}
		if _, err := ping(b, "100.64.3.2", "100.64.3.1", seq, 200*time.Millisecond); err == nil && pa.bitten.Load() > 0 {
			break
		}
		if time.Since(start) > 6*time.Second {
			t.Fatalf("B heard nothing from A for 6 s (%d of A's packets lost; resets A %d, B %d)", pa.bitten.Load(), resets[0], resets[1])
		}
	}
	if resets[1] == 0 {
		t.Fatal("B was not reset, yet hears A again: the test proves nothing")
	}
	t.Logf("A's answers reached B again %v after the session broke (resets: A %d, B %d)", time.Since(start).Round(time.Millisecond), resets[0], resets[1])
}

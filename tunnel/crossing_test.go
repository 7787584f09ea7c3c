package tunnel

import (
	"bytes"
	"net/netip"
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
	other := NewCrossedHandshakes(db, kb.pub) // the lesser key: watches nothing
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
	if len(other.peers) != 0 || len(crossed.peers) != 1 {
		t.Fatalf("watched: greater key %d, lesser key %d; want 1 and 0", len(crossed.peers), len(other.peers))
	}

	resets := 0
	deadline := time.Now().Add(9 * time.Second)
	for {
		n, err := crossed.Check(time.Now())
		if err != nil {
			t.Fatal(err)
		}
		resets += n
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
	if _, err := crossed.Check(time.Now()); err != nil {
		t.Fatal(err)
	}
	if len(crossed.peers) != 0 {
		t.Fatal("a peer with a session is still watched")
	}
}

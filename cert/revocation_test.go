package cert

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestRevocationList(t *testing.T) {
	tc := newTestCA(t, "home", nil, nil)
	other := newTestCA(t, "other", nil, nil)
	pool, _ := NewPool(tc.ca)
	a, b := tc.sign(t, targetCert(t)), tc.sign(t, proxyCert(t))

	l1, err := NewRevocationList(tc.ca, tc.key, 1, t0, nil, []Fingerprint{a.Fingerprint()})
	if err != nil {
		t.Fatal(err)
	}
	l2, err := NewRevocationList(tc.ca, tc.key, 2, t0.Add(time.Hour), l1, []Fingerprint{b.Fingerprint(), a.Fingerprint()})
	if err != nil {
		t.Fatal(err)
	}
	if len(l2.Revoked) != 2 || !l2.IsRevoked(a.Fingerprint()) || !l2.IsRevoked(b.Fingerprint()) || l1.IsRevoked(b.Fingerprint()) {
		t.Fatalf("lists: %v, %v", l1.Revoked, l2.Revoked)
	}
	if (*RevocationList)(nil).IsRevoked(a.Fingerprint()) {
		t.Fatal("a nil list revokes")
	}
	if _, err := NewRevocationList(tc.ca, tc.key, 2, t0, l2, nil); err == nil {
		t.Fatal("a list with the held serial was made")
	}
	if _, err := NewRevocationList(tc.ca, other.key, 3, t0, l2, nil); err == nil {
		t.Fatal("a list was signed with another key")
	}

	// Round trip, binary and armored.
	raw, err := l2.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParseRevocationList(raw)
	if err != nil {
		t.Fatal(err)
	}
	if b2, _ := p.Marshal(); !bytes.Equal(b2, raw) {
		t.Fatal("list does not re-encode to the same bytes")
	}
	text, _ := l2.MarshalPEM()
	if _, err := ParseRevocationListPEM(text); err != nil {
		t.Fatal(err)
	}
	for n := range len(raw) {
		if _, err := ParseRevocationList(raw[:n]); err == nil {
			t.Fatalf("a %d-byte prefix parsed", n)
		}
	}

	// Newer and Update.
	if !l1.Newer(nil) || !l2.Newer(l1) || l1.Newer(l2) || l2.Newer(l2) {
		t.Fatal("Newer")
	}
	held, err := pool.Update(nil, l1)
	if err != nil || held != l1 {
		t.Fatalf("first list: %v", err)
	}
	if held, err = pool.Update(held, l2); err != nil || held != l2 {
		t.Fatalf("newer list: %v", err)
	}
	if held, err = pool.Update(held, l1); !errors.Is(err, ErrOlderList) || held != l2 {
		t.Fatalf("older list: %v", err)
	}
	if held, err = pool.Update(held, l2); !errors.Is(err, ErrOlderList) || held != l2 {
		t.Fatalf("the same list again: %v", err)
	}

	// Signed by another CA: unknown issuer. Signed by another key but
	// claiming our CA: a bad signature. Either way the held list stays.
	o3, err := NewRevocationList(other.ca, other.key, 3, t0, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if held, err = pool.Update(held, o3); !errors.Is(err, ErrUnknownIssuer) || held != l2 {
		t.Fatalf("another CA's list: %v", err)
	}
	forged := *o3
	forged.Issuer = tc.ca.Fingerprint()
	if held, err = pool.Update(held, &forged); !errors.Is(err, ErrBadSignature) || held != l2 {
		t.Fatalf("a list forged with another key: %v", err)
	}
	tampered := *l2
	tampered.Serial = 99
	if held, err = pool.Update(held, &tampered); !errors.Is(err, ErrBadSignature) || held != l2 {
		t.Fatalf("a list with a raised serial: %v", err)
	}
	tampered = *l2
	tampered.Serial, tampered.Revoked = 3, l1.Revoked
	if _, err = pool.Update(held, &tampered); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("a list with an entry dropped: %v", err)
	}

	// A second CA in the pool cannot replace the first's list.
	pool2, _ := NewPool(tc.ca, other.ca)
	if held, err = pool2.Update(l2, o3); !errors.Is(err, ErrUnknownIssuer) || held != l2 {
		t.Fatalf("another trusted CA's list over ours: %v", err)
	}
}

func TestRevocationListLimits(t *testing.T) {
	tc := newTestCA(t, "home", nil, nil)
	fps := make([]Fingerprint, MaxRevoked+1)
	for i := range fps {
		fps[i] = Fingerprint{byte(i >> 8), byte(i)}
	}
	if _, err := NewRevocationList(tc.ca, tc.key, 1, t0, nil, fps); err == nil || !strings.Contains(err.Error(), "at most 2000") {
		t.Fatalf("too many: %v", err)
	}
	full, err := NewRevocationList(tc.ca, tc.key, 1, t0, nil, fps[:MaxRevoked])
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := full.Marshal()
	if len(raw) > MaxRevocationListSize {
		t.Fatalf("a full list is %d bytes, above the cap %d", len(raw), MaxRevocationListSize)
	}
	text, _ := full.MarshalPEM()
	if len(text) > MaxArmoredSize {
		t.Fatalf("a full armored list is %d bytes, above the cap %d", len(text), MaxArmoredSize)
	}
	if _, err := ParseRevocationListPEM(text); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseRevocationList(make([]byte, MaxRevocationListSize+1)); err == nil {
		t.Fatal("oversized list parsed")
	}
	// Unsorted and duplicate entries are not canonical.
	for name, revoked := range map[string][]Fingerprint{
		"unsorted":  {{2}, {1}},
		"duplicate": {{1}, {1}},
	} {
		rl := &RevocationList{Serial: 1, IssuedAt: t0, Revoked: revoked, Signature: make([]byte, 64)}
		if _, err := rl.Marshal(); err == nil {
			t.Errorf("%s: marshalled", name)
		}
		e := encoder{}
		e.u8(Version)
		e.u8(kindRevocationList)
		e.u64(1)
		e.time(t0)
		e.raw(make([]byte, 32))
		e.u16(uint16(len(revoked)))
		for _, f := range revoked {
			e.raw(f[:])
		}
		e.raw(make([]byte, 64))
		if _, err := ParseRevocationList(e.b); err == nil || !strings.Contains(err.Error(), "sorted") {
			t.Errorf("%s: parse error %v", name, err)
		}
	}
}

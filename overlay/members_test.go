package overlay

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var testMeshKey = bytes.Repeat([]byte{7}, 32)

// fuzzNow is the clock of FuzzUnderlay and its seeds: seeds stay fresh.
var fuzzNow = time.UnixMilli(1764000000000)

func helloBody(t testing.TB) []byte {
	b, err := AppendMsg(nil, 0, &MemberRecord{Member: peer6, Incarnation: 7, Sync: true, Dead: true})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestUnderlaySealOpen(t *testing.T) {
	now := fuzzNow
	body := helloBody(t)
	pkt := sealUnderlay(testMeshKey, kindHello, now, body)
	if !bytes.HasPrefix(pkt, []byte(UnderlayMagic)) {
		t.Fatalf("no magic: %x", pkt[:8])
	}
	kind, got, err := openUnderlay(testMeshKey, pkt, now.Add(time.Second))
	if err != nil || kind != kindHello || !bytes.Equal(got, body) {
		t.Fatalf("open: kind %d body %x err %v", kind, got, err)
	}
	w := appendWelcome(nil, "p1", "")
	if wm, err := parseWelcome(w); err != nil || !wm.ok || wm.name != "p1" {
		t.Fatalf("welcome: %+v %v", wm, err)
	}
	if wm, err := parseWelcome(appendWelcome(nil, "p1", "name taken")); err != nil || wm.ok || wm.reason != "name taken" {
		t.Fatalf("refusal: %+v %v", wm, err)
	}

	flip := func(i int) []byte {
		b := bytes.Clone(pkt)
		b[i] ^= 1
		return b
	}
	bad := []struct {
		name string
		pkt  []byte
		key  []byte
		now  time.Time
		want string
	}{
		{"other key", pkt, bytes.Repeat([]byte{8}, 32), now, "bad MAC"},
		{"body bit", flip(underlayHeader + 3), testMeshKey, now, "bad MAC"},
		{"mac bit", flip(len(pkt) - 1), testMeshKey, now, "bad MAC"},
		{"time bit", flip(len(UnderlayMagic) + 8), testMeshKey, now, "bad MAC"},
		{"magic", flip(0), testMeshKey, now, "bad magic"},
		{"stale", pkt, testMeshKey, now.Add(3 * time.Minute), "away from now"},
		{"future", pkt, testMeshKey, now.Add(-3 * time.Minute), "away from now"},
		{"truncated", pkt[:underlayHeader+underlayMAC-1], testMeshKey, now, "bytes"},
		{"unknown kind", sealUnderlay(testMeshKey, 9, now, body), testMeshKey, now, "unknown kind"},
	}
	for _, tc := range bad {
		if _, _, err := openUnderlay(tc.key, tc.pkt, tc.now); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
	for _, w := range [][]byte{{2, 0, 0}, {0, 2, 'p', '1', 0}, {1, 2, 'p', '1', 1, 'x'}, {1, 0, 0, 9}} {
		if _, err := parseWelcome(w); err == nil {
			t.Errorf("welcome %x accepted", w)
		}
	}
}

// FuzzUnderlay feeds arbitrary datagrams to the underlay decoders: they
// must never panic, and what opens must be what was sealed.
func FuzzUnderlay(f *testing.F) {
	for _, b := range underlaySeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		kind, body, err := openUnderlay(testMeshKey, b, fuzzNow)
		if err != nil {
			return
		}
		// What opens was sealed with the key: resealing at its own time
		// gives back the very bytes.
		at := time.UnixMilli(int64(binary.BigEndian.Uint64(b[len(UnderlayMagic)+1:])))
		if got := sealUnderlay(testMeshKey, kind, at, body); !bytes.Equal(got, b) {
			t.Fatalf("%x reseals as %x", b, got)
		}
		switch kind {
		case kindHello:
			_, _, _ = ParseMsg(body)
		case kindWelcome:
			if w, err := parseWelcome(body); err == nil && !bytes.Equal(appendWelcome(nil, w.name, w.reason), body) {
				t.Fatalf("welcome %x re-encodes as %x", body, appendWelcome(nil, w.name, w.reason))
			}
		}
	})
}

func underlaySeeds(t testing.TB) map[string][]byte {
	return map[string][]byte{
		"valid-hello":   sealUnderlay(testMeshKey, kindHello, fuzzNow, helloBody(t)),
		"valid-welcome": sealUnderlay(testMeshKey, kindWelcome, fuzzNow, appendWelcome(nil, "p1", "")),
		"valid-refusal": sealUnderlay(testMeshKey, kindWelcome, fuzzNow, appendWelcome(nil, "p1", "the name p2 belongs to another WireGuard key")),
		"bad-mac":       sealUnderlay(bytes.Repeat([]byte{1}, 32), kindHello, fuzzNow, helloBody(t)),
		"bad-short":     []byte(UnderlayMagic + "\x01"),
	}
}

// TestUnderlayCorpus keeps testdata/fuzz/FuzzUnderlay in step with
// underlaySeeds; go test -run TestUnderlayCorpus -update-corpus rewrites it.
func TestUnderlayCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzUnderlay")
	for name, b := range underlaySeeds(t) {
		path := filepath.Join(dir, name)
		if *updateCorpus {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(corpusFile(b)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != corpusFile(b) {
			t.Errorf("%s missing or stale (run go test -run TestUnderlayCorpus -update-corpus): %v", name, err)
		}
		_, _, err = openUnderlay(testMeshKey, b, fuzzNow)
		if valid := strings.HasPrefix(name, "valid-"); valid != (err == nil) {
			t.Errorf("%s: open: %v", name, err)
		}
	}
}

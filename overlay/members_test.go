package overlay

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

var testMeshKey = bytes.Repeat([]byte{7}, 32)

// fuzzNow is the clock of FuzzUnderlay and its seeds: seeds stay fresh.
var fuzzNow = time.UnixMilli(1764000000000)

func helloBody(t testing.TB) []byte {
	b, err := appendHello(nil, testHello)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var testHello = helloMsg{nonce: 0x0123456789abcdef, seed: "p1", rec: MemberRecord{Member: peer6, Incarnation: 7, Sync: true, Dead: true}}

func TestUnderlaySealOpen(t *testing.T) {
	now := fuzzNow
	body := helloBody(t)
	pkt := sealUnderlay(testMeshKey, kindHello, now, body)
	if !bytes.HasPrefix(pkt, []byte(UnderlayMagic)) {
		t.Fatalf("no magic: %x", pkt[:8])
	}
	u, err := openUnderlay(testMeshKey, pkt, now.Add(time.Second))
	if err != nil || u.kind != kindHello || !bytes.Equal(u.body, body) || u.at != now.UnixMilli() || u.size != len(pkt) {
		t.Fatalf("open: %+v err %v", u, err)
	}
	if h, err := parseHello(u.body); err != nil || !reflect.DeepEqual(h, testHello) {
		t.Fatalf("hello: %+v %v", h, err)
	}
	w := welcomeMsg{nonce: 9, ok: true, name: "p1"}
	if got, err := parseWelcome(appendWelcome(nil, w)); err != nil || got != w {
		t.Fatalf("welcome: %+v %v", got, err)
	}
	w = welcomeMsg{nonce: 9, name: "p1", reason: "name taken"}
	if got, err := parseWelcome(appendWelcome(nil, w)); err != nil || got != w {
		t.Fatalf("refusal: %+v %v", got, err)
	}

	flip := func(i int) []byte {
		b := bytes.Clone(pkt)
		b[i] ^= 1
		return b
	}
	// v1 had no version byte: kind 1 (hello) stood where the version is.
	v1 := func() []byte {
		b := append([]byte(UnderlayMagic), kindHello)
		b = binary.BigEndian.AppendUint64(b, uint64(now.UnixMilli()))
		b = append(b, body...)
		mac := hmac.New(sha256.New, testMeshKey)
		mac.Write(b)
		return mac.Sum(b)
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
		{"time bit", flip(underlayHeader - 1), testMeshKey, now, "bad MAC"},
		{"version bit", flip(len(UnderlayMagic)), testMeshKey, now, "bad MAC"},
		{"magic", flip(0), testMeshKey, now, "bad magic"},
		{"stale", pkt, testMeshKey, now.Add(3 * time.Minute), "away from now"},
		{"future", pkt, testMeshKey, now.Add(-3 * time.Minute), "away from now"},
		{"truncated", pkt[:underlayHeader+underlayMAC-1], testMeshKey, now, "bytes"},
		{"unknown kind", sealUnderlay(testMeshKey, 9, now, body), testMeshKey, now, "unknown kind"},
		{"version 1", v1(), testMeshKey, now, "version 1"},
	}
	for _, tc := range bad {
		if _, err := openUnderlay(tc.key, tc.pkt, tc.now); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
	nonce := []byte{0, 0, 0, 0, 0, 0, 0, 9}
	for _, w := range [][]byte{
		{2, 0, 0},
		append(nonce[:7:7], 1, 0, 0),                        // truncated nonce
		append(slices.Clone(nonce), 2, 0, 0),                // status 2
		append(slices.Clone(nonce), 0, 2, 'p', '1', 0),      // refusal without reason
		append(slices.Clone(nonce), 1, 2, 'p', '1', 1, 'x'), // admission with one
		append(slices.Clone(nonce), 1, 0, 0, 9),             // trailing byte
		append(slices.Clone(nonce), 0, 1, 0xff, 1, 'x'),     // name not UTF-8
	} {
		if _, err := parseWelcome(w); err == nil {
			t.Errorf("welcome %x accepted", w)
		}
	}
	rec := helloBody(t)[8+1+2:]
	for name, h := range map[string][]byte{
		"truncated nonce": {1, 2, 3},
		"no seed":         append(slices.Clone(nonce), append([]byte{0}, rec...)...),
		"seed truncated":  append(slices.Clone(nonce), 9, 'p'),
		"no record":       append(slices.Clone(nonce), 2, 'p', '1'),
		"record trailing": append(helloBody(t), 0),
		"not a record":    append(append(slices.Clone(nonce), 2, 'p', '1'), encode(t, failMsg("p2", 1))...),
		"seq":             append(append(slices.Clone(nonce), 2, 'p', '1'), encode(t, wmsg{5, &testHello.rec})...),
	} {
		if _, err := parseHello(h); err == nil {
			t.Errorf("hello %s (%x) accepted", name, h)
		}
	}
}

// TestWelcomeNoLongerThanHello: a seed's answer, admission or the longest
// refusal, is never longer than the shortest hello that asks for it.
func TestWelcomeNoLongerThanHello(t *testing.T) {
	short := helloMsg{seed: "p", rec: MemberRecord{Member: Member{Name: "n", Addr: netip.MustParseAddr("100.64.0.9"), Cluster: "c",
		Endpoint: netip.MustParseAddrPort("198.18.0.9:1")}}}
	body, err := appendHello(nil, short)
	if err != nil {
		t.Fatal(err)
	}
	hello := sealUnderlay(testMeshKey, kindHello, fuzzNow, body)
	for _, reason := range []string{"", "no cluster", strings.Repeat("é", 200)} {
		w := welcomeMsg{nonce: 1, ok: reason == "", name: "p", reason: reason}
		pkt := sealWelcome(testMeshKey, fuzzNow, w, len(hello))
		if pkt == nil || len(pkt) > len(hello) {
			t.Fatalf("welcome of %d bytes (reason %d bytes) to a hello of %d", len(pkt), len(reason), len(hello))
		}
		u, err := openUnderlay(testMeshKey, pkt, fuzzNow)
		if err != nil {
			t.Fatal(err)
		}
		got, err := parseWelcome(u.body)
		if err != nil || got.ok != w.ok || !strings.HasPrefix(reason, got.reason) || (reason != "" && got.reason == "") {
			t.Fatalf("welcome %+v, %v: want a prefix of %q", got, err, reason)
		}
		t.Logf("hello %d bytes, welcome %d bytes (reason %d of %d bytes)", len(hello), len(pkt), len(got.reason), len(reason))
	}
}

// FuzzUnderlay feeds arbitrary datagrams to the underlay decoders: they
// must never panic, and what opens must be what was sealed.
func FuzzUnderlay(f *testing.F) {
	for _, b := range underlaySeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		u, err := openUnderlay(testMeshKey, b, fuzzNow)
		if err != nil {
			return
		}
		// What opens was sealed with the key: resealing at its own time
		// gives back the very bytes.
		if got := sealUnderlay(testMeshKey, u.kind, time.UnixMilli(u.at), u.body); !bytes.Equal(got, b) {
			t.Fatalf("%x reseals as %x", b, got)
		}
		switch u.kind {
		case kindHello:
			if h, err := parseHello(u.body); err == nil {
				if again, err := appendHello(nil, h); err != nil || !bytes.Equal(again, u.body) {
					t.Fatalf("hello %x re-encodes as %x (%v)", u.body, again, err)
				}
			}
		case kindWelcome:
			if w, err := parseWelcome(u.body); err == nil && !bytes.Equal(appendWelcome(nil, w), u.body) {
				t.Fatalf("welcome %x re-encodes as %x", u.body, appendWelcome(nil, w))
			}
		}
	})
}

// FuzzUnderlayBody feeds arbitrary bodies to the hello and welcome
// decoders, past the MAC that FuzzUnderlay can hardly forge: they must
// never panic, and what parses re-encodes as the very bytes.
func FuzzUnderlayBody(f *testing.F) {
	for _, b := range underlaySeeds(f) {
		if u, err := openUnderlay(testMeshKey, b, fuzzNow); err == nil {
			f.Add(u.body)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if h, err := parseHello(b); err == nil {
			if again, err := appendHello(nil, h); err != nil || !bytes.Equal(again, b) {
				t.Fatalf("hello %x re-encodes as %x (%v)", b, again, err)
			}
		}
		if w, err := parseWelcome(b); err == nil && !bytes.Equal(appendWelcome(nil, w), b) {
			t.Fatalf("welcome %x re-encodes as %x", b, appendWelcome(nil, w))
		}
	})
}

func underlaySeeds(t testing.TB) map[string][]byte {
	long := helloMsg{nonce: 1, seed: strings.Repeat("s", MaxString), rec: testHello.rec}
	longBody, err := appendHello(nil, long)
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{
		"valid-hello":      sealUnderlay(testMeshKey, kindHello, fuzzNow, helloBody(t)),
		"valid-hello-long": sealUnderlay(testMeshKey, kindHello, fuzzNow, longBody),
		"valid-welcome":    sealUnderlay(testMeshKey, kindWelcome, fuzzNow, appendWelcome(nil, welcomeMsg{nonce: 1, ok: true, name: "p1"})),
		"valid-refusal": sealUnderlay(testMeshKey, kindWelcome, fuzzNow,
			appendWelcome(nil, welcomeMsg{nonce: 1, name: "p1", reason: "the name \"p2\" belongs to another WireGuard key"})),
		"bad-mac":   sealUnderlay(bytes.Repeat([]byte{1}, 32), kindHello, fuzzNow, helloBody(t)),
		"bad-short": []byte(UnderlayMagic + "\x02\x01"),
		"bad-kind":  sealUnderlay(testMeshKey, 3, fuzzNow, helloBody(t)),
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
		_, err = openUnderlay(testMeshKey, b, fuzzNow)
		if valid := strings.HasPrefix(name, "valid-"); valid != (err == nil) {
			t.Errorf("%s: open: %v", name, err)
		}
	}
}

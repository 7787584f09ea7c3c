package check

import (
	"bytes"
	"strings"
	"testing"
)

func TestQueryRoundTrip(t *testing.T) {
	for _, name := range []string{"example.com", "example.com.", "a.b-c_d.example", ".", strings.Repeat("a", 63) + ".x"} {
		q, err := appendQuery(nil, 0xbeef, name, TypeAAAA)
		if err != nil {
			t.Fatalf("%q: %v", name, err)
		}
		m, err := parseDNS(q)
		if err != nil {
			t.Fatalf("%q: %v", name, err)
		}
		if m.ID != 0xbeef || m.Flags != flagRD || len(m.Questions) != 1 || m.Questions[0] != (dnsQuestion{fqdn(name), TypeAAAA, classIN}) || len(m.Answers) != 0 {
			t.Errorf("%q: %+v", name, m)
		}
	}
}

func TestBadNames(t *testing.T) {
	long := strings.Repeat(strings.Repeat("a", 60)+".", 5)
	for _, name := range []string{"", "a..b", ".a", strings.Repeat("a", 64), long, "a b", "a\\.b", "ä.example", "a\x00"} {
		if err := CheckDNSName(name); err == nil {
			t.Errorf("%q accepted", name)
		}
	}
	if err := CheckDNSName(strings.Repeat(strings.Repeat("a", 62)+".", 3) + strings.Repeat("a", 61)); err != nil {
		t.Errorf("a 253-character name: %v", err)
	}
}

func TestDNSTypes(t *testing.T) {
	for s, want := range map[string]uint16{"A": TypeA, "aaaa": TypeAAAA, "Txt": TypeTXT, "TYPE65": 65, "type257": 257} {
		if got, err := ParseDNSType(s); err != nil || got != want {
			t.Errorf("%q: %d %v", s, got, err)
		}
	}
	for _, s := range []string{"", "B", "TYPE", "TYPE0", "TYPE65536", "TYPE-1", "12"} {
		if _, err := ParseDNSType(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
	if DNSTypeString(TypeAAAA) != "AAAA" || DNSTypeString(99) != "TYPE99" {
		t.Error("DNSTypeString")
	}
}

// A response with compression, pointers to pointers, and records of every
// section.
func TestParseResponse(t *testing.T) {
	b := []byte{0x12, 0x34, 0x81, 0x80, 0, 1, 0, 2, 0, 1, 0, 0,
		3, 'w', 'w', 'w', 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 0, 0, 5, 0, 1, // www.example. CNAME IN (offset 12)
		0xc0, 12, 0, 5, 0, 1, 0, 0, 1, 0, 0, 2, 0xc0, 16, // www.example. CNAME → example.
		0xc0, 16, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7, // example. A
		0xc0, 41, 0, 2, 0, 1, 0, 0, 0, 60, 0, 0, // → pointer at 41 → example.
	}
	m, err := parseDNS(b)
	if err != nil {
		t.Fatal(err)
	}
	if m.ID != 0x1234 || m.rcode() != 0 || len(m.Answers) != 2 || len(m.Authority) != 1 || m.Answers[0].Name != "www.example." ||
		m.Answers[1].Name != "example." || !bytes.Equal(m.Answers[1].Data, []byte{192, 0, 2, 7}) || m.Authority[0].Name != "example." || m.Answers[0].TTL != 256 {
		t.Errorf("%+v", m)
	}
	for i := range b {
		if _, err := parseDNS(b[:i]); err == nil {
			t.Errorf("parsed %d of %d bytes", i, len(b))
		}
	}
}

func TestParseHostile(t *testing.T) {
	hdr := []byte{0, 0, 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0}
	for name, body := range map[string][]byte{
		"self pointer":    {0xc0, 12, 0, 1, 0, 1},
		"forward pointer": {0xc0, 14, 0, 0, 0, 1, 0, 1},
		"loop via labels": {1, 'a', 0xc0, 12, 0, 1, 0, 1},
		"label type 0x40": {0x41, 'a', 0, 0, 1, 0, 1},
		"label past end":  {9, 'a'},
		"long name":       bytes.Repeat([]byte{1, 'a'}, 130),
	} {
		if m, err := parseDNS(append(append([]byte{}, hdr...), body...)); err == nil {
			t.Errorf("%s: parsed %+v", name, m)
		}
	}
	// A count the message does not hold is an error, not an allocation.
	if _, err := parseDNS([]byte{0, 0, 0x80, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}); err == nil {
		t.Error("parsed 65535 questions in 12 bytes")
	}
}

func FuzzParseDNS(f *testing.F) {
	q, _ := appendQuery(nil, 7, "svc.example", TypeA)
	f.Add(q)
	f.Add([]byte{0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 1, 'a', 0, 0, 1, 0, 1, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseDNS(b)
		if err != nil {
			return
		}
		n := 0
		check := func(name string) {
			if !strings.HasSuffix(name, ".") || len(name) > maxNameLen {
				t.Fatalf("name %q", name)
			}
		}
		for _, q := range m.Questions {
			check(q.Name)
			n += 5
		}
		for _, sec := range [][]dnsRR{m.Answers, m.Authority, m.Additional} {
			for _, rr := range sec {
				check(rr.Name)
				n += 11 + len(rr.Data)
			}
		}
		if headerLen+n > len(b) {
			t.Fatalf("%d bytes of sections in a message of %d", n, len(b))
		}
		verdict(m) // never panics either
	})
}

package config

import (
	"maps"
	"testing"
)

func TestKeyLines(t *testing.T) {
	text := `# comment with key = "value"
a = 1
"quoted key" = """
multi = line
"""
[t]  # header
b.c = [
  'x',   # one
  { d = 1, e = [1,
    2] },
]
[[arr]]
f = '''
g = 1'''
[[arr]]
f = "h"
[arr.sub]
i = 2
`
	want := map[string]int{
		"a": 2, "quoted key": 3, "t": 6, "t.b": 7, "t.b.c": 7, "t.b.c[0]": 8, "t.b.c[1]": 9,
		"t.b.c[1].d": 9, "t.b.c[1].e": 9, "t.b.c[1].e[0]": 9, "t.b.c[1].e[1]": 10, "arr[0]": 12, "arr[0].f": 13,
		"arr[1]": 15, "arr[1].f": 16, "arr[1].sub": 17, "arr[1].sub.i": 18,
	}
	got := keyLines(text)
	for k, l := range want {
		if got[k] != l {
			t.Errorf("%s: line %d, want %d", k, got[k], l)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected path %q (line %d)", k, got[k])
		}
	}
}

// TestKeyLinesUnterminated: strings cut off by the end of the text (which
// made the scanner slice out of range) end their key there, and the lines
// found before them are kept.
func TestKeyLinesUnterminated(t *testing.T) {
	for _, c := range []struct {
		name, text string
		want       map[string]int
	}{
		{"lone basic quote", "a = 1\n\"", map[string]int{"a": 1, "": 2}},
		{"lone literal quote", "a = 1\n'", map[string]int{"a": 1, "": 2}},
		{"dotted basic", "[t]\nb.\"", map[string]int{"t": 1, "t.b": 2, "t.b.": 2}},
		{"dotted literal", "[t]\nb.'c", map[string]int{"t": 1, "t.b": 2, "t.b.c": 2}},
		{"header", "[\"", map[string]int{"": 1}},
		{"inline table", "x = {'", map[string]int{"x": 1, "x.": 1}},
		{"bad escape", "\"a\\q\" = 1", map[string]int{`a\q`: 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := keyLines(c.text)
			if !maps.Equal(got, c.want) {
				t.Errorf("keyLines(%q) = %v, want %v", c.text, got, c.want)
			}
		})
	}
}

// The scanner terminates and never panics, whatever the text.
func FuzzKeyLines(f *testing.F) {
	for _, s := range []string{proxyBase, targetBase, clientBase, "a = [\n1,\n{b=2}]\n", "x = '''\n'''\n[[y]]\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		keyLines(s)
	})
}

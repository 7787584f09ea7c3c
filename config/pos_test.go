package config

import (
	"testing"

	"github.com/BurntSushi/toml"
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

// The scanner terminates and never panics on any text the parser accepts.
func FuzzKeyLines(f *testing.F) {
	for _, s := range []string{proxyBase, targetBase, clientBase, "a = [\n1,\n{b=2}]\n", "x = '''\n'''\n[[y]]\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var m map[string]any
		if _, err := toml.Decode(s, &m); err != nil {
			return
		}
		keyLines(s)
	})
}

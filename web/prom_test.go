package web

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/prometheus/common/expfmt"
)

// Names and reasons come from the network and end up in label values:
// whatever they hold, the official parser reads the exposition back, with
// the value intact (invalid UTF-8 replaced).
func FuzzLabelValue(f *testing.F) {
	for _, s := range []string{"", "p1", `a"b`, `a\b`, "a\nb", "\xff", `\n`, "}", "# TYPE x counter"} {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, value, help string) {
		var m Metrics
		m.Family("pias_fuzz_total", "counter", help)
		m.Count(1, "v", value)
		m.One("pias_after", "gauge", "", 2)
		fams, err := new(expfmt.TextParser).TextToMetricFamilies(strings.NewReader(string(m.Bytes())))
		if err != nil {
			t.Fatalf("%v\n%q", err, m.Bytes())
		}
		want := strings.ToValidUTF8(value, "\uFFFD")
		if got := fams["pias_fuzz_total"].GetMetric()[0].GetLabel()[0].GetValue(); got != want {
			t.Fatalf("label %q, want %q", got, want)
		}
		// The parser skips the blanks before a HELP text.
		if help := strings.TrimLeft(help, " \t"); utf8.ValidString(help) && fams["pias_fuzz_total"].GetHelp() != help {
			t.Fatalf("help %q, want %q", fams["pias_fuzz_total"].GetHelp(), help)
		}
		if fams["pias_after"].GetMetric()[0].GetGauge().GetValue() != 2 {
			t.Fatal("the next family was eaten")
		}
	})
}

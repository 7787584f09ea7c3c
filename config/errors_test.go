package config

import (
	"errors"
	"strings"
	"testing"
)

// A loader returns the file's first problem; Errors lists them all, by
// line, the first being the one returned.
func TestErrorsListsEveryProblem(t *testing.T) {
	tk := setup(t)
	text := set(targetBase, 3, `address = ["100.99.1.1"]`) // outside overlay_prefix
	text = ins(text, 1, `colour = "blue"`)                 // line 2: unknown
	text = set(text, 12, `port = 0`)                       // port out of range
	path := tk.write(t, "t.toml", text)
	_, err := LoadTarget(path)
	if err == nil {
		t.Fatal("loaded a file with three problems")
	}
	all := Errors(err)
	var got []string
	for _, e := range all {
		got = append(got, e.Error())
	}
	if len(all) != 3 {
		t.Fatalf("Errors: %d, want 3:\n%s", len(all), strings.Join(got, "\n"))
	}
	if all[0].Error() != err.Error() {
		t.Errorf("first of Errors %q, want the loader's error %q", all[0], err)
	}
	for i, want := range []string{":2: colour: unknown key", ":4: address: ", ":12: group.port: "} {
		if !strings.Contains(got[i], want) {
			t.Errorf("error %d = %q, want %q in it", i, got[i], want)
		}
	}
	if Errors(errors.New("not a config error")) != nil {
		t.Error("Errors of a plain error is not nil")
	}
	// A file with one problem has one error.
	_, err = LoadTarget(tk.write(t, "t1.toml", ins(targetBase, 1, `colour = "blue"`)))
	if n := len(Errors(err)); n != 1 {
		t.Errorf("one problem: Errors has %d", n)
	}
}

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSimChurnCLI(t *testing.T) {
	run := func() (string, string) {
		dir := t.TempDir()
		var stdout, stderr bytes.Buffer
		rc := runSim([]string{"churn", "--proxies", "12", "--groups", "8", "--targets", "60", "--deaths", "1", "--revive", "5s",
			"--churn", "10s", "--settle", "35s", "--seed", "4", "--out", dir}, nil, &stdout, &stderr)
		if rc != 0 {
			t.Fatalf("rc %d\n%s\n%s", rc, stdout.String(), stderr.String())
		}
		if !strings.Contains(stderr.String(), "simulated") {
			t.Errorf("no progress on stderr:\n%s", stderr.String())
		}
		var csv string
		for _, name := range []string{"churn.csv", "churn_series.csv"} {
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			csv += string(b)
		}
		return stdout.String(), csv
	}
	out, a := run()
	if !strings.Contains(out, "converged after") || !strings.Contains(out, "churn.csv") {
		t.Errorf("no summary table:\n%s", out)
	}
	if _, b := run(); a != b {
		t.Errorf("same seed, different CSV:\n%s\n---\n%s", a, b)
	}
	var stderr bytes.Buffer
	if rc := runSim([]string{"churn", "--inaccuracy", "5,25"}, nil, &bytes.Buffer{}, &stderr); rc != 2 {
		t.Errorf("two inaccuracies: rc %d, %s", rc, stderr.String())
	}
}

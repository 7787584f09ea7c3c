package check

import (
	"strings"
	"testing"
)

func TestState(t *testing.T) {
	// Each case feeds a string of results ('+' ok, '-' fail) and lists
	// the statuses reached by transitions, in order.
	tests := []struct {
		name       string
		rise, fall int
		feed       string
		want       string // statuses after each transition: H, F
	}{
		{"first success is healthy", 2, 3, "+", "H"},
		{"dead at start fails after fall", 2, 3, "---", "F"},
		{"not yet failing", 2, 3, "--", ""},
		{"unknown then up", 2, 3, "--+", "H"},
		{"fall failures take it down", 2, 3, "+---", "HF"},
		{"a success resets the failures", 2, 3, "+--+--+--", "H"},
		{"rise successes bring it back", 2, 3, "+---++", "HFH"},
		{"one success is not enough", 2, 3, "+---+-+-+-", "HF"},
		{"flapping healthy stays healthy", 2, 3, "+-+-+-+-+-+-", "H"},
		{"flapping failing stays failing", 2, 3, "----+-+-+-+-", "F"},
		{"rise and fall 1 follow every change", 1, 1, "+-+-", "HFHF"},
		{"zero counts as one", 0, 0, "+-", "HF"},
		{"long rise", 5, 1, "+-++++-+++++", "HFH"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := NewState(tc.rise, tc.fall)
			if s.Status() != Unknown || s.Since() != 0 {
				t.Fatalf("new state %v since %d", s.Status(), s.Since())
			}
			if _, _, ok := s.Last(); ok {
				t.Fatal("Last before any result")
			}
			var got strings.Builder
			for i, c := range tc.feed {
				at := int64(i+1) * 1000
				detail := "result " + string(c)
				tr, ok := s.Feed(c == '+', detail, at)
				if ok {
					got.WriteString(tr.To.String()[:1])
					if tr.Reason != detail || tr.At != at || s.Since() != at || s.Status() != tr.To || tr.From == tr.To || tr.Run < 1 {
						t.Errorf("transition %+v, status %v since %d", tr, s.Status(), s.Since())
					}
				}
				if r, lat, ok := s.Last(); !ok || r.OK != (c == '+') || r.Detail != detail || lat != at {
					t.Errorf("Last = %+v %d %v", r, lat, ok)
				}
			}
			if got := strings.ToUpper(got.String()); got != tc.want {
				t.Errorf("transitions %q, want %q", got, tc.want)
			}
		})
	}
}

func TestTransitionRun(t *testing.T) {
	s := NewState(2, 3)
	s.Feed(true, "ok", 1)
	s.Feed(false, "a", 2)
	s.Feed(false, "b", 3)
	tr, ok := s.Feed(false, "connection refused", 4)
	if !ok || tr.From != Healthy || tr.To != Failing || tr.Run != 3 || tr.String() != "healthy → failing after 3 in a row: connection refused" {
		t.Fatalf("%v %+v", ok, tr)
	}
}
